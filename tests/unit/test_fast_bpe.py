"""FastBPE (tiktoken running SentencePiece's BPE merges) gives SentencePiece's ids exactly: on every
document of every development corpus (tests/data/corpora/), on adversarial texts, and on random texts
over an alphabet built to hit its edge cases, with a real SentencePiece model trained by the stage's
lossless BPE recipe. The reference is the plain path, here in the test: SentencePiece itself, with a
literal "▁" spelled in byte pieces between the parts around it.
"""

from __future__ import annotations

import io
from typing import Dict, List

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import corpora, corpora_slice
from stage2.config import ModelType, TokenizerConfig
from stage2.tokenizer import encoding
from stage2.tokenizer import train as tok_train

TRAIN_BYTES = 40_000  # per corpus
ADVERSARIAL = [
    "", " ", "   ", "\u2581", "a\u2581b", "  \u2581 x", "x \u2581\u2581  y ", "\u2581" * 7 + " " * 3, "\x00\r\n\t ",
    "<s></s><unk><pad><0x41><0xE2> x<s>y", "\U0001F600" * 50 + " \U0001F9EA\u0BF5 end", "a" * 5000, "ab" * 3000 + " " * 300,
    "x" + encoding.FastBPE.SEPARATOR + "y", encoding.FastBPE.SEPARATOR, "tab\tnew\nline\r\n  indented  ",
]


def train(texts: List[str], **extra) -> spm.SentencePieceProcessor:
    settings_ = TokenizerConfig(model_type=ModelType.bpe, vocab_size=2000, num_threads=2, required_chars="\t\n", character_coverage=0.995)
    buffer = io.BytesIO()
    sentences = tok_train.sentence_stream(texts, 4192, tok_train.SentenceCounter())
    spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=buffer, **{**settings_.trainer_options(), **extra})
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue())


def reference(sp: spm.SentencePieceProcessor, text: str) -> List[int]:
    """SentencePiece's ids; a literal "▁" as its byte pieces (what encoding.encode promises)."""
    parts = text.split(encoding.MARKER)
    ids = sp.encode(parts[0])
    for part in parts[1:]:
        ids += [sp.piece_to_id(p) for p in encoding.MARKER_BYTE_PIECES] + sp.encode(part)
    return ids


@pytest.fixture(scope="module")
def texts() -> Dict[str, List[str]]:
    return corpora()


@pytest.fixture(scope="module")
def sp(texts) -> spm.SentencePieceProcessor:
    return train(corpora_slice(texts, TRAIN_BYTES))


@pytest.fixture(scope="module")
def fast(sp) -> encoding.FastBPE:
    built = encoding.fast_bpe(sp)
    assert built is not None, "the lossless BPE recipe's model must take the fast path"
    return built


def outside_chars(sp) -> List[str]:
    """Characters outside the vocabulary whose first bytes start one inside it: the byte-fallback edge."""
    inside = {sp.id_to_piece(i) for i in range(sp.get_piece_size()) if len(sp.id_to_piece(i)) == 1}
    out = []
    for ch in sorted(inside):
        raw = ch.encode("utf-8")
        if len(raw) < 3:
            continue
        for last in range(0x80, 0xC0):
            other = (raw[:-1] + bytes([last])).decode("utf-8", errors="ignore")
            if len(other) == 1 and other not in inside:
                out.append(other)
                break
    return out


def test_every_corpus_document_encodes_as_sentencepiece(sp, fast, texts):
    docs = [doc for corpus in texts.values() for doc in corpus] + ADVERSARIAL
    ours = encoding.encode(sp, docs)
    bad = [doc[:60] for doc, ids in zip(docs, ours) if ids != reference(sp, doc)]
    assert not bad, f"{len(bad)} of {len(docs)} documents differ, e.g. {bad[:3]}"
    # the texts did reach the fast path's special cases
    assert any(encoding.MARKER in d for d in docs) and fast.expansions


def test_characters_outside_the_vocabulary_sharing_first_bytes_fall_back_to_byte_pieces(sp, fast):
    others = outside_chars(sp)
    assert others, "the corpora give the vocabulary characters of three bytes or more"
    texts = [f"a{ch}b {ch}{ch} x{ch}" for ch in others] + ["".join(others)]
    ours = encoding.encode(sp, texts)
    assert ours == [reference(sp, t) for t in texts]
    assert all(any(sp.is_byte(i) for i in ids) for ids in ours)


@pytest.mark.parametrize("bos,eos", [(None, 2), (1, 2), (1, None), (None, None)])
@pytest.mark.parametrize("threads", [1, 2])
def test_stream_is_the_documents_with_their_separators(sp, fast, texts, bos, eos, threads):
    docs = texts["en_web_cc_samples"][:300] + ADVERSARIAL + outside_chars(sp)[:5]
    want = encoding.with_separators([reference(sp, d) for d in docs], bos, eos, np.dtype(np.uint32))
    got = np.concatenate(list(encoding.encode_stream(sp, docs, 64, threads, bos, eos, np.dtype(np.uint32))))
    assert np.array_equal(got, want)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_texts_encode_as_sentencepiece(sp, fast, data):
    alphabet = list("ab eth\n\t.,-0") + ["  ", "\u2581", "\u00e9", "\u4e2d", "\U0001F600"] + outside_chars(sp)[:4]
    texts = data.draw(st.lists(st.lists(st.sampled_from(alphabet), max_size=60).map("".join), min_size=1, max_size=8))
    assert encoding.encode(sp, texts) == [reference(sp, t) for t in texts]


@pytest.mark.slow
def test_models_it_cannot_encode_exactly_keep_sentencepiece(texts):
    docs = texts["en_foldoc"][:200]
    unigram = train(docs, model_type="unigram", vocab_size=500)
    symbols = train(docs, vocab_size=500, user_defined_symbols=["<tag>"])
    assert encoding.fast_bpe(unigram) is None and encoding.fast_bpe(symbols) is None
    text = "a <tag> b\u2581c"
    assert encoding.encode(symbols, [text]) == [reference(symbols, text)]
