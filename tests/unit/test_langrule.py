"""The language rule on real text: checks in order, each one's part, and what the filter stage records."""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List

import datasets
import pyarrow.parquet as pq
import pytest

from helpers import SAMPLE, run_filter, sample_records
from stage2.lid import function_words
from stage2.lid.backends import language_text, rank_all, target_score
from stage2.lid.rule import FUNCTION_WORDS, LanguageRule, first_detection, judge
from stage2.main import compose_recipe


@pytest.fixture(scope="module")
def udhr() -> Dict[str, List[str]]:
    """UDHR articles of the embedded sample by language label (its own labels, not a detector's)."""
    ds = datasets.load_dataset("json", data_files=str(SAMPLE / "noisy_udhr.jsonl.zst"), split="train")
    out: Dict[str, List[str]] = {}
    for r in ds:
        if len(r["text"]) >= 200:
            out.setdefault(r["lang"], []).append(r["text"])
    return out


def default_rule(tmp_path) -> LanguageRule:
    return compose_recipe([], str(tmp_path)).filter.language_rule()


def test_function_word_share():
    english = sample_records("web_stackexchange.jsonl.gz", 20)
    assert all(function_words.share(r["text"], "en") > 0.1 for r in english)
    assert function_words.share("Ta dy chooilley ghooinney ruggit seyr as corrym rish", "en") == 0.0  # Manx
    assert function_words.share("The cat, the dog and a bird.", "en") == pytest.approx(4 / 7)  # the, the, and, a
    assert function_words.share("1234 -- ;;", "en") == 0.0  # no words at all
    # A language without a list: no check (a German page is not English-like, and may be wanted).
    assert function_words.share("Der Hund und die Katze", "de") is None
    # The ASCII fast path splits and lower-cases as the general (regex) path does.
    texts = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 200)] + ["It's A_b the2the THE\tof-The x\x7fthe\x00and"]
    ascii_texts = [t for t in texts if t.isascii()]
    assert len(ascii_texts) > 100
    for t in ascii_texts:
        general = function_words.words(t)
        assert function_words.share(t, "en") == sum(w in function_words.ENGLISH for w in general) / len(general)


def test_gaelic_and_manx_that_langdetect_calls_english_are_dropped(tmp_path, udhr):
    plain = LanguageRule(backend="langdetect_fast", threshold=0.85)
    rule = default_rule(tmp_path)
    assert rule.check_backend == "fasttext" and rule.min_function_words > 0  # the shipped recipe
    celtic = udhr["gd"] + udhr["ga"] + udhr["gv"]
    alone = judge(celtic, plain)
    assert sum(alone["passed"]) >= 10  # the problem: langdetect has no profile for them, many pass
    both = judge(celtic, rule)
    assert not any(both["passed"])
    assert set(both["rule"]) == {"fasttext", FUNCTION_WORDS}  # each check removes some
    manx = judge(udhr["gv"], rule)
    assert all(r in ("fasttext", FUNCTION_WORDS) for r in manx["rule"])
    english = judge(udhr["en"], rule)
    assert all(english["passed"]) and set(english["language"]) == {"en"} and set(english["rule"]) == {""}
    # Wanting German too: a text found to be English is still held to English function words, a
    # German one (no list) to none.
    en_de = dataclasses.replace(rule, languages=("en", "de"))
    assert not any(judge(udhr["gv"], en_de)["passed"])
    german = judge(udhr["de"], en_de)
    assert all(german["passed"]) and all(math.isnan(x) for x in german["function_words"])


@pytest.mark.slow  # over half a second
def test_checks_run_in_order_and_report_the_deciding_detector(tmp_path, udhr):
    rule = default_rule(tmp_path)
    texts = udhr["de"][:5] + udhr["gv"][:5] + udhr["gd"][:5] + udhr["el"][:3] + udhr["en"][:5]
    out = judge(texts, rule)
    cleaned = [language_text(t, rule.max_chars) for t in texts]
    fast = rank_all(cleaned, "fasttext")
    main = rank_all(cleaned, rule.backend)
    shares = [function_words.share(t, "en") for t in cleaned]
    # The verdict is every check's verdict taken on its own, whatever order they ran in.
    for i in range(len(texts)):
        each = [shares[i] >= rule.min_function_words, target_score(fast[i], ["en"]) >= rule.check_threshold, target_score(main[i], ["en"]) >= rule.threshold]
        assert out["passed"][i] == all(each)
        # The first check that fails is named; function words run first (English has a list).
        assert out["rule"][i] == ([FUNCTION_WORDS, "fasttext", rule.backend, ""][each.index(False) if False in each else 3])
        if out["rule"][i] == FUNCTION_WORDS:  # no detector ran
            assert (out["language"][i], out["score"][i]) == ("", 0.0) and out["function_words"][i] == shares[i]
        else:  # the last detector that ran gives the language
            ranked = fast[i] if out["rule"][i] == "fasttext" else main[i]
            assert (out["language"][i], out["score"][i]) == (ranked[0][0], ranked[0][1])
    assert set(out["rule"][15:18]) == {FUNCTION_WORDS}  # Greek: no English word at all
    assert FUNCTION_WORDS in out["rule"][:5] and set(out["rule"][:5]) <= {FUNCTION_WORDS, "fasttext"}  # German: "in", "was", "an" ...
    assert "fasttext" in out["rule"][10:15]  # Scottish Gaelic shares some English function words, not the language
    assert all(out["passed"][18:])
    # first_detection tells what the first detector takes the early-dropped documents for.
    assert [d[0] for d in first_detection(texts[:5] + texts[15:18], rule)] == ["de"] * 5 + ["el"] * 3
    # Switched off, the rule is langdetect's threshold alone.
    off = compose_recipe(["filter.lang_check=null", "filter.function_words=0"], str(tmp_path)).filter.language_rule()
    assert off.check_backend is None and off.min_function_words == 0
    plain = judge(texts, off)
    assert plain["passed"] == [t >= 0.85 for t in plain["target"]]
    assert plain["language"] == [m[0][0] for m in main]


@pytest.mark.slow  # over half a second
def test_stage_counts_language_drops_by_check(tmp_path, plain_config, udhr):
    from helpers import write_jsonl

    texts = udhr["en"][:4] + udhr["gd"][:6] + udhr["gv"][:6] + udhr["de"][:2]
    path = write_jsonl(tmp_path / "in" / "mix.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    run, _ = run_filter(
        plain_config, tmp_path / "run", "dataset=files", f"dataset.paths=[{path}]", "executor.workers=1",
        "filter.keep_rejected=100", "dataset.partition_size=5", "filter.dedup.near=false",
    )
    stats = run.stats["stages"]["filter"]["components"]["mix"]
    assert stats["kept"] == 4 and stats["dropped"]["language"] == len(texts) - 4
    assert sum(stats["language_dropped_by"].values()) == stats["dropped"]["language"]
    rejected = pq.read_table(run.dir / "rejected" / "mix.parquet").to_pylist()
    by_check: Dict[str, int] = {}
    for r in rejected:
        by_check[r["failed_check"]] = by_check.get(r["failed_check"], 0) + 1
    assert by_check == stats["language_dropped_by"]
    rule = default_rule(tmp_path)
    for r in rejected:  # each row says why: the figure its check compared
        if r["failed_check"] == "fasttext":  # (the function words, checked before, passed)
            assert r["target_score"] < rule.check_threshold and r["function_word_share"] >= rule.min_function_words
        elif r["failed_check"] == FUNCTION_WORDS:
            # Dropped before any detector: the sample still names what fastText takes it for.
            assert r["function_word_share"] < rule.min_function_words and r["language"] != "" and r["score"] > 0
            assert math.isnan(r["target_score"])  # no detector's threshold decided it
        else:
            assert r["failed_check"] == rule.backend and r["target_score"] < rule.threshold
    assert run.stats["stages"]["filter"]["lang_check"] == "fasttext"


def test_check_languages_validates_fasttext_codes(tmp_path):
    from stage2.errors import Stage2Error
    from stage2.lid.backends import check_languages

    # As the check before langdetect, langdetect's region codes map to fastText's zh.
    check_languages("fasttext", ["en", "zh-cn"], main=False)
    with pytest.raises(Stage2Error, match="'xx' unknown to fastText"):
        check_languages("fasttext", ["en", "xx"])
    # As the main detector, a region would silently keep both: say so.
    with pytest.raises(Stage2Error, match="'zh-tw': fastText's lid.176 has no regions.*use zh"):
        check_languages("fasttext", ["en", "zh-tw"])
    # A language langdetect lacks and fastText knows: the error says which recipe knows it.
    with pytest.raises(Stage2Error, match="'gd' unknown to langdetect_fast.*fastText's lid.176 knows 'gd': add filter=fasttext"):
        check_languages("langdetect_fast", ["gd"])
    # One langdetect has with a region: that is the hint, not another backend.
    with pytest.raises(Stage2Error, match="for 'zh' use zh-cn or zh-tw") as error:
        check_languages("langdetect_fast", ["en", "zh"])
    assert "filter=fasttext" not in str(error.value)
    # YAML's unquoted `no` (Norwegian) arrives as the string 'False': said as that, for either backend.
    for backend in ("fasttext", "langdetect_fast"):
        with pytest.raises(Stage2Error, match="False is YAML's reading of an unquoted no.*'no' for Norwegian"):
            check_languages(backend, ["en", "False"])


def test_the_language_codes_checked_are_the_installed_models_labels():
    """`check_languages` reads lid.176's labels from a list, not from the model (the driver loads no
    model): the list must be what the installed model answers."""
    from stage2.lid.backends import LID176_LABELS, fasttext_model

    labels, _ = fasttext_model().predict("", k=-1, threshold=-1.0)
    assert LID176_LABELS == tuple(sorted(label.replace("__label__", "") for label in labels))


@pytest.mark.slow  # over half a second
def test_threshold_follows_the_backend_and_bad_values_fail(tmp_path):
    from stage2.errors import Stage2Error

    assert compose_recipe([], str(tmp_path)).filter.lang_threshold == 0.85
    # fastText's probabilities run lower: its own calibrated threshold, also without filter=fasttext.
    assert compose_recipe(["filter.lang_backend=fasttext"], str(tmp_path)).filter.lang_threshold == 0.4
    assert compose_recipe(["filter.lang_backend=fasttext", "filter.lang_threshold=0.6"], str(tmp_path)).filter.lang_threshold == 0.6
    for override, message in (("filter.languages=[]", "filter.languages is empty"), ("filter.keep_rejected=-3", "keep_rejected=-3")):
        with pytest.raises(Stage2Error, match=message):
            compose_recipe([override], str(tmp_path)).check()
