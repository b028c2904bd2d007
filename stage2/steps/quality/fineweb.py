"""FineWeb's own quality rules (Penedo et al. 2024, section 3.3) as a filter step.

Same rules, order and defaults as datatrove's FineWebQualityFilter (`datatrove` 0.10), which is
what its `examples/fineweb.py` runs. Lines are the non-blank lines of the text split at "\\n".
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import List, Optional

from stage2.steps.base import Drop, Rule, TextRuleStep, Verdict, at_least, register, share
from stage2.steps.quality import text as tx
from stage2.steps.quality.gopher import EMPTY, duplicates
from stage2.steps.quality.verdict import failed

_TOKENS = itemgetter(0)  # a text.Chunk's tokens


@dataclass
class FineWebQualitySettings:
    line_punct_thr: float = 0.12  # least share of lines ending with a stop character
    line_punct_exclude_zero: bool = False  # true: a page with no such line passes that rule
    # The characters a line may end with; null: every Unicode sentence terminal (datatrove's
    # TERMINAL_PUNCTUATION: . ! ? and their equivalents in other scripts).
    stop_chars: Optional[str] = None
    short_line_thr: float = 0.67  # most share of lines of at most short_line_length characters
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01  # most share of characters (newlines aside) in repeated lines
    new_line_ratio: float = 0.3  # most newlines per word (token)

    def check(self, at: str) -> List[Rule]:
        return [
            *(share(f"{at}.{key}", getattr(self, key)) for key in ("line_punct_thr", "short_line_thr", "char_duplicates_ratio")),
            at_least(f"{at}.short_line_length", self.short_line_length, 0, "characters"),
            at_least(f"{at}.new_line_ratio", self.new_line_ratio, 0, "newlines per word"),
            (self.stop_chars is None or len(self.stop_chars) > 0,
             f"{at}.stop_chars is empty: no line could end a sentence (null: every Unicode sentence terminal)"),
        ]


@register
class FineWebQuality(TextRuleStep):
    name = "fineweb_quality"
    Settings = FineWebQualitySettings
    order = 30  # after language ID; the quality steps run in the order filter.quality names them

    def __init__(self, settings: FineWebQualitySettings) -> None:
        super().__init__(settings)
        chars = tx.TERMINAL_PUNCTUATION_STR if settings.stop_chars is None else settings.stop_chars
        self.stop_chars = frozenset(chars)

    def judge_text(self, text: str) -> Optional[Drop]:
        s = self.settings
        lines = [ln for ln in text.split("\n") if ln and not ln.isspace()]
        if not lines:
            return Drop(self.name, EMPTY.detail, EMPTY.values)
        n = len(lines)
        stop = self.stop_chars  # one character each, so "ends with one of them" is a set lookup
        ratio = sum(1 for ln in lines if ln[-1] in stop) / n
        if ratio < s.line_punct_thr and not (ratio == 0 and s.line_punct_exclude_zero):
            return failed(self.name, "line_punct_thr", "line_punct_ratio", ratio, "<", s.line_punct_thr)
        limit = s.short_line_length
        ratio = sum(1 for ln in lines if len(ln) <= limit) / n
        if ratio > s.short_line_thr:
            return failed(self.name, "short_line_thr", "short_line_ratio", ratio, ">", s.short_line_thr)
        newlines = text.count("\n")
        ratio = duplicates(lines)[1] / (len(text) - newlines)
        if ratio > s.char_duplicates_ratio:
            return failed(self.name, "char_duplicates_ratio", "char_dup_ratio", ratio, ">", s.char_duplicates_ratio)
        # A chunk between spaces is one word or more, so newlines per chunk bound newlines per word
        # from above: when that passes, the words need not be counted.
        chunks = text.split()
        if newlines / len(chunks) <= s.new_line_ratio:
            return None
        ratio = newlines / sum(map(len, map(_TOKENS, tx.records(text))))
        if ratio > s.new_line_ratio:
            return failed(self.name, "new_line_ratio", "list_ratio", ratio, ">", s.new_line_ratio)
        return None
