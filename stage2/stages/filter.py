"""The filter stage: per-document steps, then exact and near dedup -> filtered parquet parts.

Three passes of worker tasks (stage2/stages/filter_tasks.py); the driver plans from metadata, dispatches
and adds up counts, and never reads a document:
  plan     every component's units of work (stage2/io/sources.py): file byte/row ranges or whole files
  screen   per unit: read it, run the component's step chain (invalid, length, language, quality
           steps), spill the survivors and their dedup hashes to `filtered/.work/`
  resolve  per hash bucket: first occurrences of every hash (stage2/dedup.py); the number of
           buckets follows `filter.dedup.memory_mb` (at least one per worker), the verdicts do not
  decide   per unit: exact/near verdicts, the kept documents written as
           `filtered/<component>/part-<file>-<chunk>.parquet`
Then `filtered/manifest.json` (parts in canonical order), the rejected samples, and
`filtered/.finished.json` (stats and artifact hashes without timings: a later stage's resume keeps
the finished filter through it). Resume: every task leaves a marker with its key; a resumed run
skips the tasks whose marker matches, then deletes `filtered/.work/` once the stage is finished.
"""

from __future__ import annotations

import functools
import json
import logging
import resource
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from stage2.io.files import file_fingerprint
from stage2.stages.filter_tasks import DEDUP_REASONS, build_chain, decide, merge_rejected, resolve, screen
from stage2.lid.backends import check_languages
from stage2.runtime.tasks import read_marker, write_marker
from stage2.config import Config, DedupScope, FilterConfig
from stage2.lid.rule import LanguageRule
from stage2.io.sources import ComponentSpec, Unit, component_files, counter_on, plan_component
from stage2.steps import STEPS, StepInputs, chain_settings

log = logging.getLogger(__name__)

WORK_DIR = ".work"
FINISHED = ".finished.json"  # in filtered/, next to the manifest


def component_steps(spec: ComponentSpec, f: FilterConfig) -> List[Tuple[str, Dict[str, Any]]]:
    """The component's step chain as plain data (name, settings), its own overrides applied."""
    return chain_settings(spec.filter_settings(f), f)


class RunInputs(StepInputs):
    """The files steps read besides the dataset (eval sets), read as the dataset is: by its readers,
    each checked against its start-up scan (`scans`: the run's inputs; empty: not checked)."""

    def __init__(self, launch_dir: str, scans: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
        self.launch_dir = launch_dir
        self.scans = scans or {}
        self.resolved: Dict[str, List[str]] = {}  # hub entry -> its files: resolved once a run (a request to the hub)

    def files(self, pattern: str, what: str = "filter") -> List[str]:
        from stage2.io.sources import HUB_PREFIX, step_files

        if not pattern.startswith(HUB_PREFIX):
            return step_files(pattern, self.launch_dir, what)
        if pattern not in self.resolved:
            self.resolved[pattern] = step_files(pattern, self.launch_dir, what)
        return self.resolved[pattern]

    def read(self, path: str, text_column: str, id_column: Optional[str]):
        import dataclasses
        import os

        from stage2.io.sources import infer_format, read_records

        spec = ComponentSpec(name="eval", files=[path], format=infer_format(path), text_column=text_column, id_column=id_column,
                             root=os.path.dirname(path)).with_scans(self.scans)
        for doc in read_records(spec, path):
            if doc.id == spec.fallback_id(path, doc.record):  # (no id column in the record)
                doc = dataclasses.replace(doc, id=f"{os.path.basename(path)}:{doc.record}")
            yield doc

    def fingerprint(self, path: str) -> str:
        from stage2.io.files import file_fingerprint

        scan = self.scans.get(path)
        return scan["xxh3_128"] if scan else file_fingerprint(Path(path))[1]


def prepared_steps(plans: List[Tuple[ComponentSpec, List[Unit]]], f: FilterConfig, work: Path, inputs: StepInputs) -> List[List[Tuple[str, Dict[str, Any]]]]:
    """Each component's chain as its tasks get it: every step's `prepare` run once per distinct settings
    (a decontamination index is built once for the run, whatever the number of components)."""
    done: Dict[str, Dict[str, Any]] = {}
    out = []
    for spec, _ in plans:
        chain = []
        for name, settings in component_steps(spec, f):
            key = json.dumps([name, settings], sort_keys=True, default=str)
            if key not in done:
                done[key] = STEPS[name].prepare(settings, work, inputs)
            chain.append((name, done[key]))
        out.append(chain)
    return out


def language_rule(spec: ComponentSpec, f: FilterConfig) -> LanguageRule:
    return f.language_rule(spec.filter_settings(f)["languages"])


def component_dedup(spec: ComponentSpec, f: FilterConfig) -> Optional[Dict[str, Any]]:
    own = spec.filter_settings(f)
    if not (own["exact_dedup"] or own["near_dedup"]):
        return None
    return {"exact": own["exact_dedup"], "near": own["near_dedup"], "window_words": f.dedup.window_words}


def kept_whole_spill(f: FilterConfig) -> Optional[Dict[str, Any]]:
    """What a component without dedup spills: nothing, but with `scope=mixture` the hashes, so that its
    documents (none of them dropped) are earlier occurrences for the components after it."""
    if f.dedup.scope == DedupScope.mixture and (f.dedup.exact or f.dedup.near):
        return {"exact": bool(f.dedup.exact), "near": bool(f.dedup.near), "window_words": f.dedup.window_words}
    return None


def detectors(f: FilterConfig, components: List[ComponentSpec]) -> Tuple[str, ...]:
    """The language detectors the recipe runs (none when no component is language-filtered)."""
    base = f.language_rule()
    return tuple(filter(None, (base.check_backend, base.backend))) if any(spec.lang_filter for spec in components) else ()


def worker_warmup(cfg: Config, components: List[ComponentSpec]) -> Callable[[], None]:
    """What a worker loads before its first filter task: the language detectors the recipe uses.

    start_run starts the workers with it (they scan the inputs first), so the loading overlaps the
    driver's start-up instead of delaying the first screen task."""
    return functools.partial(warm_worker, detectors(cfg.filter, components))


def warm_worker(backends: Tuple[str, ...]) -> None:
    """A worker's start-up, done before the driver sends it a task (LocalExecutor.start)."""
    from stage2.lid.backends import get_backend
    from stage2.io.parts import arrow_without_pandas
    # The tasks' modules, imported before the worker's objects are frozen (filter_tasks imports these in its tasks).
    import pyarrow.parquet  # noqa: F401

    from stage2 import dedup  # noqa: F401

    for backend in backends:
        get_backend(backend)  # loading a model or profiles
    arrow_without_pandas()


def _without_timings(stats: Dict[str, Any]) -> Dict[str, Any]:
    """The stage's stats minus what varies between identical runs or with the machine (.finished.json: the same bytes every time)."""
    out = {k: v for k, v in stats.items() if k not in ("seconds", "resumed", "tasks_resumed", "resources", "executor_nodes")}
    if "dedup" in stats:  # (the number of buckets follows the worker count)
        out["dedup"] = {k: v for k, v in stats["dedup"].items() if k != "buckets"}
    out["components"] = {
        name: {k: v for k, v in entry.items() if k not in ("seconds", "docs_per_s")}
        for name, entry in stats["components"].items()
    }
    return out


def _restore_finished(run, path: Path) -> Optional[Dict[str, Any]]:
    """The headline of a filter stage this run folder finished before (a later stage was interrupted), or None.

    The stage's marker vouches for its outputs: they are kept while every one still has its bytes.
    """
    finished = read_marker(path, run.digest)
    if finished is None:
        if path.exists():
            log.warning("filter: resume: the finished stage's outputs are missing or changed; filtering again")
        return None
    for rel, sha256 in finished["artifacts"].items():  # (read_marker found each with the bytes it had)
        run.add_artifact(run.dir / rel, sha256=sha256)
    stats = run.stage_stats("filter")
    stats.update(finished["stats"])
    stats.update({"resumed": True, "stage_finished_before": True})
    log.info("filter: resume: the stage had finished; its %d artifacts are kept", len(finished["artifacts"]))
    return finished["headline"]


@dataclass
class Passes:
    screen_tasks: List[Dict[str, Any]]
    screened: List[Dict[str, Any]]
    resolved: List[Dict[str, Any]]
    decided: List[Dict[str, Any]]
    pairs: int
    buckets: int
    chains: List[List[Tuple[str, Dict[str, Any]]]]  # per component: its steps as the tasks ran them


def execute(
    plans: List[Tuple[ComponentSpec, List[Unit]]], f: FilterConfig, keep_rejected: int, work: Path, out_dir: Path,
    mapper: Callable = map, progress: bool = False, workers: int = 1, inputs: Optional[StepInputs] = None,
) -> Passes:
    """The three passes over planned units: screen, resolve, decide (parts written under out_dir).

    `mapper` is an executor's map (builtin `map` in-process); results come back in task order, and no
    verdict depends on the mapper, the number of buckets or the order tasks finish in. `inputs`: how
    steps read their own files (RunInputs of the run; default: unchecked, from the current folder).
    """
    import os

    from stage2.runtime.progress import Progress

    d = f.dedup
    chains = prepared_steps(plans, f, work, inputs or RunInputs(os.getcwd()))
    # ---- screen -------------------------------------------------------------------------------
    screen_tasks = []
    drops_duplicates: List[bool] = []  # per screen task: whether its component's duplicates are dropped
    for (spec, units), steps in zip(plans, chains):
        own = component_dedup(spec, f)
        for unit in units:
            screen_tasks.append({
                "spec": _spec_of(spec, unit), "unit": unit, "steps": steps, "dedup": own or kept_whole_spill(f), "keep_rejected": keep_rejected,
                "dir": str(work / spec.name / unit.name),
            })
        drops_duplicates += [own is not None] * len(units)
    counts = [u.count for _, units in plans for u in units]
    expected = None if None in counts else sum(counts)  # (a JSON array's records are not counted at start-up)
    progress = Progress("filter", total=expected, unit="doc", enabled=progress)
    screened = []
    try:
        for result in mapper(screen, screen_tasks):
            screened.append(result)
            progress.update(result["records"])
    finally:
        progress.close()

    # ---- resolve ------------------------------------------------------------------------------
    spills: Dict[str, List[str]] = {"exact": [], "near": []}
    for task, result in zip(screen_tasks, screened):
        for kind in spills:
            spills[kind].extend(str(Path(task["dir"]) / name) for name in result["spilled"][kind])
    pairs = sum(r["pairs"]["exact"] + r["pairs"]["near"] for r in screened)
    # At least a bucket per worker: resolving is the only work between two barriers (no verdict changes).
    buckets = max(buckets_for(pairs, d.memory_mb), workers) if pairs else 0
    bucket_dir = work / "dedup" / f"of-{buckets}"
    resolve_tasks = [
        {
            "bucket": b, "buckets": buckets, "per_component": d.scope != DedupScope.mixture,
            "exact_files": spills["exact"], "near_files": spills["near"],
            "exact_out": str(bucket_dir / f"exact-{b:05d}.npy"), "near_out": str(bucket_dir / f"near-{b:05d}.npy"),
            "dir": str(bucket_dir / f"b{b:05d}"),
        }
        for b in range(buckets)
    ]
    resolved = list(mapper(resolve, resolve_tasks))

    # ---- decide -------------------------------------------------------------------------------
    decide_tasks = []
    for task, result, dropping in zip(screen_tasks, screened, drops_duplicates):
        decide_tasks.append({
            "unit": task["unit"], "chunks": result["chunks"], "chunk_bytes": result["chunk_bytes"], "dedup": dropping,
            "threshold": float(d.threshold), "keep_rejected": keep_rejected,
            "exact_files": [t["exact_out"] for t in resolve_tasks], "near_files": [t["near_out"] for t in resolve_tasks],
            "dir": task["dir"], "parts_dir": str(out_dir),
        })
    decided = list(mapper(decide, decide_tasks))
    return Passes(screen_tasks, screened, resolved, decided, pairs, buckets, chains)


def run(run) -> Dict[str, Any]:
    from stage2.io.parts import FILTERED_DIR, MANIFEST, REJECTED_DIR, write_table
    from stage2.runtime.run import write_json

    f: FilterConfig = run.cfg.filter
    P = run.cfg.dataset.partition_size
    keep_rejected = f.keep_rejected
    enabled = run.cfg.progress
    base = f.language_rule()
    run.executor.start(worker_warmup(run.cfg, run.components))  # (a no-op when start_run started them)
    if f.lang_check == base.backend:
        log.info("filter: lang_check is the main backend (%s): it runs once", base.backend)
    for languages in dict.fromkeys(language_rule(spec, f).languages for spec in run.components if spec.lang_filter):
        for backend in detectors(f, run.components):
            check_languages(backend, languages, main=backend == base.backend)

    filtered = run.dir / FILTERED_DIR
    work = filtered / WORK_DIR
    finished_path = filtered / FINISHED
    resuming = run.cfg.resume
    if resuming:
        headline = _restore_finished(run, finished_path)
        if headline is not None:
            return headline
    else:
        shutil.rmtree(work, ignore_errors=True)  # a fresh run trusts nothing it finds
    finished_path.unlink(missing_ok=True)
    started = time.monotonic()

    # ---- plan (metadata only) -----------------------------------------------------------------
    counter = counter_on(run.executor)
    plans: List[Tuple[ComponentSpec, List[Unit]]] = []
    for index, spec in enumerate(run.components):
        spec, files = component_files(spec)
        plans.append((spec, plan_component(spec, index, files, run.inputs, P, counter)))

    inputs = RunInputs(run.cfg.launch_dir, run.inputs)
    passes = execute(plans, f, keep_rejected, work, run.dir, run.executor.map, enabled, run.executor.workers, inputs)
    screen_tasks, screened, resolved, decided = passes.screen_tasks, passes.screened, passes.resolved, passes.decided
    pairs, buckets = passes.pairs, passes.buckets
    seconds = time.monotonic() - started

    # ---- manifest, rejected samples, stats ----------------------------------------------------
    stats = run.stage_stats("filter")
    stats.update({
        "lang_backend": base.backend, "lang_check": base.check_backend, "function_words": base.min_function_words,
        "languages": list(base.languages), "quality": list(f.quality), "components": {},
    })
    manifest: Dict[str, Any] = {"components": {}}
    total: Counter = Counter()
    dropped_total: Counter = Counter()
    empty: List[str] = []
    redacted_total: Counter = Counter()
    described: Dict[str, Dict[str, Any]] = {}
    part_digests: Dict[str, Dict[str, Any]] = {}  # rel -> the digests its decide task took as it wrote it
    at = 0
    for (spec, units), steps in zip(plans, passes.chains):
        n = len(units)
        screens, decides, tasks = screened[at : at + n], decided[at : at + n], screen_tasks[at : at + n]
        at += n
        chain = build_chain(steps)
        reasons = list(chain.reasons) + list(DEDUP_REASONS)
        for name, settings in steps:
            described.setdefault(name, STEPS[name].describe(settings))
        dropped = Counter({r: 0 for r in reasons})
        tally: Counter = Counter()
        for s, r in zip(screens, decides):
            dropped.update(s["dropped"])
            dropped.update(r["dropped"])
            tally.update(s["tally"])
        entry: Dict[str, Any] = {
            "records_in": sum(s["records"] for s in screens),
            "kept": sum(r["kept"] for r in decides),
            "dropped": {r: dropped[r] for r in reasons},
            "bytes_in": sum(s["bytes_in"] for s in screens),
            "bytes_out": sum(r["bytes_out"] for r in decides),
            "languages": dict(sorted(((k.split(":", 1)[1], v) for k, v in tally.items() if k.startswith("language.language:")), key=lambda kv: (-kv[1], kv[0]))),
            "language_dropped_by": dict(sorted((k.split(":", 1)[1], v) for k, v in tally.items() if k.startswith("language.dropped_by:"))),
            "partitions": sum(len(s["chunks"]) for s in screens),
            "units": n,
            "parts": sum(len(r["parts"]) for r in decides),
        }
        other = {k: v for k, v in tally.items() if not k.startswith("language.")}
        if other:
            entry["step_tally"] = dict(sorted(other.items()))
        if any(name == "pii" for name, _ in steps):  # replacements per kind, as `dropped` counts drops
            kinds = next(settings["kinds"] for name, settings in steps if name == "pii")
            entry["redacted"] = {kind: tally[f"pii.{kind}"] for kind in ["documents", *kinds]}
            redacted_total.update(entry["redacted"])
        if not spec.lang_filter:
            entry["lang_filter"] = False
        if component_dedup(spec, f) is None:
            entry["dedup"] = False
        assert entry["records_in"] == entry["kept"] + sum(entry["dropped"].values()), (spec.name, entry)
        samples = merge_rejected([Path(t["dir"]) / name for t in tasks for name in ("rejected-screen.parquet", "rejected-decide.parquet")],
                                 reasons + list(chain.edit_reasons), keep_rejected)
        if samples is not None:
            path = run.dir / REJECTED_DIR / f"{spec.name}.parquet"
            write_table(path, samples)
            run.add_artifact(path)
            entry["rejected_file"] = str(path.relative_to(run.dir))
        parts = [rel for r in decides for rel in r["parts"]]
        for r in decides:
            part_digests.update(r.get("part_digests") or {})
        for rel in parts:
            run.add_artifact(run.dir / rel, sha256=part_digests.get(rel, {}).get("sha256"))
        if entry["kept"] == 0:
            log.warning("filter: component %s kept no document (%d read: %s)", spec.name, entry["records_in"], entry["dropped"])
            entry["empty"] = True
            empty.append(spec.name)
        stats["components"][spec.name] = entry
        manifest["components"][spec.name] = {"parts": parts, "kept": entry["kept"]}
        for key in ("records_in", "kept", "bytes_in", "bytes_out"):
            total[key] += entry[key]
        dropped_total.update(entry["dropped"])
        log.info(
            "filter %s: %d in, %d kept, dropped %s", spec.name, entry["records_in"], entry["kept"],
            {k: v for k, v in entry["dropped"].items() if v},
        )
    for entry in stats["components"].values():  # (one clock for the stage: its passes interleave the components)
        entry["seconds"] = round(seconds, 3)
        entry["docs_per_s"] = round(entry["records_in"] / seconds, 1) if seconds > 0 else None

    manifest_path = filtered / MANIFEST
    write_json(manifest_path, manifest)  # last of the outputs: the parts before it are complete
    run.add_artifact(manifest_path)
    all_tasks = screened + resolved + decided
    driver = resource.getrusage(resource.RUSAGE_SELF)
    stats.update({
        "seconds": round(seconds, 3),
        "records_in": total["records_in"], "kept": total["kept"], "dropped": dict(dropped_total),
        "bytes_in": total["bytes_in"], "bytes_out": total["bytes_out"], "empty_components": empty,
        "dedup": {"pairs": pairs, "buckets": buckets, "memory_mb": f.dedup.memory_mb, "spill_bytes": _size(work)},
        **({"redacted": dict(redacted_total)} if redacted_total else {}),
        **_decontamination(described.get("decontaminate"), stats["components"]),
        "resources": {
            "driver_cpu_s": round(driver.ru_utime + driver.ru_stime, 3),
            "driver_peak_rss_mb": round(driver.ru_maxrss / 1024, 1),
            "tasks_cpu_s": round(sum(r.get("cpu_s", 0) for r in all_tasks if not r.get("resumed")), 3),
            "workers_peak_rss_mb": max((r.get("peak_rss_mb", 0) for r in all_tasks), default=0),
        },
    })
    if resuming:
        stats.update({"resumed": True, "tasks_resumed": sum(bool(r.get("resumed")) for r in all_tasks)})
        log.info("filter: resume: %d of %d tasks were done already", stats["tasks_resumed"], len(all_tasks))
    headline = {"filter_records_in": total["records_in"], "filter_kept": total["kept"], "filter_kept_bytes": total["bytes_out"]}
    own = [rel for rel in run.artifacts if rel.startswith((f"{FILTERED_DIR}/", f"{REJECTED_DIR}/"))]
    # The sha256 of the parts are what a later run that reads them checks (io/parts.check_parts).
    result = {"headline": headline, "stats": _without_timings(stats), "artifacts": {rel: run.artifact_sha256(rel) for rel in sorted(own)}}
    fingerprints = {run.dir / rel: part_digests[rel]["fingerprint"] if rel in part_digests else file_fingerprint(run.dir / rel) for rel in sorted(own)}
    write_marker(finished_path, run.digest, result, fingerprints, durable=True)
    # The work files are not needed any more: .finished.json keeps the stage done for a resume.
    shutil.rmtree(work, ignore_errors=True)
    return headline


# A resolve task's memory per (hash, position) pair, with a margin: the pairs (16 bytes), the sort order
# (8), the sorted copies (16) and masks; stage2.dedup.resolve_bucket alone peaked at 40 bytes a pair
# above its start (4M and 8M random pairs, some repeated).
BYTES_PER_PAIR = 64


def buckets_for(pairs: int, memory_mb: int) -> int:
    """How many hash buckets (resolve tasks) keep each task within `memory_mb`."""
    return max(1, -(-pairs * BYTES_PER_PAIR // (memory_mb << 20)))


def _spec_of(spec: ComponentSpec, unit: Unit) -> ComponentSpec:
    """The component as its unit's task needs it: its one file, not the component's thousands."""
    if unit.file is None:
        return spec
    return spec.for_file(unit.file)


def _size(folder: Path) -> int:
    """Bytes of the spilled documents and hashes: not the markers (their timings vary between runs), nor
    the buckets' results under dedup/ (their number follows the workers)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".npy", ".parquet")
               and not {"dedup", "decontaminate"} & set(p.relative_to(folder).parts[:1]))


def _decontamination(index: Optional[Dict[str, Any]], components: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The contamination report: per eval set, what the index holds and the documents that matched it, per component."""
    if not index:
        return {}
    sets = {}
    for entry in index["sets"]:
        matched = {name: (comp.get("step_tally") or {}).get(f"decontaminate.matched:{entry['name']}", 0) for name, comp in components.items()}
        sets[entry["name"]] = {**{k: v for k, v in entry.items() if k != "name"}, "matched_documents": matched}
    return {"decontamination": {"ngram": index["ngram"], "min_item_words": index["min_item_words"], "eval_sets": sets}}
