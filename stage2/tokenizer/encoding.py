"""Encoding that keeps U+2581 ("▁") in a text: SentencePiece reads it as its space marker.

SentencePiece escapes every space to "▁" before it segments, so a literal "▁" in a document would
come back as a space. Spelled as its three UTF-8 byte pieces (<0xE2><0x96><0x81>) it decodes as
itself: here each literal "▁" splits the text, the pieces between are encoded as SentencePiece
encodes them, and the byte pieces go in between. That is also what tokenizer.json gives (see
export.py), and it needs byte fallback: a model without byte pieces keeps SentencePiece's own reading.

Text without "▁" (nearly all of it) goes through SentencePiece's batch encode untouched: one
substring test per document decides.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, List, Optional

import numpy as np

MARKER = "\u2581"
MARKER_BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in MARKER.encode("utf-8"))


def marker_ids(sp: Any) -> Optional[List[int]]:
    """The ids of the byte pieces that spell "▁", or None when the model has no byte fallback."""
    ids = [sp.piece_to_id(p) for p in MARKER_BYTE_PIECES]
    return ids if all(sp.is_byte(i) for i in ids) else None


def encode(sp: Any, texts: List[str], num_threads: Optional[int] = None) -> List[List[int]]:
    """`sp.encode(texts)`, except that a literal "▁" becomes its byte pieces (one batch call either way)."""
    marked = [MARKER in t for t in texts]
    spell = marker_ids(sp) if any(marked) else None
    if spell is None:
        return sp.encode(texts, num_threads=num_threads)
    inputs: List[str] = []
    spans = []  # per text: (first input, number of inputs)
    for text, has in zip(texts, marked):
        parts = text.split(MARKER) if has else [text]
        spans.append((len(inputs), len(parts)))
        inputs += parts
    encoded = sp.encode(inputs, num_threads=num_threads)
    out = []
    for start, n in spans:
        ids = list(encoded[start])
        for seg in encoded[start + 1 : start + n]:
            ids += spell
            ids += seg
        out.append(ids)
    return out


def encode_stream(
    sp: Any, texts: Iterable[str], batch_size: int, num_threads: int, bos: Optional[int], eos: Optional[int], dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Texts -> token stream chunks, one per batch of SentencePiece's multi-threaded batch encode.

    A batch without "▁" takes packing's fastest path; one with it is encoded through `encode`
    and gets its separators in numpy (the same stream the fast path would give, bar the "▁").
    """
    from stage2.shards import pack as packing

    spell: Any = False  # not looked up yet
    it = iter(texts)
    while True:
        batch = list(itertools.islice(it, batch_size))
        if not batch:
            return
        if any(MARKER in t for t in batch):
            if spell is False:
                spell = marker_ids(sp)
            if spell is not None:
                yield packing.with_separators(encode(sp, batch, num_threads), bos, eos, dtype)
                continue
        yield packing.encode_batch(sp, batch, num_threads, bos, eos, dtype)
