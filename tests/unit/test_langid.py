"""`langdetect_fast` (stage2/lid/langdetect_fast.py) against plain langdetect (seed 0) on real multilingual text."""

from __future__ import annotations

import sys
from typing import List

import numpy as np
import pytest

from stage2.lid import langdetect_fast as langid_fast
from stage2.errors import Stage2Error
from oracles import identify
from stage2.lid.backends import check_languages, UNKNOWN, get_backend, language_text, rank_all
from stage2.config import validate
from helpers import sample_records

MAX_CHARS = 2000


def _sample_texts(per_file: int) -> List[str]:
    """Documents >= 200 chars from the labelled multilingual samples, spread over their languages."""
    texts = []
    for name in ("noisy_fortunes.jsonl.gz", "noisy_tldr.jsonl.gz"):
        docs = [d for d in sample_records(name, 10_000) if isinstance(d.get("text"), str) and len(d["text"]) >= 200]
        texts += [d["text"] for d in docs[:: max(1, len(docs) // per_file)][:per_file]]
    return texts


@pytest.fixture(scope="module")
def texts() -> List[str]:
    return [language_text(t, MAX_CHARS) for t in _sample_texts(120)]


# Texts that exercise each cleaning rule: capitalised words (NGram.capitalword), URLs and e-mail
# addresses, Vietnamese combining marks, Latin letters inside mostly non-Latin text, Romanian
# comma-below letters, repeated spaces, punctuation only, a lone surrogate, astral code points.
EDGE_CASES = [
    "NASA and the ESA launched IBM's PowerPC. Then NATO met UNESCO in New York City today.",
    "see https://example.com/path?q=1 or write to someone@example.org for the details please",
    "Tie\u0301ng Vie\u0323t co\u0301 nhie\u0302\u0300u da\u0302\u0301u thanh kha\u0301c nhau la\u0301m",
    "東京は日本の首都です。Tokyo is the capital. 日本語のテキストにLatinの文字が混ざっている。",
    "Știința și țara noastră sunt frumoase, spuse el în  mijlocul    mulțimii.",
    "!!! ??? ... 123 456 ---",
    "a\ud800b caf\u00e9 \U0001d400\U0001d401 abc",
    "Ελληνικά κείμενα και русский текст и English words MIXED together",
    "",
]


def test_ngrams_are_langdetects(texts):
    from langdetect import detector_factory

    get_backend("langdetect")  # seeds and loads langdetect's own factory
    words = langid_fast.profiles().words
    for text in texts + EDGE_CASES:
        detector = detector_factory._factory.create()
        detector.append(text)
        detector.cleaning_text()
        assert [words[r] for r in langid_fast.extract(text)] == detector._extract_ngrams(), text[:60]


# langdetect normalises by Python's `sum`, which adds left to right before 3.12 and compensates
# from 3.12 on: langdetect_fast adds left to right, so it is langdetect bit for bit up to 3.11.
EXACT = sys.version_info < (3, 12)


def _assert_same(got, want, text):
    if EXACT:
        assert got == want, text[:60]
    else:
        assert [lang for lang, _ in got] == [lang for lang, _ in want], text[:60]
        assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-12), text[:60]


@pytest.mark.slow  # over half a second
def test_answers_are_langdetects(texts):
    """The same ranked lists as langdetect, bit for bit: a batch, a small batch and one text alone."""
    every = texts + EDGE_CASES
    assert len(every) > 200
    batch = langid_fast.detect_batch(every)
    small = langid_fast.detect_batch(every[:3]) + langid_fast.detect_batch(EDGE_CASES[:4])
    for text, got, alone in zip(every, batch, map(langid_fast.detect, every)):
        _assert_same(got, get_backend("langdetect")(text), text)
        _assert_same(alone, got, text)
    assert small == batch[:3] + langid_fast.detect_batch(EDGE_CASES)[:4]
    ref_keep = [identify(t, get_backend("langdetect"), ["en"], MAX_CHARS).target_score >= 0.85 for t in every]
    nb_keep = [identify(t, get_backend("langdetect_fast"), ["en"], MAX_CHARS).target_score >= 0.85 for t in every]
    assert nb_keep == ref_keep


@pytest.mark.parametrize(
    "settings",
    [
        {"FIRST_WORDS": 8, "MORE_WORDS": 24},  # every document decodes more of the stream, many times
        {"TAIL_DOCS": 0},  # one group of 5 draws per step, to the last document
        {"TAIL_DOCS": 10**6, "MAX_GROUPS": 7},  # 7 groups per step from the first: stops inside a step
    ],
)
def test_answers_do_not_depend_on_how_the_work_is_cut(texts, monkeypatch, settings):
    subset = texts[::4] + EDGE_CASES
    want = langid_fast.detect_batch(subset)
    for name, value in settings.items():
        monkeypatch.setattr(langid_fast, name, value)
    assert langid_fast.detect_batch(subset) == want
    assert [langid_fast.detect(t) for t in subset[:30]] == want[:30]


@pytest.mark.parametrize("n_cols", [1, 2, 7])
def test_column_sums_add_left_to_right(n_cols):
    """As Python's sum of a list (3.11): numpy's own 1-D sum is pairwise and rounds differently."""
    values = np.random.default_rng(0).random((55, n_cols)) ** 12
    assert langid_fast._column_sums(values).tolist() == [sum(values[:, j].tolist()) for j in range(n_cols)]


def test_extract_batch_is_extract_per_text(texts):
    every = texts[:40] + EDGE_CASES
    rows, counts = langid_fast.extract_batch(every)
    assert counts.tolist() == [len(langid_fast.extract(t)) for t in every]
    assert rows.tolist() == [r for t in every for r in langid_fast.extract(t).tolist()]


def test_profile_file_names_are_the_profiles_languages():
    from stage2.lid import langdetect_languages

    assert langdetect_languages() == tuple(sorted(langid_fast.profiles().langs))


def test_upper_case_table_is_str_isupper_everywhere():
    # profiles() asks str.isupper below UPPER_LIMIT only: true while no higher code point is upper case.
    upper = langid_fast.profiles().upper
    assert not any(chr(cp).isupper() for cp in range(langid_fast.UPPER_LIMIT, sys.maxunicode + 1))
    assert not upper[langid_fast.UPPER_LIMIT :].any()
    sample = range(0, langid_fast.UPPER_LIMIT, 7)
    assert upper[list(sample)].tolist() == [chr(cp).isupper() for cp in sample]


def test_hash_table_finds_every_profile_ngram():
    prof = langid_fast.profiles()
    keys = langid_fast._keys(prof.words)
    assert (langid_fast._lookup(prof, keys) == np.arange(len(keys))).all()
    absent = langid_fast._keys(["qqq", "\u4e00x\u0416", "q\u0416", "\x01"])  # no profile has these
    assert (langid_fast._lookup(prof, absent) == -1).all()


def test_labels_are_recognised(texts):
    """Not only agreement: the backend really identifies languages (German fortunes read as German)."""
    docs = [d for d in sample_records("noisy_fortunes.jsonl.gz", 10_000) if d["lang"] in ("de", "ru", "es")]
    docs = [d for d in docs if len(d["text"]) >= 200][:30]
    ranked = rank_all([language_text(d["text"], MAX_CHARS) for d in docs], "langdetect_fast")  # what the stage calls
    right = sum(r[0][0] == d["lang"] for r, d in zip(ranked, docs))
    assert right / len(docs) >= 0.8


def test_no_features_is_unknown():
    verdict = identify("123 456 !!! --- ...", get_backend("langdetect_fast"), ["en"], MAX_CHARS)
    assert verdict == identify("123 456 !!! --- ...", get_backend("langdetect"), ["en"], MAX_CHARS)
    assert verdict.language == UNKNOWN and verdict.target_score == 0.0


@pytest.mark.parametrize("backend", ["langdetect", "langdetect_fast"])
def test_unknown_language_code_is_a_clear_error(backend):
    with pytest.raises(Stage2Error, match=r"'zh'.*zh-cn"):
        check_languages(backend, ["en", "zh"])
    check_languages(backend, ["de", "zh-cn"])  # codes langdetect reports pass


def test_backend_is_a_config_choice():
    cfg = validate({"filter": {"lang_backend": "langdetect_fast"}})
    assert cfg.filter.lang_backend.value == "langdetect_fast"


@pytest.mark.slow  # over half a second
def test_profiles_from_the_cache_are_the_built_ones(tmp_path, monkeypatch):
    """profiles() builds the arrays once into the cache folder, then memory-maps them; a damaged cache is
    built again. Either way the arrays are build_profiles()' exactly."""
    import numpy as np

    monkeypatch.setenv("STAGE2_CACHE_DIR", str(tmp_path))
    built = langid_fast.build_profiles()

    def same(prof):
        assert prof.langs == built.langs and prof.words == built.words
        for name in langid_fast._ARRAYS:
            assert np.array_equal(getattr(prof, name), getattr(built, name)) and getattr(prof, name).dtype == getattr(built, name).dtype

    langid_fast.profiles.cache_clear()
    try:
        same(langid_fast.profiles())  # built, and saved
        folder = langid_fast.cache_folder()
        assert folder.parent == tmp_path and sorted(p.name for p in folder.iterdir()) == sorted([*(f"{n}.npy" for n in langid_fast._ARRAYS), "profiles.json"])
        langid_fast.profiles.cache_clear()
        cached = langid_fast.profiles()
        assert isinstance(cached.prob.base, np.memmap) and not cached.prob.flags.writeable
        same(cached)
        (folder / "prob.npy").write_bytes((folder / "prob.npy").read_bytes()[:1000])  # cut short
        langid_fast.profiles.cache_clear()
        same(langid_fast.profiles())
        langid_fast.profiles.cache_clear()
        assert isinstance(langid_fast.profiles().prob.base, np.memmap)  # saved again, whole
    finally:
        langid_fast.profiles.cache_clear()
