"""Run every speed/memory benchmark, one after the other, and summarise each against its goal.

    uv run python -m benchmarks [--quick] [--only NAME] [--only NAME ...]

Each benchmark script runs as its own subprocess, sequentially (they would compete for the cores
otherwise), writes its markdown + JSON into the results folder, and this runner reads the JSON and
prints one table of ratios (measure, value, target, met), also written to summary.md / summary.json.
The full run writes into benchmarks/results/; --quick (small inputs, a smoke test of a few minutes)
writes into benchmarks/results/quick/ so that it never overwrites the full figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from benchmarks.common import REPO, RESULTS, machine, md_table

# name -> (arguments of the full run, arguments of --quick). Order: cheap and most-watched first.
BENCHMARKS: Dict[str, tuple] = {
    "filter_speed": ([], ["--docs", "800", "--repeats", "1", "--partition-size", "100"]),
    "scaling": ([], ["--docs", "1500", "--repeats", "1", "--partition-size", "100"]),
    "tokenizer_speed": ([], ["--vocab", "2000", "--repeats", "2", "--files", "en_web_stackexchange_dev.jsonl.gz"]),
    "shard_speed": ([], ["--docs", "3000", "--repeats", "1"]),
    "memory": ([], ["--max-docs", "200", "--vocab", "1000"]),
    "scale": ([], ["--scales", "1,2", "--max-docs", "300", "--no-original"]),
    "hygiene": ([], ["--repeats", "1", "--train-mb", "1"]),
    # datatrove and the nanoGPT-style prepare run in their own venv ($STAGE2_PEERS_PYTHON, docs/benchmarks.md).
    "peers": ([], ["--copies", "1", "--rounds", "1", "--max-docs", "300"]),
}

Row = List[Any]  # measure, value, target, met


def _ratio_row(measure: str, value: float, target: float, at_least: bool = True, unit: str = "x") -> Row:
    met = value >= target if at_least else value <= target
    fmt = f"{value:.2f}{unit}"
    return [measure, fmt, f"{'>=' if at_least else '<='} {target:g}{unit}", "yes" if met else "NO"]


def rows_filter_speed(r: Dict[str, Any]) -> List[Row]:
    w = r["workers"]
    return [
        _ratio_row(f"filter stage, langdetect alone, {w} workers / 1-process detect_langs loop (wall)", r["langdetect_vs_loop"], 1.8),
        _ratio_row(f"filter stage, default recipe (fastText check, function words, langdetect_fast), {w} workers / the loop (wall; stretch)", r["langdetect_fast_vs_loop"], 10),
        _ratio_row(f"filter stage, filter=fasttext, {w} workers / the loop (wall)", r["fasttext_vs_loop"], 30),
        _ratio_row("filter=fasttext, per document once fixed costs are paid (fit over two input sizes) / the loop", r["fasttext_marginal_vs_loop"], 30)
        if r["fasttext_marginal_vs_loop"] is not None else ["filter=fasttext, per document once fixed costs are paid / the loop", "n/a (noise: the smaller input was slower)", ">= 30x", "-"],
        _ratio_row("near dedup, MB of text per CPU second (one process)", r["near_dedup_mb_per_s_per_core"], 20, unit=" MB/s"),
    ]


def rows_scaling(r: Dict[str, Any]) -> List[Row]:
    n = r["workers"]
    return [
        ["filter CLI, langdetect, 1 worker / detect_langs loop (start-up included)", f"{r['vs_loop']['1']:.2f}x", "- (no goal)", "-"],
        _ratio_row(f"filter CLI, langdetect, {n} workers / detect_langs loop (start-up included)", r["vs_loop"][str(n)], 1.8),
        _ratio_row(f"scaling efficiency 1 -> {n} workers, filter CLI wall (start-up included)", r["efficiency"], 0.85, unit=""),
        _ratio_row(
            f"scaling efficiency 1 -> {n} workers, fixed cost subtracted "
            f"({r['fixed_s']['1']:.1f} s / {r['fixed_s'][str(n)]:.1f} s)", r["efficiency_without_fixed"], 0.85, unit="",
        ),
        [f"CPU s at 1 worker / at {n} workers (bound on the efficiency; load-independent)", f"{r['cpu_efficiency_bound']:.2f}", "- (no goal)", "-"],
    ]


def rows_tokenizer_speed(r: Dict[str, Any]) -> List[Row]:
    return [
        _ratio_row("tokenizer stage on raw sources / direct SentencePieceTrainer.train (wall, median)", r["wall_ratio"], 1.15, at_least=False),
        _ratio_row("tokenizer stage on filtered parts (pipeline) / direct train (wall, median)", r["wall_ratio_parts"], 1.15, at_least=False),
    ]


def rows_shard_speed(r: Dict[str, Any]) -> List[Row]:
    n = r["threads"]
    return [
        _ratio_row(f"shard stage 1x, 1 worker x {n} threads / encode(batch, num_threads={n})", r["stage_vs_encode_1x"], 0.85),
        _ratio_row(f"shard stage 10x, 1 worker x {n} threads / encode(batch, num_threads={n})", r["stage_vs_encode_10x"], 0.85),
        [f"shard stage 1x, {n} workers x 1 thread / encode (no goal)", f"{r['stage_workers_vs_encode_1x']:.2f}x", "-", "-"],
    ]


def rows_memory(r: Dict[str, Any]) -> List[Row]:
    rows = []
    big = f"{r['scale']}x"
    for stage in ("filter", "tokenizer", "shard"):
        one, many = r["1x"][stage]["peak_rss_mb"], r[big][stage]["peak_rss_mb"]
        # The task gives no memory goal: reported, not judged.
        rows.append([f"peak RSS, {stage} stage, 1x -> {big} input (1 process)", f"{one:.0f} -> {many:.0f} MB ({many / one:.2f}x)", "- (no goal)", "-"])
    return rows


def rows_scale(r: Dict[str, Any]) -> List[Row]:
    # benchmarks/scale.py judges its own goals (issue 14, point 5) on the scales it ran; the rows say which.
    return [[g["measure"], g["value"], g["target"], g["met"]] for g in r["goals"]]


def rows_hygiene(r: Dict[str, Any]) -> List[Row]:
    steps = ("length", "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality", "url", "pii", "decontaminate")
    extra = r["worker_peak_rss_mb_with"] - r["worker_peak_rss_mb_without"]
    return [
        ["filter steps, ms per MB of text (one process): " + ", ".join(f"{s} {r[f'{s}_ms_per_mb']:.0f}" for s in steps), "-", "- (no goal)", "-"],
        _ratio_row(f"decontamination, a worker's extra peak RSS with a 10 MB eval set (index {r['index_mb']:.1f} MB)", extra, 200, at_least=False, unit=" MB"),
    ]


def rows_peers(r: Dict[str, Any]) -> List[Row]:
    ratios = r["ratios"]
    return [
        _ratio_row("datatrove (length + fastText + tokenize) / stage2 filter+shard (wall)", ratios["datatrove / stage2 filter+shard"], 4),
        _ratio_row("nanoGPT-style prepare / stage2 shard from raw JSON (wall)", ratios["nanoGPT-style / stage2 shard (raw)"], 2),
    ]


ROWS: Dict[str, Callable[[Dict[str, Any]], List[Row]]] = {
    "filter_speed": rows_filter_speed,
    "scaling": rows_scaling,
    "tokenizer_speed": rows_tokenizer_speed,
    "shard_speed": rows_shard_speed,
    "memory": rows_memory,
    "scale": rows_scale,
    "hygiene": rows_hygiene,
    "peers": rows_peers,
}


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def run_one(name: str, args: List[str], results: Path) -> Dict[str, Any]:
    """One benchmark script as a subprocess; its JSON headline, or why there is none."""
    out = results / f"{name}.json"
    out.unlink(missing_ok=True)  # a failed run must not be summarised with an earlier run's figures
    env = {**os.environ, "STAGE2_BENCH_RESULTS": str(results)}
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args]
    print(f"\n=== {' '.join(['python', *cmd[1:]])}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    seconds = time.perf_counter() - started
    entry: Dict[str, Any] = {"command": " ".join(["python", *cmd[1:]]), "seconds": round(seconds, 1), "exit_code": proc.returncode}
    if proc.returncode == 0 and out.exists():
        entry["result"] = json.loads(out.read_text())
    return entry


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke test of a few minutes")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    results = RESULTS / "quick" if args.quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)

    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    runs = {name: run_one(name, BENCHMARKS[name][1 if args.quick else 0], results) for name in names}
    load_end = os.getloadavg()

    rows: List[Row] = []
    for name, entry in runs.items():
        if "result" in entry:
            rows += [[name, *row] for row in ROWS[name](entry["result"])]
        else:
            rows.append([name, f"FAILED (exit {entry['exit_code']}; see its output above)", "", "NO"])
    table = md_table(["benchmark", "measure", "value", "target", "met"], rows)
    loads = lambda la: " / ".join(f"{x:.2f}" for x in la)  # noqa: E731
    runs_table = md_table(
        ["benchmark", "command", "seconds", "details"],
        [[n, f"`{e['command']}`", f"{e['seconds']:.1f}", f"[{n}.md]({n}.md)"] for n, e in runs.items()],
    )
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + "".join(f" --only {n}" for n in args.only or [])
    text = (
        f"# Benchmark summary{' (--quick: small inputs, a smoke test; figures not representative)' if args.quick else ''}\n\n"
        f"Command: `uv run {command}`, started {started.isoformat(timespec='seconds')}, git {git_revision()}.\n"
        f"Machine: {machine()}. The box is shared with other jobs, so timings are noisy: each benchmark compares\n"
        f"figures measured in the same run, and the ratios below are what to look at, not absolute speeds.\n"
        f"Load average (1 / 5 / 15 min): {loads(load_start)} at the start, {loads(load_end)} at the end.\n"
        f"The benchmarks ran one after the other, each as its own process tree.\n\n"
        f"{table}\n\n{runs_table}\n"
    )
    print("\n" + text)
    (results / "summary.md").write_text(text, encoding="utf-8")
    summary = {
        "command": command, "started": started.isoformat(timespec="seconds"), "git": git_revision(), "machine": machine(),
        "quick": args.quick, "load_start": load_start, "load_end": load_end,
        "rows": [dict(zip(["benchmark", "measure", "value", "target", "met"], row)) for row in rows],
        "runs": runs,
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if any("result" not in e for e in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
