"""Exact and near dedup cores: normalisation, window hashes, the sorted-array hash set, decisions."""

from __future__ import annotations

import random
import unicodedata

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


def test_normalise_ascii_shortcut_is_nfkc_casefold():
    ascii_chars = "".join(map(chr, range(128)))
    rng = random.Random(7)
    texts = [ascii_chars, ascii_chars[::-1]] + ["".join(rng.choices(ascii_chars, k=200)) for _ in range(300)]
    for text in texts:
        assert text.isascii()
        assert normalise(text) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())


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


def test_fast_words_equal_casefold_words():
    """The ASCII path (encode, one translate that also lower-cases A-Z, no casefold) gives words() exactly."""
    from stage2.dedup import _fast_words, words

    texts = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 300) + sample_records("web_cc.jsonl.gz", 69)]
    # Many languages and scripts (the first records are English).
    texts += [r["text"] for name in ("noisy_tldr.jsonl.gz", "noisy_fortunes.jsonl.gz") for r in sample_records(name, 4000)[::10]]
    assert sum(t.isascii() for t in texts) > 300 and sum(not t.isascii() for t in texts) > 300  # both paths
    edge = [
        "", " \t\n\r\x0b\x0c", "... !!! ---", "".join(map(chr, range(128))), "ABC xyz_09 Q-R __A__",
        "\x00A\x7fB\x1fC", "MiXeD CaSe @#$ WORDS", "Straße ÀB Cd", "\u212a is the KELVIN sign", "İSTANBUL",
        "ﬁne ΣΑΣ ς", "中文 TOO", "ǅ ǈ Ǆ", "Ａｂｃ ＤＥＦ",
    ]
    for text in texts + edge:
        assert _fast_words(text) == words(text), text


def test_casefolded_text_has_no_ascii_capitals():
    """_fast_words applies its A-Z lower-casing table to case-folded text as well: a no-op only because no
    code point folds to A-Z."""
    import string
    import sys

    every = "".join(chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i < 0xE000)
    assert not set(every.casefold()) & set(string.ascii_uppercase)


def test_sort_order_sorts_uint64():
    """The radix passes order by the top 32 bits only; hashes sharing those must still come out sorted."""
    from stage2.dedup import _sort_order

    rng = np.random.default_rng(4)
    top = rng.integers(0, 4, size=5000, dtype=np.uint64) << np.uint64(32)
    cases = [
        np.empty(0, dtype=np.uint64),
        np.array([7], dtype=np.uint64),
        rng.integers(0, 2**64, size=20000, dtype=np.uint64),
        top | rng.integers(0, 2**32, size=5000, dtype=np.uint64),  # distinct hashes with shared top halves
        top | rng.integers(0, 3, size=5000, dtype=np.uint64),  # ... and many repeats
        np.repeat(rng.integers(0, 2**64, size=50, dtype=np.uint64), 40),
    ]
    for h in cases:
        order, ordered = _sort_order(h)
        assert np.array_equal(np.sort(order), np.arange(len(h)))  # a permutation
        assert np.array_equal(ordered, h[order]) and np.array_equal(ordered, np.sort(h))


def test_blocked_search_matches_isin():
    """Large levels are searched block-wise (a searchsorted over every _BLOCK-th hash, then halving steps):
    the same membership as np.isin, at block boundaries, the ends and past a last partial block too."""
    from stage2 import dedup

    rng = np.random.default_rng(6)
    for n in (dedup._BLOCKED_MIN, dedup._BLOCKED_MIN + 1, dedup._BLOCKED_MIN + dedup._BLOCK // 2 + 77):
        level = np.unique(rng.integers(1, 2**64 - 1, size=n + 10, dtype=np.uint64))[:n]
        assert len(level) == n
        bounds = np.concatenate([level[dedup._BLOCK - 1 :: dedup._BLOCK], level[[0, 1, -2, -1]]])
        one = np.uint64(1)
        keys = np.concatenate([
            level[::97], bounds, bounds + one, bounds - one,
            np.array([0, 2**64 - 1], dtype=np.uint64), rng.integers(0, 2**64, size=3000, dtype=np.uint64),
        ])
        for k in (keys, np.sort(keys)):
            assert np.array_equal(dedup._in_sorted(level, k), np.isin(k, level))


def test_batch_decisions_with_overlapping_texts():
    """Texts stitched from pieces of earlier ones: duplicates within a batch that share hashes with kept and
    with dropped texts; batches of any size give the sequential verdicts and the same remembered state."""
    rng = np.random.default_rng(7)
    base = [[f"w{j}" for j in rng.integers(0, 60, size=40)] for _ in range(30)]
    texts = []
    for _ in range(300):
        a, b = rng.integers(0, 30, size=2)
        cut = int(rng.integers(0, 41))
        texts.append(" ".join(base[a][:cut] + base[b][cut:]))
    eligible = rng.random(len(texts)) < 0.8
    sequential = NearDeduper(0.5)
    expected = [bool(e) and sequential.is_duplicate(window_hashes(t, 3)) for t, e in zip(texts, eligible)]
    assert 30 < sum(expected) < 270
    for size in (1, 7, 64, 300):
        batched = NearDeduper(0.5)
        flags = []
        for start in range(0, len(texts), size):
            h, off = batch_window_hashes(texts[start : start + size], 3)
            flags.extend(batched.decide(h, off, eligible[start : start + size]).tolist())
        assert flags == expected, size
        assert len(batched.seen) == len(sequential.seen)
