"""The filter stage: length screen, exact dedup, language ID, near dedup -> filtered parquet parts.

Map -> reduce -> map, with partitions fixed by `dataset.partition_size` (never by the machine):
  driver  streams a component in canonical order, drops invalid / too short / too long records and
          exact duplicates (cheap, sequential), and cuts the survivors into partitions;
  map     workers run language ID and window hashing per partition (`analyse_partition`);
  reduce  the driver decides near duplicates sequentially in canonical order, then writes the kept
          documents of partition i as `filtered/<component>/part-<i>.parquet`.
A partition that keeps no document writes no part (part indexes may have gaps; the manifest lists
the parts that exist, in order). The driver holds the documents of the partitions in flight only
(at most `executor.max_in_flight` + 1) plus the dedup state: 8 bytes per distinct normalised text
and per distinct word window of kept documents.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from stage2.dedup import HashSet, NearDeduper, batch_window_hashes, exact_key
from stage2.errors import Stage2Error
from stage2.sources import Document

log = logging.getLogger(__name__)

REASONS = ("invalid", "too_short", "too_long", "duplicate", "language", "near_duplicate")
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Settings:
    """The filter recipe as plain values (picklable, no DictConfig)."""

    min_chars: int = 200
    max_chars: int = 8000
    languages: Tuple[str, ...] = ("en",)
    lang_backend: str = "langdetect"
    lang_threshold: float = 0.85
    lang_max_chars: int = 2000
    exact: bool = True
    near: bool = True
    window_words: int = 13
    near_threshold: float = 0.5
    scope: str = "component"
    on_bad_record: str = "fail"
    partition_size: int = 2000

    @classmethod
    def from_cfg(cls, cfg: Dict[str, Any]) -> "Settings":
        f, d = cfg["filter"], cfg["filter"]["dedup"]
        return cls(
            min_chars=f["min_chars"],
            max_chars=f["max_chars"],
            languages=tuple(f["languages"]),
            lang_backend=f["lang_backend"],
            lang_threshold=f["lang_threshold"],
            lang_max_chars=f["lang_max_chars"],
            exact=d["exact"],
            near=d["near"],
            window_words=d["window_words"],
            near_threshold=d["threshold"],
            scope=d["scope"],
            on_bad_record=f["on_bad_record"],
            partition_size=cfg["dataset"]["partition_size"],
        )


@dataclass
class Rejected:
    doc: Document
    reason: str
    language: Optional[str] = None
    score: Optional[float] = None


@dataclass
class PartitionResult:
    index: int
    kept: List[Document]
    rejected: List[Rejected]


@dataclass
class Counts:
    records_in: int = 0
    kept: int = 0
    dropped: Dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    bytes_in: int = 0
    bytes_out: int = 0
    languages: Counter = field(default_factory=Counter)

    def as_stats(self, seconds: float) -> Dict[str, Any]:
        return {
            "records_in": self.records_in,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(seconds, 3),
            "docs_per_s": round(self.records_in / seconds, 1) if seconds > 0 else None,
            # Top language of every document that reached language ID, most frequent first.
            "languages": dict(sorted(self.languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


@dataclass
class DedupState:
    """Seen hashes; shared by all components with scope=mixture, fresh per component otherwise."""

    exact: HashSet
    near: NearDeduper

    @classmethod
    def new(cls, settings: Settings) -> "DedupState":
        return cls(HashSet(), NearDeduper(settings.near_threshold))

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + self.near.seen.nbytes


# ---- map: runs in workers ---------------------------------------------------------------------


def analyse_partition(task: Dict[str, Any]) -> Dict[str, Any]:
    """Language ID and window hashes of one partition's texts (top-level: workers unpickle it)."""
    from stage2.langid import identify_all

    texts: List[str] = task["texts"]
    out: Dict[str, Any] = {}
    if task["lang_filter"]:
        verdicts = identify_all(texts, task["backend"], task["languages"], task["max_chars"])
        out["language"] = [v.language for v in verdicts]
        out["score"] = [v.score for v in verdicts]
        out["target"] = [v.target_score for v in verdicts]
    if task["near"]:
        out["hashes"], out["offsets"] = batch_window_hashes(texts, task["window_words"])
    return out


# ---- driver: cheap checks and partitioning ----------------------------------------------------


def cheap_reason(doc: Document, settings: Settings) -> Optional[str]:
    if doc.problem is not None:
        if settings.on_bad_record == "fail":
            raise Stage2Error(f"{doc.source}: record {doc.record}: {doc.problem}")
        return "invalid"
    n = len(doc.text)
    if n < settings.min_chars:
        return "too_short"
    if n > settings.max_chars:
        return "too_long"
    return None


def _partitions(
    docs: Iterable[Document],
    settings: Settings,
    state: DedupState,
    counts: Counts,
    tick: Callable[[], None],
    keep: Callable[[str], bool],
) -> Iterator[Tuple[List[Document], List[Rejected]]]:
    """Candidates (passed length and exact dedup) in partitions of partition_size, with the docs dropped on the way."""
    batch: List[Document] = []
    rejected: List[Rejected] = []
    for doc in docs:
        counts.records_in += 1
        if doc.text is not None:
            counts.bytes_in += len(doc.text.encode("utf-8"))
        tick()
        reason = cheap_reason(doc, settings)
        if reason is None and settings.exact and not state.exact.add_one(exact_key(doc.text)):
            reason = "duplicate"
        if reason is not None:
            counts.dropped[reason] += 1
            if keep(reason):
                rejected.append(Rejected(doc, reason))
            continue
        batch.append(doc)
        if len(batch) >= settings.partition_size:
            yield batch, rejected
            batch, rejected = [], []
    if batch or rejected:
        yield batch, rejected


def filter_documents(
    docs: Iterable[Document],
    settings: Settings,
    lang_filter: bool,
    state: DedupState,
    counts: Counts,
    mapper: Callable[[Callable, Iterable[Any]], Iterator[Any]] = map,
    tick: Callable[[], None] = lambda: None,
    keep_rejected: Optional[int] = None,
) -> Iterator[PartitionResult]:
    """The pure core: documents in canonical order -> kept and rejected documents per partition.

    `mapper` is `run.executor.map` in the stage (builtin `map` in-process); results must come back
    in task order. Decisions never depend on the mapper, so neither do the outputs. Rejected
    documents are returned with their reason, the first `keep_rejected` of each reason only (all
    when None): a long run of short records must not pile up in memory before a partition is cut.
    """
    in_flight: Deque[Tuple[List[Document], List[Rejected]]] = deque()
    taken: Counter = Counter()

    def keep(reason: str) -> bool:
        if keep_rejected is not None and taken[reason] >= keep_rejected:
            return False
        taken[reason] += 1
        return True

    def tasks() -> Iterator[Dict[str, Any]]:
        for batch, rejected in _partitions(docs, settings, state, counts, tick, keep):
            in_flight.append((batch, rejected))
            yield {
                "texts": [d.text for d in batch],
                "lang_filter": lang_filter,
                "backend": settings.lang_backend,
                "languages": list(settings.languages),
                "max_chars": settings.lang_max_chars,
                "near": settings.near,
                "window_words": settings.window_words,
            }

    for index, result in enumerate(mapper(analyse_partition, tasks())):
        batch, rejected = in_flight.popleft()
        n = len(batch)
        language: List[Optional[str]] = result.get("language", [None] * n)
        score: List[Optional[float]] = result.get("score", [None] * n)
        passed = np.ones(n, dtype=bool)
        if lang_filter:
            counts.languages.update(language)
            passed = np.array(result["target"], dtype=float) >= settings.lang_threshold
        near = (
            state.near.decide(result["hashes"], result["offsets"], passed) if settings.near else np.zeros(n, dtype=bool)
        )
        kept: List[Document] = []
        for i, doc in enumerate(batch):
            reason = "language" if not passed[i] else "near_duplicate" if near[i] else None
            if reason is not None:
                counts.dropped[reason] += 1
                if keep(reason):
                    rejected.append(Rejected(doc, reason, language[i], score[i]))
                continue
            kept.append(doc)
            counts.kept += 1
            counts.bytes_out += len(doc.text.encode("utf-8"))
        yield PartitionResult(index, kept, rejected)


# ---- stage entry ------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal, else a log line every LOG_EVERY_S seconds."""

    def __init__(self, enabled: bool, component: str):
        self.component = component
        self.n = 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(desc=f"filter {component}", unit="doc", file=sys.stderr)
        self.started = self.last = time.monotonic()

    def tick(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.n % 1000 == 0:
            now = time.monotonic()
            if now - self.last >= LOG_EVERY_S:
                self.last = now
                log.info("filter %s: %d documents read (%.0f docs/s)", self.component, self.n, self.n / (now - self.started))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_rejected(run, name: str, samples: List[Rejected]) -> Optional[str]:
    from stage2.parts import FILTERED_DIR, docs_to_table, write_table

    if not samples:
        return None
    table = docs_to_table(
        [r.doc for r in samples],
        {
            "reason": [r.reason for r in samples],
            "language": [r.language or "" for r in samples],
            "score": [float("nan") if r.score is None else float(r.score) for r in samples],
        },
    )
    path = run.dir / FILTERED_DIR / name / "rejected.parquet"
    write_table(path, table)
    run.add_artifact(path)
    return str(path.relative_to(run.dir))


def run(run) -> Dict[str, Any]:
    from stage2.parts import FILTERED_DIR, MANIFEST, docs_to_table, part_path, write_table
    from stage2.run import write_json
    from stage2.sources import iter_documents

    settings = Settings.from_cfg(run.cfg)
    keep_rejected = int(run.cfg["filter"].get("keep_rejected") or 0)
    stats = run.stage_stats("filter")
    stats.update({"lang_backend": settings.lang_backend, "languages": list(settings.languages), "components": {}})
    manifest: Dict[str, Any] = {"components": {}}
    shared = DedupState.new(settings) if settings.scope == "mixture" else None
    state_bytes = 0
    total = Counts()
    empty: List[str] = []

    for spec in run.components:
        started = time.monotonic()
        state = shared or DedupState.new(settings)
        counts = Counts()
        comp_dir = run.dir / FILTERED_DIR / spec.name
        for stale in [*comp_dir.glob("part-*.parquet"), comp_dir / "rejected.parquet"]:  # a rerun into the same folder
            stale.unlink(missing_ok=True)
        progress = _Progress(bool(run.cfg.get("progress")), spec.name)
        parts: List[str] = []
        samples: Dict[str, List[Rejected]] = {r: [] for r in REASONS}
        try:
            for result in filter_documents(
                iter_documents(spec), settings, spec.lang_filter, state, counts, run.executor.map, progress.tick, keep_rejected
            ):
                for r in result.rejected:
                    samples[r.reason].append(r)
                if result.kept:
                    path = part_path(run.dir, spec.name, result.index)
                    write_table(path, docs_to_table(result.kept))
                    run.add_artifact(path)
                    parts.append(str(path.relative_to(run.dir)))
        finally:
            progress.close()
        seconds = time.monotonic() - started
        entry = counts.as_stats(seconds)
        entry["parts"] = len(parts)
        if not spec.lang_filter:
            entry["lang_filter"] = False
        rejected_file = _write_rejected(run, spec.name, [r for reason in REASONS for r in samples[reason]])
        if rejected_file:
            entry["rejected_file"] = rejected_file
        assert counts.records_in == counts.kept + sum(counts.dropped.values())
        if counts.kept == 0:
            log.warning("filter: component %s kept no document (%d read: %s)", spec.name, counts.records_in, entry["dropped"])
            entry["empty"] = True
            empty.append(spec.name)
        stats["components"][spec.name] = entry
        manifest["components"][spec.name] = {"parts": parts, "kept": counts.kept}
        state_bytes = max(state_bytes, state.nbytes)
        log.info(
            "filter %s: %d in, %d kept, dropped %s (%.0f docs/s)",
            spec.name, counts.records_in, counts.kept, {k: v for k, v in counts.dropped.items() if v}, entry["docs_per_s"] or 0,
        )
        total.records_in += counts.records_in
        total.kept += counts.kept
        total.bytes_in += counts.bytes_in
        total.bytes_out += counts.bytes_out
        for reason, n in counts.dropped.items():
            total.dropped[reason] += n

    manifest_path = run.dir / FILTERED_DIR / MANIFEST
    write_json(manifest_path, manifest)
    run.add_artifact(manifest_path)
    stats.update(
        {
            "records_in": total.records_in,
            "kept": total.kept,
            "dropped": total.dropped,
            "bytes_in": total.bytes_in,
            "bytes_out": total.bytes_out,
            "dedup_state_bytes": state_bytes,
            "empty_components": empty,
        }
    )
    return {
        "filter_records_in": total.records_in,
        "filter_kept": total.kept,
        "filter_kept_bytes": total.bytes_out,
    }
