"""Worker scaling of the filter stage (langdetect, the expensive stage): docs/s at 1 and N workers.

    uv run python -m benchmarks.scaling [--docs 6000] [--workers 2] [--repeats 2]

Input: the same documents as benchmarks/filter_speed.py (200..8000 characters from the English and
multilingual dev corpora in ../shared/data or $STAGE2_SHARED_DATA), one jsonl file. Each measurement
runs the real CLI (`stage2 stage=filter progress=false executor.workers=W dataset.partition_size=250`)
as a subprocess and times it from outside, start-up included:
  efficiency = (rate_N / rate_1) / N, rate = documents / CLI wall seconds      (goal >= 0.85)
Fixed cost (interpreter, imports, Hydra, run folder, worker spawn + langdetect profiles) is measured
separately by the same command on 2 partitions of 20 documents, and reported with the efficiency it
gives once subtracted. For reference, a one-process `langdetect.detect_langs` loop runs on the same
texts. Writes benchmarks/results/scaling.md and scaling.json. Noisy shared box: best of --repeats,
order alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from benchmarks.common import child_env, machine, md_table, write_results
from benchmarks.filter_speed import FILES, load_docs, time_loop

BIN = Path(sys.executable).parent / "stage2"
LANG_MAX_CHARS = 2000  # conf/filter/default.yaml; the loop reads what the stage's detector reads


def run_cli(path: Path, work: Path, name: str, workers: int, partition: int) -> Dict[str, Any]:
    """One `stage2 stage=filter` run: wall and CPU seconds seen from outside, and its stats.json."""
    folder = work / name
    args = [
        str(BIN), "stage=filter", "progress=false", "dataset=files", f"dataset.paths=[{path}]", "filter.lang_backend=langdetect", "filter.lang_check=null", "filter.function_words=0",
        f"dataset.partition_size={partition}", f"executor.workers={workers}",
        f"runs_index={work}/runs.jsonl", f"hydra.run.dir={folder}",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=work, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of the CLI and its reaped workers
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage2 {' '.join(args[1:])} failed:\n{proc.stderr.read().decode()[-2000:]}")
    stats = json.loads((folder / "stats.json").read_text())["stages"]["filter"]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "stage_s": sum(c["seconds"] for c in stats["components"].values()),
        "docs": stats["records_in"],
        "kept": stats["kept"],
    }


def measure(docs: List[Dict[str, Any]], workers: int, repeats: int, partition: int) -> Dict[str, Any]:
    texts = [d["text"] for d in docs]
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        work = Path(tmp)
        path = work / "scaling.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        tiny = work / "tiny.jsonl"
        tiny.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[:40]), encoding="utf-8")
        counts = [1, workers] if workers > 1 else [1]
        full: Dict[int, List[Dict[str, Any]]] = {w: [] for w in counts}
        fixed: Dict[int, List[Dict[str, Any]]] = {w: [] for w in counts}
        loops = []
        for rep in range(repeats):
            # Alternate the order so neither worker count always gets the calmer moment of the box.
            for w in counts if rep % 2 == 0 else counts[::-1]:
                fixed[w].append(run_cli(tiny, work, f"fixed-w{w}-r{rep}", w, 20))  # 2 partitions: both workers start
                full[w].append(run_cli(path, work, f"full-w{w}-r{rep}", w, partition))
            loops.append(time_loop(texts, LANG_MAX_CHARS))
    best = {w: min(rs, key=lambda r: r["wall_s"]) for w, rs in full.items()}
    base = {w: min(r["wall_s"] for r in rs) for w, rs in fixed.items()}
    loop_s, loop_cpu = min(loops)
    return {"best": best, "fixed": base, "loop_s": loop_s, "loop_cpu": loop_cpu, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N: all cores by default")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the fastest counts")
    # As filter_speed.py: small enough that the input makes many partitions to spread over the workers.
    parser.add_argument("--partition-size", type=int, default=250)
    args = parser.parse_args()
    docs = load_docs(args.docs)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    load_start = os.getloadavg()[0]
    m = measure(docs, args.workers, args.repeats, args.partition_size)
    load_end = os.getloadavg()[0]
    best, fixed, counts = m["best"], m["fixed"], m["counts"]
    n_docs = best[1]["docs"]
    loop_rate = len(docs) / m["loop_s"]
    rate = {w: n_docs / r["wall_s"] for w, r in best.items()}
    net = {w: n_docs / max(r["wall_s"] - fixed[w], 1e-9) for w, r in best.items()}
    n = counts[-1]
    eff = (rate[n] / rate[1]) / n
    eff_net = (net[n] / net[1]) / n
    # CPU seconds do not depend on other jobs holding the cores: cpu_1 / cpu_N bounds the wall-time
    # efficiency N free cores could reach (the extra CPU is worker start-up and moving partitions).
    eff_cpu = best[1]["cpu_s"] / best[n]["cpu_s"]
    rows = [["langdetect.detect_langs loop, 1 process (in this process)", f"{m['loop_s']:.2f}", "", "", "", f"{loop_rate:.0f}", "", "1.00x", f"{m['loop_cpu']:.1f}"]]
    for w in counts:
        r = best[w]
        rows.append([
            f"stage2 stage=filter, {w} worker{'s' if w > 1 else ''}", f"{r['wall_s']:.2f}", f"{r['stage_s']:.2f}",
            f"{fixed[w]:.2f}", f"{r['wall_s'] - fixed[w]:.2f}", f"{rate[w]:.0f}", f"{net[w]:.0f}", f"{rate[w] / loop_rate:.2f}x", f"{r['cpu_s']:.1f}",
        ])
    header = ["what", "wall s", "stage s (stats.json)", "fixed s (40 docs)", "wall - fixed s", "docs/s", "docs/s without fixed", "vs loop", "CPU s"]
    report = (
        "# Filter stage worker scaling (benchmarks/scaling.py)\n\n"
        f"Machine: {machine()}, shared with other jobs: timings are noisy, compare ratios within one run. "
        f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end.\n"
        f"Command: `uv run python -m benchmarks.scaling --docs {args.docs} --workers {args.workers} --repeats {args.repeats} --partition-size {args.partition_size}`.\n"
        f"Input: {n_docs} documents, {mb:.2f} MB of text (200..8000 chars; {', '.join(FILES)}), one jsonl file; "
        f"langdetect backend, dataset.partition_size={args.partition_size}; best CLI wall time of {args.repeats} runs (order alternated).\n\n"
        + md_table(header, rows)
        + f"\n\nEfficiency (rate_{n} / rate_1) / {n}: **{eff:.3f}** end to end (CLI wall, start-up included; goal >= 0.85); "
        f"{eff_net:.3f} with each worker count's fixed cost subtracted (the 40-document run, 2 partitions: interpreter, imports, Hydra, "
        f"run folder, worker spawn, langdetect profiles). CPU s is the CLI process plus its reaped workers (os.wait4); "
        f"CPU s at 1 worker / at {n}: {eff_cpu:.3f}, the efficiency {n} free cores could reach at best (other jobs do not change it).\n"
    )
    print(report)
    write_results("scaling", report, {
        "docs": n_docs, "partition_size": args.partition_size, "mb": round(mb, 3), "workers": n, "load_start": load_start, "load_end": load_end,
        "loop_docs_per_s": round(loop_rate, 1),
        "docs_per_s": {str(w): round(rate[w], 1) for w in counts},
        "docs_per_s_without_fixed": {str(w): round(net[w], 1) for w in counts},
        "fixed_s": {str(w): round(fixed[w], 2) for w in counts},
        "vs_loop": {str(w): round(rate[w] / loop_rate, 3) for w in counts},
        "efficiency": round(eff, 4), "efficiency_without_fixed": round(eff_net, 4), "cpu_efficiency_bound": round(eff_cpu, 4),
        "cpu_s": {str(w): round(best[w]["cpu_s"], 2) for w in counts},
    })


if __name__ == "__main__":
    main()
