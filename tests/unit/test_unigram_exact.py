"""The unigram tokenizer.json gives SentencePiece's ids exactly: on every document of every development
corpus (samples in tests/data/corpora/) and on adversarial texts, with real SentencePiece training.

The model is trained once here with the stage's lossless unigram options on a slice of every corpus;
train.quantized_unigram puts its scores on the grid, as train_model does after every unigram training.
"""

from __future__ import annotations

import io
import random
from typing import Dict, List

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, models

from oracles import unigram_viterbi
from helpers import corpora, corpora_slice
from stage2.config import ModelType, TokenizerConfig
from stage2.errors import Stage2Error
from stage2.tokenizer import encoding, export
from stage2.tokenizer import train as tok_train

TRAIN_BYTES = 40_000  # per corpus: enough pieces of every script, a training of a second or two
ONE_CHAR_RUNS = [ch * n for ch in "-~=*#.0 \n\tab" for n in (7, 64, 1000, 33333)]
LITERALS = [
    "<s></s><unk><pad><0x41><0xE2> x<s>y \u2581\u2581a\u2581 \U0001F600\U0001F9EA\u0BF5 end",
    "\u2581", "<s>", "</s>", "<0x41>", "\u2581\u2581\u2581 \u2581", "\U0001F600" * 50, "a\u2581b",
]


def options(**extra) -> dict:
    settings = TokenizerConfig(model_type=ModelType.unigram, vocab_size=2000, num_threads=2, required_chars="\t\n", character_coverage=0.995)
    return {**settings.trainer_options(), **extra}


def train_raw(texts: List[str], **extra) -> bytes:
    """SentencePiece's own model, scores as trained (train_model would quantise them)."""
    spm.set_random_generator_seed(0)
    buffer = io.BytesIO()
    sentences = tok_train.sentence_stream(texts, 4192, tok_train.SentenceCounter())
    spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=buffer, **options(**extra))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def texts() -> Dict[str, List[str]]:
    return corpora()


@pytest.fixture(scope="module")
def raw_model(texts) -> bytes:
    return train_raw(corpora_slice(texts, TRAIN_BYTES))


@pytest.fixture(scope="module")
def model(raw_model) -> bytes:
    return tok_train.quantized_unigram(raw_model)


def hf_tokenizer(model: bytes) -> Tokenizer:
    return Tokenizer.from_str(export.files(model, 512)[export.TOKENIZER_JSON])


def float64_export(model: bytes) -> Tokenizer:
    """tokenizers' Unigram on the scores as they are (what tokenizer.json held before the grid)."""
    proto = _proto(model)
    lowest = min(p.score for p in proto.pieces if p.type == export.NORMAL)
    scored = [(export.hf_piece(p), p.score if p.type == export.NORMAL else 100 * lowest) for p in proto.pieces]
    unk_id = next(i for i, p in enumerate(proto.pieces) if p.type == export.UNKNOWN)
    return Tokenizer(models.Unigram(scored, unk_id=unk_id, byte_fallback=True))


def _proto(model: bytes):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    return proto


def assert_exact(model: bytes, docs: List[str]) -> None:
    sp, hf = spm.SentencePieceProcessor(model_proto=model), hf_tokenizer(model)
    ours = encoding.encode(sp, docs)
    theirs = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
    unequal = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not unequal, f"{len(unequal)} of {len(docs)} differ, e.g. {docs[unequal[0]][:80]!r}"
    decoded = hf.decode_batch(theirs, skip_special_tokens=False)
    assert [i for i, (d, t) in enumerate(zip(decoded, docs)) if d != t] == []


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_tokenizer_json_gives_sentencepiece_ids_on_every_document_of_every_corpus(model, texts):
    assert len(texts) == 8
    for name, docs in texts.items():
        assert len(docs) > 40, name
        assert_exact(model, docs)


def test_tokenizer_json_gives_sentencepiece_ids_on_adversarial_texts(model, texts):
    rng = random.Random(0)
    alphabet = sorted(set("".join(texts["multiling_fortunes"]))) + ["\u2581", "<s>", "<0x41>", "aa", "--", "  ", "\U0001F600"]
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3000))) for _ in range(200)]
    assert_exact(model, ONE_CHAR_RUNS + LITERALS + randoms)


@pytest.mark.slow  # seconds: a multi-MB document
def test_tokenizer_json_gives_sentencepiece_ids_past_sentencepiece_score_rebase(model, texts):
    # One document of every corpus's text twice over: its path score passes SentencePiece's 1e5 rebase
    # threshold hundreds of times.
    whole = "\n".join(doc for docs in texts.values() for doc in docs)
    document = whole + "\n" + whole
    assert len(document.encode("utf-8")) > 3_000_000
    assert_exact(model, [document])


def test_unrounded_scores_are_what_breaks_agreement(raw_model, model):
    """The grid is what makes the export exact: on runs of one character the plain float64 export of the
    scores as trained picks another segmentation than SentencePiece, as the float32 and float64 sums
    of the same Viterbi loop (tests/oracles.py) predict; on the grid all four agree."""
    texts = [ch * n for ch in "-=.#0ab " for n in (7, 64, 300)]
    sp_raw, hf_raw = spm.SentencePieceProcessor(model_proto=raw_model), float64_export(raw_model)
    differ = 0
    for text in texts:
        sp_ids, hf_ids = sp_raw.encode(text), hf_raw.encode(text, add_special_tokens=False).ids
        assert unigram_viterbi(raw_model, text, float32=True) == sp_ids, text[:20]
        assert unigram_viterbi(raw_model, text, float32=False) == hf_ids, text[:20]
        differ += sp_ids != hf_ids
    assert differ >= 3
    sp, hf = spm.SentencePieceProcessor(model_proto=model), hf_tokenizer(model)
    for text in texts:
        ids = sp.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert unigram_viterbi(model, text, float32=True) == unigram_viterbi(model, text, float32=False) == ids


def test_scores_are_on_the_grid_and_move_few_segmentations(raw_model, model, texts):
    raw, rounded = _proto(raw_model), _proto(model)
    grid = 2.0**-tok_train.SCORE_GRID_BITS
    assert len(raw.pieces) == len(rounded.pieces)
    moved = 0
    for before, after in zip(raw.pieces, rounded.pieces):
        assert (before.piece, before.type) == (after.piece, after.type)
        if after.type == export.NORMAL:
            assert after.score / grid == int(after.score / grid)
            assert abs(after.score - before.score) <= grid / 2
            moved += after.score != before.score
        else:
            assert after.score == before.score
    assert moved > len(raw.pieces) // 2  # scores as trained are off the grid
    # The same model otherwise: every other field keeps its bytes.
    del raw.pieces[:], rounded.pieces[:]
    assert raw.SerializeToString(deterministic=True) == rounded.SerializeToString(deterministic=True)

    sp_raw, sp = spm.SentencePieceProcessor(model_proto=raw_model), spm.SentencePieceProcessor(model_proto=model)
    docs = [doc for d in texts.values() for doc in d]
    before, after = encoding.encode(sp_raw, docs), encoding.encode(sp, docs)
    changed_docs = sum(a != b for a, b in zip(before, after))
    tokens_before, tokens_after = sum(map(len, before)), sum(map(len, after))
    # Only near ties move (the measured shares are in benchmarks/results/tokenizer_choice.md).
    assert changed_docs <= 0.06 * len(docs)
    assert abs(tokens_after - tokens_before) <= 0.0002 * tokens_before


def test_quantisation_is_deterministic_and_idempotent(model, raw_model):
    assert tok_train.quantized_unigram(raw_model) == model
    assert tok_train.quantized_unigram(model) == model


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_export_refuses_what_it_cannot_reproduce_in_one_line(raw_model, model, texts):
    with pytest.raises(Stage2Error, match=r"^tokenizer\.json: .*off the 2\*\*-6 grid") as off_grid:
        export.files(raw_model, 512)
    assert "\n" not in str(off_grid.value)

    symbols = tok_train.quantized_unigram(train_raw(texts["en_foldoc"][:150], vocab_size=600, character_coverage=1.0, user_defined_symbols=["<|im|>"]))
    with pytest.raises(Stage2Error, match=r"^tokenizer\.json: .*unigram.*user_defined_symbols \['<\|im\|>'\] \(tokenizer=bpe exports them\)$"):
        export.files(symbols, 512)

    proto = _proto(model)
    lt = next(p for p in proto.pieces if p.piece == "<")
    lt.type = export.UNUSED  # "<" no longer a piece: tokenizers could match "<s>" where SentencePiece cannot
    with pytest.raises(Stage2Error, match=r"characters \['<'\] of its special and byte pieces are not pieces themselves$"):
        export.files(proto.SerializeToString(), 512)
