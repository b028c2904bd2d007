"""The filter's language rule: which checks a document must pass to count as one of `filter.languages`.

Cheapest first, each on the documents the one before kept (all read `langid.language_text`):
  1. `filter.function_words` (~5 us a document): at least that share of the words are function
     words of the wanted language (`stage2.lid.function_words`; English only). It runs first only when
     every wanted language has a list; otherwise it runs after the first detector, on the list of
     the wanted language that detector found (a document found to be a language without a list is
     not checked). With thresholds above 0 the verdicts are the same either way: a document must be
     one of the wanted languages.
  2. `filter.lang_check` (fastText by default): a wanted language's probability
     >= `filter.lang_check_threshold`;
  3. `filter.lang_backend` (langdetect_fast by default): >= `filter.lang_threshold`.
Without a check detector the main detector runs as step 2 and there is no step 3.
With `filter.languages=[en]` step 1 drops a quarter of the speed benchmark's documents (other
scripts, German, Manx) before any detector: 11,191 fastText calls instead of 15,147.
Why three (benchmarks/results/filter_quality.md, English on 6,050 multilingual dev documents):
langdetect alone at 0.85 keeps 41 non-English documents (precision 0.861), 31 of them Irish,
Scottish Gaelic or Manx, for which it has no profile; fastText knows those languages and removes
the Gaelic ones, and the function-word share removes Manx, which both detectors take for English.
The checks are switched off with `filter.lang_check=null filter.function_words=0`, which leaves the
plain rule "main detector >= lang_threshold".

A document's reported language and score are those of the last detector that judged it ("" and 0
when none did: dropped by step 1); `rule` says which check rejected it ("" when kept). Everything
here is a pure function of the text and the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from stage2.lid import function_words
from stage2.lid.backends import UNKNOWN, language_text, rank_all, target_score

FUNCTION_WORDS = "function_words"


@dataclass(frozen=True)
class LanguageRule:
    """Plain values (workers receive it pickled); `FilterConfig.language_rule` makes it from the filter's settings."""

    languages: Tuple[str, ...] = ("en",)
    backend: str = "langdetect_fast"
    threshold: float = 0.85
    max_chars: int = 2000
    check_backend: Optional[str] = None  # None (or the main backend itself): no second detector
    check_threshold: float = 0.0
    min_function_words: float = 0.0  # 0: no function-word check

    def backend_codes(self, backend: str) -> Tuple[str, ...]:
        """`languages` as `backend` spells them: fastText has no regions (langdetect's zh-cn is its zh)."""
        if backend == "fasttext":
            return tuple(dict.fromkeys(lang.split("-")[0] for lang in self.languages))
        return self.languages


def judge(texts: Sequence[str], rule: LanguageRule) -> Dict[str, List[Any]]:
    """Per text: language and score (the top language), target (the wanted language's probability that
    the threshold was compared with; NaN when no detector ran), function_words (the share, NaN when not
    checked), passed, and rule (the check that rejected it, "" when passed)."""
    n = len(texts)
    cleaned = [language_text(t, rule.max_chars) for t in texts]
    out: Dict[str, List[Any]] = {
        "language": [""] * n, "score": [0.0] * n, "target": [math.nan] * n, "function_words": [math.nan] * n,
        "passed": [False] * n, "rule": [""] * n,
    }
    wanted: List[str] = [""] * n  # the most probable wanted language by the first detector
    alive = list(range(n))

    def detect(backend: str, threshold: float) -> None:
        nonlocal alive
        codes = rule.backend_codes(backend)
        survivors = []
        for i, ranked in zip(alive, rank_all([cleaned[i] for i in alive], backend)):
            language, score = ranked[0] if ranked else (UNKNOWN, 0.0)
            out["language"][i], out["score"][i] = language, float(score)
            out["target"][i] = target_score(ranked, codes)
            wanted[i] = wanted[i] or max(((p, lang) for lang, p in ranked if lang in codes), default=(0.0, ""))[1]
            if out["target"][i] >= threshold:
                survivors.append(i)
            else:
                out["rule"][i] = backend
        alive = survivors

    first = rule.check_backend or rule.backend
    codes = rule.backend_codes(first)

    def function_word_check(share_of) -> None:
        nonlocal alive
        survivors = []
        for i in alive:
            share = share_of(i)
            if share is None:  # a language without a list: not checked
                survivors.append(i)
                continue
            out["function_words"][i] = share
            if share >= rule.min_function_words:
                survivors.append(i)
            else:
                out["rule"][i] = FUNCTION_WORDS
        alive = survivors

    # The function-word check is the cheapest (~5 us a document, fastText ~100): it runs first when
    # every language the detector could find has a list, as a necessary condition (the document
    # must be one of them); documents it drops never reach a detector (no language, no score).
    early = rule.min_function_words > 0 and all(code in function_words.WORD_LISTS for code in codes)
    if early:
        function_word_check(lambda i: max(function_words.share(cleaned[i], code) for code in codes))
    detect(first, rule.check_threshold if rule.check_backend else rule.threshold)
    if rule.min_function_words > 0 and not (early and len(codes) == 1):
        # The list of the language the document was found to be (with en+de wanted, an English
        # page is held to English words, a German one, with no list, to none).
        function_word_check(lambda i: function_words.share(cleaned[i], wanted[i]))
    if rule.check_backend:
        detect(rule.backend, rule.threshold)
    for i in alive:
        out["passed"][i] = True
    return out


def first_detection(texts: Sequence[str], rule: LanguageRule) -> List[Tuple[str, float]]:
    """(language, score) by the rule's first detector: what `judge` would have reported for documents
    the early function-word check dropped before any detector saw them."""
    ranked_all = rank_all([language_text(t, rule.max_chars) for t in texts], rule.check_backend or rule.backend)
    return [(ranked[0][0], float(ranked[0][1])) if ranked else (UNKNOWN, 0.0) for ranked in ranked_all]
