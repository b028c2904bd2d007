"""Exact and near deduplication cores: hashes in, verdicts out (no I/O, no config objects).

Exact: xxh64 of the normalised text (NFKC, case-folded, whitespace collapsed).
Near: every window of k consecutive words is hashed (a polynomial rolling hash over per-word xxh3
hashes, vectorised in numpy); a document is a near duplicate when at least `threshold` of its
distinct windows were already seen in earlier kept documents. The "seen" state is a set of uint64
held as sorted numpy arrays (`HashSet`): 8 bytes per unique hash, no Python objects per entry.
"""

from __future__ import annotations

import unicodedata
from itertools import chain
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import xxhash

# Words for window hashing: runs of ASCII letters/digits/underscore and non-ASCII bytes, found with
# a C-level bytes.translate + split (3x faster than re.findall(r"\w+")). Punctuation and markup
# changes (a revised Markdown page, a re-rendered post) then do not hide an otherwise identical text.
_WORD_BYTES = bytes(c if (c >= 0x80 or chr(c).isalnum() or c == 0x5F) else 0x20 for c in range(256))
# The same, also lower-casing A-Z (ASCII texts need no other case folding).
_WORD_BYTES_LOWER = bytes(c + 0x20 if 0x41 <= c <= 0x5A else _WORD_BYTES[c] for c in range(256))

# Odd multiplier of the polynomial window hash (odd: invertible mod 2^64, so no bits are lost).
_P = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_P_U64 = np.uint64(_P)


def normalise(text: str) -> str:
    # split/join: the same as collapsing r"\s+" runs and stripping (the same whitespace set, checked
    # over every code point in tests/test_dedup.py), 3x cheaper than the regex.
    if text.isascii():  # NFKC leaves ASCII as it is, and folds its case as lower() does (a third cheaper)
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(text: str) -> int:
    return xxhash.xxh64_intdigest(normalise(text).encode("utf-8"))


def words(text: str) -> List[bytes]:
    return text.casefold().encode("utf-8").translate(_WORD_BYTES).split()


def _fast_words(text: str) -> List[bytes]:
    """`words(text)`, skipping casefold for ASCII text (2/3 of the benchmark's documents): there case
    folding is exactly A-Z -> a-z, which _WORD_BYTES_LOWER does in the same translate. Case-folded text
    holds no A-Z (checked over every code point in tests/test_dedup.py), so the table fits both paths."""
    folded = text.encode("ascii") if text.isascii() else text.casefold().encode("utf-8")
    return folded.translate(_WORD_BYTES_LOWER).split()


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial sum over all bits."""
    h = h ^ (h >> np.uint64(30))
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _powers(k: int) -> np.ndarray:
    return np.array([pow(_P, j, 1 << 64) for j in range(k)], dtype=np.uint64)


def _sort_order(h: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(order, h[order]) with h[order] sorted; equal values in any order.

    numpy's stable sort of 16-bit keys is a radix sort, several times faster here than argsort of uint64
    (20k hashes: ~0.3 ms vs 0.8 ms). Two stable passes order by the top 32 bits. That is the full order
    unless distinct hashes share their top 32 bits (20k random hashes: one batch in 20); then only the
    runs of equal top halves, a handful of hashes, are sorted in full.
    """
    order = np.argsort((h >> np.uint64(32)).astype(np.uint16), kind="stable")
    order = order[np.argsort((h[order] >> np.uint64(48)).astype(np.uint16), kind="stable")]
    ordered = h[order]
    if np.any(ordered[1:] < ordered[:-1]):
        top = ordered >> np.uint64(32)
        same = top[1:] == top[:-1]
        in_run = np.zeros(len(h), dtype=bool)
        in_run[1:] = same
        in_run[:-1] |= same
        # The runs are already in order of their top halves, so sorting all their members by value at once
        # leaves each in its own run.
        at = np.flatnonzero(in_run)
        by_value = np.argsort(ordered[at], kind="stable")
        order[at] = order[at][by_value]
        ordered[at] = ordered[at][by_value]
    return order, ordered


def batch_window_hashes(texts: Sequence[str], k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Window hashes of many texts at once: (hashes, offsets), text i's distinct hashes (in window
    order, not sorted) being hashes[offsets[i]:offsets[i + 1]].

    H = mix(sum_j w[i+j] * P^j) mod 2^64 over per-word xxh3 hashes w, computed over all texts'
    words concatenated (k vectorised passes for the whole batch, not per document), keeping windows
    that lie inside one text. A text shorter than k words has one window over all its words; a text
    without words has none.
    """
    tokens = [_fast_words(t) for t in texts]
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    total = int(lens.sum())
    w = np.fromiter(map(xxhash.xxh3_64_intdigest, chain.from_iterable(tokens)), dtype=np.uint64, count=total)
    ends = np.cumsum(lens)
    powers = _powers(k)
    hashes: List[np.ndarray] = []
    docs: List[np.ndarray] = []
    with np.errstate(over="ignore"):
        n = total - k + 1
        if n > 0:
            # Horner: w[i] + P*(w[i+1] + P*(... + P*w[i+k-1])), the same sum mod 2^64 in place (no
            # temporary array per term).
            acc = w[k - 1 : k - 1 + n].copy()
            for j in range(k - 2, -1, -1):
                acc *= _P_U64
                acc += w[j : j + n]
            doc_of = np.repeat(np.arange(len(texts)), lens)[:n]
            inside = np.arange(k, n + k) <= ends[doc_of]
            hashes.append(acc[inside])
            docs.append(doc_of[inside])
        for d in np.nonzero((lens > 0) & (lens < k))[0]:
            span = w[ends[d] - lens[d] : ends[d]]
            hashes.append(np.array([(span * powers[: len(span)]).sum(dtype=np.uint64)], dtype=np.uint64))
            docs.append(np.array([d]))
        h = _mix(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint64)
    doc = np.concatenate(docs) if docs else np.empty(0, dtype=np.int64)
    h, doc = _drop_repeats(h, doc)
    if len(doc) > 1 and np.any(doc[1:] < doc[:-1]):
        # Windows of texts shorter than k were appended last: put every text's hashes together.
        by_text = np.argsort(doc, kind="stable")
        h, doc = h[by_text], doc[by_text]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(doc, minlength=len(texts)))
    return h, offsets


def _drop_repeats(h: np.ndarray, doc: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every (hash, text) pair's first window only, in window order.

    Only hashes that occur twice or more can repeat (about 1% of windows): a sort finds them, and a
    lexsort of those alone keeps each pair's first (a stable argsort of all was 1.3x slower than a plain
    argsort, itself 3x slower than `_sort_order`).
    """
    order, h_sorted = _sort_order(h)
    equal = h_sorted[1:] == h_sorted[:-1]
    if not equal.any():
        return h, doc
    in_run = np.zeros(len(h), dtype=bool)
    in_run[1:] = equal
    in_run[:-1] |= equal
    candidates = order[in_run]
    candidates = candidates[np.lexsort((candidates, doc[candidates], h[candidates]))]  # by hash, text, window
    first = np.ones(len(h), dtype=bool)
    first[candidates[1:]] = (h[candidates[1:]] != h[candidates[:-1]]) | (doc[candidates[1:]] != doc[candidates[:-1]])
    return h[first], doc[first]


def window_hashes(text: str, k: int) -> np.ndarray:
    """Sorted distinct uint64 hashes of every window of k consecutive words of one text."""
    return np.sort(batch_window_hashes([text], k)[0])


# Sorted arrays at least this long are searched in blocks (`_in_sorted`); on shorter ones (in cache) a
# plain searchsorted is as fast.
_BLOCKED_MIN = 1 << 17
_BLOCK = 256


def _in_sorted(level: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which keys occur in the sorted array `level` (keys in any order; sorted keys are faster)."""
    if len(level) < _BLOCKED_MIN:
        # mode="clip": a key above the level's last compares with that last (and differs).
        return level.take(np.searchsorted(level, keys), mode="clip") == keys
    # searchsorted runs one key's binary search after another, each step waiting on a cache miss in a
    # large level. Instead a searchsorted over every _BLOCK-th element (32 KB per million hashes: in
    # cache) finds each key's block, then log2(_BLOCK) halving steps run over all keys at once, so that
    # their loads overlap (1.1M hashes, 20k sorted keys: 0.95 -> 0.69 ms).
    pos = np.searchsorted(level[_BLOCK - 1 :: _BLOCK], keys) * _BLOCK  # the first block whose last >= key
    step = _BLOCK // 2
    while step:
        # Branch-free lower bound: the answer lies in [pos, pos + 2 * step). Past the level's end (the
        # last, partial block) "clip" reads its last element, as if the level were padded with it.
        pos += (level.take(pos + (step - 1), mode="clip") < keys) * step
        step //= 2
    return level.take(pos, mode="clip") == keys


class HashSet:
    """A growing set of uint64 as sorted arrays merged LSM style.

    Each `add` becomes a new sorted level; the two newest levels merge while the newer is at least
    1/MERGE_RATIO the size of the older, so there are O(log n) levels and each hash is re-merged
    O(log n) times. Membership is one search per level (`_in_sorted`).
    """

    # 8 rather than 2 or 4: fewer levels to search for every batch, for a little more merging (near
    # dedup decisions over 1.2M windows in 61 batches, ratio 2 -> 4: 0.23 -> 0.19 s; 4 -> 8 with the
    # blocked search: 144 -> 119 ms, 16: 123 ms).
    MERGE_RATIO = 8

    # Single hashes (exact dedup) first go to a small Python set: a numpy merge per document would
    # cost more than the hash itself. It is flushed into the arrays when full.
    BUFFER = 1 << 14

    def __init__(self) -> None:
        self.levels: List[np.ndarray] = []
        self._buffer: set = set()

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels) + len(self._buffer)

    @property
    def nbytes(self) -> int:
        return sum(level.nbytes for level in self.levels) + 8 * len(self._buffer)

    def _flush(self) -> None:
        if self._buffer:
            # add_one checked every buffered hash against the arrays already.
            buffered = np.array(sorted(self._buffer), dtype=np.uint64)
            self._buffer = set()
            self._push(buffered)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        self._flush()
        found = np.zeros(len(hashes), dtype=bool)
        if len(hashes) == 0:
            return found
        for level in self.levels:
            found |= _in_sorted(level, hashes)
        return found

    def add(self, sorted_unique: np.ndarray, found: Optional[np.ndarray] = None) -> None:
        """Add sorted distinct hashes (as `window_hashes` returns them); `found`: their `contains` result if known."""
        if found is None:
            found = self.contains(sorted_unique)
        self._push(sorted_unique[~found])

    def _push(self, new: np.ndarray) -> None:
        # Only hashes not in the set yet: the state holds each hash once (8 bytes per unique hash).
        if len(new) == 0:
            return
        self.levels.append(new)
        while len(self.levels) >= 2 and self.MERGE_RATIO * len(self.levels[-1]) >= len(self.levels[-2]):
            newer = self.levels.pop()
            older = self.levels.pop()
            # Disjoint sorted runs (only new hashes are pushed): a stable sort (timsort) merges them in O(n).
            merged = np.concatenate([older, newer])
            merged.sort(kind="stable")
            self.levels.append(merged)

    def add_one(self, value: int) -> bool:
        """Add one hash; True when it was new (exact dedup: first occurrence wins)."""
        if value in self._buffer:
            return False
        probe = np.uint64(value)
        for level in self.levels:
            i = int(np.searchsorted(level, probe))
            if i < len(level) and level[i] == probe:
                return False
        self._buffer.add(value)
        if len(self._buffer) >= self.BUFFER:
            self._flush()
        return True


class NearDeduper:
    """Sequential near-duplicate decisions over documents given in canonical order."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.seen = HashSet()

    def is_duplicate(self, hashes: np.ndarray) -> bool:
        """True when `hashes` mostly occurred before; otherwise the document is kept and remembered."""
        if len(hashes) == 0:
            return False  # no words: nothing to compare (the length screen sees such documents first)
        found = self.seen.contains(hashes)
        if np.count_nonzero(found) >= self.threshold * len(hashes):
            return True
        self.seen.add(hashes, found)
        return False

    def decide(self, hashes: np.ndarray, offsets: np.ndarray, eligible: Optional[np.ndarray] = None) -> np.ndarray:
        """Near-duplicate flags of a batch of documents in canonical order (as `batch_window_hashes` returns
        them), the same as calling `is_duplicate` on each in turn; documents not `eligible` (already
        dropped) are skipped and not remembered.

        Membership in the state before the batch is one vectorised lookup; within the batch a flag per
        distinct hash says "seen in a kept document", so the sequential loop does a few small numpy
        operations per document.
        """
        n_docs = len(offsets) - 1
        flags = np.zeros(n_docs, dtype=bool)
        lens = np.diff(offsets)
        todo = lens > 0 if eligible is None else (lens > 0) & np.asarray(eligible, dtype=bool)
        if not todo.any():
            return flags
        if eligible is not None and not np.array_equal(todo, lens > 0):
            # Hashes of texts not eligible are never counted nor remembered, nor can they change a verdict
            # (only kept texts' hashes do): leave them out (after language ID about half of them).
            hashes = hashes[np.repeat(todo, lens)]
            lens = np.where(todo, lens, 0)
            offsets = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
        doc_of = np.repeat(np.arange(n_docs), lens)
        # Group ids of equal hashes via a sort (np.unique(return_inverse=True) hashes instead: 10x slower here).
        order, ordered = _sort_order(hashes)
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        # Look up sorted distinct hashes: numpy's searchsorted walks sorted keys far faster than random ones.
        distinct = ordered[first]
        group = np.empty(len(hashes), dtype=np.int64)
        group[order] = np.cumsum(first) - 1
        known = self.seen.contains(distinct)
        in_state = known[group]
        seen_count = np.bincount(doc_of[in_state], minlength=n_docs)  # few are found: cheaper than weights
        # Only a hash found in two or more texts of the batch couples their decisions (a text's hashes are
        # distinct): in sorted order, one equal to its predecessor, and that predecessor. A text without
        # such hashes is decided by the state before the batch alone, all such texts at once.
        repeat = np.flatnonzero(~first)
        coupled = np.zeros(n_docs, dtype=bool)
        coupled[doc_of[order[repeat]]] = True
        coupled[doc_of[order[repeat - 1]]] = True
        alone = todo & ~coupled
        flags[alone] = seen_count[alone] >= self.threshold * lens[alone]
        # Groups of kept texts; during the loop only shared groups matter (no other text holds the rest).
        kept_group = np.zeros(len(distinct), dtype=bool)
        for i in np.nonzero(todo & coupled)[0]:  # sequential, in canonical order
            lo, hi = offsets[i], offsets[i + 1]
            g = group[lo:hi]
            if np.count_nonzero(in_state[lo:hi] | kept_group[g]) >= self.threshold * (hi - lo):
                flags[i] = True
            else:
                kept_group[g] = True
        # Remember the hashes of kept texts: all new ones but those only flagged texts hold.
        new = ~known
        dropped = np.nonzero(flags)[0]
        if len(dropped):
            g = np.concatenate([group[offsets[i] : offsets[i + 1]] for i in dropped])
            new[g[~kept_group[g]]] = False
        self.seen._push(distinct[new])
        return flags


def near_duplicate_flags(texts: Iterable[str], k: int, threshold: float) -> List[bool]:
    """Convenience for a plain list of texts, all kept unless a near duplicate."""
    dedup = NearDeduper(threshold)
    return [dedup.is_duplicate(window_hashes(t, k)) for t in texts]
