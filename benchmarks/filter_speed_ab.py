"""The filter stage against another checkout of stage2, interleaved: which one is faster on this machine now.

    git worktree add /tmp/old <rev> && (cd /tmp/old && uv sync)
    uv run python -m benchmarks.filter_speed_ab --other /tmp/old [--recipes fasttext,langdetect_fast] [--rounds 3]

On a shared machine two benchmark runs minutes apart differ by more than the change being measured.
Here both checkouts time the same stage runs (`benchmarks.filter_speed.time_stage`, its RECIPES, all
15,147 dev documents, 2 workers, partitions of 250) in alternation: per round, 3 runs in the other
checkout, then 3 in this one, each in a fresh process of its own virtual environment; the best wall
time of each counts. Writes benchmarks/results/filter_speed_ab.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from benchmarks.common import machine, md_table, shared_data_dir, write_results

HERE = Path(__file__).resolve().parents[1]

# Run inside each checkout (its own benchmarks.filter_speed and stage2), printing one JSON line.
ONE_SIDE = """
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.getcwd())
from benchmarks.filter_speed import load_docs, time_stage, write_docs
if __name__ == "__main__":
    docs = load_docs()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_docs(Path(tmp) / "speed.jsonl", docs)
        runs = [time_stage(path, Path(tmp) / f"r{i}", 2, sys.argv[1], 250) for i in range(int(sys.argv[2]))]
    print(json.dumps({"seconds": [r["seconds"] for r in runs], "cpu": [r["cpu"] for r in runs], "kept": runs[0]["kept"]}))
"""


def one_side(tree: Path, recipe: str, runs: int) -> Dict[str, Any]:
    env = {**os.environ, "STAGE2_SHARED_DATA": str(shared_data_dir())}
    python = tree / ".venv" / "bin" / "python"
    script = tree / ".ab_one_side.py"  # a file, not -c: spawned workers re-import the main module
    script.write_text(ONE_SIDE)
    try:
        out = subprocess.run([str(python), str(script), recipe, str(runs)], cwd=tree, env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        script.unlink(missing_ok=True)
    return json.loads(out.strip().splitlines()[-1])


def rev(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="another stage2 checkout with its .venv")
    parser.add_argument("--recipes", default="fasttext,langdetect_fast,langdetect")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="stage runs per checkout per round")
    args = parser.parse_args()
    rows: List[List[Any]] = []
    results: Dict[str, Any] = {"other": str(args.other), "other_rev": rev(args.other), "this_rev": rev(HERE), "recipes": {}}
    for recipe in args.recipes.split(","):
        best: Dict[str, List[float]] = {"other": [], "this": []}
        kept = {}
        for _ in range(args.rounds):
            for side, tree in (("other", args.other), ("this", HERE)):
                r = one_side(tree, recipe, args.runs)
                best[side].append(min(r["seconds"]))
                kept[side] = r["kept"]
        ratio = [o / t for o, t in zip(best["other"], best["this"])]
        results["recipes"][recipe] = {"best_s": best, "other_over_this": ratio, "kept": kept}
        rows.append([recipe, " / ".join(f"{s:.2f}" for s in best["other"]), " / ".join(f"{s:.2f}" for s in best["this"]),
                     " / ".join(f"{x:.3f}" for x in ratio), f"{kept['other']} / {kept['this']}"])
        print(rows[-1], flush=True)
    report = (
        "# Filter stage against another checkout, interleaved (benchmarks/filter_speed_ab.py)\n\n"
        f"Machine: {machine()}, shared with other jobs. This checkout {results['this_rev']}, the other {results['other_rev']} "
        f"({args.other}). Per round: {args.runs} stage runs in the other checkout, then {args.runs} here (fresh processes, "
        "2 workers, the 15,147 dev documents of benchmarks/filter_speed.py, partitions of 250); the best wall time of each.\n\n"
        + md_table(["recipe", "other: best s per round", "this: best s per round", "other / this (> 1: this is faster)", "kept (other / this)"], rows)
        + "\n"
    )
    write_results("filter_speed_ab", report, results)
    print(report)


if __name__ == "__main__":
    sys.exit(main())
