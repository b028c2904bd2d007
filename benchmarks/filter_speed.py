"""Filter speed, one run on one input: the stage (2 workers) vs a single-process langdetect loop.

    uv run python -m benchmarks.filter_speed [--docs 6000] [--workers 2]

Input: every document of 200..8000 characters (they all pass the length screen; 15,147) of the
English web and multilingual dev corpora (../shared/data or $STAGE2_SHARED_DATA), or with --docs N
the first N/5 of each file, written to one jsonl file. Measured, in this order:
  loop        `langdetect.detect_langs(text[:lang_max_chars])` per document in one process (seed 0);
  stage       the whole filter stage from start_run on (worker start-up and their input scan; plan;
              screen: workers read their own partitions, steps, spill; resolve; decide: verdicts and
              parquet parts) with langdetect alone, the default recipe and filter=fasttext (RECIPES);
  near dedup  as the stage's passes do it, in one process: window hashing and spill per partition,
              resolve of the hash bucket(s), lookup and verdicts per partition: MB of text per CPU second.
And in each repeat, right after the full fastText run, the fastText stage on every 3rd document (the
same mix): a line through the two runs splits its time into a fixed part (worker start-up and input
scan, the passes' start and end) and a part per document.
Goals: stage/loop >= 1.8x with langdetect, >= 30x with fastText; near dedup >= 20 MB/s per core.
Writes benchmarks/results/filter_speed.md and .json (headline numbers). Timings on a shared machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    # This box sets PYTHONDONTWRITEBYTECODE: every spawned worker would recompile all its imports
    # (~4 s of `compile` measured). Cache bytecode in a temp folder, as a normal install would have
    # it; the repo and the venv are not touched. Set before the imports below, inherited by workers.
    _cache = os.path.join(tempfile.gettempdir(), "stage2-bench-pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = _cache
    sys.dont_write_bytecode = False
    sys.pycache_prefix = _cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from stage2.config import Config

from benchmarks.common import machine, md_table, read_jsonl, shared_data_dir, write_results

# Hydra, stage2.main and stage2.runtime.run are imported inside the functions: spawned workers re-import
# this module (as __mp_main__) and should pay for what `stage2` workers import, not for the benchmark.

FILES = (
    "en_web_stackexchange_dev.jsonl.gz",
    "multiling_tldr_dev.jsonl.gz",
    "multiling_fortunes_dev.jsonl.gz",
    "multiling_udhr_dev.jsonl.gz",
    "en_foldoc_dev.jsonl.gz",
)


def load_docs(n: Optional[int] = None) -> List[Dict[str, Any]]:
    """All documents of 200..8000 characters of FILES, or the first n/5 of each file (n of them at most)."""
    data = shared_data_dir()
    per_file = None if n is None else n // len(FILES) + 1  # a mix of languages and kinds of text, not just the first file
    docs: List[Dict[str, Any]] = []
    for name in FILES:
        picked = [d for d in read_jsonl(data / name) if 200 <= len(d["text"]) <= 8000][:per_file]
        docs.extend({"id": d["id"], "text": d["text"]} for d in picked)
    return docs[:n]


def write_docs(path: Path, docs: List[Dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


# What each stage row runs. "langdetect": the library alone, no checks before it (the rule), so
# the row measures the parallel stage against the same detector in a loop; the other two are the
# shipped recipes (stage2/lid/rule.py): the default (fastText check, function words, langdetect_fast)
# and filter=fasttext (fastText, function words).
RECIPES = {
    "langdetect": ["filter.lang_backend=langdetect", "filter.lang_check=null", "filter.function_words=0"],
    "langdetect_fast": [],
    "fasttext": ["filter=fasttext"],
}


def plain_cfg(path: Path, workdir: Path, workers: int, backend: str, partition_size: int) -> "Config":
    import stage2.main as stage2_main

    overrides = [
        f"dataset.partition_size={partition_size}",
        "stage=filter",
        "progress=false",
        "dataset=files",
        f"dataset.paths=[{path}]",
        f"executor.workers={workers}",
        f"runs_index={workdir}/runs.jsonl",
        *RECIPES[backend],
    ]
    return stage2_main.compose_recipe(overrides, str(workdir))


def time_stage(path: Path, workdir: Path, workers: int, backend: str, partition_size: int) -> Dict[str, Any]:
    """One run of the stage, timed from `start_run` (which starts the worker pool: the workers scan the input,
    hash and record offsets) to the end of the filter stage; `stage_seconds` leaves `start_run` out."""
    import datasets  # noqa: F401  (the CLI imports it before any stage: quiet_datasets_logging)

    from stage2.stages import filter as filter_stage
    from stage2.runtime.run import start_run

    cfg = plain_cfg(path, workdir, workers, backend, partition_size)
    # The passes' own results (each task's CPU seconds), kept on the way through: where the time goes.
    captured: Dict[str, Any] = {}
    execute = filter_stage.execute

    def keep_passes(*args, **kwargs):
        captured["passes"] = execute(*args, **kwargs)
        return captured["passes"]

    cpu0, self0 = _cpu(), _self_cpu()
    started = time.perf_counter()
    run = start_run(workdir / f"run-{backend}", cfg)
    filter_stage.execute = keep_passes
    try:
        stage_started = time.perf_counter()
        filter_stage.run(run)
        ended = time.perf_counter()
        driver = _self_cpu() - self0
    finally:
        filter_stage.execute = execute
        run.executor.close()  # waits for the workers: their CPU time is then in RUSAGE_CHILDREN
    stats = run.stats["stages"]["filter"]
    passes = captured["passes"]
    tasks_cpu = {name: sum(r.get("cpu_s", 0) for r in results) for name, results in
                 (("screen", passes.screened), ("resolve", passes.resolved), ("decide", passes.decided))}
    return {"seconds": ended - started, "stage_seconds": ended - stage_started, "cpu": _cpu() - cpu0,
            "docs": stats["records_in"], "kept": stats["kept"], "mb": stats["bytes_in"] / 1e6,
            "tasks_cpu": tasks_cpu, "tasks": {"screen": len(passes.screened), "resolve": len(passes.resolved), "decide": len(passes.decided)},
            "screen_cpu_each": [r.get("cpu_s", 0) for r in passes.screened],
            "driver_cpu": driver}


def _first_tasks(r: Dict[str, Any], workers: int) -> str:
    each = r["screen_cpu_each"]
    first, rest = each[:workers], sorted(each[workers:])
    return f"{sum(first) / max(len(first), 1):.2f} vs {rest[len(rest) // 2] if rest else 0:.3f}"


def _self_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the stage's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_loop(texts: List[str], max_chars: int) -> Tuple[float, float]:
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    detect_langs("warm up: load the profiles before timing")
    started, cpu0 = time.perf_counter(), _cpu()
    for t in texts:
        try:
            detect_langs(t[:max_chars])
        except LangDetectException:
            pass
    return time.perf_counter() - started, _cpu() - cpu0


def time_near(texts: List[str], k: int, threshold: float, partition_size: int, memory_mb: int) -> Dict[str, float]:
    """Near dedup as the stage does it (stage2/stages/filter_tasks.py, stage2/dedup.py), in one process:
    screen: window hashes of a partition at a time, spilled sorted by hash; resolve: every hash bucket
    (`buckets_for(pairs, memory_mb)`); decide: each partition's near counts looked up by position range
    and the verdicts. Exact dedup's share of the same passes is timed apart (hash, spill, resolve, lookup).

    CPU seconds of this process (time.process_time): MB/s per core even when other jobs share the cores.
    The spill files go to a temp folder, fsync'd as in the stage (that wait is wall time, not CPU).
    """
    import numpy as np

    from stage2.dedup import batch_window_hashes, exact_key, lookup, resolve_bucket, spill
    from stage2.stages.filter import buckets_for

    cpu = {key: 0.0 for key in ("hash_s", "spill_s", "resolve_s", "lookup_s", "exact_s")}

    def timed(key: str, fn, *args):
        t0 = time.process_time()
        out = fn(*args)
        cpu[key] += time.process_time() - t0
        return out

    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        near_files, exact_files, partitions = [], [], []
        pairs = spill_bytes = 0
        for start in range(0, len(texts), partition_size):
            part = texts[start : start + partition_size]
            positions = np.arange(start, start + len(part), dtype=np.uint64)
            hashes, offsets = timed("hash_s", batch_window_hashes, part, k)
            windows = np.diff(offsets)
            if len(hashes):
                path = folder / f"near-{start:07d}.npy"
                pairs += timed("spill_s", spill, path, hashes, np.repeat(positions, windows))
                near_files.append(str(path))
                spill_bytes += path.stat().st_size
            path = folder / f"exact-{start:07d}.npy"
            keys = timed("exact_s", lambda: np.fromiter(map(exact_key, part), dtype=np.uint64, count=len(part)))
            timed("exact_s", spill, path, keys, positions)
            exact_files.append(str(path))
            partitions.append((positions, windows))
        buckets = buckets_for(pairs, memory_mb)  # (the stage counts both kinds' pairs; exact adds one a document)
        near_out, exact_out = [], []
        for b in range(buckets):
            task = {"bucket": b, "buckets": buckets, "per_component": True, "exact_files": [], "near_files": near_files,
                    "exact_out": str(folder / f"x-{b}.npy"), "near_out": str(folder / f"n-{b}.npy")}
            timed("resolve_s", resolve_bucket, task)
            near_out.append(task["near_out"])
            task = {**task, "exact_files": exact_files, "near_files": [], "exact_out": str(folder / f"xe-{b}.npy"), "near_out": str(folder / f"ne-{b}.npy")}
            timed("exact_s", resolve_bucket, task)
            exact_out.append(task["exact_out"])

        def decide(positions, windows):  # stage2/stages/filter_tasks.py::_decide, the near verdicts
            _, near = lookup([], near_out, int(positions.min()), int(positions.max()) + 1)
            seen = np.array([near.get(int(p), 0) for p in positions], dtype=np.int64)
            return int(((windows > 0) & (seen >= threshold * windows)).sum())

        dropped = sum(timed("lookup_s", decide, *part) for part in partitions)
        exact = sum(len(timed("exact_s", lookup, exact_out, [], int(pos.min()), int(pos.max()) + 1)[0]) for pos, _ in partitions)
    wall = time.perf_counter() - wall
    near_s = cpu["hash_s"] + cpu["spill_s"] + cpu["resolve_s"] + cpu["lookup_s"]
    return {**cpu, "near_s": near_s, "wall_s": wall, "dropped": dropped, "exact_dups": exact, "pairs": pairs,
            "spill_bytes": spill_bytes, "buckets": buckets, "partitions": len(partitions)}


def best_near(runs: List[Dict[str, float]]) -> Dict[str, float]:
    """The run with the least CPU (the first pays for warming allocations and caches: ~10% more)."""
    return min(runs, key=lambda r: r["near_s"])


def fixed_and_marginal(small: Dict[str, Any], big: Dict[str, Any]) -> Dict[str, float]:
    """The line through two runs of the stage: time = fixed + docs * per_doc (wall and CPU seconds)."""
    extra = big["docs"] - small["docs"]
    per_doc, per_doc_cpu = (big["seconds"] - small["seconds"]) / extra, (big["cpu"] - small["cpu"]) / extra
    return {
        "per_doc_s": per_doc, "per_doc_cpu": per_doc_cpu,
        "fixed_s": big["seconds"] - big["docs"] * per_doc, "fixed_cpu": big["cpu"] - big["docs"] * per_doc_cpu,
    }


def fit_report(fit: Dict[str, float], small: Dict[str, Any], big: Dict[str, Any], loop_rate: float, loop_rate_cpu: float) -> str:
    rows = [
        ["every 3rd document", small["docs"], f"{small['seconds']:.2f}", f"{small['cpu']:.2f}", f"{small['docs'] / small['seconds'] / loop_rate:.2f}x"],
        ["all documents", big["docs"], f"{big['seconds']:.2f}", f"{big['cpu']:.2f}", f"{big['docs'] / big['seconds'] / loop_rate:.2f}x"],
        ["fixed part (line through both)", 0, f"{fit['fixed_s']:.2f}", f"{fit['fixed_cpu']:.2f}", ""],
        ["per document", 1, f"{fit['per_doc_s'] * 1e6:.0f} us", f"{fit['per_doc_cpu'] * 1e6:.0f} us",
         f"{1 / fit['per_doc_s'] / loop_rate:.2f}x" if fit["per_doc_s"] > 0 else "n/a"],
    ]
    return (
        "Fixed vs per-document cost of the fastText stage (best of the runs each; the loop's rate on all documents "
        "is the yardstick, the third has the same mix):\n\n"
        + md_table(["input", "docs", "wall s", "CPU s (all processes)", "docs/s vs loop"], rows)
        + f"\n\nThe fixed part is worker start-up (spawn, imports, the model), their scan of the input, and the stage's "
        f"own start and end (three passes, each waiting for the one before: a pass's last task leaves a worker idle). Per document the stage needs {fit['per_doc_cpu'] * 1e6:.0f} us of CPU "
        f"over all processes; the loop needs {1e6 / loop_rate_cpu:.0f} us, so on 2 free cores the stage's ratio "
        f"is bounded by {2 / (fit['per_doc_cpu'] * loop_rate_cpu):.1f}x "
        f"(30x needs at most {2e6 / loop_rate_cpu / 30:.0f} us a document) however large the input.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # All 15,147: fixed start-up costs (~0.3 s a worker) would weigh 3x more on the 5,238 of --docs 6000.
    parser.add_argument("--docs", type=int, default=None, help="first N/5 of each file (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    # Small enough that a few thousand documents make many partitions to spread over the workers.
    parser.add_argument("--partition-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the fastest counts")
    args = parser.parse_args()
    docs = load_docs(args.docs)
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = write_docs(work / "speed.jsonl", docs)
        cfg = plain_cfg(path, work, args.workers, "langdetect", args.partition_size)
        max_chars, dedup_cfg = cfg.filter.lang_max_chars, cfg.filter.dedup
        fasttext_chars = plain_cfg(path, work, args.workers, "fasttext", args.partition_size).filter.lang_max_chars
        # Other jobs share the cores: each measurement is repeated (order alternated) and the fastest
        # wall time kept, so that a burst of someone else's work does not decide the ratio.
        third = write_docs(work / "speed-third.jsonl", docs[::3])
        loops, lds, fasts, fts, ft_thirds = [], [], [], [], []
        for rep in range(args.repeats):
            if rep % 2:
                lds.append(time_stage(path, work / f"r{rep}", args.workers, "langdetect", args.partition_size))
                loops.append(time_loop(texts, max_chars))
            else:
                loops.append(time_loop(texts, max_chars))
                lds.append(time_stage(path, work / f"r{rep}", args.workers, "langdetect", args.partition_size))
            fasts.append(time_stage(path, work / f"r{rep}", args.workers, "langdetect_fast", args.partition_size))
            fts.append(time_stage(path, work / f"r{rep}", args.workers, "fasttext", args.partition_size))
            # (right after the full run, in every repeat: a burst of other jobs then hits both sides of the fit alike)
            ft_thirds.append(time_stage(third, work / f"t{rep}", args.workers, "fasttext", args.partition_size))
        load = os.getloadavg()[0]
        loop_s, loop_cpu = min(loops)
        ld = min(lds, key=lambda r: r["seconds"])
        ft = min(fts, key=lambda r: r["seconds"])
        fast = min(fasts, key=lambda r: r["seconds"])
        near_args = (dedup_cfg.window_words, dedup_cfg.threshold, cfg.dataset.partition_size, dedup_cfg.memory_mb)
        near = best_near([time_near(texts, *near_args) for _ in range(args.repeats)])
        # Resolve sorts every pair of a bucket, so its cost per MB grows (slowly) with the input: the third
        # shows how much of the rate that costs.
        near_third = best_near([time_near(texts[::3], *near_args) for _ in range(args.repeats)])
        ft_third = min(ft_thirds, key=lambda r: r["seconds"])
    loop_rate = len(texts) / loop_s
    loop_rate_cpu = len(texts) / loop_cpu
    def row(what: str, seconds: float, cpu: float, docs: int, goal: str) -> List[Any]:
        return [what, f"{seconds:.1f}", f"{docs / seconds:.0f}", f"{docs / seconds / loop_rate:.2f}x", goal, f"{cpu:.1f}", f"{docs / cpu:.0f}"]

    rows = [
        row("langdetect.detect_langs loop, 1 process", loop_s, loop_cpu, len(texts), ""),
        row(f"filter stage, langdetect alone, {args.workers} workers", ld["seconds"], ld["cpu"], ld["docs"], ">= 1.8x"),
        row(f"filter stage, default recipe (fastText check, function words, langdetect_fast), {args.workers} workers", fast["seconds"], fast["cpu"], fast["docs"], ">= 10x (stretch)"),
        row(f"filter stage, filter=fasttext (fastText, function words), {args.workers} workers", ft["seconds"], ft["cpu"], ft["docs"], ">= 30x"),
    ]
    near_s = near["near_s"]
    near_third_s = near_third["near_s"]
    mb_third = sum(len(t.encode()) for t in texts[::3]) / 1e6
    fit = fixed_and_marginal(ft_third, ft)
    near_rows = [
        ["window hashing (screen)", f"{near['hash_s']:.2f}", f"{mb / near['hash_s']:.1f}"],
        [f"spill: sort by hash, write ({near['partitions']} partitions)", f"{near['spill_s']:.2f}", f"{mb / near['spill_s']:.1f}"],
        [f"resolve ({near['buckets']} bucket{'s' if near['buckets'] > 1 else ''}: first occurrences)", f"{near['resolve_s']:.2f}", f"{mb / near['resolve_s']:.1f}"],
        ["lookup and verdicts (decide)", f"{near['lookup_s']:.2f}", f"{mb / near['lookup_s']:.1f}"],
        ["near dedup in all (goal >= 20 MB/s per core)", f"{near_s:.2f}", f"{mb / near_s:.1f}"],
        ["(wall clock, shared cores, fsync waits; exact dedup's passes included)", f"{near['wall_s']:.2f}", f"{mb / near['wall_s']:.1f}"],
        [f"near dedup in all, every 3rd document ({mb_third:.2f} MB)", f"{near_third_s:.2f}", f"{mb_third / near_third_s:.1f}"],
        ["(exact dedup's share of the passes: text hash, spill, resolve, lookup; not in the rows above)", f"{near['exact_s']:.2f}", f"{mb / near['exact_s']:.1f}"],
    ]
    report = (
        "# Filter speed (benchmarks/filter_speed.py)\n\n"
        f"Machine: {machine()}, shared with other jobs (noisy: compare ratios within one run).\n"
        f"Input: {len(texts)} documents, {mb:.2f} MB of text (200..8000 chars; {', '.join(FILES)}), one jsonl file.\n"
        f"The loop reads the first lang_max_chars={max_chars} characters, as langdetect does in the stage (filter=fasttext reads {fasttext_chars}: fastText's cost grows with the text); "
        f"dataset.partition_size={args.partition_size}; best wall time of {args.repeats} runs each (order alternated); "
        f"1-minute load average at the end: {load:.1f}.\n\n"
        + md_table(["what", "wall s", "docs/s", "vs loop", "goal", "CPU s (all processes)", "docs per CPU s"], rows)
        + f"\n\nCPU seconds count the driver and the workers (RUSAGE_CHILDREN after the pool shut down). While other jobs "
        f"hold a core, 2 workers cannot get 2 cores and the wall-time ratio says little; the CPU columns do not depend "
        f"on that: the langdetect stage spends {loop_rate_cpu / (ld['docs'] / ld['cpu']):.2f}x the loop's CPU per document "
        f"(worker start-up and the models' loading included), so on {args.workers} free cores its wall-time "
        f"ratio is bounded by {args.workers * (ld['docs'] / ld['cpu']) / loop_rate_cpu:.2f}x."
        + "\n\nWhere the stage's CPU goes (best run of each; the tasks' own CPU seconds, summed over workers; the driver's "
        "CPU is its process's from start_run on: resolving the inputs, planning, dispatch, the manifest and stats; the rest "
        "is the workers' own start-up, imports and the input scan start_run gives them):\n\n"
        + md_table(["stage run", "screen tasks (read, steps, hashes, spill)", "resolve tasks", "decide tasks (lookup, parts)", "driver",
                    "rest (worker start-up, input scan)", "all processes", "wall s (without start_run)"], [
            [name, *(f"{r['tasks_cpu'][p]:.2f} ({r['tasks'][p]})" for p in ("screen", "resolve", "decide")), f"{r['driver_cpu']:.2f}",
             f"{r['cpu'] - r['driver_cpu'] - sum(r['tasks_cpu'].values()):.2f}", f"{r['cpu']:.2f}", f"{r['seconds']:.2f} ({r['stage_seconds']:.2f})"]
            for name, r in (("langdetect alone", ld), ("default recipe", fast), ("filter=fasttext", ft), ("filter=fasttext, every 3rd document", ft_third))
        ])
        + "\n\nThe first screen task of each worker (the first " + str(args.workers) + " in the table's runs; the language "
        "models are loaded in the workers' warm-up, before any task, so what it pays more is first use: lazy imports, "
        "page faults, caches), CPU s each against the other screen tasks' median: "
        + "; ".join(f"{name} {_first_tasks(r, args.workers)}" for name, r in (("langdetect alone", ld), ("default recipe", fast), ("filter=fasttext", ft)))
        + "."
        + f"\n\nStage wall time runs from start_run (the worker pool starts there, and the workers scan the input) to the "
        f"stage's end: planning, workers reading their own partitions, the three passes (screen, resolve, decide) with "
        f"their spill files and parquet writes; "
        f"kept {ld['kept']} (langdetect alone) / {fast['kept']} (default recipe) / {ft['kept']} (filter=fasttext) of {ld['docs']}. "
        f"The default recipe's keep/drop verdicts agree with plain langdetect's on 99.6 % of the dev documents "
        f"(benchmarks/results/langid_agreement.md: the checks only drop, mostly Gaelic and Manx).\n\n"
        + fit_report(fit, ft_third, ft, loop_rate, loop_rate_cpu)
        + f"Near dedup (k={dedup_cfg.window_words}, threshold={dedup_cfg.threshold}) in one process over the same {mb:.2f} MB, "
        f"as the stage does it (issue 14's out-of-core passes: spill per partition, resolve per hash bucket, lookup per "
        f"partition; filter.dedup.memory_mb={dedup_cfg.memory_mb}); least CPU of {args.repeats} runs:\n\n"
        + md_table(["step", "CPU seconds", "MB/s per core"], near_rows)
        + f"\n\n{near['dropped']} near duplicates, {near['exact_dups']} exact duplicates (no language ID here: every document "
        f"takes part); spilled {near['pairs']} (hash, position) pairs of windows, {near['spill_bytes'] / 1e6:.2f} MB on disk "
        f"({near['spill_bytes'] / max(near['pairs'], 1):.1f} bytes a pair).\n"
    )
    print(report)
    write_results("filter_speed", report, {
        "docs": len(texts), "mb": round(mb, 3), "workers": args.workers, "load_end": load,
        "loop_docs_per_s": round(loop_rate, 1),
        "langdetect_docs_per_s": round(ld["docs"] / ld["seconds"], 1),
        "langdetect_vs_loop": round(ld["docs"] / ld["seconds"] / loop_rate, 3),
        "langdetect_cpu_bound_vs_loop": round(args.workers * (ld["docs"] / ld["cpu"]) / loop_rate_cpu, 3),
        "langdetect_fast_docs_per_s": round(fast["docs"] / fast["seconds"], 1),
        "langdetect_fast_vs_loop": round(fast["docs"] / fast["seconds"] / loop_rate, 3),
        "fasttext_docs_per_s": round(ft["docs"] / ft["seconds"], 1),
        "fasttext_vs_loop": round(ft["docs"] / ft["seconds"] / loop_rate, 3),
        "fasttext_fixed_s": round(fit["fixed_s"], 3),
        "fasttext_us_per_doc": round(fit["per_doc_s"] * 1e6, 1),
        "fasttext_marginal_vs_loop": round(1 / fit["per_doc_s"] / loop_rate, 3) if fit["per_doc_s"] > 0 else None,
        "near_dedup_mb_per_s_per_core": round(mb / near_s, 2),
        "near_dedup_mb_per_s_per_core_third": round(mb_third / near_third_s, 2),
        "near_dedup_cpu_s": {key: round(near[key], 3) for key in ("hash_s", "spill_s", "resolve_s", "lookup_s", "near_s", "exact_s")},
        "near_dedup_buckets": near["buckets"],
        "near_dedup_spill_mb": round(near["spill_bytes"] / 1e6, 2),
    })


if __name__ == "__main__":
    main()
