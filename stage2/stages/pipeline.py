"""Dispatch one run: a single stage, or filter -> tokenizer -> shard in one run folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from stage2.config import Config
from stage2.errors import Stage2Error
from stage2.runtime.run import Run, append_index, remove_stale_temporaries, start_run

log = logging.getLogger("stage2")

PIPELINE = ("filter", "tokenizer", "shard")


def pipeline_steps(cfg: Config) -> Tuple[str, ...]:
    """The stages `stage=pipeline` runs: all of them, but the tokenizer's when `shard.tokenizer` gives one
    (the run filters, then shards with that tokenizer; a pipeline holds one tokenizer)."""
    return tuple(step for step in PIPELINE if not (step == "tokenizer" and cfg.shard.tokenizer))


def _stage_runner(name: str) -> Callable[[Run], Dict[str, Any]]:
    # Imported on demand: a report run should not pay for sentencepiece, langdetect and datasets.
    if name == "filter":
        from stage2.stages.filter import run as runner
    elif name == "tokenizer":
        from stage2.stages.tokenizer import run as runner
    elif name == "shard":
        from stage2.stages.shard import run as runner
    else:
        raise ValueError(name)
    return runner


def _status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "stats.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _check_no_empty_component(run: Run) -> None:
    """A component with no document left would silently leave the mixture: stop before training on it.

    (A filter-only run just warns: a threshold sweep may well empty a component.)"""
    components = run.stage_stats("filter").get("components", {})
    for name, counts in components.items():
        if counts.get("kept") == 0:
            dropped = ", ".join(f"{k} {v}" for k, v in counts.get("dropped", {}).items() if v)
            raise Stage2Error(
                f"component {name}: no document left after filtering ({counts.get('records_in')} read; dropped: {dropped});"
                f" loosen the filter or remove the component from the mixture{_by_line_hint(run, name)}"
            )


def _by_line_hint(run: Run, name: str) -> str:
    """A text file read one document per line (the default) is the usual cause of a component all too short."""
    from stage2.io.sources import infer_format

    own = (run.cfg.dataset.components or {}).get(name)
    patterns = list(own.data_files or []) if own is not None and own.data_files else [p for p in run.cfg.dataset.paths or [] if name in p]
    try:
        text = bool(patterns) and all(infer_format(p) == "text" for p in patterns) and (own is None or own.sample_by == "line")
    except Stage2Error:
        text = False
    return f" (a text file is read one document per line: dataset.components.{name}.sample_by=paragraph or document reads larger ones)" if text else ""


def _tasks_cpu(run: Run) -> float:
    return run.executor.tasks_cpu_s if run.executor is not None else 0.0


def _driver_share(run: Run, process_s: float, tasks_s: float) -> Dict[str, Any]:
    """A stage's driver CPU (this process's, less its tasks' when they ran here) against its tasks' CPU."""
    driver_s = process_s - tasks_s if run.executor is not None and run.executor.in_process else process_s
    total = driver_s + tasks_s
    return {"driver_s": round(driver_s, 3), "tasks_s": round(tasks_s, 3), "driver_share": round(driver_s / total, 4) if total else None}


def run_stage(cfg: Config, run_dir: Path, record: bool = True) -> Path:
    """Run `cfg.stage` in `run_dir`. `record=False` (a read-only stage run alone): no report.md in it."""
    from stage2.runtime import folder

    stage = str(cfg.stage)
    if stage == "report":
        from stage2.stages.report import run as report

        report(cfg, run_dir if record else None)
        return run_dir
    if stage == "verify":
        from stage2.stages.verify import run as verify

        verify(cfg, run_dir)
        return run_dir

    finished_before = _status(run_dir) == "finished"  # resuming a finished run: it is indexed already
    warmup = None
    if stage in ("filter", "pipeline"):  # the workers load the filter's language models while they scan the inputs
        from stage2.stages.filter import worker_warmup as warmup
    run = start_run(run_dir, cfg, warmup)
    steps = pipeline_steps(cfg) if stage == "pipeline" else (stage,)
    headline: Dict[str, Any] = {}
    cpu = run.stats["driver_cpu"] = {"start_up_s": round(time.process_time(), 3), "stages": {}}
    try:
        for step in steps:
            log.info("stage %s: %s", step, ", ".join(c.name for c in run.components))
            driver, tasks = time.process_time(), _tasks_cpu(run)
            nodes = getattr(run.executor, "nodes", None)  # Ray's: the nodes that ran a task of this stage
            if nodes is not None:
                nodes.clear()
            headline.update(_stage_runner(step)(run) or {})
            cpu["stages"][step] = _driver_share(run, time.process_time() - driver, _tasks_cpu(run) - tasks)
            if nodes:
                run.stage_stats(step)["executor_nodes"] = len(nodes)
            run.stats.setdefault("steps", []).append(step)
            # The chain of steps (a resume redoes them, but the chain stays one); what each step read
            # is in provenance["lineage"].
            chain = run.provenance.setdefault("steps", [])
            if step not in chain:
                chain.append(step)
            run.save_provenance()
            if step == "filter" and stage == "pipeline":
                _check_no_empty_component(run)
            run.save_stats()
        remove_stale_temporaries(run.dir, writers_done=True)
        run.save_stats(status="finished")
        if not finished_before:
            append_index(run, headline)
    finally:
        if run.executor is not None:
            run.executor.close()
    log.info("run folder: %s", run_dir)
    folder.release(run_dir)  # after the index line: a process that takes the folder next sees a finished run
    table = summary_table(run.stats)
    shard_stats = (run.stats.get("stages") or {}).get("shard")
    plan = ""
    if shard_stats:  # (the shard stage's module imports numpy: not for the other stages' drivers)
        from stage2.stages.shard import plan_table

        plan = plan_table(shard_stats, run_dir)
    print("".join(t + "\n" for t in (table, plan) if t) + f"stage2: {stage} finished; run folder: {run_dir}")
    return run_dir


def summary_table(stats: Dict[str, Any]) -> str:
    """The end of a run on the terminal: per component what went in, what was kept and why the rest was
    dropped, and the tokens and bytes per token of the stages that ran."""
    stages = stats.get("stages") or {}
    filtered = (stages.get("filter") or {}).get("components") or {}
    tokenizer = (stages.get("tokenizer") or {}).get("components") or {}
    sharded = (stages.get("shard") or {}).get("components") or {}
    names = list(dict.fromkeys([*filtered, *tokenizer, *sharded]))
    if not names:
        return ""
    rows = [["component", "in", "kept", "dropped", "tokens", "bytes/token"]]
    for name in names:
        f, t, s = filtered.get(name, {}), tokenizer.get(name, {}), sharded.get(name, {})
        dropped = ", ".join(f"{reason} {n:,}" for reason, n in (f.get("dropped") or {}).items() if n) or ("-" if f else "")
        rows.append([
            name,
            f"{f['records_in']:,}" if "records_in" in f else "",
            f"{f['kept']:,}" if "kept" in f else "",
            dropped,
            f"{s['tokens']:,}" if "tokens" in s else "",
            f"{t['bytes_per_token']:.2f}" if isinstance(t.get("bytes_per_token"), (int, float)) else "",
        ])
    keep = [i for i in range(len(rows[0])) if i == 0 or any(r[i] for r in rows[1:])]  # no empty columns
    rows = [[r[i] for i in keep] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = {i for i, head in enumerate(rows[0]) if head in ("in", "kept", "tokens", "bytes/token")}
    lines = ["  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    return "\n".join(lines)
