"""The cheapest checks, first in every chain: unusable records and the length screen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.steps.base import Drop, Step, Verdict, register


@dataclass(frozen=True)
class InvalidSettings:
    on_bad_record: str = "fail"  # fail: the run stops at the first unusable record; skip: counted as "invalid"


@register
class Invalid(Step):
    """Records without usable text (null, not a string, malformed JSON, invalid UTF-8...)."""

    name = "invalid"
    Settings = InvalidSettings
    order = 0
    optional = False

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Dict[str, Any]:
        return {"on_bad_record": str(f.on_bad_record)}

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        out: List[Verdict] = []
        for doc in docs:
            if doc.problem is None:
                out.append(None)
            elif self.settings.on_bad_record == "fail":
                raise Stage2Error(f"{doc.location}: record {doc.record}: {doc.problem}")
            else:
                out.append(Drop("invalid", doc.problem))
        return out


@dataclass(frozen=True)
class LengthSettings:
    min_chars: int = 200
    max_chars: Optional[int] = 8000  # None (a component's `max_chars: 0`): no upper bound


@register
class Length(Step):
    """The length screen, in characters."""

    name = "length"
    Settings = LengthSettings
    order = 10
    optional = False
    reasons = ("too_short", "too_long")

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Dict[str, Any]:
        return {"min_chars": own["min_chars"], "max_chars": own["max_chars"]}  # the component's own, else filter.*

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        lo, hi = self.settings.min_chars, self.settings.max_chars
        out: List[Verdict] = []
        for doc in docs:
            n = len(doc.text)
            if n < lo:
                out.append(Drop("too_short", f"chars={n} < {lo}", {"chars": n}))
            elif hi is not None and n > hi:
                out.append(Drop("too_long", f"chars={n} > {hi}", {"chars": n}))
            else:
                out.append(None)
        return out
