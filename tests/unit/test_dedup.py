"""Dedup: normalisation, window hashes, and the bucket passes against the rule applied one document at a time."""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest

from helpers import dedup_reference as reference, sample_records
from oracles import window_hashes
from stage2.dedup import batch_window_hashes, exact_key, normalise
from stage2.dedup import bucket_bounds, later_occurrences, lookup, resolve_bucket, spill


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


@pytest.mark.slow  # over half a second
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


@pytest.mark.slow  # over half a second
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


# ---- the bucket passes -------------------------------------------------------------------------


def passes(texts, k, threshold, tmp_path, chunk, buckets):
    """Spill per chunk of `chunk` documents, resolve in `buckets` hash ranges, look verdicts up per chunk."""
    exact_files, near_files = [], []
    for c in range(0, len(texts), chunk):
        part = texts[c : c + chunk]
        positions = np.arange(c, c + len(part), dtype=np.uint64)
        spill(tmp_path / f"e{c}.npy", np.array([exact_key(t) for t in part], dtype=np.uint64), positions)
        hashes, offsets = batch_window_hashes(part, k)
        spill(tmp_path / f"n{c}.npy", hashes, np.repeat(positions, np.diff(offsets)))
        exact_files.append(str(tmp_path / f"e{c}.npy"))
        near_files.append(str(tmp_path / f"n{c}.npy"))
    outs = []
    for b in range(buckets):
        task = {"bucket": b, "buckets": buckets, "per_component": True, "exact_files": exact_files, "near_files": near_files,
                "exact_out": str(tmp_path / f"x{buckets}-{b}.npy"), "near_out": str(tmp_path / f"y{buckets}-{b}.npy")}
        resolve_bucket(task)
        outs.append((task["exact_out"], task["near_out"]))
    out = []
    for c in range(0, len(texts), chunk):
        part = texts[c : c + chunk]
        dups, near = lookup([x for x, _ in outs], [y for _, y in outs], c, c + len(part))
        for i, text in enumerate(part):
            n = len(window_hashes(text, k))
            out.append("duplicate" if c + i in dups else "near_duplicate" if n and near.get(c + i, 0) >= threshold * n else "kept")
    return out


@pytest.mark.slow  # over half a second
def test_bucket_passes_follow_the_rule_for_any_chunking_and_bucket_count(tmp_path):
    records = sample_records("web_stackexchange.jsonl.gz", 80)
    rng = random.Random(3)
    texts = [r["text"] for r in records]
    for _ in range(40):  # copies, near copies (a few words changed), chains of near copies
        words = rng.choice(texts).split()
        for _ in range(rng.randint(0, 4)):
            words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma"])
        texts.append(" ".join(words) if rng.random() < 0.7 else "  ".join(words).upper())
    for k, threshold in ((13, 0.5), (5, 0.8), (3, 0.3)):
        want = reference(texts, k, threshold)
        assert want.count("duplicate") >= 5 and want.count("near_duplicate") >= 5  # the property is about real duplicates
        for chunk, buckets in ((7, 1), (50, 3), (200, 16)):
            assert passes(texts, k, threshold, tmp_path, chunk, buckets) == want, (k, threshold, chunk, buckets)


def test_later_occurrences_per_component_or_across_the_mixture(tmp_path):
    comp = lambda c, r: (c << 56) | r  # noqa: E731  (stage2.io.sources's position layout)
    hashes = np.array([5, 5, 5, 9], dtype=np.uint64)
    positions = np.array([comp(1, 0), comp(0, 7), comp(1, 3), comp(0, 2)], dtype=np.uint64)
    spill(tmp_path / "s.npy", hashes, positions)
    lo, hi = bucket_bounds(0, 1)
    within = sorted(later_occurrences([str(tmp_path / "s.npy")], lo, hi, per_component=True).tolist())
    across = sorted(later_occurrences([str(tmp_path / "s.npy")], lo, hi, per_component=False).tolist())
    assert within == [comp(1, 3)]  # hash 5 is first in component 0 at 7 and in component 1 at 0
    assert across == [comp(1, 0), comp(1, 3)]  # component 0 comes first in the mixture


def test_bucket_bounds_cover_every_hash_once():
    for buckets in (1, 2, 3, 7, 64):
        bounds = [bucket_bounds(b, buckets) for b in range(buckets)]
        assert bounds[0][0] == 0 and bounds[-1][1] == 1 << 64
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(buckets - 1))
