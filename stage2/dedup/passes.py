"""Spill, resolve by hash range, look up by position range: dedup without one process holding every hash.

Spill files are `.npy` arrays of shape (n, 2), uint64 [hash, position], sorted by hash, one per
partition and kind ("exact": one pair per document, "near": one per distinct window). Bucket b of B
covers hashes [b * 2^64 / B, (b + 1) * 2^64 / B): a resolve task memory-maps every spill file and
reads only that slice (two binary searches a file). It writes, sorted by position, the positions of
exact duplicates and (position, windows seen earlier) of near-duplicate counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from stage2.io.files import atomic_path, write_array

# Resolve-task memory per (hash, position) pair, with a margin: the pairs (16 bytes), the sort order
# (8), the sorted copies (16) and masks; resolve_bucket alone peaked at 40 bytes a pair above its
# start (4M and 8M random pairs, some repeated).
BYTES_PER_PAIR = 64
COMPONENT_SHIFT = 56  # stage2.io.plan: the component's index is the position's top 8 bits


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


def buckets_for(pairs: int, memory_mb: int) -> int:
    return max(1, -(-pairs * BYTES_PER_PAIR // (memory_mb << 20)))


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
