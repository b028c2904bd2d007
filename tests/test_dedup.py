"""Exact and near dedup cores: normalisation, window hashes, the sorted-array hash set, decisions."""

from __future__ import annotations

import numpy as np

from conftest import sample_records
from stage2.dedup import (
    HashSet,
    NearDeduper,
    batch_window_hashes,
    exact_key,
    near_duplicate_flags,
    normalise,
    window_hashes,
)


def test_normalise_nfkc_casefold_whitespace():
    assert normalise("\uff28\uff45llo  \t WORLD\n\n ﬁne ") == "hello world fine"
    assert exact_key("Hello   World") == exact_key("hello world\n")
    assert exact_key("hello world") != exact_key("hello there world")


def test_normalise_whitespace_is_regex_whitespace():
    """normalise splits on str.split()'s whitespace: the same code points as the regex \\s it replaced."""
    import re
    import sys

    spaces = "".join(chr(i) for i in range(sys.maxunicode + 1) if re.match(r"\s", chr(i)))
    assert all(c.isspace() for c in spaces)
    assert sum(chr(i).isspace() for i in range(sys.maxunicode + 1)) == len(spaces)
    text = f"{spaces}a{spaces}b c{spaces}"
    assert normalise(text) == re.sub(r"\s+", " ", text).strip() == "a b c"


def test_window_hashes_shapes():
    assert len(window_hashes("", 5)) == 0
    assert len(window_hashes("... !!! ---", 5)) == 0
    assert len(window_hashes("only three words", 5)) == 1  # shorter than k: one window over all words
    text = " ".join(f"w{i}" for i in range(40))
    h = window_hashes(text, 5)
    assert len(h) == 40 - 5 + 1 and h.dtype == np.uint64
    assert np.all(h[:-1] < h[1:])  # sorted, distinct
    # Case and punctuation do not matter; word order does.
    assert np.array_equal(window_hashes("The cat, sat on (the) MAT.", 3), window_hashes("the cat sat on the mat", 3))
    assert not np.array_equal(window_hashes("a b c d", 4), window_hashes("d c b a", 4))
    # A repeated window counts once.
    assert len(window_hashes("x y x y x y x y", 2)) == 2


def test_hash_set_matches_python_set():
    rng = np.random.default_rng(1)
    universe = rng.integers(0, 2**63, size=5000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    hs, ref = HashSet(), set()
    for start in range(0, 4000, 37):
        chunk = np.unique(universe[start : start + 50])
        hs.add(chunk)
        ref.update(int(x) for x in chunk)
    probe = universe
    expected = np.array([int(x) in ref for x in probe])
    assert np.array_equal(hs.contains(probe), expected)
    assert len(hs) == len(ref) and hs.nbytes == 8 * len(ref)
    assert len(hs.levels) <= 2 * int(np.log2(len(ref))) + 2  # LSM: logarithmically many levels


def test_hash_set_add_one_first_occurrence_wins(monkeypatch):
    monkeypatch.setattr(HashSet, "BUFFER", 8)  # cross the buffer -> arrays flush many times
    hs = HashSet()
    values = [int(v) for v in np.random.default_rng(2).integers(0, 2**63, size=100)]
    assert all(hs.add_one(v) for v in values)
    assert not any(hs.add_one(v) for v in values)
    assert hs.contains(np.array(values, dtype=np.uint64)).all()
    assert len(hs) == 100


def test_near_duplicates_of_real_text():
    docs = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 60) if len(r["text"].split()) > 120][:4]
    a, b, c, d = docs
    words = a.split()
    edited = " ".join(words[:50] + ["completely", "different", "words"] + words[52:]) + " Thanks in advance!"
    flags = near_duplicate_flags([a, b, edited, c, a[: len(a) // 3], d], k=13, threshold=0.5)
    assert flags == [False, False, True, False, True, False]


def test_only_kept_documents_are_remembered():
    dedup = NearDeduper(threshold=0.5)
    first = window_hashes(" ".join(f"a{i}" for i in range(100)), 5)
    assert not dedup.is_duplicate(first)
    size = len(dedup.seen)
    # Mostly `first` plus new windows: a duplicate, and its new windows are not added.
    second = window_hashes(" ".join(f"a{i}" for i in range(80)) + " " + " ".join(f"b{i}" for i in range(30)), 5)
    assert dedup.is_duplicate(second)
    assert len(dedup.seen) == size
    assert not dedup.is_duplicate(window_hashes(" ".join(f"b{i}" for i in range(30)), 5))


def _reference_windows(text: str, k: int) -> set:
    """Pure-Python window hashes: the definition, independent of the vectorised code."""
    import xxhash

    from stage2.dedup import _P, words

    m = (1 << 64) - 1

    def mix(h: int) -> int:
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & m
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & m
        return h ^ (h >> 31)

    w = [xxhash.xxh3_64_intdigest(t) for t in words(text)]
    span = min(k, len(w))
    return {mix(sum(w[i + j] * pow(_P, j, 1 << 64) for j in range(span)) & m) for i in range(len(w) - span + 1)} if w else set()


def test_batch_window_hashes_match_the_definition():
    texts = [r["text"] for r in sample_records("noisy_tldr.jsonl.gz", 30)]
    texts[3:3] = ["two words"]  # shorter than k, amid longer texts
    texts += ["", "Ünïcödé wörds, 中文 too"]
    hashes, offsets = batch_window_hashes(texts, 7)
    assert len(offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        mine = hashes[offsets[i] : offsets[i + 1]]
        assert len(np.unique(mine)) == len(mine)  # distinct
        assert {int(x) for x in mine} == _reference_windows(text, 7)
        assert np.array_equal(np.sort(mine), window_hashes(text, 7))  # windows never span two texts


def test_batch_decisions_equal_sequential_ones():
    texts = [r["text"] for r in sample_records("noisy_neardup.jsonl.gz", 300)]
    eligible = np.arange(len(texts)) % 7 != 3  # e.g. dropped for language: neither judged nor remembered
    sequential = NearDeduper(0.5)
    expected = [bool(e) and sequential.is_duplicate(window_hashes(t, 8)) for t, e in zip(texts, eligible)]
    batched = NearDeduper(0.5)
    flags = []
    for start in range(0, len(texts), 64):  # several batches: state carried between them
        h, off = batch_window_hashes(texts[start : start + 64], 8)
        flags.extend(batched.decide(h, off, eligible[start : start + 64]).tolist())
    assert flags == expected and sum(flags) > 10
    assert len(batched.seen) == len(sequential.seen)
