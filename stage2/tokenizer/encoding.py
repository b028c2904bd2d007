"""Encoding that keeps U+2581 ("▁") in a text: SentencePiece reads it as its space marker.

SentencePiece escapes every space to "▁" before it segments, so a literal "▁" in a document would
come back as a space. Spelled as its three UTF-8 byte pieces (<0xE2><0x96><0x81>) it decodes as
itself: here each literal "▁" splits the text, the pieces between are encoded as SentencePiece
encodes them, and the byte pieces go in between. That is also what tokenizer.json gives (see
export.py), and it needs byte fallback: a model without byte pieces keeps SentencePiece's own reading.

Text without "▁" (nearly all of it) goes through SentencePiece's batch encode untouched: one
substring test per document decides.

A BPE model of the lossless recipe is encoded by `FastBPE` instead: SentencePiece's own merges, run
by tiktoken's Rust loop, id for id the same and faster (benchmarks/results/tokenizer_choice.md). Why it
is exact: its docstring; tests/unit/test_fast_bpe.py checks it against SentencePiece.
"""

from __future__ import annotations

import itertools
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

MARKER = "\u2581"
MARKER_BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in MARKER.encode("utf-8"))
# Where no SentencePiece BPE merge can reach across: before a run of spaces that follows a non-space.
SEGMENT_PATTERN = " *[^ ]+| +"


class FastBPE:
    """SentencePiece BPE's encode, run by tiktoken: the same merges in the same order.

    SentencePiece BPE starts from characters and keeps merging the adjacent pair whose concatenation is
    the highest-scoring piece, leftmost first; tiktoken starts from bytes and keeps merging the adjacent
    pair whose concatenation has the lowest rank, leftmost first. So pieces are ranked by falling score,
    after ranks that first rebuild every character of the vocabulary from its bytes (the prefixes of a
    multi-byte character are ranks of their own, mapped back to byte pieces when no character completes
    them: byte fallback). Spaces stay spaces (ranks spell "▁" as " "), so a literal "▁" is three bytes
    that no merge joins: its byte pieces, as `encode` gives them. tiktoken splits at `SEGMENT_PATTERN`
    first: pieces hold "▁" only as a leading run, so no merge crosses. It takes a whole segment that is a
    piece in one lookup, which SentencePiece's merges give too if they turn that piece's own text into
    that piece; a piece they don't is never formed in any context, so it is left out of the ranks.

    `build` returns None where one of these premises fails (another model type or normalizer, user
    symbols, tied scores, no byte fallback): SentencePiece encodes those models.
    """

    # Joins a batch's documents into one tiktoken call; a document that holds it is encoded alone.
    SEPARATOR = "\x00<stage2 document end>\x00"

    def __init__(self, encoding: Any, ids: np.ndarray, expansions: Dict[int, List[int]]):
        self._core = encoding._core_bpe  # the Rust calls, without the Python wrapper's checks
        self.ids = ids  # rank -> SentencePiece id; -1 for a character prefix (`expansions`)
        self.separator = len(ids)  # the SEPARATOR's rank
        self.expansions = expansions

    @classmethod
    def build(cls, sp: Any) -> Optional["FastBPE"]:
        try:
            import tiktoken
            from sentencepiece import sentencepiece_model_pb2
        except ImportError:
            return None
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(sp.serialized_model_proto())
        norm, spec, kind = proto.normalizer_spec, proto.trainer_spec, sentencepiece_model_pb2.ModelProto.SentencePiece
        if (
            spec.model_type != spec.BPE
            or norm.name != "identity"
            or norm.add_dummy_prefix
            or norm.remove_extra_whitespaces
            or not norm.escape_whitespaces
            or spec.treat_whitespace_as_suffix
        ):
            return None
        byte_ids: Dict[int, int] = {}
        chars: Dict[str, int] = {}
        pieces: List[Tuple[float, int, str]] = []
        for i, p in enumerate(proto.pieces):
            if p.type == kind.BYTE:
                byte_ids[int(p.piece[3:5], 16)] = i
            elif p.type in (kind.USER_DEFINED, kind.UNUSED):
                return None
            elif p.type == kind.NORMAL:
                if p.piece.lstrip(MARKER).count(MARKER):
                    return None
                if len(p.piece) == 1:
                    chars[p.piece] = i
                else:
                    pieces.append((p.score, i, p.piece))
        if len(byte_ids) != 256 or MARKER not in chars or len({score for score, _, _ in pieces}) != len(pieces):
            return None
        own = sp.encode([piece.replace(MARKER, " ") for _, _, piece in pieces])
        pieces = [p for p, ids in zip(pieces, own) if ids == [p[1]]]

        ranks: Dict[bytes, int] = {}
        ids: List[int] = []
        expansions: Dict[int, List[int]] = {}

        def rank(key: bytes, sp_id: int) -> None:
            ranks[key] = len(ids)
            ids.append(sp_id)

        for b in range(256):
            if b != ord(" "):
                rank(bytes([b]), chars.get(chr(b), byte_ids[b]) if b < 128 else byte_ids[b])
        wide = sorted((c.encode("utf-8") for c in chars if len(c.encode("utf-8")) > 1 and c != MARKER), key=lambda k: (len(k), k))
        for prefix in sorted({k[:n] for k in wide for n in range(2, len(k))}, key=lambda k: (len(k), k)):
            expansions[len(ids)] = [byte_ids[b] for b in prefix]
            rank(prefix, -1)
        for key in wide:
            rank(key, chars[key.decode("utf-8")])
        rank(b" ", chars[MARKER])
        for _, i, piece in sorted(pieces, reverse=True):
            rank(piece.replace(MARKER, " ").encode("utf-8"), i)
        encoding = tiktoken.Encoding(
            "stage2-sentencepiece-bpe", pat_str=SEGMENT_PATTERN, mergeable_ranks=ranks, special_tokens={cls.SEPARATOR: len(ids)}
        )
        core = getattr(encoding, "_core_bpe", None)
        if not all(hasattr(core, name) for name in ("encode_ordinary", "encode_to_tiktoken_buffer")):
            return None  # a tiktoken whose Rust core differs from the one this was written against (0.9 to 0.14)
        return cls(encoding, np.array(ids, dtype=np.int32), expansions)

    def encode(self, texts: Sequence[str], num_threads: Optional[int] = None) -> List[List[int]]:
        """Each text's SentencePiece ids."""
        ranks = self._joined_ranks(texts, num_threads)
        if ranks is None:
            return self._one_by_one(texts, num_threads)
        ids = self._expanded(np.append(self.ids, np.int32(-2))[ranks], ranks)
        ends = np.flatnonzero(ids == -2).tolist()
        flat = ids.tolist()
        return [flat[start + 1 : end] for start, end in zip([-1] + ends, ends)]

    def encode_stream(self, texts: Sequence[str], num_threads: Optional[int], bos: Optional[int], eos: Optional[int], dtype: np.dtype) -> np.ndarray:
        """The texts' ids as one stream, [BOS] doc [EOS] for each: what `separated` makes of `encode`."""
        ranks = self._joined_ranks(texts, num_threads)
        if ranks is None:
            return with_separators(self._one_by_one(texts, num_threads), bos, eos, dtype)
        usual = bos is None and eos is not None  # each separator becomes the EOS
        ids = self._expanded(np.append(self.ids, np.int32(eos if usual else -2))[ranks], ranks)
        if usual:
            return ids.astype(dtype, copy=False)
        ends = np.flatnonzero(ids == -2)
        return separated(np.delete(ids, ends), np.diff(ends, prepend=-1) - 1, bos, eos, dtype)

    def _joined_ranks(self, texts: Sequence[str], num_threads: Optional[int]) -> Optional[np.ndarray]:
        """Every text's ranks, each followed by the separator's; None if a text holds the SEPARATOR."""
        if not texts:
            return np.empty(0, np.uint32)
        allowed = {self.SEPARATOR}

        def ranks(chunk: Sequence[str]) -> np.ndarray:
            return np.frombuffer(self._core.encode_to_tiktoken_buffer(self.SEPARATOR.join(chunk) + self.SEPARATOR, allowed), np.uint32)

        out = np.concatenate(_per_thread(ranks, texts, num_threads))
        return out if np.count_nonzero(out == self.separator) == len(texts) else None

    def _ids(self, ranks: List[int]) -> List[int]:
        return self._expanded(self.ids[ranks], ranks).tolist() if ranks else []

    def _expanded(self, ids: np.ndarray, ranks: Any) -> np.ndarray:
        """Character prefixes that no character completed (-1) -> their byte pieces. Rare: a character
        outside the vocabulary that shares its first bytes with one inside."""
        where = np.flatnonzero(ids == -1)
        if not len(where):
            return ids
        pieces, start = [], 0
        for at in where.tolist():
            pieces += [ids[start:at], np.array(self.expansions[int(ranks[at])], dtype=ids.dtype)]
            start = at + 1
        return np.concatenate(pieces + [ids[start:]])

    def _one_by_one(self, texts: Sequence[str], num_threads: Optional[int]) -> List[List[int]]:
        """One tiktoken call per text: for a batch where a text holds the SEPARATOR."""
        slices = _per_thread(lambda chunk: [self._core.encode_ordinary(t) for t in chunk], texts, num_threads)
        return [self._ids(ranks) for part in slices for ranks in part]


def _per_thread(fn: Any, texts: Sequence[str], num_threads: Optional[int]) -> List[Any]:
    """`fn` of each of up to `num_threads` consecutive slices of the texts, on that many threads
    (tiktoken lets go of the GIL while it encodes)."""
    threads = min(num_threads or 1, len(texts))
    if threads <= 1:
        return [fn(texts)]
    step = -(-len(texts) // threads)
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, [texts[i : i + step] for i in range(0, len(texts), step)]))


_FAST: "weakref.WeakKeyDictionary[Any, Optional[FastBPE]]" = weakref.WeakKeyDictionary()


def fast_bpe(sp: Any) -> Optional[FastBPE]:
    """`sp`'s FastBPE, built once per processor; None for a model it cannot encode exactly."""
    try:
        return _FAST[sp]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: build every time
        return FastBPE.build(sp)
    fast = _FAST[sp] = FastBPE.build(sp)
    return fast


def marker_ids(sp: Any) -> Optional[List[int]]:
    """The ids of the byte pieces that spell "▁", or None when the model has no byte fallback."""
    ids = [sp.piece_to_id(p) for p in MARKER_BYTE_PIECES]
    return ids if all(sp.is_byte(i) for i in ids) else None


def encode(sp: Any, texts: List[str], num_threads: Optional[int] = None) -> List[List[int]]:
    """`sp.encode(texts)`, except that a literal "▁" becomes its byte pieces (one batch call either way)."""
    fast = fast_bpe(sp)
    if fast is not None:
        return fast.encode(texts, num_threads)
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
    fast = fast_bpe(sp)  # encodes a literal "▁" as its byte pieces itself
    it = iter(texts)
    while True:
        batch = list(itertools.islice(it, batch_size))
        if not batch:
            return
        if fast is None and any(MARKER in t for t in batch):
            if spell is False:
                spell = marker_ids(sp)
            if spell is not None:
                yield with_separators(encode(sp, batch, num_threads), bos, eos, dtype)
                continue
        yield encode_batch(sp, batch, num_threads, bos, eos, dtype)


def with_separators(ids: Sequence[Sequence[int]], bos: Optional[int], eos: Optional[int], dtype: np.dtype) -> np.ndarray:
    """Encoded documents -> one flat stream: [BOS] doc [EOS] for every document, vectorised."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return separated(flat, lengths, bos, eos, dtype)


def separated(flat: np.ndarray, lengths: np.ndarray, bos: Optional[int], eos: Optional[int], dtype: np.dtype) -> np.ndarray:
    """Documents' ids end to end (`lengths` each) -> the stream with [BOS] doc [EOS] for every document."""
    n_sep = int(bos is not None) + int(eos is not None)
    if n_sep == 0:
        return flat.astype(dtype, copy=False)
    spans = lengths + n_sep
    ends = np.cumsum(spans)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    is_token = np.ones(len(out), dtype=bool)
    if eos is not None:
        is_token[ends - 1] = False
        out[ends - 1] = eos
    if bos is not None:
        is_token[ends - spans] = False
        out[ends - spans] = bos
    out[is_token] = flat
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
    fast = fast_bpe(sp)
    if fast is not None:
        return fast.encode_stream(batch, num_threads, bos, eos, dtype)
    if bos in (None, sp.bos_id()) and eos in (None, sp.eos_id()):
        flat = _encode_flat(sp, batch, num_threads, bos is not None, eos is not None)  # separators added in C++
        if flat is not None:
            return flat.astype(dtype, copy=False)
    return with_separators(sp.encode(batch, num_threads=num_threads), bos, eos, dtype)
