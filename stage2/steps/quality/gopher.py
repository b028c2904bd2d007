"""Gopher's repetition and quality rules (Rae et al. 2021, appendix A1), as filter steps.

Same rules, order and default thresholds as datatrove's GopherRepetitionFilter and
GopherQualityFilter (`datatrove` 0.10), with words from `text.words` (what datatrove's spaCy English
tokenizer gives). `tests/quality_plain.py` holds a direct, slow transcription of each rule; a test checks that
these fast versions give the same verdicts and values.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from itertools import accumulate, chain, compress
from operator import itemgetter
from typing import Dict, List, Optional, Sequence, Tuple

from stage2.steps.base import Drop, Rule, TextRuleStep, Verdict, at_least, register, share
from stage2.steps.quality import text as tx
from stage2.steps.quality.verdict import failed

try:  # Counter's own C loop, without Counter's per-call overhead (a few us: it adds up on short texts)
    from _collections import _count_elements as count_into
except ImportError:  # pragma: no cover (other Pythons)
    def count_into(mapping: dict, items) -> None:
        for x in items:
            mapping[x] = mapping.get(x, 0) + 1

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
EMPTY = Drop("", "empty text", {"failed_rule": "empty", "value": 0.0, "threshold": None})


@dataclass
class GopherRepetitionSettings:
    """A share above its threshold drops the document. Shares are of the document's characters,
    except `dup_para_frac` and `dup_line_frac` (of its paragraphs, lines). null switches a rule off
    (0 too for the four paragraph and line rules, as in datatrove)."""

    dup_para_frac: Optional[float] = 0.3  # paragraphs (split at blank lines) that occurred before
    dup_para_char_frac: Optional[float] = 0.2  # their characters
    dup_line_frac: Optional[float] = 0.3  # lines that occurred before
    dup_line_char_frac: Optional[float] = 0.2  # their characters
    top_2_gram: Optional[float] = 0.2  # characters of the most frequent word 2-gram, times its count
    top_3_gram: Optional[float] = 0.18
    top_4_gram: Optional[float] = 0.16
    dup_5_gram: Optional[float] = 0.15  # characters of the word 5-grams that occurred before
    dup_6_gram: Optional[float] = 0.14
    dup_7_gram: Optional[float] = 0.13
    dup_8_gram: Optional[float] = 0.12
    dup_9_gram: Optional[float] = 0.11
    dup_10_gram: Optional[float] = 0.10

    def check(self, at: str) -> List[Rule]:
        return [share(f"{at}.{key}", value) for key, value in asdict(self).items()]


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def duplicates(items: Sequence[str]) -> Tuple[int, int]:
    """(items equal to an earlier one, their characters): datatrove's find_duplicates, in C loops."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


def flat(gram: tuple) -> tuple:
    """A level's n-gram, ((w1, w2), w3) ..., as the flat tuple (w1, w2, w3, ...)."""
    out = []
    while len(gram) == 2 and isinstance(gram[0], tuple):
        gram, last = gram
        out.append(last)
    return tuple(gram) + tuple(reversed(out))


def covered_chars(starts: Sequence[int], n: int, cum: Sequence[int]) -> int:
    """Characters of the words covered by the n-grams starting at `starts` (increasing), each once."""
    total = end = 0
    for p in starts:
        a, b = (p if p > end else end), p + n
        if b > a:
            total += cum[b] - cum[a]
            end = b
    return total


def repeated_chars(positions: Sequence[int], grams: Sequence[tuple], first: Dict[tuple, int], later: Sequence[int], cum: Sequence[int], n: int) -> int:
    """Characters of repeated word n-grams, counted as datatrove counts them: scan left to right; an
    n-gram seen before adds its characters (without spaces) and the scan jumps past it, so
    overlapping repeats count once; any other n-gram is remembered and the scan moves one word.

    The same result, visiting only the n-grams that occurred earlier: such a repeat counts unless
    every earlier occurrence of it was jumped over. `positions` (increasing) and `grams` must hold
    every occurrence of every repeated n-gram; `first` maps an n-gram to the index of its first
    occurrence in them, `later` lists the indices of the other occurrences, in order; `cum` holds
    running sums of word lengths."""
    matched: List[int] = []  # positions counted as repeats; the n - 1 after each were jumped over
    seen = set()  # n-grams the scan has remembered (or counted) by now
    pos = total = 0
    for j in later:
        c = positions[j]
        if c < pos:
            continue
        g = grams[j]
        if g not in seen:
            seen.add(g)
            q = positions[first[g]]
            k = bisect_left(matched, q)
            if k and q < matched[k - 1] + n:  # its first occurrence was jumped over: new here
                pos = c + 1
                continue
        total += cum[c + n] - cum[c]
        matched.append(c)
        pos = c + n
    return total


@register
class GopherRepetition(TextRuleStep):
    name = "gopher_repetition"
    Settings = GopherRepetitionSettings
    order = 30  # after language ID; the quality steps run in the order filter.quality names them

    def __init__(self, settings: GopherRepetitionSettings) -> None:
        super().__init__(settings)
        s = settings
        self.top = [(n, t) for n in (2, 3, 4) if (t := getattr(s, f"top_{n}_gram")) is not None]
        self.dup = [(n, t) for n in range(5, 11) if (t := getattr(s, f"dup_{n}_gram")) is not None]

    def judge_text(self, text: str) -> Optional[Drop]:
        s = self.settings
        if not text:
            return Drop(self.name, EMPTY.detail, EMPTY.values)
        size = len(text)
        paragraphs = _PARAGRAPHS.split(text.strip()) if "\n\n" in text else [text]  # (one: no repeats)
        n_dup, dup_chars = duplicates(paragraphs)
        if s.dup_para_frac and n_dup / len(paragraphs) > s.dup_para_frac:
            return failed(self.name, "dup_para_frac", "dup_para_frac", n_dup / len(paragraphs), ">", s.dup_para_frac)
        if s.dup_para_char_frac and dup_chars / size > s.dup_para_char_frac:
            return failed(self.name, "dup_para_char_frac", "dup_para_char_frac", dup_chars / size, ">", s.dup_para_char_frac)
        lines = _LINES.split(text)
        n_dup, dup_chars = duplicates(lines)
        if s.dup_line_frac and n_dup / len(lines) > s.dup_line_frac:
            return failed(self.name, "dup_line_frac", "dup_line_frac", n_dup / len(lines), ">", s.dup_line_frac)
        if s.dup_line_char_frac and dup_chars / size > s.dup_line_char_frac:
            return failed(self.name, "dup_line_char_frac", "dup_line_char_frac", dup_chars / size, ">", s.dup_line_char_frac)
        if not self.top and not self.dup:
            return None
        words = tx.words(text)
        n_words = len(words)
        top, dup = dict(self.top), dict(self.dup)
        # Word n-grams level by level. Level n holds the n-grams starting where an (n-1)-gram that
        # occurs more than once starts (level 2: every 2-gram), so it holds every occurrence of every
        # repeated n-gram: their counts are exact, and the rest occur once. Real text repeats few
        # 2-grams, and fewer longer ones, so the levels shrink fast.
        positions: Sequence[int] = range(n_words - 1)
        grams: List[tuple] = list(zip(words, words[1:]))
        cum: Optional[List[int]] = None
        last_top = max(top, default=1)
        for n in range(2, max([*top, *dup]) + 1):
            if n_words < n:
                break  # no n-grams (datatrove skips the rule), nor longer ones
            if not grams and n not in top:
                continue  # nothing repeats any more: no repeated characters
            if n in top or n not in dup:
                counts: Dict[tuple, int] = {}
                count_into(counts, grams)
                if n in top:
                    if grams and (n == 2 or max(counts.values()) > 1):
                        # The most frequent, the first to reach that count on a tie (Counter.most_common).
                        gram, count = max(counts.items(), key=itemgetter(1))
                    else:  # every n-gram occurs once: the first one is "most common"
                        gram, count = tuple(words[:n]), 1
                    share = (sum(map(len, flat(gram))) + n - 1) * count / size
                    if share > top[n]:
                        return failed(self.name, f"top_{n}_gram", f"top_{n}_gram", share, ">", top[n])
                repeated = map((1).__lt__, map(counts.__getitem__, grams))  # count > 1, in C
            else:
                # (C loops) each n-gram's first index; the indices of the others, which repeat one
                first = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1)))
                later = sorted(set(range(len(grams))).difference(first.values()))
                if cum is None:
                    cum = list(accumulate(map(len, words), initial=0))
                chars = repeated_chars(positions, grams, first, later, cum, n) if later else 0
                if chars / size > dup[n]:
                    return failed(self.name, f"dup_{n}_gram", f"dup_{n}_gram", chars / size, ">", dup[n])
                again = set(map(grams.__getitem__, later))
                repeated = map(again.__contains__, grams)
            # The next level: the (n+1)-grams starting where a repeated n-gram starts, as pairs
            # (n-gram, next word): nested, but equal exactly when the flat (n+1)-grams are.
            mask = list(repeated)
            positions = list(compress(positions, mask))
            if not positions:
                # Nothing repeats from here on: no repeated characters, and each longer n-gram
                # occurs once, so the first is the most common.
                for m in (m for m in top if m > n and m <= n_words):
                    share = (sum(map(len, words[:m])) + m - 1) / size
                    if share > top[m]:
                        return failed(self.name, f"top_{m}_gram", f"top_{m}_gram", share, ">", top[m])
                return None
            longer = [dup[m] for m in dup if m > n]
            if n >= last_top:
                if not longer:
                    return None
                # Every word of a repeated longer n-gram lies in a repeated n-gram, so their words
                # bound the repeated characters of every longer n: below the least threshold, stop.
                if cum is None:
                    cum = list(accumulate(map(len, words), initial=0))
                if covered_chars(positions, n, cum) / size <= min(longer):
                    return None
            kept = list(compress(grams, mask))
            if positions and positions[-1] + n >= n_words:
                positions.pop()  # the last n-gram of the text has no (n+1)-gram
                kept.pop()
            grams = list(zip(kept, map(words.__getitem__, map(n.__add__, positions))))
        return None


@dataclass
class GopherQualitySettings:
    """Words are tokens that are not all punctuation; ratios are per token (punctuation included).
    null switches a rule off (0 too, as in datatrove)."""

    min_doc_words: Optional[int] = 50
    max_doc_words: Optional[int] = 100000
    min_avg_word_length: Optional[float] = 3  # characters per word
    max_avg_word_length: Optional[float] = 10
    max_symbol_word_ratio: Optional[float] = 0.1  # "#", and "..." or "…", per token (each checked alone)
    max_bullet_lines_ratio: Optional[float] = 0.9  # lines starting with "•" or "-"
    max_ellipsis_lines_ratio: Optional[float] = 0.3  # lines ending with "..." or "…"
    # datatrove's name for the least share of tokens with a letter in them.
    max_non_alpha_words_ratio: Optional[float] = 0.8
    min_stop_words: Optional[int] = 2  # distinct stop words present
    stop_words: List[str] = field(default_factory=lambda: list(STOP_WORDS))

    def check(self, at: str) -> List[Rule]:
        shares = ("max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "max_non_alpha_words_ratio")
        counts = ("min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length", "min_stop_words")
        lo_w, hi_w, lo_l, hi_l = self.min_doc_words, self.max_doc_words, self.min_avg_word_length, self.max_avg_word_length
        return [
            *(share(f"{at}.{key}", getattr(self, key)) for key in shares),
            *(at_least(f"{at}.{key}", getattr(self, key), 0, "null or 0: the rule is off") for key in counts),
            (not (lo_w and hi_w) or lo_w <= hi_w, f"{at}.min_doc_words={lo_w} and max_doc_words={hi_w}: need min_doc_words <= max_doc_words"),
            (not (lo_l and hi_l) or lo_l <= hi_l, f"{at}.min_avg_word_length={lo_l} and max_avg_word_length={hi_l}: need min <= max"),
        ]


_TOKENS, _N_SYMBOL, _WORD_CHARS, _N_ALPHA = (itemgetter(i) for i in range(4))  # fields of a text.Chunk

# Line starts and ends found with one regex over the text, when "\n" is its only line break.
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_BULLET_LINE = re.compile(r"^[^\S\n]*[•-]", re.M)
_ELLIPSIS_LINE = re.compile(r"(?:\.\.\.|…)[^\S\n]*$", re.M)


def line_counts(text: str) -> Tuple[int, int, int]:
    """(lines, lines starting with a bullet, lines ending with an ellipsis), lines as `str.splitlines`."""
    if _OTHER_BREAKS.search(text) is None:
        n_lines = text.count("\n") + (0 if text.endswith("\n") else 1) if text else 0
        bullets = len(_BULLET_LINE.findall(text)) if ("-" in text or "•" in text) else 0
        ellipses = len(_ELLIPSIS_LINE.findall(text)) if ("..." in text or "…" in text) else 0
        return n_lines, bullets, ellipses
    lines = text.splitlines()
    return (
        len(lines),
        sum(1 for ln in lines if ln.lstrip().startswith(("•", "-"))),
        sum(1 for ln in lines if ln.rstrip().endswith(("...", "…"))),
    )


@register
class GopherQuality(TextRuleStep):
    name = "gopher_quality"
    Settings = GopherQualitySettings
    order = 30  # after language ID; the quality steps run in the order filter.quality names them

    def __init__(self, settings: GopherQualitySettings) -> None:
        super().__init__(settings)
        self.stop_words = frozenset(settings.stop_words)

    def judge_text(self, text: str) -> Optional[Drop]:
        s = self.settings
        name = self.name
        recs = tx.records(text)
        # Sums over the chunks (in C): tokens, symbol tokens, characters of the others.
        n_tokens = sum(map(len, map(_TOKENS, recs)))
        n_symbol = sum(map(_N_SYMBOL, recs))
        n_words = n_tokens - n_symbol
        if s.min_doc_words and n_words < s.min_doc_words:
            return failed(name, "min_doc_words", "words", n_words, "<", s.min_doc_words)
        if s.max_doc_words and n_words > s.max_doc_words:
            return failed(name, "max_doc_words", "words", n_words, ">", s.max_doc_words)
        word_chars = sum(map(_WORD_CHARS, recs))
        avg = word_chars / n_words if n_words else math.nan  # nan fails no comparison, as numpy's mean of nothing
        if s.min_avg_word_length and avg < s.min_avg_word_length:
            return failed(name, "min_avg_word_length", "avg_word_length", avg, "<", s.min_avg_word_length)
        if s.max_avg_word_length and avg > s.max_avg_word_length:
            return failed(name, "max_avg_word_length", "avg_word_length", avg, ">", s.max_avg_word_length)
        tokens = n_tokens or 1  # (datatrove divides by zero here; no tokens: no symbols)
        if s.max_symbol_word_ratio:
            # Divided, not multiplied by 1 / tokens: 3 * (1 / 10) is 0.30000000000000004 > 0.3.
            ratio = text.count("#") / tokens
            if ratio > s.max_symbol_word_ratio:
                return failed(name, "max_symbol_word_ratio", "hash_word_ratio", ratio, ">", s.max_symbol_word_ratio)
            ratio = (text.count("...") + text.count("…")) / tokens
            if ratio > s.max_symbol_word_ratio:
                return failed(name, "max_symbol_word_ratio", "ellipsis_word_ratio", ratio, ">", s.max_symbol_word_ratio)
        if s.max_bullet_lines_ratio or s.max_ellipsis_lines_ratio:
            n_lines, bullets, ellipses = line_counts(text)
            n_lines = n_lines or 1
            if s.max_bullet_lines_ratio and bullets / n_lines > s.max_bullet_lines_ratio:
                return failed(name, "max_bullet_lines_ratio", "bullet_lines_ratio", bullets / n_lines, ">", s.max_bullet_lines_ratio)
            if s.max_ellipsis_lines_ratio and ellipses / n_lines > s.max_ellipsis_lines_ratio:
                return failed(name, "max_ellipsis_lines_ratio", "ellipsis_lines_ratio", ellipses / n_lines, ">", s.max_ellipsis_lines_ratio)
        if s.max_non_alpha_words_ratio and n_tokens:
            n_alpha = sum(map(_N_ALPHA, recs))
            if n_alpha / n_tokens < s.max_non_alpha_words_ratio:
                return failed(name, "max_non_alpha_words_ratio", "alpha_words_ratio", n_alpha / n_tokens, "<", s.max_non_alpha_words_ratio)
        if s.min_stop_words:
            found = self.stop_words.intersection(chain.from_iterable(map(_TOKENS, recs)))
            if len(found) < s.min_stop_words:
                return failed(name, "min_stop_words", "stop_words", len(found), "<", s.min_stop_words)
        return None
