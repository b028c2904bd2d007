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

Resume (`resume=true`): each partition's map result (languages, scores, window hashes) is saved by
its worker as `filtered/.work/<component>/map-<i>.npz` (temp name + rename: a partition is done only
once its file is complete) with a key over the map settings and the partition's texts. A resumed
run re-streams and re-partitions (cheap), loads the results whose key matches instead of computing
them, redoes the reduce and rewrites every part: the same bytes as an uninterrupted run. The
manifest is written last, then `filtered/.finished.json` (the stage's stats and the sha256 of its
artifacts, no timings, so the same bytes on every run; not an artifact), then `filtered/.work/` is
deleted: map results are a few times the size of the parts, and a later stage's resume (a pipeline
killed while sharding) keeps the finished filter outputs through .finished.json, no map work redone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
import zipfile
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import xxhash

from stage2.dedup import HashSet, NearDeduper, batch_window_hashes, exact_key
from stage2.errors import Stage2Error
from stage2.files import atomic_path, file_sha256
from stage2.langid import check_languages
from stage2.langrule import LanguageRule
from stage2.sources import Document

log = logging.getLogger(__name__)

REASONS = ("invalid", "too_short", "too_long", "duplicate", "language", "near_duplicate")
WORK_DIR = ".work"
MAP_FILE = "map-{:05d}.npz"
FINISHED = ".finished.json"  # in filtered/, next to the manifest
# Part of every saved map result's key: bump it when analyse_partition's output changes, so a run
# resumed with newer code recomputes what older code saved.
MAP_VERSION = 5
MAP_SETTINGS = ("lang_filter", "rule", "near", "window_words")


@dataclass(frozen=True)
class Settings:
    """The filter recipe as plain values (picklable, no DictConfig)."""

    min_chars: int = 200
    max_chars: int = 8000
    exact: bool = True
    near: bool = True
    window_words: int = 13
    near_threshold: float = 0.5
    scope: str = "component"
    on_bad_record: str = "fail"
    partition_size: int = 2000
    lang_rule: LanguageRule = LanguageRule()  # what the workers judge languages by

    @classmethod
    def from_cfg(cls, cfg: Dict[str, Any]) -> "Settings":
        f, d = cfg["filter"], cfg["filter"]["dedup"]
        return cls(
            min_chars=f["min_chars"],
            max_chars=f["max_chars"],
            exact=d["exact"],
            near=d["near"],
            window_words=d["window_words"],
            near_threshold=d["threshold"],
            scope=d["scope"],
            on_bad_record=f["on_bad_record"],
            partition_size=cfg["dataset"]["partition_size"],
            lang_rule=LanguageRule.from_filter_cfg(f),
        )


@dataclass
class Rejected:
    doc: Document
    reason: str
    language: Optional[str] = None
    score: Optional[float] = None
    failed_check: Optional[str] = None  # for reason "language": the check that rejected it (langrule)
    target_score: Optional[float] = None  # the wanted language's probability its threshold was compared with
    function_word_share: Optional[float] = None


@dataclass
class PartitionResult:
    index: int
    kept: List[Document]
    rejected: List[Rejected]
    resumed: bool = False  # the map result was loaded from a saved file, not computed


@dataclass
class Counts:
    records_in: int = 0
    kept: int = 0
    dropped: Dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    bytes_in: int = 0
    bytes_out: int = 0
    languages: Counter = field(default_factory=Counter)
    language_checks: Counter = field(default_factory=Counter)  # reason "language", by the check that failed

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
            "language_dropped_by": dict(sorted(self.language_checks.items())),
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
    """Language ID and window hashes of one partition's texts (top-level: workers unpickle it).

    With task["work"] (a file path) a saved result with the same key is loaded instead (marked
    "resumed"), and a computed one is saved there before it is returned.
    """
    work = task.get("work")
    if not work:
        return _compute_map(task)
    key = map_key(task)
    out = load_map_result(Path(work), key)
    if out is not None:
        out["resumed"] = True
        return out
    out = _compute_map(task)
    save_map_result(Path(work), key, out)
    return out


def _compute_map(task: Dict[str, Any]) -> Dict[str, Any]:
    from stage2.langrule import judge

    texts: List[str] = task["texts"]
    out: Dict[str, Any] = {}
    if task["lang_filter"]:
        rule = dict(task["rule"], languages=tuple(task["rule"]["languages"]))
        out.update(judge(texts, LanguageRule(**rule)))
    if task["near"]:
        # A document that failed language ID is neither a near duplicate nor remembered: no windows.
        hashed = [t if ok else "" for t, ok in zip(texts, out["passed"])] if task["lang_filter"] else texts
        out["hashes"], out["offsets"] = batch_window_hashes(hashed, task["window_words"])
    return out


def warm_worker(backends: Tuple[str, ...]) -> None:
    """A worker's start-up, done before the driver sends it a partition (LocalExecutor.start)."""
    from stage2.langid import get_backend

    for backend in backends:
        get_backend(backend)  # loading a model or profiles: 0.05-0.5 s


def map_key(task: Dict[str, Any]) -> str:
    """What a partition's map result depends on: code version, map settings and the texts themselves."""
    h = xxhash.xxh3_128()
    h.update(json.dumps([MAP_VERSION, {k: task[k] for k in MAP_SETTINGS}], sort_keys=True).encode())
    for text in task["texts"]:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: ["ab", "c"] != ["a", "bc"]
        h.update(data)
    return h.hexdigest()


def save_map_result(path: Path, key: str, out: Dict[str, Any]) -> None:
    """Atomically, as plain numpy arrays (no pickles): the file exists only once complete."""
    arrays = {"key": np.array(key)}
    if "language" in out:
        arrays["language"] = np.array(out["language"], dtype=str)
        arrays["score"] = np.array(out["score"], dtype=np.float64)
        arrays["target"] = np.array(out["target"], dtype=np.float64)
        arrays["passed"] = np.array(out["passed"], dtype=bool)
        arrays["function_words"] = np.array(out["function_words"], dtype=np.float64)
        arrays["rule"] = np.array(out["rule"], dtype=str)
    if "hashes" in out:
        arrays["hashes"], arrays["offsets"] = out["hashes"], out["offsets"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temp name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def load_map_result(path: Path, key: str) -> Optional[Dict[str, Any]]:
    """A saved map result, or None when there is none, it is unreadable, or its key differs."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                log.warning("%s: saved for other texts or settings; computed again", path)
                return None
            out: Dict[str, Any] = {}
            if "language" in saved.files:
                # .tolist(): Python str and float, as a fresh computation returns them.
                out["language"] = saved["language"].tolist()
                out["score"] = saved["score"].tolist()
                out["target"] = saved["target"].tolist()
                out["passed"] = saved["passed"].tolist()
                out["function_words"] = saved["function_words"].tolist()
                out["rule"] = saved["rule"].tolist()
            if "hashes" in saved.files:
                out["hashes"], out["offsets"] = saved["hashes"], saved["offsets"]
            return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable (%s); computed again", path, exc)
        return None


# ---- driver: cheap checks and partitioning ----------------------------------------------------


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # (isascii: a flag, no scan)


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
            counts.bytes_in += utf8_len(doc.text)
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
    work_dir: Optional[Path] = None,
) -> Iterator[PartitionResult]:
    """The pure core: documents in canonical order -> kept and rejected documents per partition.

    `mapper` is `run.executor.map` in the stage (builtin `map` in-process); results must come back
    in task order. Decisions never depend on the mapper, so neither do the outputs. Rejected
    documents are returned with their reason, the first `keep_rejected` of each reason only (all
    when None): a long run of short records must not pile up in memory before a partition is cut.
    With `work_dir`, map results are saved there and saved ones reused (see analyse_partition).
    """
    in_flight: Deque[Tuple[List[Document], List[Rejected]]] = deque()
    taken: Counter = Counter()

    def keep(reason: str) -> bool:
        if keep_rejected is not None and taken[reason] >= keep_rejected:
            return False
        taken[reason] += 1
        return True

    def tasks() -> Iterator[Dict[str, Any]]:
        for index, (batch, rejected) in enumerate(_partitions(docs, settings, state, counts, tick, keep)):
            in_flight.append((batch, rejected))
            yield {
                # (No file when the map has nothing to do: recomputing nothing is free.)
                "work": str(Path(work_dir) / MAP_FILE.format(index)) if work_dir is not None and (lang_filter or settings.near) else None,
                "texts": [d.text for d in batch],
                "lang_filter": lang_filter,
                "rule": asdict(settings.lang_rule),
                "near": settings.near,
                "window_words": settings.window_words,
            }

    for index, result in enumerate(mapper(analyse_partition, tasks())):
        batch, rejected = in_flight.popleft()
        n = len(batch)
        language: List[Optional[str]] = result.get("language", [None] * n)
        score: List[Optional[float]] = result.get("score", [None] * n)
        passed = np.ones(n, dtype=bool)
        failed_check: List[Optional[str]] = result.get("rule", [None] * n)
        target: List[Optional[float]] = result.get("target", [None] * n)
        shares: List[Optional[float]] = result.get("function_words", [None] * n)
        if lang_filter:
            counts.languages.update(filter(None, language))  # not those dropped before any detector ran
            passed = np.array(result["passed"], dtype=bool)
        near = (
            state.near.decide(result["hashes"], result["offsets"], passed) if settings.near else np.zeros(n, dtype=bool)
        )
        kept: List[Document] = []
        for i, doc in enumerate(batch):
            reason = "language" if not passed[i] else "near_duplicate" if near[i] else None
            if reason is not None:
                counts.dropped[reason] += 1
                check = failed_check[i] if reason == "language" else None
                if check:
                    counts.language_checks[check] += 1
                if keep(reason):
                    rejected.append(Rejected(doc, reason, language[i], score[i], check, target[i], shares[i]))
                continue
            kept.append(doc)
            counts.kept += 1
            counts.bytes_out += utf8_len(doc.text)
        yield PartitionResult(index, kept, rejected, bool(result.get("resumed")))


# ---- stage entry ------------------------------------------------------------------------------


def _write_rejected(run, name: str, samples: List[Rejected], rule: LanguageRule) -> Optional[str]:
    from stage2.langrule import first_detection
    from stage2.parts import FILTERED_DIR, docs_to_table, write_table

    if not samples:
        return None
    # The function-word check may drop a document before any detector sees it (langrule.judge): its
    # saved sample still says what the first detector takes it for (a few documents, in the driver).
    # No threshold was compared with that detector's answer, so target_score stays empty.
    undetected = [r for r in samples if r.reason == "language" and not r.language]
    for r, (language, score) in zip(undetected, first_detection([r.doc.text for r in undetected], rule)):
        r.language, r.score = language, score
    table = docs_to_table(
        [r.doc for r in samples],
        {
            "reason": [r.reason for r in samples],
            "language": [r.language or "" for r in samples],
            "score": [float("nan") if r.score is None else float(r.score) for r in samples],
            "failed_check": [r.failed_check or "" for r in samples],
            "target_score": [float("nan") if r.target_score is None else float(r.target_score) for r in samples],
            "function_word_share": [float("nan") if r.function_word_share is None else float(r.function_word_share) for r in samples],
        },
    )
    path = run.dir / FILTERED_DIR / name / "rejected.parquet"
    write_table(path, table)
    run.add_artifact(path)
    return str(path.relative_to(run.dir))


def _without_timings(stats: Dict[str, Any]) -> Dict[str, Any]:
    """The stage's stats minus what varies between identical runs (.finished.json: the same bytes every time)."""
    out = {k: v for k, v in stats.items() if k not in ("resumed", "partitions_resumed")}
    out["components"] = {
        name: {k: v for k, v in entry.items() if k not in ("seconds", "docs_per_s", "partitions_resumed")}
        for name, entry in stats["components"].items()
    }
    return out


def _restore_finished(run, path: Path) -> Optional[Dict[str, Any]]:
    """The headline of a filter stage this run folder finished before (a later stage was interrupted), or None.

    Its outputs are kept when every artifact it listed still has the recorded sha256.
    """
    try:
        finished = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none (written atomically, so never half a file)
    if finished.get("config_digest") != run.digest:
        return None
    for rel, digest in finished["artifacts"].items():
        if not (run.dir / rel).is_file() or file_sha256(run.dir / rel) != digest:
            log.warning("filter: resume: %s is missing or changed since the stage finished; filtering again", rel)
            return None
    for rel in finished["artifacts"]:
        run.add_artifact(run.dir / rel)
    stats = run.stage_stats("filter")
    stats.update(finished["stats"])
    stats.update({"resumed": True, "stage_finished_before": True, "partitions_resumed": sum(c["partitions"] for c in stats["components"].values())})
    log.info("filter: resume: the stage had finished; its %d artifacts are kept", len(finished["artifacts"]))
    return finished["headline"]


def run(run) -> Dict[str, Any]:
    # (Imported here: workers import this module for analyse_partition and need none of these.)
    from stage2.parts import FILTERED_DIR, MANIFEST, docs_to_table, part_path, write_table
    from stage2.progress import Progress
    from stage2.run import write_json
    from stage2.sources import expected_bytes, expected_records, iter_documents

    settings = Settings.from_cfg(run.cfg)
    # Workers start first: their start-up (~0.2 CPU s each) overlaps the driver's (checks, opening sources).
    rule = settings.lang_rule
    if run.cfg["filter"].get("lang_check") == rule.backend:
        log.info("filter: lang_check is the main backend (%s): it runs once", rule.backend)
    detectors = tuple(filter(None, (rule.check_backend, rule.backend))) if any(spec.lang_filter for spec in run.components) else ()
    run.executor.start(functools.partial(warm_worker, detectors))
    for backend in detectors:
        check_languages(backend, rule.languages, main=backend == rule.backend)
    keep_rejected = int(run.cfg["filter"].get("keep_rejected") or 0)
    work_root = run.dir / FILTERED_DIR / WORK_DIR
    finished_path = run.dir / FILTERED_DIR / FINISHED
    resuming = bool(run.cfg.get("resume"))
    if resuming:
        headline = _restore_finished(run, finished_path)
        if headline is not None:
            return headline
    else:
        shutil.rmtree(work_root, ignore_errors=True)  # a fresh run trusts nothing it finds
    finished_path.unlink(missing_ok=True)
    stats = run.stage_stats("filter")
    stats.update(
        {
            "lang_backend": settings.lang_rule.backend,
            "lang_check": settings.lang_rule.check_backend,
            "function_words": settings.lang_rule.min_function_words,
            "languages": list(settings.lang_rule.languages),
            "components": {},
        }
    )
    if resuming:
        stats.update({"resumed": True, "partitions_resumed": 0})
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
        # Outputs of an interrupted run (all rewritten below; temp files of killed writers too).
        for stale in [*comp_dir.glob("part-*.parquet"), comp_dir / "rejected.parquet", *comp_dir.glob(".*.tmp-*")]:
            stale.unlink(missing_ok=True)
        # Totals read at start-up, for an ETA: records, or else the decompressed bytes, against the text read.
        inputs = run.provenance.get("inputs") or {}
        expected = expected_records(spec, inputs)
        in_bytes = expected is None and expected_bytes(spec, inputs) is not None
        bar_total = expected_bytes(spec, inputs) if in_bytes else expected
        progress = Progress(f"filter {spec.name}", total=bar_total, unit="B" if in_bytes else "doc", enabled=bool(run.cfg.get("progress")))
        docs = iter_documents(spec)
        if in_bytes:
            docs = (progress.update(utf8_len(doc.text) if doc.text else 0) or doc for doc in docs)
        parts: List[str] = []
        partitions = resumed = 0
        samples: Dict[str, List[Rejected]] = {r: [] for r in REASONS}
        try:
            for result in filter_documents(
                docs, settings, spec.lang_filter, state, counts, run.executor.map, (lambda: None) if in_bytes else progress.update,
                keep_rejected, work_root / spec.name,
            ):
                partitions += 1
                resumed += result.resumed
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
        entry["partitions"] = partitions
        if resuming:
            entry["partitions_resumed"] = resumed
            stats["partitions_resumed"] += resumed
            log.info("filter %s: resume: %d of %d partitions' map results reused", spec.name, resumed, partitions)
        if not spec.lang_filter:
            entry["lang_filter"] = False
        rejected_file = _write_rejected(run, spec.name, [r for reason in REASONS for r in samples[reason]], settings.lang_rule)
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
    write_json(manifest_path, manifest)  # last of the outputs: the parts before it are complete
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
    headline = {
        "filter_records_in": total.records_in,
        "filter_kept": total.kept,
        "filter_kept_bytes": total.bytes_out,
    }
    own = [rel for rel in run.artifacts if rel.startswith(f"{FILTERED_DIR}/")]
    finished = {
        "config_digest": run.digest,
        "headline": headline,
        "stats": _without_timings(stats),
        "artifacts": {rel: file_sha256(run.dir / rel) for rel in sorted(own)},
    }
    write_json(finished_path, finished)
    # The map results are not needed any more: .finished.json keeps the stage done for a resume.
    shutil.rmtree(work_root, ignore_errors=True)
    for leftover in (run.dir / FILTERED_DIR).glob(".*.tmp-*"):  # of a killed manifest write
        leftover.unlink(missing_ok=True)
    return headline
