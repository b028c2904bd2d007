"""C4's page rules (Raffel et al. 2020, section 2.2) as a filter step that judges and never edits.

C4 removes lines (without terminal punctuation, with fewer than 3 words, with "javascript", with
cookie and terms-of-use phrases, with a word over 1000 characters) and then drops pages with fewer
than 5 sentences left, or with "lorem ipsum" or "{" on a line it kept. This step counts what would
be left and gives the same keep/drop verdict as datatrove's C4QualityFilter (`datatrove` 0.10), but
leaves the text as it is: the kept document is the original page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from stage2.steps.base import Drop, Rule, TextRuleStep, Verdict, at_least, register
from stage2.steps.quality import text as tx
from stage2.steps.quality.verdict import failed

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class C4QualitySettings:
    """-1 switches the three numeric rules off, false each of the others."""

    split_paragraph: bool = True  # judge lines (C4); false: sentences of the whole text instead
    remove_citations: bool = True  # drop [1], [edit], [citation needed] before the line-end test
    filter_no_terminal_punct: bool = True  # a line must end with . ? ! " or ' (and not "...")
    min_num_sentences: int = 5  # sentences on the lines kept
    min_words_per_line: int = 3
    max_word_length: int = 1000  # a line with a longer word is removed
    filter_lorem_ipsum: bool = True  # "lorem ipsum" on a kept line drops the page
    filter_javascript: bool = True  # a line mentioning javascript is removed
    filter_curly_bracket: bool = True  # "{" on a kept line drops the page
    filter_policy: bool = True  # a line with a cookie / terms-of-use phrase is removed

    def check(self, at: str) -> List[Rule]:
        return [at_least(f"{at}.{key}", getattr(self, key), -1, "-1: the rule is off") for key in ("min_num_sentences", "min_words_per_line", "max_word_length")]


@register
class C4Quality(TextRuleStep):
    name = "c4_quality"
    Settings = C4QualitySettings
    order = 30  # after language ID; the quality steps run in the order filter.quality names them

    def judge_text(self, text: str) -> Optional[Drop]:
        s = self.settings
        # What the whole text holds decides which per-line tests can ever fire (citations never span
        # lines, so removing them from the whole text finds the same phrases as line by line).
        cleaned = CITATION.sub("", text) if s.remove_citations and "[" in text else text
        lowered = cleaned.lower()
        lorem = s.filter_lorem_ipsum and "lorem ipsum" in lowered
        curly = s.filter_curly_bracket and "{" in cleaned
        javascript = s.filter_javascript and "javascript" in lowered
        policy = s.filter_policy and any(p in lowered for p in POLICY_SUBSTRINGS)
        count = s.min_num_sentences != -1
        lines = text.splitlines() if s.split_paragraph else tx.sentences(text)
        sentences = 0
        for number, line in enumerate(lines, 1):
            if sentences >= s.min_num_sentences and not (lorem or curly):
                break  # enough sentences, and nothing left that could drop the page
            line = line.strip()
            words = line.split()
            if s.max_word_length != -1 and len(line) > s.max_word_length and any(len(w) > s.max_word_length for w in words):
                continue
            if s.remove_citations and "[" in line:
                line = CITATION.sub("", line)
            if s.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                continue
            if len(words) < s.min_words_per_line:
                continue
            if lorem or javascript or policy:
                low = line.lower()
                if lorem and "lorem ipsum" in low:
                    return Drop(self.name, f'"lorem ipsum" on line {number}', {"failed_rule": "filter_lorem_ipsum", "value": float(number), "threshold": None})
                if javascript and "javascript" in low:
                    continue
            if curly and "{" in line:
                return Drop(self.name, f'"{{" on line {number}', {"failed_rule": "filter_curly_bracket", "value": float(number), "threshold": None})
            if policy and any(p in low for p in POLICY_SUBSTRINGS):
                continue
            if count:
                # A line reduced to nothing by citation removal still counts one, as in datatrove.
                sentences += max(1, tx.sentence_count(line)) if s.split_paragraph else 1
        if sentences < s.min_num_sentences:
            return failed(self.name, "min_num_sentences", "sentences", sentences, "<", s.min_num_sentences)
        return None
