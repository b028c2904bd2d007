"""The hashes dedup compares (pure functions, no I/O).

Exact: xxh64 of the normalised text (NFKC, case-folded, whitespace collapsed).
Near: every window of k consecutive words is hashed (a polynomial rolling hash over per-word xxh3
hashes, vectorised in numpy); a text's distinct window hashes are what near dedup compares.
"""

from __future__ import annotations

import unicodedata
from itertools import chain
from typing import List, Sequence, Tuple

import numpy as np
import xxhash

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


