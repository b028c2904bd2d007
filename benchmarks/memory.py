"""Peak RSS of each stage at 1x and 10x input.

    uv run python -m benchmarks.memory [--scale 10] [--max-docs N] [--vocab 8000]

Input: the embedded sample's English components (web + encyclopedia, ~12k documents). The 10x input
adds 9 copies whose words are shuffled within each document with a fixed seed, so that the copies are
neither exact nor near duplicates (a plain copy would be dropped by dedup and prove nothing). Each stage
runs as the real CLI, in one process (`executor.workers=1`, so the driver's peak is the whole peak),
and its peak RSS is read from the kernel (`os.wait4`). Writes benchmarks/results/memory.md/.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.common import RESULTS, REPO, machine, md_table

SOURCES = [REPO / "data" / "sample" / "web_stackexchange.jsonl.gz", REPO / "data" / "sample" / "foldoc.jsonl.gz"]
BIN = Path(sys.executable).parent / "stage2"


def make_input(folder: Path, scale: int, max_docs: Optional[int] = None) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in SOURCES:
        out = folder / src.name
        rng = random.Random(0)
        with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(out, "wt", encoding="utf-8", compresslevel=1) as g:
            records = [json.loads(line) for line in f][:max_docs]  # --max-docs: the first N of each source
            for copy in range(scale):
                for r in records:
                    text = r["text"]
                    if copy:
                        words = text.split()
                        rng.shuffle(words)
                        text = " ".join(words)
                    g.write(json.dumps({"id": f"{r['id']}#{copy}", "text": text}) + "\n")
        paths.append(str(out))
    return paths


def peak_rss_mb(args: List[str], cwd: Path) -> Dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen([str(BIN), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage2 {' '.join(args)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--max-docs", type=int, default=None, help="first N records of each source (smoke tests)")
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = None
        for scale in (1, args.scale):
            paths = make_input(work / f"x{scale}", scale, args.max_docs)
            mb = sum(os.path.getsize(p) for p in paths) / 1e6
            common = ["dataset=files", f"dataset.paths=[{','.join(paths)}]", "executor.workers=1", "progress=false",
                      f"runs_index={work}/runs.jsonl", f"tokenizer.vocab_size={args.vocab}"]
            filt = peak_rss_mb(["stage=filter", f"hydra.run.dir={work}/filter{scale}", *common], work)
            tok = peak_rss_mb(["stage=tokenizer", f"hydra.run.dir={work}/tok{scale}", f"tokenizer.input_run={work}/filter{scale}", *common], work)
            if model is None:  # the same tokenizer for both scales: shard cost depends on the text only
                model = next((work / "tok1" / "tokenizer").glob("*.model"))
            shard = peak_rss_mb(["stage=shard", f"hydra.run.dir={work}/shard{scale}", f"shard.input_run={work}/filter{scale}", f"shard.tokenizer={model}", *common], work)
            results[f"{scale}x"] = {"input_gz_mb": round(mb, 1), "filter": filt, "tokenizer": tok, "shard": shard}
            rows.append([f"{scale}x", f"{mb:.1f}", filt["peak_rss_mb"], tok["peak_rss_mb"], shard["peak_rss_mb"]])
    table = md_table(["input", "gzip MB", "filter peak RSS MB", "tokenizer peak RSS MB", "shard peak RSS MB"], rows)
    text = f"# Peak RSS per stage (benchmarks/memory.py)\n\nMachine: {machine()}. One process per stage (executor.workers=1).\n"
    text += f"Input: {'the first %d records of ' % args.max_docs if args.max_docs else ''}{', '.join(p.name for p in SOURCES)}; vocab {args.vocab}.\n\n{table}\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.md").write_text(text)
    headline = {"machine": machine(), "max_docs": args.max_docs, "vocab": args.vocab, "scale": args.scale, **results}
    (RESULTS / "memory.json").write_text(json.dumps(headline, indent=2) + "\n")


if __name__ == "__main__":
    main()
