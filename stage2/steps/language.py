"""The language step: the rule of stage2/lid/rule.py (function words, a check detector, the main one)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

from stage2.documents import Document
from stage2.lid.rule import LanguageRule, judge
from stage2.steps.base import Drop, Step, Verdict, register


@register
class Language(Step):
    name = "language"
    Settings = LanguageRule
    order = 20  # after the length screen, before the quality steps (as FineWeb's pipeline runs them)
    optional = False

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Optional[Dict[str, Any]]:
        if not own["lang_filter"]:
            return None
        return asdict(f.language_rule(own["languages"]))

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        result = judge([d.text for d in docs], self.settings)
        # The top language of every document a detector saw ("" when the function-word check dropped it first).
        self.tally.update(f"language:{lang}" for lang in result["language"] if lang)
        out: List[Verdict] = []
        for i in range(len(docs)):
            if result["passed"][i]:
                out.append(None)
                continue
            check = result["rule"][i]
            self.tally[f"dropped_by:{check}"] += 1
            values = {
                "language": result["language"][i],
                "score": result["score"][i],
                "failed_check": check,
                "target_score": result["target"][i],
                "function_word_share": result["function_words"][i],
            }
            share = result["function_words"][i] if check == "function_words" else result["target"][i]
            limit = self.settings.min_function_words if check == "function_words" else (
                self.settings.threshold if check == self.settings.backend else self.settings.check_threshold)
            shown = "nan" if share is None or (isinstance(share, float) and math.isnan(share)) else f"{share:.3f}"
            out.append(Drop("language", f"{check}={shown} < {limit}", values))
        return out
