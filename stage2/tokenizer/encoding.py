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
from typing import Any, Iterable, Iterator, List, Optional, Sequence

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

    A batch without "▁" takes the fastest path (`encode_batch`); one with it is encoded through `encode`
    and gets its separators in numpy (the same stream the fast path would give, bar the "▁").
    """
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
                yield with_separators(encode(sp, batch, num_threads), bos, eos, dtype)
                continue
        yield encode_batch(sp, batch, num_threads, bos, eos, dtype)


def with_separators(ids: Sequence[Sequence[int]], bos: Optional[int], eos: Optional[int], dtype: np.dtype) -> np.ndarray:
    """Encoded documents -> one flat stream: [BOS] doc [EOS] for every document, vectorised."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    n_sep = int(bos is not None) + int(eos is not None)
    spans = lengths + n_sep
    ends = np.cumsum(spans)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    if n_sep == 0:
        out[:] = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=len(out))
        return out
    is_token = np.ones(len(out), dtype=bool)
    if eos is not None:
        is_token[ends - 1] = False
        out[ends - 1] = eos
    if bos is not None:
        is_token[ends - spans] = False
        out[ends - spans] = bos
    out[is_token] = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return out


def _encode_flat(sp: Any, batch: List[str], num_threads: int, add_bos: bool, add_eos: bool) -> Optional[np.ndarray]:
    """One batch encode -> every document's ids in one int32 array (None: this sentencepiece has no numpy output).

    numpy output (sentencepiece >= 0.2.1) skips building a Python int per token. Its wrapper still makes
    one array per document (np.frombuffer on each C++ buffer, holding the GIL while the encode threads
    wait for the next call), so call the C++ method behind it and
    join the buffers in one go. That method is private: on a version whose signature differs (a
    TypeError from pybind), the public call; tests/unit/test_shard.py compares both with the Python path.
    """
    raw = getattr(getattr(sp, "_processor", None), "_EncodeAsBufferBatch", None)
    if raw is not None:
        try:
            # The arguments the wrapper passes: input, num_threads, thread_pool, enable_sampling,
            # nbest_size, alpha, add_bos, add_eos, reverse.
            buffers = raw(batch, num_threads, None, False, -1, 0.0, add_bos, add_eos, False)
        except TypeError:
            pass
        else:
            return np.frombuffer(b"".join(buffers), dtype=np.int32)
    try:
        arrays = sp.encode(batch, num_threads=num_threads, return_type="numpy", add_bos=add_bos, add_eos=add_eos)
    except ValueError:  # older sentencepiece: no numpy return type
        return None
    return np.concatenate(arrays) if arrays else np.empty(0, np.int32)


def encode_batch(sp: Any, batch: List[str], num_threads: int, bos: Optional[int], eos: Optional[int], dtype: np.dtype) -> np.ndarray:
    """One multi-threaded batch encode -> a flat stream chunk with separators."""
    if bos in (None, sp.bos_id()) and eos in (None, sp.eos_id()):
        flat = _encode_flat(sp, batch, num_threads, bos is not None, eos is not None)  # separators added in C++
        if flat is not None:
            return flat.astype(dtype, copy=False)
    return with_separators(sp.encode(batch, num_threads=num_threads), bos, eos, dtype)
