"""The quality steps (stage2/steps/quality): every rule on hand-made documents just below, at and just
above its threshold; each step's verdicts, details and tallies; the word splitter against spaCy's
answers (recorded from spaCy 3.8 through datatrove 0.10, which the tests do not need); the fast
versions against the plain transcriptions in tests/quality_plain.py on real text; the config wiring."""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, replace
from typing import List, Optional

import pytest

from stage2.documents import Document
from stage2.steps import STEPS, Chain, optional_steps, quality_steps
from stage2.steps.quality import (
    C4Quality,
    C4QualitySettings,
    FineWebQuality,
    FineWebQualitySettings,
    GopherQuality,
    GopherQualitySettings,
    GopherRepetition,
    GopherRepetitionSettings,
    text,
)
from stage2.steps.quality.gopher import covered_chars, repeated_chars
import oracles
import quality_plain as plain
from helpers import REPO, SAMPLE, compose_plain

# The quality steps and their settings, in the order FineWeb runs them (and filter.quality's message lists them).
QUALITY_STEPS = {
    "gopher_repetition": GopherRepetitionSettings,
    "gopher_quality": GopherQualitySettings,
    "c4_quality": C4QualitySettings,
    "fineweb_quality": FineWebQualitySettings,
}


def doc(body: str, i: int = 0) -> Document:
    return Document(id=f"t{i}", text=body, component="web", source="test", record=i + 1)


def judge(step, body: str):
    return step.judge([doc(body)])[0]


def rule(verdict) -> Optional[str]:
    return None if verdict is None else verdict.values["failed_rule"]


def uniq(n: int, length: int = 5, tag: str = "") -> List[str]:
    """n distinct lower-case words of `length` letters (no stop words, nothing repeats)."""
    out = []
    for i in range(n):
        w, k = "", i + 1
        while k:
            k, r = divmod(k, 26)
            w += "abcdefghijklmnopqrstuvwxyz"[r]
        out.append((w + "q" + tag + "z" * length)[:length])  # the distinct part first
    assert len(set(out)) == n
    return out


def padded(parts: List[str], sep: str, total: int, tag: str = "pad") -> str:
    """`sep.join(parts)` plus one more part of distinct filler words, so that the text is exactly
    `total` characters long."""
    body = sep.join(parts)
    need = total - len(body) - len(sep)
    assert need >= 1, need
    filler = " ".join(uniq(need // 6 + 1, 5, tag))[:need].rstrip()
    filler += "x" * (need - len(filler))
    out = body + sep + filler
    assert len(out) == total
    return out


# --------------------------------------------------------------------------------------------
# Gopher repetition: each rule alone (the others off), below / at / above its threshold.

ALL_OFF = dict(
    dup_para_frac=None, dup_para_char_frac=None, dup_line_frac=None, dup_line_char_frac=None,
    top_2_gram=None, top_3_gram=None, top_4_gram=None,
    **{f"dup_{n}_gram": None for n in range(5, 11)},
)


def repetition(**on) -> GopherRepetition:
    return GopherRepetition(GopherRepetitionSettings(**{**ALL_OFF, **on}))


@pytest.mark.parametrize("dups, expected", [(2, None), (3, None), (4, "dup_para_frac")])
def test_dup_para_frac(dups: int, expected: Optional[str]) -> None:
    # 10 paragraphs, `dups` of them equal to the first: a share of 0.2, 0.3 (kept: "above" drops), 0.4
    paras = ["same words here"] * (dups + 1) + [" ".join(uniq(3, 6, f"p{i}")) for i in range(9 - dups)]
    v = judge(repetition(dup_para_frac=0.3), "\n\n".join(paras))
    assert rule(v) == expected
    if expected:
        assert v.reason == "gopher_repetition" and v.values["value"] == pytest.approx(0.4) and v.values["threshold"] == 0.3
        assert v.detail == "dup_para_frac=0.400 > 0.300"


@pytest.mark.parametrize("total, expected", [(501, None), (500, None), (499, "dup_para_char_frac")])
def test_dup_para_char_frac(total: int, expected: Optional[str]) -> None:
    dup = "x" * 100  # repeated once: 100 characters of 501, 500, 499
    v = judge(repetition(dup_para_char_frac=0.2), padded([dup, dup], "\n\n", total))
    assert rule(v) == expected


@pytest.mark.parametrize("dups, expected", [(2, None), (3, None), (4, "dup_line_frac")])
def test_dup_line_frac(dups: int, expected: Optional[str]) -> None:
    lines = ["same line"] * (dups + 1) + [" ".join(uniq(3, 6, f"l{i}")) for i in range(9 - dups)]
    assert rule(judge(repetition(dup_line_frac=0.3), "\n".join(lines))) == expected


@pytest.mark.parametrize("total, expected", [(501, None), (500, None), (499, "dup_line_char_frac")])
def test_dup_line_char_frac(total: int, expected: Optional[str]) -> None:
    dup = "y" * 100
    assert rule(judge(repetition(dup_line_char_frac=0.2), padded([dup, dup], "\n", total))) == expected


def test_lines_split_at_newline_runs_and_paragraphs_at_blank_lines() -> None:
    # A blank line between two equal lines: two paragraphs alike, and two lines alike (blank lines
    # are not lines: the text is split at runs of newlines).
    body = "alpha beta\n\nalpha beta\n\ngamma delta epsilon zeta eta theta"
    assert rule(judge(repetition(dup_para_frac=0.3), body)) == "dup_para_frac"  # 1 of 3 paragraphs
    assert rule(judge(repetition(dup_line_frac=0.3), body)) == "dup_line_frac"  # 1 of 3 lines


@pytest.mark.parametrize("total, expected", [(101, None), (100, None), (99, "top_2_gram")])
def test_top_2_gram(total: int, expected: Optional[str]) -> None:
    # "ab cd" 4 times between distinct words: (5 characters) x 4 = 20 of 101, 100, 99
    parts = [f"ab cd {w}" for w in uniq(4, 3, "t")]
    v = judge(repetition(top_2_gram=0.2), padded(parts, " ", total))
    assert rule(v) == expected


@pytest.mark.parametrize("total, expected", [(401, None), (400, None), (399, "top_3_gram")])
def test_top_3_gram(total: int, expected: Optional[str]) -> None:
    parts = [f"ab cd ef {w}" for w in uniq(9, 3, "t")]  # (8 characters) x 9 = 72 of 400: 0.18
    assert rule(judge(repetition(top_3_gram=0.18), padded(parts, " ", total))) == expected


@pytest.mark.parametrize("total, expected", [(276, None), (275, None), (274, "top_4_gram")])
def test_top_4_gram(total: int, expected: Optional[str]) -> None:
    parts = [f"ab cd ef gh {w}" for w in uniq(4, 3, "t")]  # (11 characters) x 4 = 44 of 275: 0.16
    assert rule(judge(repetition(top_4_gram=0.16), padded(parts, " ", total))) == expected


def test_top_gram_takes_the_first_most_frequent_and_punctuation_is_a_word() -> None:
    # "x ," and "longword ," occur twice each; the first to occur ("x ,": 3 characters, 6 in all)
    # is the top 2-gram (Counter.most_common's tie rule), not the longer one (20 in all).
    body = "x, qq longword, rr x, ss longword, tt uuuuuu"
    assert text.words(body)[:2] == ["x", ","]
    share = 6 / len(body)
    assert judge(repetition(top_2_gram=share), body) is None
    v = judge(repetition(top_2_gram=share * 0.99), body)
    assert rule(v) == "top_2_gram" and v.values["value"] == pytest.approx(share)


@pytest.mark.parametrize("total, expected", [(1001, None), (1000, None), (999, "dup_5_gram")])
def test_dup_5_gram(total: int, expected: Optional[str]) -> None:
    # One 5-gram twice: its second copy has 4 x 19 + 74 = 150 letters, 0.15 of 1000 characters.
    five = " ".join(uniq(4, 19, "f") + ["w" * 74])
    assert len(five.replace(" ", "")) == 150
    v = judge(repetition(dup_5_gram=0.15), padded([five, "middle words", five], " ", total))
    assert rule(v) == expected


@pytest.mark.parametrize("total, expected", [(501, None), (500, None), (499, "dup_10_gram")])
def test_dup_10_gram(total: int, expected: Optional[str]) -> None:
    # A repeated 10-gram of 50 letters: 0.1 of 500. Its 5- to 9-grams repeat as much (50 letters:
    # the scan jumps past each repeat), under their higher thresholds.
    ten = " ".join(uniq(10, 5, "d"))
    on = {f"dup_{n}_gram": t for n, t in zip(range(5, 11), (0.15, 0.14, 0.13, 0.12, 0.11, 0.10))}
    v = judge(repetition(**on), padded([ten, "between", ten], " ", total))
    assert rule(v) == expected


def test_overlapping_repeats_count_once() -> None:
    # Seven equal words: 5-grams at 0, 1, 2 are equal; the one at 1 counts (5 letters) and the
    # scan jumps to 6, past the end. 5 / 13 = 0.385.
    words = ["a"] * 7
    cum = [0, 1, 2, 3, 4, 5, 6, 7]
    grams = [tuple(words[i : i + 5]) for i in range(3)]
    first = {grams[0]: 0}
    assert repeated_chars([0, 1, 2], grams, first, [1, 2], cum, 5) == 5
    assert plain.repeated_ngram_chars(words, 5) == 5
    v = judge(repetition(dup_5_gram=0.3), "a a a a a a a")
    assert rule(v) == "dup_5_gram" and v.values["value"] == pytest.approx(5 / 13)


def test_repeated_chars_matches_the_plain_scan_on_random_word_sequences() -> None:
    rng = random.Random(0)
    for trial in range(400):
        words = [rng.choice("abc") * rng.randint(1, 3) for _ in range(rng.randint(0, 60))]
        cum = [0]
        for w in words:
            cum.append(cum[-1] + len(w))
        for n in (5, 6, 8, 10):
            grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
            first = {}
            for j, g in enumerate(grams):
                first.setdefault(g, j)
            later = [j for j, g in enumerate(grams) if first[g] != j]
            assert repeated_chars(range(len(grams)), grams, first, later, cum, n) == plain.repeated_ngram_chars(words, n), (trial, n)
            # the bound used to stop early: repeated characters never exceed the covered ones
            starts = sorted({j for j in later} | {first[grams[j]] for j in later})
            assert covered_chars(starts, n, cum) >= plain.repeated_ngram_chars(words, n)


def test_repetition_rule_order_and_empty_text() -> None:
    step = GopherRepetition(GopherRepetitionSettings())
    # Both the paragraph and the line rules fail: the paragraph one is checked first, as in datatrove.
    body = "\n\n".join(["same"] * 4 + ["other words here"])
    assert rule(judge(step, body)) == "dup_para_frac"
    assert rule(judge(step, "")) == "empty"


# --------------------------------------------------------------------------------------------
# Gopher quality

Q_OFF = dict(
    min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
    max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
    max_non_alpha_words_ratio=None, min_stop_words=None,
)


def quality(**on) -> GopherQuality:
    return GopherQuality(GopherQualitySettings(**{**Q_OFF, **on}))


@pytest.mark.parametrize("n, expected", [(49, "min_doc_words"), (50, None), (51, None)])
def test_min_doc_words(n: int, expected: Optional[str]) -> None:
    # Punctuation is not a word: 49 words and 20 commas are 49 words.
    body = ", ".join(["the", "of"] + uniq(n - 2, 5)) + " ," * 20
    v = judge(quality(min_doc_words=50), body)
    assert rule(v) == expected
    if expected:
        assert v.detail == "words=49 < 50 (min_doc_words)" and v.values == {"failed_rule": "min_doc_words", "value": 49.0, "threshold": 50.0}


@pytest.mark.parametrize("n, expected", [(59, None), (60, None), (61, "max_doc_words")])
def test_max_doc_words(n: int, expected: Optional[str]) -> None:
    assert rule(judge(quality(max_doc_words=60), " ".join(uniq(n, 5)))) == expected


@pytest.mark.parametrize("letters, expected", [(149, "min_avg_word_length"), (150, None), (151, None)])
def test_min_avg_word_length(letters: int, expected: Optional[str]) -> None:
    # 50 words of `letters` letters in all (2.98, 3.0, 3.02 a word); punctuation does not count.
    words = ["ab"] * 49 + ["x" * (letters - 98)]
    body = " ".join(w + "." for w in words)
    assert rule(judge(quality(min_avg_word_length=3), body)) == expected


@pytest.mark.parametrize("letters, expected", [(499, None), (500, None), (501, "max_avg_word_length")])
def test_max_avg_word_length(letters: int, expected: Optional[str]) -> None:
    words = ["abcdefghij"] * 49 + ["x" * (letters - 490)]
    assert rule(judge(quality(max_avg_word_length=10), " ".join(words))) == expected


@pytest.mark.parametrize("hashes, expected", [(5, None), (6, None), (7, "max_symbol_word_ratio")])
def test_hash_ratio(hashes: int, expected: Optional[str]) -> None:
    # "ab#cd" is one token (a "#" inside a word is not split off): `hashes` of 60 tokens.
    words = ["ab#cd"] * hashes + uniq(60 - hashes, 5)
    v = judge(quality(max_symbol_word_ratio=0.1), " ".join(words))
    assert rule(v) == expected
    if expected:
        assert v.detail.startswith("hash_word_ratio=0.117 > 0.100")


@pytest.mark.parametrize("ellipses, expected", [(5, None), (6, None), (7, "max_symbol_word_ratio")])
def test_ellipsis_ratio(ellipses: int, expected: Optional[str]) -> None:
    # Each "..." (or "…") is a token of its own: `ellipses` of 60 tokens (59 - ellipses words with
    # an ellipsis after some of them, and "end", so that the line does not end with one).
    words = uniq(59 - ellipses, 5)
    for i in range(ellipses):
        words[i] += "..." if i % 2 else "…"
    body = " ".join(words) + " end"
    assert len(text.words(body)) == 60
    v = judge(quality(max_symbol_word_ratio=0.1), body)
    assert rule(v) == expected
    if expected:
        assert v.detail.startswith("ellipsis_word_ratio=0.117 > 0.100")


@pytest.mark.parametrize("bullets, expected", [(17, None), (18, None), (19, "max_bullet_lines_ratio")])
def test_bullet_lines(bullets: int, expected: Optional[str]) -> None:
    lines = [("- " if i < bullets - 1 else "  • ") + " ".join(uniq(4, 5, f"b{i}")) for i in range(bullets)]
    lines += [" ".join(uniq(4, 5, f"o{i}")) for i in range(20 - bullets)]
    assert rule(judge(quality(max_bullet_lines_ratio=0.9), "\n".join(lines))) == expected


@pytest.mark.parametrize("ellipses, expected", [(2, None), (3, None), (4, "max_ellipsis_lines_ratio")])
def test_ellipsis_lines(ellipses: int, expected: Optional[str]) -> None:
    lines = [" ".join(uniq(4, 5, f"e{i}")) + ("...  " if i % 2 else "…") for i in range(ellipses)]
    lines += [" ".join(uniq(4, 5, f"o{i}")) + "... and more" for i in range(10 - ellipses)]
    assert rule(judge(quality(max_ellipsis_lines_ratio=0.3), "\n".join(lines))) == expected


def test_lines_are_str_splitlines_lines() -> None:
    # \r\n and \u2028 end lines too (str.splitlines, as datatrove): 3 of 3 lines start with "-".
    body = "- one two\r\n- three four\u2028- five six"
    assert rule(judge(quality(max_bullet_lines_ratio=0.9), body)) == "max_bullet_lines_ratio"
    assert judge(quality(max_bullet_lines_ratio=0.9), body + "\nseven eight") is None  # 3 of 4


@pytest.mark.parametrize("alpha, expected", [(47, "max_non_alpha_words_ratio"), (48, None), (49, None)])
def test_alpha_words_ratio(alpha: int, expected: Optional[str]) -> None:
    # Of 60 tokens, `alpha` have a letter; the others are numbers.
    words = uniq(alpha, 5) + [str(1000 + i) for i in range(60 - alpha)]
    v = judge(quality(max_non_alpha_words_ratio=0.8), " ".join(words))
    assert rule(v) == expected
    if expected:
        assert v.detail == "alpha_words_ratio=0.783 < 0.800 (max_non_alpha_words_ratio)"


@pytest.mark.parametrize("present, expected", [(["the"], "min_stop_words"), (["the", "of"], None), (["the", "of", "and"], None)])
def test_min_stop_words(present: List[str], expected: Optional[str]) -> None:
    # Distinct stop words count, however often; "The" is not "the", but "the," has the word "the".
    body = " ".join(uniq(20, 5) + [p + "," for p in present] + ["the"] * 5 + ["The", "OF"])
    assert rule(judge(quality(min_stop_words=2), body)) == expected


def test_custom_stop_words() -> None:
    step = quality(min_stop_words=2, stop_words=["der", "die", "das"])
    assert judge(step, "der Hund und die Katze") is None
    assert rule(judge(step, "the cat and the dog")) == "min_stop_words"


def test_quality_defaults_on_a_real_looking_post() -> None:
    step = GopherQuality(GopherQualitySettings())
    good = (
        "I have been roasting my own coffee at home for a few months, and the results vary a lot from "
        "batch to batch. The beans come from the same supplier, so I suspect that the roast itself is "
        "the problem. With a popcorn popper it is hard to control the temperature, and the first crack "
        "arrives at different times. Is there a simple way to make the process more repeatable, or "
        "should I invest in a proper roaster with a thermometer?"
    )
    assert judge(step, good) is None
    assert rule(judge(step, "Thanks, that works!")) == "min_doc_words"


# --------------------------------------------------------------------------------------------
# C4


def c4(**kw) -> C4Quality:
    return C4Quality(C4QualitySettings(**kw))


LONG = [
    "The roast of the beans decides much of the taste in the cup.",
    "Light roasts keep more acidity, and dark roasts taste of caramel and smoke.",
    "Most home roasters use a popcorn popper or a small drum over a gas flame.",
    "Temperature control is hard, so the first crack can come early or late.",
    "A cheap thermometer and a notebook make each batch easier to repeat.",
    "Let the beans rest for a day or two before grinding them for a brew.",
    "Store them in an airtight jar, away from light, heat and moisture.",
    "With some practice you will find the roast that suits your own palate.",
]
SENT = ["The first one is here.", "A second one follows.", "Then comes a third.", "Here is the fourth.", "The fifth one ends it.", "And a sixth for luck."]


@pytest.mark.parametrize("n, expected", [(4, "min_num_sentences"), (5, None), (6, None)])
def test_min_num_sentences(n: int, expected: Optional[str]) -> None:
    v = judge(c4(), "\n".join(SENT[:n]))
    assert rule(v) == expected
    if expected:
        assert v.detail == "sentences=4 < 5 (min_num_sentences)"


def test_sentences_within_a_line_count() -> None:
    # Two lines of two sentences and one of one: five sentences.
    body = "One two three. Four five six.\nSeven eight nine! Ten eleven twelve?\nThirteen fourteen fifteen."
    assert judge(c4(), body) is None
    assert rule(judge(c4(min_num_sentences=6), body)) == "min_num_sentences"
    # "Mr." and "e.g." do not end sentences; "..." is not a sentence end either.
    assert text.sentence_count("Mr. Smith went home, e.g. by bus... and slept.") == 1


def test_terminal_punctuation_rule() -> None:
    lines = SENT[:4] + ["A fifth line without an end", "One that trails off..."]
    assert rule(judge(c4(), "\n".join(lines))) == "min_num_sentences"  # 4 lines kept
    # FineWeb keeps lines without terminal punctuation (its filter_no_terminal_punct=False).
    assert judge(c4(filter_no_terminal_punct=False), "\n".join(lines)) is None
    # A quote or apostrophe ends a line too.
    assert judge(c4(), "\n".join(SENT[:4] + ['He said "a fifth one."'])) is None


@pytest.mark.parametrize("words, expected", [(2, "min_num_sentences"), (3, None)])
def test_min_words_per_line(words: int, expected: Optional[str]) -> None:
    last = " ".join(["Word"] * words) + "."
    assert rule(judge(c4(), "\n".join(SENT[:4] + [last]))) == expected


@pytest.mark.parametrize("length, expected", [(1000, None), (1001, "min_num_sentences")])
def test_max_word_length(length: int, expected: Optional[str]) -> None:
    last = "A long " + "w" * length + " word."
    assert rule(judge(c4(), "\n".join(SENT[:4] + [last]))) == expected


def test_line_removals_javascript_policy_citations() -> None:
    four = SENT[:4]
    assert rule(judge(c4(), "\n".join(four + ["Please enable JavaScript to view this."]))) == "min_num_sentences"
    assert rule(judge(c4(), "\n".join(four + ["Read our Privacy Policy for details."]))) == "min_num_sentences"
    assert judge(c4(filter_javascript=False, filter_policy=False), "\n".join(four + ["Please enable JavaScript.", "x"])) is None
    cited = "A fact with a source.[1]"
    assert judge(c4(), "\n".join(four + [cited])) is None  # [1] removed: the line ends with "."
    assert rule(judge(c4(remove_citations=False), "\n".join(four + [cited]))) == "min_num_sentences"


def test_page_rules_lorem_ipsum_and_curly_bracket() -> None:
    five = "\n".join(SENT[:5])
    v = judge(c4(), five + "\nLorem ipsum dolor sit amet.")
    assert rule(v) == "filter_lorem_ipsum" and v.detail == '"lorem ipsum" on line 6' and v.values["value"] == 6.0
    assert rule(judge(c4(), "function f() { return 1; }.\n" + five)) == "filter_curly_bracket"
    # Only on a line C4 keeps: without terminal punctuation, or with javascript, it does not count.
    assert judge(c4(), five + "\nlorem ipsum dolor sit amet") is None
    assert judge(c4(), five + "\nvar x = { javascript: 1 }.") is None
    assert judge(c4(filter_curly_bracket=False), "The set {a, b} has two.\n" + five) is None


def test_split_paragraph_false_judges_sentences_instead_of_lines() -> None:
    # One line of five sentences that does not end with a full stop: as a line it is removed; as
    # sentences, the five that end with one count.
    body = "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen. and so"
    assert rule(judge(c4(), body)) == "min_num_sentences"
    assert judge(c4(split_paragraph=False), body) is None
    assert rule(judge(c4(split_paragraph=False), body.replace("fifteen.", "fifteen"))) == "min_num_sentences"


def test_switching_rules_off_with_minus_one() -> None:
    assert judge(c4(min_num_sentences=-1), "short") is None
    assert judge(c4(min_words_per_line=-1), "\n".join(["A.", "B.", "C.", "D.", "E."])) is None


def test_c4_never_changes_the_text() -> None:
    body = "\n".join(SENT + ["no terminal punctuation here", "Enable javascript please."])
    d = doc(body)
    assert c4().judge([d]) == [None]
    assert d.text == body


# --------------------------------------------------------------------------------------------
# FineWeb

FW_OFF = dict(line_punct_thr=0.0, short_line_thr=1.0, char_duplicates_ratio=1.0, new_line_ratio=1e9)


def fineweb(**on) -> FineWebQuality:
    return FineWebQuality(FineWebQualitySettings(**{**FW_OFF, **on}))


def long_line(i: int, end: str = "") -> str:
    return " ".join(uniq(6, 6, f"f{i}")) + end


@pytest.mark.parametrize("ended, expected", [(2, "line_punct_thr"), (3, None), (4, None)])
def test_line_punct_ratio(ended: int, expected: Optional[str]) -> None:
    # `ended` of 25 non-blank lines end with a sentence terminal: 0.08, 0.12 (kept), 0.16
    lines = [long_line(i, "." if i < ended else "") for i in range(25)]
    body = "\n".join(lines[:10] + ["", "   "] + lines[10:])  # blank lines are not lines
    v = judge(fineweb(line_punct_thr=0.12), body)
    assert rule(v) == expected
    if expected:
        assert v.detail == "line_punct_ratio=0.080 < 0.120 (line_punct_thr)"


def test_line_punct_stop_chars_and_exclude_zero() -> None:
    lines = [long_line(i, '"') for i in range(10)]
    assert rule(judge(fineweb(line_punct_thr=0.12), "\n".join(lines))) == "line_punct_thr"  # '"' is no terminal
    assert judge(fineweb(line_punct_thr=0.12, stop_chars='."'), "\n".join(lines)) is None
    assert judge(fineweb(line_punct_thr=0.12, line_punct_exclude_zero=True), "\n".join(lines)) is None
    assert judge(fineweb(line_punct_thr=0.12), "\n".join(long_line(i, "。") for i in range(10))) is None


@pytest.mark.parametrize("short, expected", [(66, None), (67, None), (68, "short_line_thr")])
def test_short_line_ratio(short: int, expected: Optional[str]) -> None:
    # Lines of at most 30 characters: 66, 67 (kept) and 68 of 100.
    lines = ["x" * 26 + f"{i:03d}!" for i in range(short)] + [long_line(i, ".") for i in range(100 - short)]
    assert all(len(ln) == 30 for ln in lines[:short])
    assert rule(judge(fineweb(short_line_thr=0.67), "\n".join(lines))) == expected


@pytest.mark.parametrize("total, expected", [(4001, None), (4000, None), (3999, "char_duplicates_ratio")])
def test_char_duplicates_ratio(total: int, expected: Optional[str]) -> None:
    # A 40-character line twice: 40 of `total` characters that are not newlines.
    dup = "d" * 40
    body = padded([dup, dup], "\n", total + 2)  # the two newlines do not count
    assert len(body) - body.count("\n") == total
    assert rule(judge(fineweb(char_duplicates_ratio=0.01), body)) == expected


@pytest.mark.parametrize("tokens, expected", [(41, None), (40, None), (39, "new_line_ratio")])
def test_new_line_ratio(tokens: int, expected: Optional[str]) -> None:
    # 12 newlines over `tokens` words ("." and "," are words too): 0.293, 0.3 (kept), 0.308
    lines = [f"{w} ," for w in uniq(12, 4)] + [" ".join(uniq(tokens - 24, 4, "n"))]
    assert len(text.words("\n".join(lines))) == tokens
    assert rule(judge(fineweb(new_line_ratio=0.3), "\n".join(lines))) == expected


def test_fineweb_defaults_and_empty() -> None:
    step = FineWebQuality(FineWebQualitySettings())
    assert judge(step, "\n".join(LONG)) is None
    assert rule(judge(step, "\n \n\t\n")) == "empty"
    menu = "\n".join(["Home", "About us", "Products", "Contact", "Login", "A real sentence is here at last."])
    assert rule(judge(step, menu)) == "short_line_thr"


# --------------------------------------------------------------------------------------------
# Steps together: registry, chain, tallies


def test_registered_with_datatrove_defaults() -> None:
    assert {n: STEPS[n].Settings for n in QUALITY_STEPS} == QUALITY_STEPS
    assert {n: cls.Settings for n, cls in quality_steps().items()} == QUALITY_STEPS
    assert list(quality_steps()) == list(QUALITY_STEPS)
    # the hygiene steps have settings filter.<name> too, but their own keys switch them on
    assert set(optional_steps()) - set(quality_steps()) == {"decontaminate", "pii", "url"}
    assert asdict(GopherRepetitionSettings()) == {
        "dup_para_frac": 0.3, "dup_para_char_frac": 0.2, "dup_line_frac": 0.3, "dup_line_char_frac": 0.2,
        "top_2_gram": 0.2, "top_3_gram": 0.18, "top_4_gram": 0.16, "dup_5_gram": 0.15, "dup_6_gram": 0.14,
        "dup_7_gram": 0.13, "dup_8_gram": 0.12, "dup_9_gram": 0.11, "dup_10_gram": 0.10,
    }
    assert asdict(GopherQualitySettings()) == {
        "min_doc_words": 50, "max_doc_words": 100000, "min_avg_word_length": 3, "max_avg_word_length": 10,
        "max_symbol_word_ratio": 0.1, "max_bullet_lines_ratio": 0.9, "max_ellipsis_lines_ratio": 0.3,
        "max_non_alpha_words_ratio": 0.8, "min_stop_words": 2,
        "stop_words": ["the", "be", "to", "of", "and", "that", "have", "with"],
    }
    assert asdict(C4QualitySettings()) == {
        "split_paragraph": True, "remove_citations": True, "filter_no_terminal_punct": True, "min_num_sentences": 5,
        "min_words_per_line": 3, "max_word_length": 1000, "filter_lorem_ipsum": True, "filter_javascript": True,
        "filter_curly_bracket": True, "filter_policy": True,
    }
    assert asdict(FineWebQualitySettings()) == {
        "line_punct_thr": 0.12, "line_punct_exclude_zero": False, "stop_chars": None, "short_line_thr": 0.67,
        "short_line_length": 30, "char_duplicates_ratio": 0.01, "new_line_ratio": 0.3,
    }


def test_chain_reasons_and_tallies() -> None:
    chain = Chain([STEPS[n](QUALITY_STEPS[n]()) for n in QUALITY_STEPS])
    assert chain.reasons == tuple(QUALITY_STEPS)
    docs = [
        doc("\n\n".join(["same"] * 5), 0),  # repeated paragraphs
        doc(" ".join(uniq(40, 6)) + ".", 1),  # 41 words: too short for Gopher
        doc(" ".join(["the", "of"] + uniq(60, 6)) + ".", 2),  # one sentence: too few for C4
        doc("\n".join(LONG + LONG[:1]), 3),  # one line twice: 1.2 % of the characters for FineWeb
        doc("\n".join(LONG), 4),  # kept
    ]
    verdicts = chain.judge(docs)
    assert [v.reason if v else None for v in verdicts] == ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality", None]
    assert verdicts[3].values["failed_rule"] == "char_duplicates_ratio"
    assert chain.tally() == {
        "gopher_repetition.dup_para_frac": 1, "gopher_quality.min_doc_words": 1,
        "c4_quality.min_num_sentences": 1, "fineweb_quality.char_duplicates_ratio": 1,
    }


# --------------------------------------------------------------------------------------------
# Word splitting: spaCy's answers (recorded), fast = plain


SPACY = {
    "Don't stop, it's fine.": ["Do", "n't", "stop", ",", "it", "'s", "fine", "."],
    "U.S.A. e.g., (hello) end.Next": ["U.S.A.", "e.g.", ",", "(", "hello", ")", "end", ".", "Next"],
    "http://example.com/a-b, 5km $5 3.5 well-known": ["http://example.com/a-b", ",", "5", "km", "$", "5", "3.5", "well", "-", "known"],
    "id. thanks:D cannot Mr. Smith": ["i", "d.", "thanks", ":D", "can", "not", "Mr.", "Smith"],
    "foo@bar.com C++ and/or x--y 10am": ["foo@bar.com", "C++", "and/or", "x", "--", "y", "10", "am"],
    "df['col'].apply(lambda x: x+1)": ["df['col'].apply(lambda", "x", ":", "x+1", ")"],
    "“Quoted,” he said… ok...": ["“", "Quoted", ",", "”", "he", "said", "…", "ok", "..."],
    "#tag 50% a/b 1/2": ["#", "tag", "50", "%", "a", "/", "b", "1/2"],
}
SPACY_SENTENCES = {
    "Hello there. This is Mr. Smith! ok? yes": 4,
    'One two (three). "Four" five. Six': 3,
    "e.g. this is one. And 3.5 two.": 2,
    "No terminal at all": 1,
    "Wait... what? Yes!!": 2,
    # A run of spaces or a tab is a token: after "!" it starts a sentence, "/" alone would not.
    "Ha!  /\\": 2,
    "Ha! /\\": 1,
    "Done.\t(see)": 2,
    "(_______________||_) . .  ,--'": 2,
}


@pytest.mark.parametrize("sample", list(SPACY))
def test_words_as_spacy_splits_them(sample: str) -> None:
    assert text.words(sample) == SPACY[sample]
    assert oracles.words_plain(sample) == SPACY[sample]


@pytest.mark.parametrize("sample", list(SPACY_SENTENCES))
def test_sentences_as_spacy_counts_them(sample: str) -> None:
    assert text.sentence_count(sample) == SPACY_SENTENCES[sample] == oracles.sentence_count_plain(sample)
    assert "".join(text.sentences(sample)) == sample and len(text.sentences(sample)) == SPACY_SENTENCES[sample]


def sample_texts(limit: int) -> List[str]:
    out = []
    for name in ("web_stackexchange.jsonl.gz", "web_cc.jsonl.gz", "foldoc.jsonl.gz", "noisy_tldr.jsonl.gz"):
        with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i == limit:
                    break
                out.append(json.loads(line)["text"])
    return out


@pytest.fixture(scope="module")
def texts() -> List[str]:
    return sample_texts(300)


@pytest.mark.slow  # over half a second
def test_memoised_splitting_equals_the_plain_procedure(texts: List[str]) -> None:
    text.clear_cache()
    for t in texts:
        assert text.words(t) == oracles.words_plain(t)
        assert text.words(t) == oracles.words_plain(t)  # again, from the memo
        for line in t.splitlines()[:5]:
            assert text.sentence_count(line) == oracles.sentence_count_plain(line)


@pytest.mark.slow  # over half a second
@pytest.mark.parametrize("name, overrides", [
    ("gopher_repetition", {}), ("gopher_quality", {}), ("c4_quality", {}),
    ("c4_quality", {"filter_no_terminal_punct": False}), ("c4_quality", {"split_paragraph": False}),
    ("fineweb_quality", {}), ("gopher_quality", {"min_stop_words": 4, "max_non_alpha_words_ratio": 0.9}),
    ("gopher_repetition", {"top_2_gram": 0.1, "dup_5_gram": 0.05, "dup_8_gram": 0.03}),
])
def test_fast_steps_equal_the_plain_rules(texts: List[str], name: str, overrides: dict) -> None:
    settings = replace(QUALITY_STEPS[name](), **overrides)
    step = STEPS[name](settings)
    reference = getattr(plain, name)
    verdicts = step.judge([doc(t, i) for i, t in enumerate(texts)])
    dropped = 0
    for t, v in zip(texts, verdicts):
        expected = reference(t, settings)
        got = None if v is None else (v.values["failed_rule"], v.values["value"])
        assert (got is None) == (expected is None), t[:200]
        if got:
            dropped += 1
            assert got[0] == expected[0] and got[1] == pytest.approx(expected[1]), t[:200]
    assert 0 < dropped < len(texts)  # the comparison saw both verdicts


# --------------------------------------------------------------------------------------------
# Config


def test_default_yaml_equals_the_dataclasses(tmp_path) -> None:
    f = compose_plain(["stage=filter"], tmp_path).filter
    assert f.quality == []
    for name, settings in QUALITY_STEPS.items():
        assert asdict(f.step_settings(name)) == asdict(settings()), name


def test_fineweb_recipe(tmp_path) -> None:
    f = compose_plain(["stage=filter", "filter=fineweb"], tmp_path).filter
    assert f.quality == ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
    assert f.c4_quality.filter_no_terminal_punct is False
    assert f.lang_backend == "fasttext" and f.lang_threshold == 0.65 and f.lang_check is None
    assert asdict(f.gopher_quality) == asdict(GopherQualitySettings())


@pytest.mark.parametrize("override, message", [
    ("filter.quality=[gopher_qualty]", "no quality step is named 'gopher_qualty'"),
    ("filter.quality=[c4_quality,c4_quality]", "names a step twice"),
    ("filter.gopher_repetition.dup_line_frac=1.5", "filter.gopher_repetition.dup_line_frac=1.5 must be a share"),
    ("filter.gopher_quality.min_doc_words=-3", "filter.gopher_quality.min_doc_words=-3 must be 0 or more"),
    ("filter.c4_quality.min_num_sentences=-2", "filter.c4_quality.min_num_sentences=-2 must be -1 or more"),
    ("filter.fineweb_quality.stop_chars=''", "stop_chars is empty"),
    ("filter.fineweb_quality.short_line_length=-1", "filter.fineweb_quality.short_line_length=-1 must be 0 or more (characters)"),
    ("filter.gopher_quality.min_avg_word_length=12", "filter.gopher_quality.min_avg_word_length=12.0 and max_avg_word_length=10.0: need min <= max"),
])
def test_bad_settings_fail_at_start(tmp_path, override: str, message: str) -> None:
    from stage2.errors import Stage2Error

    with pytest.raises(Stage2Error, match=re.escape(message)):
        compose_plain(["stage=filter", override], tmp_path)


def test_sweepable_threshold(tmp_path) -> None:
    f = compose_plain(["stage=filter", "filter.quality=[gopher_quality]", "filter.gopher_quality.min_stop_words=4"], tmp_path).filter
    step = STEPS["gopher_quality"](f.gopher_quality)
    body = " ".join(["the", "of", "and"] + uniq(60, 5))
    assert rule(step.judge([doc(body)])[0]) == "min_stop_words"
    assert REPO.joinpath("conf", "filter", "fineweb.yaml").is_file()
