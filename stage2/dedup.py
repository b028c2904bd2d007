"""Exact and near dedup as partitioned, out-of-core passes.

The rule (it parallelises exactly): for every hash, the earliest canonical position at which it
occurs is its first occurrence. A document is an exact duplicate when an earlier document has its
text hash; a near duplicate when at least `dedup.threshold` of its distinct word windows first occur
in earlier documents. Only documents every step kept take part, each whatever its own verdict (a
near duplicate's windows still count for the documents after it), so a verdict depends on the hashes
and their positions alone: not on the order work finishes, the number of workers or buckets, or the
memory budget.

Two halves, in this order below:

  hashes   exact: xxh64 of the normalised text (NFKC, case-folded, whitespace collapsed); near: every
           window of k consecutive words (a polynomial rolling hash over per-word xxh3 hashes,
           vectorised in numpy). Pure functions, no I/O.
  passes   spill: each filter task writes its (hash, position) pairs sorted by hash, as `.npy` arrays
           of shape (n, 2), uint64 [hash, position], one per partition and kind ("exact": one pair per
           document, "near": one per distinct window); resolve: bucket b of B covers hashes
           [b * 2^64 / B, (b + 1) * 2^64 / B), and its task memory-maps every spill file, reads only
           that slice (two binary searches a file) and writes, sorted by position, the positions of
           exact duplicates and (position, windows seen earlier) of near-duplicate counts; lookup: a
           task reads its documents' results back by position range.
"""

from __future__ import annotations

import unicodedata
from itertools import chain
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import xxhash

from stage2.io.files import atomic_path, write_array


# The hashes.

# Words for window hashing: runs of ASCII letters/digits/underscore and non-ASCII bytes, found with
# a C-level bytes.translate + split (cheaper than re.findall(r"\w+")). Punctuation and markup
# changes (a revised Markdown page, a re-rendered post) then do not hide an otherwise identical text.
_WORD_BYTES = bytes(c if (c >= 0x80 or chr(c).isalnum() or c == 0x5F) else 0x20 for c in range(256))
# The same, also lower-casing A-Z (ASCII texts need no other case folding).
_WORD_BYTES_LOWER = bytes(c + 0x20 if 0x41 <= c <= 0x5A else _WORD_BYTES[c] for c in range(256))

# Odd multiplier of the polynomial window hash (odd: invertible mod 2^64, so no bits are lost).
_P = 0x9E3779B97F4A7C15
_P_U64 = np.uint64(_P)


def normalise(text: str) -> str:
    # split/join: the same as collapsing r"\s+" runs and stripping (the same whitespace set, checked
    # over every code point in tests/unit/test_dedup.py), cheaper than the regex.
    if text.isascii():  # NFKC leaves ASCII as it is, and folds its case as lower() does
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(text: str) -> int:
    return xxhash.xxh64_intdigest(normalise(text).encode("utf-8"))


def words(text: str) -> List[bytes]:
    return text.casefold().encode("utf-8").translate(_WORD_BYTES).split()


def _fast_words(text: str) -> List[bytes]:
    """`words(text)`, skipping casefold for ASCII text (2/3 of the benchmark's documents): there case
    folding is exactly A-Z -> a-z, which _WORD_BYTES_LOWER does in the same translate. Case-folded text
    holds no A-Z (checked over every code point in tests/unit/test_dedup.py), so the table fits both paths."""
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

    numpy's stable sort of 16-bit keys is a radix sort, faster than argsort of uint64. Two stable passes
    order by the top 32 bits. That is the full order unless distinct hashes share their top 32 bits
    (rare); then only the runs of equal top halves, a handful of hashes, are sorted in full.
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

    Only hashes that occur twice or more can repeat (few windows): a sort finds them, and a lexsort of
    those alone keeps each pair's first (cheaper than a stable argsort of all).
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


# The passes.

COMPONENT_SHIFT = 56  # stage2.io.sources: the component's index is the position's top 8 bits


def save_array(path: Path, array: np.ndarray) -> None:
    """A work file of the passes (atomic, not fsync'd: see stage2.io.files.atomic_write)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write_array(f, array, npy_header=True)


def spill(path: Path, hashes: np.ndarray, positions: np.ndarray) -> int:
    """Write (hash, position) pairs sorted by hash; returns the number of pairs. (Equal hashes may come
    in any order: resolving sorts the pairs it reads by position anyway, and a quicksort of one key is
    cheaper than a lexsort of two.)"""
    order = np.argsort(hashes)
    pairs = np.empty((len(hashes), 2), dtype=np.uint64)
    pairs[:, 0] = hashes[order]
    pairs[:, 1] = positions[order]
    save_array(path, pairs)
    return len(pairs)


def bucket_bounds(bucket: int, buckets: int) -> Tuple[int, int]:
    """[lo, hi) of hash values; hi = 2^64 for the last bucket."""
    span = (1 << 64) // buckets
    return bucket * span, (1 << 64) if bucket == buckets - 1 else (bucket + 1) * span


def _open(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # an array of no elements cannot be memory-mapped
        return np.load(path)


def _slice(path: str, lo: int, hi: int) -> np.ndarray:
    pairs = _open(path)
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    keys = pairs[:, 0]
    start = int(np.searchsorted(keys, np.uint64(lo))) if lo else 0
    stop = len(keys) if hi >= 1 << 64 else int(np.searchsorted(keys, np.uint64(hi)))
    return np.array(pairs[start:stop])  # a copy: the map is closed when `pairs` goes


def later_occurrences(files: Sequence[str], lo: int, hi: int, per_component: bool) -> np.ndarray:
    """Positions of the pairs in [lo, hi) whose hash occurred at an earlier position (one entry per pair).

    With `per_component`, only earlier positions of the same component count (dedup.scope=component).
    """
    parts = [_slice(path, lo, hi) for path in files]
    pairs = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)
    del parts
    if len(pairs) == 0:
        return np.empty(0, dtype=np.uint64)
    # A hash held once is its own first occurrence: only the runs of equal hashes (a few of the pairs)
    # need ordering by position, so one quicksort of one key does the bulk (cheaper than a lexsort of
    # all pairs by hash and position).
    order = np.argsort(pairs[:, 0])
    hashes, positions = pairs[order, 0], pairs[order, 1]
    del pairs, order
    equal = hashes[1:] == hashes[:-1]
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[1:] = equal
    repeated[:-1] |= equal
    hashes, positions = hashes[repeated], positions[repeated]
    order = np.lexsort((positions, hashes))
    hashes, positions = hashes[order], positions[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    if per_component:
        comp = positions >> np.uint64(COMPONENT_SHIFT)
        first[1:] |= comp[1:] != comp[:-1]
    return positions[~first]


def resolve_bucket(task: Dict[str, Any]) -> Dict[str, Any]:
    """One bucket of both kinds: exact-duplicate positions, near counts per position (a worker task)."""
    lo, hi = bucket_bounds(task["bucket"], task["buckets"])
    out: Dict[str, Any] = {"pairs": 0}
    for kind in ("exact", "near"):
        later = later_occurrences(task[f"{kind}_files"], lo, hi, task["per_component"])
        out["pairs"] += len(later)
        if kind == "exact":
            save_array(Path(task["exact_out"]), np.unique(later))  # sorted (each document has one text hash)
        else:
            positions, counts = np.unique(later, return_counts=True)
            save_array(Path(task["near_out"]), np.stack([positions, counts.astype(np.uint64)], axis=1) if len(positions) else np.empty((0, 2), dtype=np.uint64))
    return out


def lookup(exact_files: Sequence[str], near_files: Sequence[str], lo: int, hi: int) -> Tuple[np.ndarray, Dict[int, int]]:
    """For positions in [lo, hi): the sorted exact-duplicate positions and the near counts summed over buckets."""
    exact: List[np.ndarray] = []
    for path in exact_files:
        found = _open(path)
        exact.append(np.array(found[np.searchsorted(found, np.uint64(lo)) : np.searchsorted(found, np.uint64(hi))]))
    near: Dict[int, int] = {}
    for path in near_files:
        pairs = _open(path)
        if len(pairs) == 0:
            continue
        keys = pairs[:, 0]
        part = np.array(pairs[np.searchsorted(keys, np.uint64(lo)) : np.searchsorted(keys, np.uint64(hi))])
        for position, count in part.tolist():
            near[position] = near.get(position, 0) + count
    dups = np.concatenate(exact) if exact else np.empty(0, dtype=np.uint64)
    return np.sort(dups), near
