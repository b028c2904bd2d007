"""The typed config: one dataclass per config group, registered in Hydra's ConfigStore.

`conf/config.yaml` puts `stage2_schema` first in its defaults list, so every YAML file and every
command-line override is merged into these dataclasses: an unknown key or a value of the wrong type
fails at start-up with Hydra's own message, before any work is done. `FilterConfig` gets one field
per optional filter step from the step registry (stage2/steps), so a new step needs no edit here.

Start-up turns the composed config into a `Config` object (`stage2.main.resolve_config`); every stage,
task and worker reads its attributes. Each class checks its own values (`check`) and derives what the
stages need from them (the language rule, a component's filter settings, SentencePiece's options, the
executor). `Config.to_plain()` is the recipe as plain data: what the config digest hashes and
`config.resolved.yaml` holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from omegaconf import MISSING, DictConfig, OmegaConf

# Standard library only: workers import the config without Hydra or heavy dependencies.
from stage2.steps import optional_steps, quality_steps
from stage2.steps.base import HUB_PREFIX, Rule

if TYPE_CHECKING:
    from stage2.lid.rule import LanguageRule


class Choice(str, Enum):
    """One of a fixed set of names; prints as the name the YAML uses (not as `Class.member`)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Stage(Choice):
    filter = "filter"
    tokenizer = "tokenizer"
    shard = "shard"
    pipeline = "pipeline"
    report = "report"
    verify = "verify"


class LangBackend(Choice):
    langdetect = "langdetect"
    langdetect_fast = "langdetect_fast"  # langdetect's answers, vectorised (stage2/lid/langdetect_fast.py)
    fasttext = "fasttext"


class DedupScope(Choice):
    component = "component"
    mixture = "mixture"


class BadRecordPolicy(Choice):
    fail = "fail"
    skip = "skip"


class ModelType(Choice):
    unigram = "unigram"
    bpe = "bpe"


class Remainder(Choice):
    drop = "drop"
    pad = "pad"


class ExecutorKind(Choice):
    local = "local"
    ray = "ray"


def first_failed(rules: List[Rule]) -> None:
    """Raise the message of the first rule that does not hold."""
    from stage2.errors import Stage2Error

    for ok, message in rules:
        if not ok:
            raise Stage2Error(message)


@dataclass
class ComponentConfig:
    """One source of a mixture: local files (`data_files`) or a hub dataset (`hub_path`)."""

    data_files: Optional[List[str]] = None  # paths or globs; relative to the launch directory
    format: Optional[str] = None  # json | parquet | text; inferred from the file names when unset
    hub_path: Optional[str] = None  # e.g. HuggingFaceFW/fineweb
    subset: Optional[str] = None  # the hub dataset's config name
    split: str = "train"
    revision: Optional[str] = None  # pin a hub commit / tag
    text_column: str = "text"
    id_column: Optional[str] = "id"  # when missing in a record, the id is <component>/<file stem>/<record number>
    url_column: Optional[str] = None  # where a record's URL is (filter.url's rules read it); null: none
    url_filter: bool = True  # false: filter.url's rules skip this component (no URL column needed)
    sample_by: str = "line"  # for text files: line | paragraph | document
    max_records: Optional[int] = None  # dataset.max_records caps it too: the smaller of the two applies
    weight: float = 1.0
    lang_filter: bool = True  # false for code: no language identification
    # The filter settings that depend on a component's content; null: the filter's own (filter.<key>).
    min_chars: Optional[int] = None
    max_chars: Optional[int] = None  # 0: no upper bound for this component
    languages: Optional[List[str]] = None  # the languages to keep from this component
    dedup: Optional[bool] = None  # false: none of its documents dropped as a duplicate (null, true: filter.dedup.exact/near)
    quality: Optional[List[str]] = None  # this component's quality steps ([]: none; null: filter.quality)

    def filter_settings(self, f: "FilterKeys") -> Dict[str, Any]:
        """The settings the filter applies to this component: its own where set, else the filter's.
        `max_chars` None: no upper bound."""
        own = self.dedup is not False
        return {
            "min_chars": f.min_chars if self.min_chars is None else self.min_chars,
            "max_chars": (f.max_chars if self.max_chars is None else self.max_chars) or None,
            "languages": tuple(f.languages or ()) if self.languages is None else tuple(self.languages),
            "lang_filter": self.lang_filter,
            "exact_dedup": own and bool(f.dedup.exact),
            "near_dedup": own and bool(f.dedup.near),
            "quality": tuple(f.quality or ()) if self.quality is None else tuple(self.quality),
            "url_column": self.url_column,
            "url_filter": self.url_filter,
        }

    def rules(self, key: str, f: "FilterKeys") -> List[Rule]:
        """`key`: dataset.components.<name>; `f`: the filter whose settings fill what the component leaves unset."""
        own_min, own_max, languages = self.min_chars, self.max_chars, self.languages
        low = f.min_chars if own_min is None else own_min
        high = f.max_chars if own_max is None else own_max
        return [
            (self.max_records is None or self.max_records >= 1, f"{key}.max_records={self.max_records} must be 1 or more (null: no limit)"),
            (self.format is None or self.format in FORMATS, f"{key}.format={self.format}: the formats are {', '.join(FORMATS)} (null: from the file names)"),
            (self.sample_by in SAMPLE_BY, f"{key}.sample_by={self.sample_by}: a text file is read by {', '.join(SAMPLE_BY)} (one document each)"),
            (math.isfinite(self.weight) and self.weight > 0,
             f"{key}.weight={self.weight}: a weight must be a positive number (to leave a component out, remove it from the manifest)"),
            ((own_min or 0) >= 0, f"{key}.min_chars={own_min} must be 0 or more (null: filter.min_chars)"),
            ((own_max or 0) >= 0, f"{key}.max_chars={own_max} must be 0 (no upper bound) or more (null: filter.max_chars)"),
            (own_min is None and own_max is None or not high or (low or 0) <= high,
             f"{key if own_min is not None else 'filter'}.min_chars={low} and "
             f"{key if own_max is not None else 'filter'}.max_chars={high}: need min_chars <= max_chars "
             f"(or {key}.max_chars=0: no upper bound)"),
            (languages is None or len(languages) >= 1, f"{key}.languages is empty: name at least one language to keep (e.g. [en]), or null for filter.languages"),
            (languages is None or all(str(lang).strip() for lang in languages), f"{key}.languages={_override(languages)} holds an empty language name"),
            (all(n in QUALITY_STEPS for n in self.quality or []), f"{key}.quality={_override(self.quality)}: the quality steps are {', '.join(QUALITY_STEPS)}"),
            (not (f.url_rules() and self.url_filter and not self.url_column),
             f"{key} has no url_column, and filter.url's rules are set: name the column holding each record's URL"
             f" ({key}.url_column=url), or let this component skip them ({key}.url_filter=false)"),
        ]


SAMPLE_BY = ("line", "paragraph", "document")
FORMATS = ("json", "parquet", "text")  # `datasets`' builders for local files (JSON lines or arrays, parquet, text)

# Records of a partition; far more than fits in memory, and well inside the 36 bits of a record's position.
MAX_PARTITION = 10**8


@dataclass
class DatasetConfig:
    name: str = MISSING
    components: Dict[str, ComponentConfig] = field(default_factory=dict)
    # `dataset=files`: each path or glob becomes one component named after its file stem.
    paths: List[str] = field(default_factory=list)
    weights: List[float] = field(default_factory=list)  # one per path, positive; []: 1.0 each
    lang_filter: bool = True  # language ID for every path's component (false: none, e.g. code)
    text_column: str = "text"
    id_column: Optional[str] = "id"
    url_column: Optional[str] = None  # where a record's URL is (filter.url's rules need it); null: none
    max_records: Optional[int] = None  # per component (1 or more); caps the components' own max_records too
    # Documents per partition. Partitions are the unit of parallel work and of output files; they
    # are fixed here (never by the machine) so artifacts do not depend on the worker count.
    partition_size: int = 2000

    def rules(self, f: "FilterKeys") -> List[Rule]:
        """partition_size, max_records, `dataset=files`' weights and lang_filter, and each component's own settings
        (`f`: the filter whose settings fill what a component leaves unset)."""
        paths, weights = self.paths or [], self.weights or []
        rules = [
            (1 <= self.partition_size <= MAX_PARTITION, f"dataset.partition_size={self.partition_size} must be 1 to {MAX_PARTITION:,} (documents per partition)"),
            (self.max_records is None or self.max_records >= 1, f"dataset.max_records={self.max_records} must be 1 or more (null: no limit)"),
            (not weights or len(weights) == len(paths),
             f"dataset.weights={_override(weights)} has {_count(len(weights), 'value')} for {_count(len(paths), 'path')} in dataset.paths: give one weight per path (or [] for 1.0 each)"),
            *((math.isfinite(w) and w > 0, f"dataset.weights={_override(weights)}: the weight of {p!r} is {w}; every weight must be a positive number")
              for w, p in zip(weights, paths)),
            # (without paths or components, resolve_components says the dataset has none)
            (self.lang_filter or bool(paths) or not self.components,
             "dataset.lang_filter=false applies to dataset.paths (dataset=files) only; for a manifest's component set dataset.components.<name>.lang_filter=false"),
            (not (paths and f.url_rules() and not self.url_column),
             "dataset.paths' components have no URL column (dataset.url_column is null), and filter.url's rules are set:"
             " name the column holding each record's URL (dataset.url_column=url)"),
        ]
        for name, component in (self.components or {}).items():
            check_name(name, f"dataset.components.{name}")
            rules += component.rules(f"dataset.components.{name}", f)
        return rules

    def check(self, f: "FilterKeys") -> None:
        first_failed(self.rules(f))


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    window_words: int = 13  # k: words per rolling-hash window
    threshold: float = 0.5  # share of a document's windows already seen that makes it a near duplicate
    # component: duplicates within a component; mixture: also across components, in manifest order
    # (both exact and near dedup).
    scope: DedupScope = DedupScope.component
    # Memory of one hash-bucket task: the number of buckets follows it, the verdicts never do.
    memory_mb: int = 256

    def rules(self) -> List[Rule]:
        return [
            (0.0 < self.threshold <= 1.0, f"filter.dedup.threshold={self.threshold} must be in (0, 1]"),
            (self.window_words >= 1, f"filter.dedup.window_words={self.window_words} must be at least 1"),
            (self.memory_mb >= 1, f"filter.dedup.memory_mb={self.memory_mb} must be at least 1 (MB for one dedup bucket task)"),
        ]


@dataclass
class FilterKeys:
    """The filter's own keys; FilterConfig adds the optional steps' settings."""

    min_chars: int = 200
    max_chars: Optional[int] = 8000  # 0 or null: no upper bound (a component's own max_chars: the same)
    languages: List[str] = field(default_factory=lambda: ["en"])
    lang_backend: LangBackend = LangBackend.langdetect_fast
    lang_threshold: float = 0.85  # conf: the backend's calibrated threshold (0.85 langdetect, 0.4 fasttext)
    lang_max_chars: int = 2000  # characters of a document the detector reads
    # Checked before the main detector (stage2/lid/rule.py): a second detector that must also find a
    # wanted language (null: none), and the least share of function words (0: no check; lists: en).
    lang_check: Optional[LangBackend] = LangBackend.fasttext
    lang_check_threshold: float = 0.3
    function_words: float = 0.03
    dedup: DedupConfig = field(default_factory=DedupConfig)
    keep_rejected: int = 0  # keep up to N dropped documents per reason for inspection
    on_bad_record: BadRecordPolicy = BadRecordPolicy.fail
    # The optional steps to run (stage2/steps: gopher_repetition, gopher_quality, c4_quality,
    # fineweb_quality, or any step added there), each with its settings filter.<name>. The chain runs
    # steps by their `order`; the four quality steps after language, in the order named here.
    quality: List[str] = field(default_factory=list)

    def language_rule(self, languages: Optional[Tuple[str, ...]] = None) -> "LanguageRule":
        """The language rule these settings describe; `languages`: a component's own (None: filter.languages)."""
        from stage2.lid.rule import LanguageRule

        check = self.lang_check
        return LanguageRule(
            languages=tuple(self.languages if languages is None else languages),
            backend=str(self.lang_backend),
            threshold=float(self.lang_threshold),
            max_chars=int(self.lang_max_chars),
            check_backend=None if check is None or str(check) == str(self.lang_backend) else str(check),
            check_threshold=float(self.lang_check_threshold or 0.0),
            min_function_words=float(self.function_words or 0.0),
        )

    def step_settings(self, name: str) -> Any:
        """The settings `filter.<name>` of an optional step."""
        return getattr(self, name)

    def url_rules(self) -> bool:
        """Whether filter.url has rules (a blocklist or banned words): components then need a URL column."""
        settings = getattr(self, "url", None)
        return bool(settings is not None and settings.active())

    def input_patterns(self) -> List[Tuple[str, str]]:
        """(key, path or glob) of the files the switched-on steps read besides the dataset (eval sets,
        blocklists): fingerprinted at start-up as inputs, so a rerun or resume on changed ones is refused."""
        out: List[Tuple[str, str]] = []
        for name in OPTIONAL_STEPS:
            settings = self.step_settings(name)
            if getattr(settings, "active", lambda: False)():
                out += [(f"filter.{name}.{key}", p) for key in getattr(settings, "FILE_KEYS", ()) for p in getattr(settings, key) or []]
        return out

    def rules(self) -> List[Rule]:
        return [
            (self.min_chars >= 0, f"filter.min_chars={self.min_chars} must be 0 or more"),
            ((self.max_chars or 0) >= 0, f"filter.max_chars={self.max_chars} must be 0 or null (no upper bound) or more"),
            (not self.max_chars or self.min_chars <= self.max_chars,
             f"filter.min_chars={self.min_chars} and filter.max_chars={self.max_chars}: need min_chars <= max_chars (or filter.max_chars=0: no upper bound)"),
            (0.0 <= self.lang_threshold <= 1.0, f"filter.lang_threshold={self.lang_threshold} must be between 0 and 1"),
            (len(self.languages) >= 1, "filter.languages is empty: name at least one language to keep (e.g. [en])"),
            ((self.keep_rejected or 0) >= 0, f"filter.keep_rejected={self.keep_rejected} must be 0 or more"),
            (0.0 <= self.lang_check_threshold <= 1.0, f"filter.lang_check_threshold={self.lang_check_threshold} must be between 0 and 1"),
            (0.0 <= self.function_words <= 1.0, f"filter.function_words={self.function_words} must be a share between 0 and 1"),
            *self.dedup.rules(),
            (self.lang_max_chars >= 1, f"filter.lang_max_chars={self.lang_max_chars} must be at least 1 (the characters language ID reads)"),
            *self._quality_rules(),
        ]

    def check(self) -> None:
        first_failed(self.rules())

    def _quality_rules(self) -> List[Rule]:
        """filter.quality names known steps, once each; every optional step's settings meet its own checks."""
        names = list(self.quality or [])
        unknown = [n for n in names if n not in QUALITY_STEPS]
        keyed = [n for n in unknown if n in OPTIONAL_STEPS]
        rules = [
            (not keyed, f"filter.quality={_override(names)}: {', '.join(map(repr, keyed))} is no quality step: its own keys switch it on (filter.{(keyed or [''])[0]}.*)"),
            (not unknown, f"filter.quality={_override(names)}: no quality step is named {', '.join(map(repr, unknown))}; the steps are {', '.join(QUALITY_STEPS)}"),
            (len(set(names)) == len(names), f"filter.quality={_override(names)} names a step twice"),
        ]
        for name in OPTIONAL_STEPS:
            settings = self.step_settings(name)
            if hasattr(settings, "check"):
                rules += settings.check(f"filter.{name}")
        return rules


def _filter_config(steps: Dict[str, Any]) -> type:
    """FilterKeys plus a field `<name>: <the step's Settings>` per optional step, in that order."""
    own = {f.name for f in fields(FilterKeys)}
    clash = [name for name in steps if name in own]
    if clash:
        raise TypeError(f"filter step {clash[0]!r}: filter.{clash[0]} is already a key of the filter; rename the step")
    made = make_dataclass(
        "FilterConfig", [(name, cls.Settings, field(default_factory=cls.Settings)) for name, cls in steps.items()], bases=(FilterKeys,)
    )
    made.__module__ = __name__  # (make_dataclass's own guess is the caller's caller; pickling looks it up here)
    made.__doc__ = "The `filter` group: the filter's own keys, then each optional step's settings under its name."
    return made


OPTIONAL_STEPS = optional_steps()  # FilterConfig has their settings
QUALITY_STEPS = quality_steps()  # the steps filter.quality can name
FilterConfig = _filter_config(OPTIONAL_STEPS)


@dataclass
class TokenizerConfig:
    model_type: ModelType = ModelType.bpe
    vocab_size: int = 32000
    hard_vocab_limit: bool = True
    character_coverage: float = 0.999
    byte_fallback: bool = True
    split_digits: bool = False
    # Lossless by default: no normalisation, no whitespace squeezing, no dummy prefix space, pieces of
    # whitespace alone allowed, and training text that keeps its newlines (conf/tokenizer/lossy.yaml: the old recipe).
    normalization_rule_name: str = "identity"
    remove_extra_whitespaces: bool = False
    add_dummy_prefix: bool = False
    allow_whitespace_only_pieces: bool = True
    split_by_whitespace: bool = True
    split_by_unicode_script: bool = False  # true keeps "(1995" or "._vendor" from ever being one piece
    required_chars: str = "\t\n"  # characters always in the vocabulary, whatever their frequency
    keep_newlines: bool = True  # train on documents cut at line boundaries (false: one stripped line each)
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 3
    user_defined_symbols: List[str] = field(default_factory=list)
    # Part of the recipe: SentencePiece learns a different vocabulary with another thread count.
    num_threads: int = 4
    seed: int = 0
    samples_per_component: int = 20000
    sample_by_weight: bool = False  # share `samples_per_component * n_components` by mixture weight
    heldout_percent: int = 5  # documents held out (by id hash) for evaluation, never trained on
    eval_docs_per_component: int = 500
    input_sentence_size: int = 2000000
    max_sentence_length: int = 4192  # bytes per training piece; longer documents are cut at line ends
    shuffle_input_sentence: bool = True
    input_run: Optional[str] = None  # train on a past filter/pipeline run's filtered parts
    progress_seconds: float = 15.0  # a log line this often while SentencePiece trains (0: none)
    # tokenizer_config.json's model_max_length (what transformers truncates and warns at); null: shard.seq_len
    model_max_length: Optional[int] = None

    def trainer_options(self, verbose: bool = False) -> Dict[str, Any]:
        """SentencePiece trainer options from these settings (`input`/`model_prefix` are added by the caller)."""
        options: Dict[str, Any] = {
            "model_type": str(self.model_type),
            "vocab_size": int(self.vocab_size),
            "hard_vocab_limit": bool(self.hard_vocab_limit),
            "character_coverage": float(self.character_coverage),
            "byte_fallback": bool(self.byte_fallback),
            "split_digits": bool(self.split_digits),
            "normalization_rule_name": str(self.normalization_rule_name),
            "remove_extra_whitespaces": bool(self.remove_extra_whitespaces),
            "add_dummy_prefix": bool(self.add_dummy_prefix),
            "allow_whitespace_only_pieces": bool(self.allow_whitespace_only_pieces),
            "split_by_whitespace": bool(self.split_by_whitespace),
            "split_by_unicode_script": bool(self.split_by_unicode_script),
            "unk_id": int(self.unk_id),
            "bos_id": int(self.bos_id),
            "eos_id": int(self.eos_id),
            "pad_id": int(self.pad_id),
            "num_threads": int(self.num_threads),
            "input_sentence_size": int(self.input_sentence_size),
            "shuffle_input_sentence": bool(self.shuffle_input_sentence),
            "max_sentence_length": int(self.max_sentence_length),
            "minloglevel": 0 if verbose else 2,
        }
        if self.required_chars:
            options["required_chars"] = str(self.required_chars)
        if self.user_defined_symbols:
            options["user_defined_symbols"] = list(self.user_defined_symbols)
        return options

    def special_ids(self) -> Dict[str, int]:
        return {k: int(getattr(self, k)) for k in ("unk_id", "bos_id", "eos_id", "pad_id")}

    def rules(self, train: bool = False) -> List[Rule]:
        """`train`: the run trains a model (stage tokenizer or pipeline): its vocabulary floor is checked too."""
        rules = [
            (self.vocab_size >= 1, f"tokenizer.vocab_size={self.vocab_size} must be positive"),
            (0 <= self.heldout_percent < 100, f"tokenizer.heldout_percent={self.heldout_percent} must be in [0, 100)"),
            (1 <= self.num_threads <= 1024, f"tokenizer.num_threads={self.num_threads} must be 1 to 1024 (SentencePiece's bounds; it is part of the recipe)"),
            *self._sentencepiece_rules(),
        ]
        if train:
            rules.append(self._vocab_floor_rule())
        return rules

    def check(self, train: bool = False) -> None:
        first_failed(self.rules(train))

    def _sentencepiece_rules(self) -> List[Rule]:
        """What SentencePiece would refuse only after the filter stage has run, in its own words."""
        ids = self.special_ids()
        used = [v for v in ids.values() if v >= 0]
        symbols = list(self.user_defined_symbols or [])
        clash = sorted({f"tokenizer.{k}={v}" for k, v in ids.items() if v >= 0 and used.count(v) > 1})
        return [
            (self.model_max_length is None or self.model_max_length >= 1, f"tokenizer.model_max_length={self.model_max_length} must be at least 1 (or null: shard.seq_len)"),
            (0.98 <= self.character_coverage <= 1.0, f"tokenizer.character_coverage={self.character_coverage} must be between 0.98 and 1 (SentencePiece's bounds)"),
            (self.input_sentence_size >= 0, f"tokenizer.input_sentence_size={self.input_sentence_size} must be 0 (every sentence) or more"),
            (10 <= self.max_sentence_length <= 1 << 30, f"tokenizer.max_sentence_length={self.max_sentence_length} must be 10 to {1 << 30} bytes (SentencePiece's bounds)"),
            (0 <= self.seed < 1 << 32, f"tokenizer.seed={self.seed} must be 0 to {(1 << 32) - 1}"),
            (self.eval_docs_per_component >= 0, f"tokenizer.eval_docs_per_component={self.eval_docs_per_component} must be 0 (no evaluation) or more"),
            (self.samples_per_component >= 1, f"tokenizer.samples_per_component={self.samples_per_component} must be at least 1"),
            (ids["unk_id"] >= 0, f"tokenizer.unk_id={ids['unk_id']}: SentencePiece needs an unknown piece (an id of 0 or more)"),
            (not clash, f"{' and '.join(clash)}: two special pieces cannot share an id"),
            (all(symbols), "tokenizer.user_defined_symbols holds an empty symbol"),
            (not any(" " in x for x in symbols), f"tokenizer.user_defined_symbols={_override(symbols)}: a symbol holds a space, which SentencePiece never matches; write \u2581 for a space"),
            (len(set(symbols)) == len(symbols), f"tokenizer.user_defined_symbols={_override(symbols)} names a symbol twice"),
        ]

    def _vocab_floor_rule(self) -> Rule:
        """SentencePiece needs a piece for each special id, user symbol, byte (byte_fallback) and required
        character, and at least one character of the text: below that it fails, after a filter stage has run."""
        ids = {k: v for k, v in self.special_ids().items() if v >= 0}
        users = len(self.user_defined_symbols or [])
        chars = max(1, len(set(self.required_chars or "")))
        byte_pieces = 256 if self.byte_fallback else 0
        floor = len(ids) + users + byte_pieces + chars
        vocab = self.vocab_size
        if vocab < floor:
            parts = [f"{len(ids)} special pieces ({', '.join(ids)})"]
            if users:
                parts.append(f"{users} user_defined_symbols")
            if byte_pieces:
                parts.append("256 byte pieces (tokenizer.byte_fallback=true)")
            parts.append(f"{chars} character{'s' if chars > 1 else ''}")
            return False, f"tokenizer.vocab_size={vocab} is below the {floor} pieces SentencePiece needs at least: {' + '.join(parts)}; raise tokenizer.vocab_size"
        too_high = [f"tokenizer.{k}={v}" for k, v in ids.items() if v >= vocab]
        return not too_high, f"{', '.join(too_high)}: an id must be below tokenizer.vocab_size={vocab}"


@dataclass
class ShardConfig:
    seq_len: int = 512
    sequences_per_shard: int = 8192
    remainder: Remainder = Remainder.drop
    add_bos: bool = False
    add_eos: bool = True
    batch_size: int = 512  # documents per encode call
    tokenizer: Optional[str] = None  # a .model file or a tokenizer/pipeline run folder; a pipeline given one trains none
    input_run: Optional[str] = None  # a past filter/pipeline run whose filtered parts to shard
    # Encode threads per worker (FastBPE's for bpe, SentencePiece's otherwise); 0: this machine's cores / executor workers.
    # Not part of the result: encoding gives the same ids with any thread count.
    num_threads: int = 0
    # Output formats, all from the same token stream: npy (always), megatron, datatrove, nanogpt.
    formats: List[str] = field(default_factory=lambda: ["npy"])
    # Share of each component's documents (by id hash, the tokenizer's held-out rule) in the validation split.
    validation_percent: float = 0.5
    # Token budget of the mixture plan; null: one pass over the component with the most tokens.
    plan_tokens: Optional[float] = None
    # The plan warns when a component would be repeated more often than this (Muennighoff et al. 2023).
    max_epochs: float = 4.0

    def rules(self) -> List[Rule]:
        s = self
        known = ("npy", "megatron", "datatrove", "nanogpt")
        unknown = [f for f in s.formats if f not in known]
        buffers = 2 if s.validation_percent > 0 else 1
        return [
            (not unknown, f"shard.formats: unknown format {unknown[0] if unknown else ''!r}; choose from {', '.join(known)}"),
            ("npy" in s.formats, f"shard.formats={list(s.formats)}: npy is always written (the reader and verify use it); list it"),
            (len(set(s.formats)) == len(s.formats), f"shard.formats={list(s.formats)}: a format is listed twice"),
            (0 <= s.validation_percent < 100 and abs(s.validation_percent * 100 - round(s.validation_percent * 100)) < 1e-6,
             f"shard.validation_percent={s.validation_percent} must be in [0, 100), in steps of 0.01"),
            (s.plan_tokens is None or s.plan_tokens > 0, f"shard.plan_tokens={s.plan_tokens} must be positive (or null: one pass over the largest component)"),
            (s.max_epochs > 0, f"shard.max_epochs={s.max_epochs} must be positive"),
            (s.seq_len >= 2, f"shard.seq_len={s.seq_len}: a row needs at least 2 tokens (an input and its next-token target)"),
            (s.sequences_per_shard >= 1, f"shard.sequences_per_shard={s.sequences_per_shard} must be at least 1"),
            (s.batch_size >= 1, f"shard.batch_size={s.batch_size} must be at least 1"),
            (buffers * s.seq_len * s.sequences_per_shard * 4 <= _memory_bytes() // 2,
             f"shard.seq_len={s.seq_len} x shard.sequences_per_shard={s.sequences_per_shard}: the shard buffers ({buffers}: one per split) would take "
             f"{buffers * s.seq_len * s.sequences_per_shard * 4 / 2**30:.1f} GiB (4-byte ids), more than half of this machine's memory; lower shard.sequences_per_shard"),
            (s.num_threads >= 0, f"shard.num_threads={s.num_threads} must be 0 (cores / workers) or more"),
        ]

    def check(self) -> None:
        first_failed(self.rules())


@dataclass
class ExecutorConfig:
    kind: ExecutorKind = ExecutorKind.local
    workers: int = 0  # 0: all cores of this machine
    address: Optional[str] = None  # ray only: auto, ray://host:port, or none: an instance of its own (or $RAY_ADDRESS's cluster)
    max_in_flight: int = 0  # partitions queued at once; 0: 2 x workers (bounds memory)

    def make(self) -> Any:
        """The executor these settings describe (stage2/runtime/executor.py)."""
        from stage2.runtime.executor import LocalExecutor, RayExecutor

        if self.kind == ExecutorKind.ray:
            return RayExecutor(self.workers, self.max_in_flight, self.address)
        return LocalExecutor(self.workers, self.max_in_flight)

    def rules(self) -> List[Rule]:
        # 0 means all cores, 2 x workers: a negative value is refused rather than read as something else.
        return [
            (self.workers >= 0, f"executor.workers={self.workers} must be 0 (one per core) or more"),
            (self.max_in_flight >= 0, f"executor.max_in_flight={self.max_in_flight} must be 0 (2 x workers) or more"),
        ]

    def check(self) -> None:
        first_failed(self.rules())


@dataclass
class ReportConfig:
    dir: Optional[str] = None  # a run or sweep folder to summarise
    compare: List[str] = field(default_factory=list)  # two run folders to diff
    stage: Optional[str] = None  # filter the runs index
    dataset: Optional[str] = None
    tokens: Optional[float] = None  # with report.dir=<shard run>: the mixture plan for this token budget


@dataclass
class VerifyConfig:
    dir: Optional[str] = None  # the run folder to check (shards, index invariants, filter stats), or a sweep's: each job


@dataclass
class Config:
    stage: Stage = Stage.pipeline
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    verbose: bool = False
    progress: bool = True
    resume: bool = False
    allow_changed_inputs: bool = False
    runs_index: str = "outputs/runs.jsonl"  # relative to the launch directory
    launch_dir: Optional[str] = None  # filled in at start: where relative paths are resolved
    rerun_of: Optional[str] = None  # filled in when the config comes from a past run's .hydra folder

    def model_max_length(self) -> int:
        """The context length HF tokenizers are told: the rows the shards hold, unless set."""
        return self.tokenizer.model_max_length or self.shard.seq_len

    def check(self) -> None:
        """Values the types alone cannot check, checked at start-up (before any work) with one-line errors."""
        self.shard.check()
        self.dataset.check(self.filter)
        self.filter.check()
        self.executor.check()
        self.tokenizer.check(train=self.stage in (Stage.tokenizer, Stage.pipeline))  # stages that train: fail before the filter runs
        stages = [str(s.value) for s in Stage]
        first_failed([
            (self.report.stage is None or self.report.stage in stages, f"report.stage={self.report.stage}: the stages are {', '.join(stages)}"),
            (self.report.tokens is None or (math.isfinite(self.report.tokens) and self.report.tokens > 0),
             f"report.tokens={self.report.tokens}: a token budget is a positive number"),
        ])
        if self.stage == Stage.pipeline and not self.shard.tokenizer:  # the shards will need the ids the pipeline trains
            t, s = self.tokenizer, self.shard
            first_failed([
                (s.remainder != Remainder.pad or t.pad_id >= 0, f"shard.remainder=pad but tokenizer.pad_id={t.pad_id}: the tokenizer this pipeline trains has no pad id; use shard.remainder=drop or a pad_id"),
                (not s.add_eos or t.eos_id >= 0, f"shard.add_eos=true but tokenizer.eos_id={t.eos_id}: the tokenizer this pipeline trains has no eos id"),
                (not s.add_bos or t.bos_id >= 0, f"shard.add_bos=true but tokenizer.bos_id={t.bos_id}: the tokenizer this pipeline trains has no bos id"),
            ])

    def absolutize_paths(self) -> None:
        """Record every user-given path as absolute (relative ones mean: from the launch directory)."""
        absolute = self.absolute
        self.dataset.paths = [absolute(p) for p in self.dataset.paths or []]
        for component in (self.dataset.components or {}).values():
            if component.data_files:
                component.data_files = [absolute(p) for p in component.data_files]
        self.tokenizer.input_run = absolute(self.tokenizer.input_run)
        self.shard.input_run = absolute(self.shard.input_run)
        self.shard.tokenizer = absolute(self.shard.tokenizer)
        self.report.dir = absolute(self.report.dir)
        self.verify.dir = absolute(self.verify.dir)
        self.report.compare = [absolute(p) for p in self.report.compare or []]
        self.runs_index = absolute(self.runs_index)
        for name in OPTIONAL_STEPS:  # the files steps read (eval sets, blocklists)
            settings = self.filter.step_settings(name)
            for key in getattr(settings, "FILE_KEYS", ()):
                hub = key in getattr(settings, "HUB_KEYS", ())  # (its `hub:` entries name datasets, not files)
                setattr(settings, key, [p if hub and p.startswith(HUB_PREFIX) else absolute(p) for p in getattr(settings, key) or []])

    def absolute(self, path: Optional[str]) -> Optional[str]:
        """A user-given path, relative to the launch directory, as an absolute one."""
        if path is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.launch_dir or os.getcwd(), path))

    def to_plain(self) -> Dict[str, Any]:
        """The config as plain data (choices as their names): what the digest hashes and config.resolved.yaml holds."""
        return dataclasses.asdict(self, dict_factory=_plain_dict)

    def digest(self) -> str:
        return config_digest(self.to_plain())


def _plain_dict(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    return {key: value.name if isinstance(value, Enum) else value for key, value in pairs}


def register() -> None:
    from hydra.core.config_store import ConfigStore  # here: workers import this module without Hydra

    # A manifest's components are named by its user: `dataset.components.<name>.<key>=...` may name one
    # the composed config does not hold yet (a path's component under dataset=files, a new component).
    # Hydra creates such a node as a plain dict, which a typed entry refuses; so Hydra sees the entries
    # untyped and open, and `validate` (at start-up, before any work) merges them into ComponentConfig,
    # where a misspelt key or a wrong type fails in one line.
    open_dataset = make_dataclass("DatasetConfig", [("components", Dict[str, Any], field(default_factory=dict))], bases=(DatasetConfig,))
    composed = make_dataclass("Config", [("dataset", open_dataset, field(default_factory=open_dataset))], bases=(Config,))
    schema = OmegaConf.structured(composed)
    OmegaConf.set_struct(schema.dataset.components, False)
    ConfigStore.instance().store(name="stage2_schema", node=schema)


# Keys that never change an artifact: left out of the config digest.
NON_RECIPE_KEYS = (
    "executor",
    "verbose",
    "progress",
    "resume",
    "allow_changed_inputs",
    "runs_index",
    "launch_dir",
    "rerun_of",
    "report",
    "verify",
    "filter.dedup.memory_mb",  # the number of dedup buckets follows it, no verdict does
)


# Keys added after the shipped recipes' digests were pinned, with the value that keeps a recipe's
# meaning from before them: left out of the digest at that value, so a recipe that does not use them
# keeps its digest (and its past runs: resume, rerun, the runs index). `*`: any name.
ADDED_KEYS: Dict[str, Any] = {
    "tokenizer.model_max_length": None,  # null follows shard.seq_len, itself in the digest
    "shard.formats": ["npy"],
    "shard.validation_percent": 0.0,  # the default, 0.5, changes the shards: their digest changes with them
    "shard.plan_tokens": None,
    "shard.max_epochs": 4.0,
    "dataset.url_column": None,
    "dataset.components.*.url_column": None,
    "dataset.components.*.url_filter": True,
}


def added_keys() -> Dict[str, Any]:
    """ADDED_KEYS and the settings of every step its own keys switch on, at their defaults (plain data)."""
    steps = {f"filter.{name}": json.loads(json.dumps(dataclasses.asdict(cls.Settings()))) for name, cls in OPTIONAL_STEPS.items() if cls.keyed}
    return {**ADDED_KEYS, **steps}


def _drop_default(node: Any, parts: List[str], default: Any) -> None:
    if not isinstance(node, dict):
        return
    head, *rest = parts
    for key in (list(node) if head == "*" else [head]):
        if not rest:
            if key in node and node[key] == default:
                del node[key]
        else:
            _drop_default(node.get(key), rest, default)


def config_digest(plain: Mapping[str, Any]) -> str:
    """A stable hash of what decides the artifacts: the resolved recipe (`Config.to_plain()`, or a past
    run's config.resolved.yaml) without folders, workers, logging."""
    canonical = json.dumps(recipe_of(plain), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def recipe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """`key: old -> new` for each key of the recipe (what `config_digest` hashes) that differs."""
    def flat(node: Any, prefix: str = "") -> Dict[str, Any]:
        if not isinstance(node, dict) or not node:
            return {prefix: node}
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}.{key}" if prefix else str(key)).items()}

    before, after = flat(recipe_of(old)), flat(recipe_of(new))
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def recipe_of(plain: Mapping[str, Any]) -> Dict[str, Any]:
    """The resolved recipe without the keys that do not decide the artifacts (NON_RECIPE_KEYS; keys added
    since, at their default)."""
    recipe = json.loads(json.dumps(plain))  # a deep copy of plain data
    for key in NON_RECIPE_KEYS:
        *parents, last = key.split(".")
        node = recipe
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    for key, default in added_keys().items():
        _drop_default(recipe, key.split("."), default)
    return recipe


# A component's name is a folder name in the run (filtered/<name>/, shards/<name>/) and a key on the
# command line (dataset.components.<name>.weight=...): no separators, dots or leading punctuation.
NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_name(name: Any, what: str) -> None:
    from stage2.errors import Stage2Error

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise Stage2Error(f"{what}: the name {name!r} cannot be used: a component's name becomes a folder of the run; use {NAME_RULE}")


def _override(values: Optional[List[Any]]) -> str:
    """A list as it is written on the command line: [en,de], [0.7,0.3]."""
    return "[" + ",".join(str(v) for v in values or []) + "]"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound from here
        return 1 << 62


def validate(cfg: DictConfig | Dict[str, Any]) -> DictConfig:
    """Merge a config into the schema again (a saved `.hydra/config.yaml` carries no types).

    The config is merged as plain data: a key added with Hydra's `+key=value` (which Hydra itself lets
    into the composed config) must fail here like any unknown key.
    """
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    return OmegaConf.merge(OmegaConf.structured(Config), plain)
