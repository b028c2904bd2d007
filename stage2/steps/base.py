"""The per-document check interface: every filter step is one small class.

A step has a name (its config key and usual drop reason), typed settings (a dataclass the schema
uses too), and `judge(docs)`, which returns one verdict per document: None to keep it, or a `Drop`
saying why. Steps never change a document's text. The filter runs them as a `Chain`, cheapest
first, each on the documents the ones before kept; counts per reason and rejected samples come
from the chain, never from code written per step.

Adding a check (see README, "Adding a filter step"): a subclass registered with `@register`, its
settings dataclass as a field of `FilterConfig` under the step's name, and the name in `filter.quality`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from stage2.documents import Document


@dataclass(frozen=True)
class Drop:
    """Why a step dropped a document: the reason (a stats key), a readable detail with the value that
    failed (`dup_line_frac=0.410 > 0.300`), and values saved as columns of rejected.parquet."""

    reason: str
    detail: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)


Verdict = Optional[Drop]


class Step:
    """One per-document check. Subclasses set `name`, `Settings` and implement `judge`."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    # Every reason the step can give, so stats list each one even when it dropped nothing.
    reasons: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.tally: Counter = Counter()  # what the step counted while judging (summed across workers into stats)

    @classmethod
    def all_reasons(cls) -> Tuple[str, ...]:
        return cls.reasons or (cls.name,)

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        raise NotImplementedError


class TextRuleStep(Step):
    """A step that judges one text at a time by named rules: `judge_text` returns the first failing
    rule's Drop (its values name it as "failed_rule"), counted per rule in the step's tally."""

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        out: List[Verdict] = []
        for doc in docs:
            verdict = self.judge_text(doc.text or "")
            if verdict is not None:
                self.tally[verdict.values["failed_rule"]] += 1
            out.append(verdict)
        return out

    def judge_text(self, text: str) -> Verdict:
        raise NotImplementedError


STEPS: Dict[str, Type[Step]] = {}


def register(cls: Type[Step]) -> Type[Step]:
    if cls.name in STEPS and STEPS[cls.name] is not cls:
        raise ValueError(f"two filter steps are named {cls.name!r}")
    STEPS[cls.name] = cls
    return cls


class Chain:
    """Steps in order; each judges only what the ones before kept."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    @property
    def reasons(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(r for step in self.steps for r in step.all_reasons()))

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        verdicts: List[Verdict] = [None] * len(docs)
        alive = list(range(len(docs)))
        for step in self.steps:
            if not alive:
                break
            judged = step.judge([docs[i] for i in alive])
            if len(judged) != len(alive):
                raise RuntimeError(f"filter step {step.name} judged {len(judged)} of {len(alive)} documents")
            survivors = []
            for i, verdict in zip(alive, judged):
                if verdict is None:
                    survivors.append(i)
                else:
                    verdicts[i] = verdict
            alive = survivors
        return verdicts

    def tally(self) -> Dict[str, int]:
        return {f"{step.name}.{key}": n for step in self.steps for key, n in sorted(step.tally.items())}
