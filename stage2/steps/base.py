"""The per-document check interface: every filter step is one small class.

A step has a name (its config key and usual drop reason), typed settings (a dataclass), an `order`
(its place in the chain: cheapest first), and `judge(docs)`, which returns one verdict per document:
None to keep it as it is, a `Drop` saying why, or an `Edit`: keep it with a new text (a transform, such
as PII redaction), which the later steps, dedup and the parts then see. The filter runs a component's
steps as a `Chain`, each on the documents the ones before kept; counts per reason and rejected samples
come from the chain, never from code written per step.

Adding a check (docs/filter.md, "Adding a step") is one new module in stage2/steps/: stage2.steps imports
every module of the package, `@register` adds the step to `STEPS`, and stage2/config.py gives
`FilterConfig` a field `filter.<name>` with its settings. Naming it in `filter.quality` runs it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type, Union

from stage2.documents import Document
from stage2.errors import Stage2Error


@dataclass(frozen=True)
class Drop:
    """Why a step dropped a document: the reason (a stats key), a readable detail with the value that
    failed (`dup_line_frac=0.410 > 0.300`), and values saved as columns of rejected/<component>.parquet."""

    reason: str
    detail: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edit:
    """A kept document's new text (changed only where the step means to), why (`reason`: the step's
    name, rejected/<component>.parquet's `reason` for a sample of it), a readable detail and sample columns."""

    text: str
    reason: str
    detail: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)


Verdict = Optional[Union[Drop, Edit]]


HUB_PREFIX = "hub:"  # an entry of a step's list of files that names a hub dataset instead (a Settings' HUB_KEYS)
HUB_ENTRY_SPLIT = "test"  # an eval set's split unless the entry names one


class HubEntry(NamedTuple):
    path: str  # a hub repo id, or a local dataset folder
    subset: Optional[str]
    split: str  # `a+b`: several
    revision: Optional[str]
    name: str  # the path's last part, and `/<subset>` when there is one


def parse_hub_entry(entry: str, what: str) -> HubEntry:
    """`hub:<path>[:<subset>[:<split>]][@<revision>]`: what `datasets.load_dataset(path, subset, split=split,
    revision=revision)` takes; the split is `test` unless named, `a+b` joins several. (Resolved to files by
    stage2.io.sources.hub_entry_files, as hub components are.)"""
    body, at, revision = entry[len(HUB_PREFIX):].rpartition("@") if "@" in entry else (entry[len(HUB_PREFIX):], "", "")
    parts = body.split(":")
    path, subset, split = (parts + ["", ""])[:3]
    if not entry.startswith(HUB_PREFIX) or not path or len(parts) > 3 or (at and not revision) or not all((split or HUB_ENTRY_SPLIT).split("+")):
        raise Stage2Error(f"{what}: {entry!r} is no hub dataset entry: write hub:<path>[:<subset>[:<split>]][@<revision>] (e.g. hub:cais/mmlu:all:test)")
    name = os.path.basename(path.rstrip("/")) + (f"/{subset}" if subset else "")
    return HubEntry(path, subset or None, split or HUB_ENTRY_SPLIT, revision or None, name)


class StepInputs:
    """What the driver offers a step's `prepare`: the run's files as its inputs are read (stage2/stages/filter.py)."""

    def files(self, pattern: str, what: str = "filter") -> List[str]:
        """A path or glob (absolute), or a hub dataset (`hub:...`, stage2.io.sources.hub_entry) -> its files,
        sorted; none is an error (`what`: the key messages name)."""
        raise NotImplementedError

    def read(self, path: str, text_column: str, id_column: Optional[str]) -> Iterator[Document]:
        """The records of a file (jsonl/json/parquet/txt, compressed too) by the dataset readers; a
        record without the id column gets the id `<file name>:<record>`."""
        raise NotImplementedError

    def fingerprint(self, path: str) -> str:
        """The file's content hash (as provenance records it)."""
        raise NotImplementedError


Rule = Tuple[bool, str]  # (holds, the one-line message saying what is wrong when it does not)


class Step:
    """One per-document check. Subclasses set `name`, `Settings`, `order` and implement `judge`.

    An optional step (the default) runs on the components whose `filter.quality` names it, with the
    settings `filter.<name>`: `Settings` must then be a plain (not frozen) dataclass, whose fields are
    the keys, and may have `check(at)` returning the `Rule`s its values must meet (`at`: "filter.<name>").
    The steps every component runs (invalid, length, language) read the filter's own keys instead.
    """

    name: ClassVar[str]
    Settings: ClassVar[type]
    # Where the step runs in a chain: lower first, so cheaper checks spare the costlier ones most
    # documents. Steps of equal order run in the order `filter.quality` names them.
    order: ClassVar[float]
    optional: ClassVar[bool] = True
    # An optional step its own keys switch on (filter.<name>.*: a list of files, of kinds ...), not
    # named in filter.quality; `settings_for` says which components run it.
    keyed: ClassVar[bool] = False
    # Every reason the step can give, so stats list each one even when it dropped nothing.
    reasons: ClassVar[Tuple[str, ...]] = ()
    # A step that edits kept documents (returns `Edit`s) and drops none sets this: its samples' reason.
    edits: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.tally: Counter = Counter()  # what the step counted while judging (summed across workers into stats)

    @classmethod
    def all_reasons(cls) -> Tuple[str, ...]:
        return cls.reasons or (() if cls.edits else (cls.name,))

    @classmethod
    def prepare(cls, settings: Dict[str, Any], scratch: Path, inputs: StepInputs) -> Dict[str, Any]:
        """Once per run, in the driver, before any task: what the step builds for every worker to share
        (files under `scratch`, the run's work folder), and the settings the workers then get (plain
        data, passed to `from_plain`). Default: nothing to build."""
        return settings

    @classmethod
    def describe(cls, settings: Mapping[str, Any]) -> Dict[str, Any]:
        """What `prepare` built, for the filter's stats (the settings it returned); {}: nothing to say."""
        return {}

    @classmethod
    def from_plain(cls, settings: Mapping[str, Any]) -> "Step":
        """The step from its plain settings (`settings_for`, then `prepare`): lists become tuples."""
        return cls(cls.Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}))

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Optional[Dict[str, Any]]:
        """The step's settings for one component as plain data, or None when the component skips it.
        `own`: the component's filter settings (`ComponentConfig.filter_settings`); `f`: the `FilterConfig`."""
        return dataclasses.asdict(f.step_settings(cls.name)) if cls.name in own["quality"] else None

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


STEPS: Dict[str, Type[Step]] = {}  # by name, in the order registered


def register(cls: Type[Step]) -> Type[Step]:
    if cls.name in STEPS and STEPS[cls.name] is not cls:
        raise ValueError(f"two filter steps are named {cls.name!r}")
    if not isinstance(getattr(cls, "order", None), (int, float)):
        raise TypeError(f"filter step {cls.name!r} has no `order` (a number: where it runs in the chain, cheapest first)")
    if cls.optional and not (dataclasses.is_dataclass(cls.Settings) and not cls.Settings.__dataclass_params__.frozen):
        # (OmegaConf makes a frozen dataclass read-only: no filter.<name>.<key> could be set)
        raise TypeError(f"filter step {cls.name!r}: its Settings must be a plain @dataclass (not frozen): its fields are the keys filter.{cls.name}.<key>")
    STEPS[cls.name] = cls
    return cls


def optional_steps() -> Dict[str, Type[Step]]:
    """The steps with settings `filter.<name>`, cheapest first (then in the order registered)."""
    return {cls.name: cls for cls in sorted(STEPS.values(), key=lambda c: c.order) if cls.optional}


def quality_steps() -> Dict[str, Type[Step]]:
    """The steps `filter.quality` can name: the optional ones not switched on by their own keys."""
    return {name: cls for name, cls in optional_steps().items() if not cls.keyed}


def chain_settings(own: Mapping[str, Any], f: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """A component's chain as plain data, (name, settings) per step it runs: by `order`, steps of
    equal order in the order the component's quality list names them (`own`, `f`: `Step.settings_for`)."""
    named = {name: i for i, name in enumerate(own["quality"])}
    chosen = [(cls, settings) for cls in STEPS.values() if (settings := cls.settings_for(own, f)) is not None]
    chosen.sort(key=lambda c: (c[0].order, named.get(c[0].name, -1)))
    return [(cls.name, settings) for cls, settings in chosen]


def share(key: str, value: Any) -> Rule:
    """A setting that is a share (null switches its rule off)."""
    return (value is None or 0.0 <= value <= 1.0, f"{key}={value} must be a share between 0 and 1 (null: the rule is off)")


def at_least(key: str, value: Any, low: float, off: str) -> Rule:
    """A setting with a lower bound; `off` says which values switch its rule off."""
    return (value is None or value >= low, f"{key}={value} must be {low} or more ({off})")


class Chain:
    """Steps in order; each judges only what the ones before kept, as the ones before edited it.

    A document's verdict is its `Drop`, or the last `Edit` of a kept one (its text: every edit made),
    or None: kept as it was read."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    @property
    def reasons(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(r for step in self.steps for r in step.all_reasons()))

    @property
    def edit_reasons(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(r for step in self.steps for r in step.edits))

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        verdicts: List[Verdict] = [None] * len(docs)
        current = list(docs)
        alive = list(range(len(docs)))
        for step in self.steps:
            if not alive:
                break
            judged = step.judge([current[i] for i in alive])
            if len(judged) != len(alive):
                raise RuntimeError(f"filter step {step.name} judged {len(judged)} of {len(alive)} documents")
            survivors = []
            for i, verdict in zip(alive, judged):
                if isinstance(verdict, Edit):
                    current[i] = dataclasses.replace(current[i], text=verdict.text)
                    verdicts[i] = verdict
                    survivors.append(i)
                elif verdict is None:
                    survivors.append(i)
                else:
                    verdicts[i] = verdict
            alive = survivors
        return verdicts

    def tally(self) -> Dict[str, int]:
        return {f"{step.name}.{key}": n for step in self.steps for key, n in sorted(step.tally.items())}
