"""The shard stage's driver CPU share, two revisions interleaved on the same filter and tokenizer runs.

    uv run python -m benchmarks.shard_driver --runs <folder> --inputs <folder> --base <rev> [--scales 10,40] [--repeats 2] [--workers 2]

`--runs`: the folder `python -m benchmarks.scale --scales ... --keep` left (its x<S>-filter and
x<S>-tokenizer runs are the input; its printed "run folders kept in ..." line names it); `--inputs`: the
cache folder of that benchmark's input copies (its en_dev_x<S> folders). Per scale and
repeat, `stage=shard` runs once with the code of `--base` (exported with git archive, as `benchmarks.scale
--rev` does) and once with the working tree, in alternating order, each measured from outside exactly as
`benchmarks.scale` measures it (`measure`: driver CPU from /proc of the exited driver, all CPU from
os.wait4; scratch: the peak apparent size of `shards/<component>/.work`, sampled every 0.2 s). Prints a
markdown table and checks that both revisions wrote the same `shards/` bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from benchmarks.common import machine
from benchmarks.scale import export_revision, git_state, run_shard


def tree_sha(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--scales", default="10,40")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stage2-shard-driver-"))
    code, sha = export_revision(args.base, work / "code")
    revisions = {f"base {sha}": code, f"this tree ({git_state()})": None}
    load = [os.getloadavg()[0]]
    rows: Dict[str, Dict[str, List[dict]]] = {}
    try:
        for scale in [int(s) for s in args.scales.split(",")]:
            filtered, tokenizer = args.runs / f"x{scale}-filter", args.runs / f"x{scale}-tokenizer"
            pattern = f"{args.inputs}/en_dev_x{scale}/*.jsonl"
            component = next(p.name for p in (filtered / "filtered").iterdir() if p.is_dir() and not p.name.startswith("."))
            for repeat in range(args.repeats):
                order = list(revisions.items())
                if repeat % 2:
                    order.reverse()
                for name, rev_code in order:
                    run_name = f"x{scale}-shard-{repeat}-{'base' if rev_code else 'tree'}"
                    r = run_shard(pattern, filtered, tokenizer, component, work, run_name, args.workers, [], 0.2, rev_code)
                    r["shards_sha"] = tree_sha(Path(r["run_dir"]) / "shards")
                    rows.setdefault(f"{scale}x", {}).setdefault(name, []).append(r)
                    print(f"[shard_driver] {scale}x {name}: driver {r['driver_cpu_s']:.2f} s of {r['cpu_s']:.1f} CPU s "
                          f"({r['driver_cpu_share'] * 100:.2f}%)", file=sys.stderr, flush=True)
                    shutil.rmtree(r["run_dir"], ignore_errors=True)
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}; 1-minute load {load[0]:.1f} at the start, {load[-1]:.1f} at the end.")
    print(f"Command: `uv run python -m benchmarks.shard_driver --runs <kept benchmarks.scale runs> --inputs <its copies> --base {args.base} "
          f"--scales {args.scales} --repeats {args.repeats} --workers {args.workers}`\n")
    print("| input | code | driver CPU s (each run) | all CPU s (each run) | driver CPU share (median) | wall s (each run) | scratch peak MB | driver peak RSS MB | shards/ identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale, by_rev in rows.items():
        shas = {r["shards_sha"] for runs in by_rev.values() for r in runs}
        for name, runs in by_rev.items():
            drivers = ", ".join(f"{r['driver_cpu_s']:.2f}" for r in runs)
            totals = ", ".join(f"{r['cpu_s']:.1f}" for r in runs)
            share = statistics.median(r["driver_cpu_share"] for r in runs) * 100
            walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
            scratch = max(r["spill_peak_mb"] or 0 for r in runs)
            rss = max(r["driver_peak_rss_mb"] for r in runs)
            print(f"| {scale} | {name} | {drivers} | {totals} | {share:.2f}% | {walls} | {scratch:.0f} | {rss:.0f} | {'yes' if len(shas) == 1 else 'NO'} |")


if __name__ == "__main__":
    main()
