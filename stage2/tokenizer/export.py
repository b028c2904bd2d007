"""A SentencePiece model as a HuggingFace `tokenizers` file (tokenizer.json and its two config files).

The stage's recipe is what makes an exact export possible: no normaliser but SentencePiece's space ->
"▁" escape, no dummy prefix, byte fallback. tokenizer.json holds the model's pieces with that escape
undone (a space where SentencePiece writes "▁": " the", not "▁the"), so it needs no normaliser and a
literal "▁" in a text is a character outside the vocabulary, spelled in byte pieces exactly as
stage2 encodes it (encoding.py); BPE merges are ranked by the merged piece's score, as SentencePiece
applies them; Unigram keeps its scores, which stage2 trains on a grid that makes them exact in both
libraries (unigram_scores). The decoder joins byte pieces.

Special pieces stay plain vocabulary entries that no merge or segmentation produces, not added
tokens: SentencePiece reads a literal "</s>" in a text as characters, and `tokenizers` would match an
added token in the text (its `encode_special_tokens` switch is not saved in tokenizer.json).
transformers learns them from tokenizer_config.json, where `split_special_tokens` keeps the same ids.
User-defined symbols are the opposite: SentencePiece BPE matches them in the text before it segments,
as `tokenizers` matches its (non-special) added tokens (a unigram model scores them inside its
segmentation instead, which tokenizer.json cannot express: no export).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

from stage2.errors import Stage2Error

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
EXPORT_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
SPACE = "\u2581"  # SentencePiece's space marker (encoding.MARKER: that module imports numpy, a stage's driver need not)
# ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _proto(model: bytes) -> Any:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    return proto


def hf_piece(piece: Any) -> str:
    """A piece as tokenizer.json spells it: text pieces with "▁" as the space it stands for."""
    return piece.piece.replace(SPACE, " ") if piece.type in (NORMAL, USER_DEFINED, UNUSED) else piece.piece


def exportable(proto: Any) -> str:
    """Why this model cannot be exported exactly ("" when it can)."""
    norm = proto.normalizer_spec
    if norm.name != "identity" or norm.precompiled_charsmap:
        return f"its normaliser is {norm.name!r}, not identity (tokenizer=lossy?)"
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces:
        return "it adds a dummy prefix or squeezes whitespace (tokenizer=lossy?)"
    if not proto.trainer_spec.byte_fallback:
        return "it has no byte fallback"
    spaced = [p.piece for p in proto.pieces if p.type == USER_DEFINED and " " in p.piece]
    if spaced:
        # SentencePiece matches symbols after it has turned spaces into "▁", so these never match;
        # tokenizers, which sees the spaces, would match them.
        return f"user_defined_symbols {spaced} hold a space, which SentencePiece never matches (write \u2581 for a space)"
    return ""


def unigram_scores(names: List[str], pieces: List[Any]) -> List[Tuple[str, float]]:
    """(piece, score) for tokenizers' Unigram: exactly SentencePiece's segmentation, or a one-line Stage2Error.

    Exact because stage2 trains unigram scores on a grid (train.quantize_scores: the sums of both
    libraries are then exact) and both libraries break ties alike. tokenizers' trie holds every piece,
    SentencePiece's only the normal ones: the others ("<s>", "<0x41>") score below any spelling of
    their text in one-character pieces, so no segmentation picks them, provided those pieces exist.
    """
    from stage2.tokenizer.train import on_score_grid

    if any(p.type == USER_DEFINED for p in pieces):
        # SentencePiece scores them by length inside its segmentation; tokenizers splits them off first.
        symbols = [n for n, p in zip(names, pieces) if p.type == USER_DEFINED]
        raise Stage2Error(f"tokenizer.json: cannot reproduce this SentencePiece unigram model exactly: it has user_defined_symbols {symbols} (tokenizer=bpe exports them)")
    normal = {n: p.score for n, p in zip(names, pieces) if p.type == NORMAL}
    off_grid = [n for n, score in normal.items() if score != on_score_grid(score)]
    if off_grid:
        raise Stage2Error(
            f"tokenizer.json: cannot reproduce this SentencePiece unigram model exactly: scores of {len(off_grid)} pieces "
            f"(e.g. {off_grid[0]!r}) are off the 2**-6 grid stage2 trains on (a model from elsewhere or an older stage2?)"
        )
    others = [n for n, p in zip(names, pieces) if p.type != NORMAL]
    missing = sorted({c for n in others for c in n} - set(normal))
    if missing:
        raise Stage2Error(f"tokenizer.json: cannot reproduce this SentencePiece unigram model exactly: characters {missing} of its special and byte pieces are not pieces themselves")
    lowest = min(normal.values())
    never = math.floor(max(map(len, others)) * lowest) - 1.0
    return [(n, p.score if p.type == NORMAL else never) for n, p in zip(names, pieces)]


def bpe_merges(pieces: List[Tuple[str, int]]) -> List[Tuple[str, str]]:
    """Every split of a piece into two mergeable pieces, ranked by the merged piece's score (its id).

    `pieces`: (piece as tokenizer.json spells it, type) in id order."""
    mergeable = {p: i for i, (p, kind) in enumerate(pieces) if kind in (NORMAL, USER_DEFINED)}
    merges: List[Tuple[str, str]] = []
    for piece in sorted(mergeable, key=mergeable.__getitem__):
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in mergeable and piece[k:] in mergeable]
        merges += sorted(splits, key=lambda lr: (mergeable[lr[0]], mergeable[lr[1]]))
    return merges


def build(model: bytes) -> Any:
    """The `tokenizers.Tokenizer` that gives the model's ids; a one-line Stage2Error if none can."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    proto = _proto(model)
    why = exportable(proto)
    if why:
        raise Stage2Error(f"tokenizer.json: cannot reproduce this SentencePiece model exactly: {why}")
    pieces = list(proto.pieces)
    names = [hf_piece(p) for p in pieces]
    if proto.trainer_spec.model_type == 2:  # BPE
        unk = next((names[i] for i, p in enumerate(pieces) if p.type == UNKNOWN), None)
        vocab = {name: i for i, name in enumerate(names)}
        merges = bpe_merges([(name, p.type) for name, p in zip(names, pieces)])
        core = models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=False)
    else:
        scored = unigram_scores(names, pieces)
        unk_id = next(i for i, p in enumerate(pieces) if p.type == UNKNOWN)
        core = models.Unigram(scored, unk_id=unk_id, byte_fallback=True)
    tok = Tokenizer(core)
    symbols = [names[i] for i, p in enumerate(pieces) if p.type == USER_DEFINED]
    if symbols:
        tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in symbols])
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tok


def special_tokens(model: bytes) -> Dict[str, str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    names = {"unk_token": sp.unk_id(), "bos_token": sp.bos_id(), "eos_token": sp.eos_id(), "pad_token": sp.pad_id()}
    return {name: sp.id_to_piece(i) for name, i in names.items() if i >= 0}


def files(model: bytes, model_max_length: int) -> Dict[str, str]:
    """{file name: text} of the three files, deterministic for a given model and context length."""
    tok = build(model)
    specials = special_tokens(model)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": False,
        "add_eos_token": False,
        # transformers: keep SentencePiece's ids for a literal "</s>", and decode byte for byte.
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(model_max_length),
    }
    return {
        TOKENIZER_JSON: tok.to_str(pretty=True) + "\n",
        TOKENIZER_CONFIG: json.dumps(config, indent=2, sort_keys=True) + "\n",
        SPECIAL_TOKENS_MAP: json.dumps(specials, indent=2, sort_keys=True) + "\n",
    }


def write(model: bytes, folder: Path, model_max_length: int) -> List[Path]:
    from stage2.io.files import atomic_write

    written = []
    for name, text in files(model, model_max_length).items():
        atomic_write(folder / name, text)
        written.append(folder / name)
    return written


def agreement(sp: Any, tok: Any, texts: List[str]) -> int:
    """How many of `texts` the HF tokenizer `tok` encodes to exactly the SentencePiece processor `sp`'s ids."""
    from stage2.tokenizer import encoding

    theirs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    return sum(a == b for a, b in zip(encoding.encode(sp, texts), theirs))
