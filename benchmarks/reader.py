"""Reader throughput: `MixtureSampler.batch` vs gathering the same rows from `np.load(mmap_mode="r")` directly.

    uv run python -m benchmarks.reader [--rows 1000000] [--seq-len 512] [--draws 131072] [--repeats 5]

Input: a shard run of three components (weights 0.5 / 0.3 / 0.2, rows split the same way) written by
the shard stage's own writer (`stage2.shards.format.Packer`, 8192 rows a shard, uint16) from random
tokens, with the `index.json` and `manifest.json` the reader needs. The files are read once before
timing, so every side reads from the page cache.

* sampler: `sampler.batch(step, batch_size)` for the steps of --draws rows: the stream function
  (interleave, pass permutations, shard lookup) and the copy out of the shards. Its read-ahead cache
  is emptied before each timed run; each pass's permutation is made before timing (a cost of once
  per pass over a component, reported on its own).
* direct: the same rows, each one's shard and position found beforehand and not timed, copied from
  the `np.load(mmap_mode="r")` arrays into one array per batch: a copy a row from the memmaps, a copy
  a row from plain ndarray views of them, one fancy index per shard; and the rows of the same block of
  steps the sampler reads at once, in file order with one fancy index per shard (the sampler's own
  way of reading, without its index work). The fastest is the denominator.
Each figure is the best of --repeats interleaved runs. Writes benchmarks/results/reader.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script too
from benchmarks.common import machine, md_table, write_results  # noqa: E402
from stage2 import reader  # noqa: E402
from stage2.shards.format import Packer  # noqa: E402

COMPONENTS = {"web": 0.5, "books": 0.3, "code": 0.2}
ROWS_PER_SHARD = 8192
SAMPLER = "sampler.batch"


def make_run(folder: Path, rows: int, seq_len: int) -> None:
    """A shards/ folder in the shard stage's format: shard files, each component's index, the manifest."""
    rng = np.random.default_rng(0)
    manifest = []
    for name, weight in COMPONENTS.items():
        n = int(rows * weight)
        out = folder / "shards" / name
        out.mkdir(parents=True)
        chunks = (rng.integers(0, 32000, size=min(ROWS_PER_SHARD, n - i) * seq_len, dtype=np.uint16) for i in range(0, n, ROWS_PER_SHARD))
        packer = Packer(out, seq_len, ROWS_PER_SHARD, np.dtype(np.uint16))
        for chunk in chunks:
            packer.add(chunk)
        packed = packer.finish("drop", None)
        index = {"component": name, "weight": weight, "seq_len": seq_len, "dtype": "uint16", "rows": packed.rows, "shards": packed.shards}
        (out / "index.json").write_text(json.dumps(index))
        manifest.append({"name": name, "weight": weight, "index": f"{name}/index.json", "rows": packed.rows})
    (folder / "shards" / "manifest.json").write_text(json.dumps({"seq_len": seq_len, "dtype": "uint16", "components": manifest}))
    for path in (folder / "shards").rglob("*.npy"):
        path.read_bytes()  # into the page cache, so no side pays the first read


def where(sampler: reader.MixtureSampler, comp: np.ndarray, rows: np.ndarray) -> List[tuple]:
    """(memmap, ndarray view, row in shard, shard number) of each (component, row)."""
    out = []
    for c, r in zip(comp.tolist(), rows.tolist()):
        cs = sampler.components[c]
        s = int(np.searchsorted(cs.offsets, r, side="right")) - 1
        out.append((cs.arrays[s], cs.views[s], r - int(cs.offsets[s]), (c, s)))
    return out


def by_shard(located: List[tuple], file_order: bool) -> List[tuple]:
    """(ndarray view of the shard, rows in shard, positions in the output) per shard."""
    groups: Dict[tuple, tuple] = {}
    for j, (_, arr, r, key) in enumerate(located):
        groups.setdefault(key, (arr, [], []))
        groups[key][1].append(r)
        groups[key][2].append(j)
    out = []
    for key in sorted(groups) if file_order else groups:
        arr, rs, at = groups[key]
        rs, at = np.array(rs), np.array(at)
        if file_order:
            o = np.argsort(rs, kind="stable")
            rs, at = rs[o], at[o]
        out.append((arr, rs, at))
    return out


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows over all components")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--draws", type=int, default=1 << 17, help="rows read in each timed run")
    ap.add_argument("--batches", default="8,32,128,512", help="batch sizes (rows per rank and step)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    seq_len = args.seq_len

    with tempfile.TemporaryDirectory(prefix="reader-bench-") as tmp:
        folder = Path(tmp)
        make_run(folder, args.rows, seq_len)
        load_start = os.getloadavg()[0]
        sampler = reader.MixtureSampler(folder, seed=0)
        t0 = time.perf_counter()
        for c in range(len(sampler.components)):
            sampler.order(c, 0)
        permutation_ns = (time.perf_counter() - t0) / int(sampler.sizes.sum()) * 1e9
        table, headline = [], {}
        for batch in batches:
            steps = args.draws // batch
            block_steps = sampler.block_steps(batch)
            located = [where(sampler, *sampler.locate(step, batch)) for step in range(steps)]
            per_batch = [by_shard(rows, file_order=False) for rows in located]
            blocks = []
            for first in range(0, steps, block_steps):
                rows = [r for step in located[first : first + block_steps] for r in step]
                blocks.append((len(rows), by_shard(rows, file_order=True)))

            def run_sampler() -> None:
                sampler._block = None  # the read-ahead cache: every run works its blocks out again
                for step in range(steps):
                    sampler.batch(step, batch)

            def per_row(view: int) -> Callable[[], None]:
                def go() -> None:
                    for rows in located:
                        out = np.empty((batch, seq_len), dtype=np.uint16)
                        for j, p in enumerate(rows):
                            out[j] = p[view][p[2]]
                return go

            def fancy_per_batch() -> None:
                for groups in per_batch:
                    out = np.empty((batch, seq_len), dtype=np.uint16)
                    for arr, rs, at in groups:
                        out[at] = arr[rs]

            def fancy_per_block() -> None:
                for n, groups in blocks:
                    out = np.empty((n, seq_len), dtype=np.uint16)
                    for arr, rs, at in groups:
                        out[at] = arr[rs]
                    [out[i : i + batch] for i in range(0, n, batch)]  # noqa: B018  (the batches, as the sampler hands them out)

            ways = {
                SAMPLER: run_sampler,
                "direct, per batch: a copy a row from the memmaps": per_row(0),
                "direct, per batch: a copy a row from ndarray views": per_row(1),
                "direct, per batch: a fancy index per shard": fancy_per_batch,
                f"direct, per block of {block_steps} steps: a fancy index per shard, file order": fancy_per_block,
            }
            best = {name: timed(fn) for name, fn in ways.items()}  # a first round, counted like the others
            for _ in range(args.repeats - 1):
                for name, fn in ways.items():
                    best[name] = min(best[name], timed(fn))
            last = np.stack([p[0][p[2]] for p in located[-1]])
            assert np.array_equal(reader.MixtureSampler(folder, seed=0).batch(steps - 1, batch), last), "the direct gathers read other rows"
            rows = steps * batch
            fastest_direct = min(v for k, v in best.items() if k != SAMPLER)
            for name, seconds in best.items():
                table.append([batch, name, f"{rows / seconds:,.0f}", f"{seconds / rows * 1e9:.0f}", f"{fastest_direct / seconds:.2f}x"])
            headline[str(batch)] = {
                "sampler_rows_per_s": round(rows / best[SAMPLER], 1),
                "fastest_direct_rows_per_s": round(rows / fastest_direct, 1),
                "ratio": round(fastest_direct / best[SAMPLER], 4),
                "ratio_to_per_batch_direct": round(min(v for k, v in best.items() if "per batch" in k) / best[SAMPLER], 4),
            }
        load_end = os.getloadavg()[0]
        shards = sum(len(c.arrays) for c in sampler.components)

    ratios = ", ".join(f"{v['ratio']:.2f}x at batch {b}" for b, v in headline.items())
    per_batch_ratios = ", ".join(f"{v['ratio_to_per_batch_direct']:.2f}x" for v in headline.values())
    md = (
        "# Reader throughput\n\n"
        f"Measured by `uv run python -m benchmarks.reader --rows {args.rows} --seq-len {seq_len} --draws {args.draws}"
        f" --batches {args.batches} --repeats {args.repeats}` on {machine()} (shared with other jobs: compare the ratios,"
        f" measured in the same run); 1-minute load average {load_start:.2f} at the start, {load_end:.2f} at the end.\n\n"
        f"Input: {args.rows:,} rows of {seq_len} uint16 tokens in three components (0.5 / 0.3 / 0.2), {shards} shards of"
        f" up to {ROWS_PER_SHARD} rows written by `stage2.shards.format.Packer`, in the page cache. Each figure is the best of"
        f" {args.repeats} interleaved runs of {args.draws:,} rows; `vs fastest direct` is the fastest direct gather's time over"
        " this line's (the direct gathers are given every row's shard and position, untimed).\n\n"
        + md_table(["batch", "what", "rows/s", "ns a row", "vs fastest direct"], table)
        + f"\n\n- sampler.batch / fastest direct gather: {ratios} (target >= 0.8x).\n"
        f"- sampler.batch / fastest per-batch direct gather (what a loop without the sampler would do a step at a time): {per_batch_ratios}.\n"
        f"- Not in the figures above: a pass's permutation, made once per pass over a component, costs {permutation_ns:.0f} ns a row"
        " (that is, per draw, amortised over the pass).\n"
    )
    print(md)
    write_results("reader", md, {
        "rows": args.rows, "seq_len": seq_len, "draws": args.draws, "repeats": args.repeats, "shards": shards,
        "permutation_ns_per_row": round(permutation_ns, 1), "batches": headline,
        "worst_ratio": min(v["ratio"] for v in headline.values()),
    })


if __name__ == "__main__":
    main()
