"""stage2 against its peers on the same input and the same tokenizer: datatrove and a nanoGPT-style prepare.

    uv run python -m benchmarks.peers [--copies 9] [--rounds 2] [--workers 2] [--peers-python /tmp/peers/bin/python]

The peers run in their own virtualenv (--peers-python, $STAGE2_PEERS_PYTHON; never a stage2 dependency):
datatrove[io,processing], fasttext-numpy2-wheel, datasets, tokenizers, numpy.

Input: copies 0..C-1 of benchmarks/scale.py (perturbed copies of the English dev text, one JSON-lines
file each, from its cache; generated when missing). Tokenizer: one stage2 run `stage=tokenizer` (the
default recipe, BPE 32k) on copy 0; stage2 encodes with its SentencePiece model, the peers with its
exported `tokenizer.json` (the same ids: the export is exact for BPE), both appending </s>.

Contestants, each its own process tree, measured from outside (wall, and CPU of the process and every
descendant it reaped, os.wait4), in interleaved rounds (order rotated every round):
  stage2 filter+shard   one CLI run, `stage=pipeline filter=fasttext shard.tokenizer=<the model>`: the
                        length screen and fastText language ID only (no dedup, no function-word share, no
                        quality steps), then the shard stage from its parts (a pipeline given a tokenizer
                        trains none).
  stage2 filter, shard  the same as two CLI runs, `stage=filter ...` then `stage=shard` from its parts,
                        their times added (one more start-up of the driver and of its workers).
  datatrove             JsonlReader -> LambdaFilter (the same length bounds) -> LanguageFilter (fastText
                        lid.176, the same .ftz model file stage2 ships, the same threshold) ->
                        DocumentTokenizer (tokenizer.json), LocalPipelineExecutor with one task per file
                        and --workers workers.
  stage2 shard (raw)    `stage=shard` straight from the raw JSON lines.
  nanoGPT-style         datasets.load_dataset("json") -> .map(tokenize, num_proc=--workers) -> one
                        uint16 np.memmap written in batches, as nanoGPT's data/openwebtext/prepare.py.
Ratios: datatrove / stage2 filter+shard and nanoGPT-style / stage2 shard, of the median wall and CPU.
Writes benchmarks/results/peers.md and peers.json.
"""

from __future__ import annotations

import argparse
import json
import ctypes
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from benchmarks.common import child_env, machine, md_table, write_results
from benchmarks.scale import BIN, Inputs, git_state

MIN_CHARS, MAX_CHARS, LANG_THRESHOLD = 200, 8000, 0.4  # conf/filter/default.yaml and conf/filter/fasttext.yaml

DATATROVE = r'''
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import LambdaFilter, LanguageFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer

if __name__ == "__main__":  # (its workers are spawned processes that import this file)
    data, out, tokenizer, workers, tasks, lo, hi, threshold = sys.argv[1:9]
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(data, glob_pattern="*.jsonl"),
            LambdaFilter(lambda doc, lo=int(lo), hi=int(hi): lo <= len(doc.text) <= hi),
            LanguageFilter(languages=["en"], language_threshold=float(threshold)),
            DocumentTokenizer(out + "/tokens", tokenizer_name_or_path=tokenizer, eos_token="</s>", shuffle_documents=False),
        ],
        tasks=int(tasks), workers=int(workers), logging_dir=out + "/logs",
    ).run()
'''

NANOGPT = r'''
import glob, os, sys
import numpy as np
from datasets import load_dataset
from tokenizers import Tokenizer



def process(batch):
    ids = [e.ids + [EOS] for e in TOK.encode_batch(batch["text"], add_special_tokens=False)]
    return {"ids": ids, "len": [len(x) for x in ids]}


data, out, tokenizer_file, workers = sys.argv[1:5]
TOK = Tokenizer.from_file(tokenizer_file)
EOS = TOK.token_to_id("</s>")
if __name__ == "__main__":
    ds = load_dataset("json", data_files=sorted(glob.glob(data + "/*.jsonl")), split="train", cache_dir=out + "/cache")
    tokenized = ds.map(process, batched=True, remove_columns=ds.column_names, num_proc=int(workers), desc="tokenizing")
    total = int(np.sum(tokenized["len"], dtype=np.uint64))
    arr = np.memmap(out + "/train.bin", dtype=np.uint16, mode="w+", shape=(total,))
    at, shards = 0, 64
    for i in range(shards):
        batch = tokenized.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
        chunk = np.concatenate(batch["ids"]) if len(batch) else np.zeros(0, np.uint16)
        arr[at : at + len(chunk)] = chunk
        at += len(chunk)
    arr.flush()
    print(total)
'''


def timed(args: List[str], cwd: Path, env: Dict[str, str], log: Path) -> Dict[str, float]:
    """Run to the end; wall, and CPU of the whole process tree: this process is a subreaper, so workers
    their parent did not wait for (daemonic pool processes) are reaped here and counted too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    while True:  # the orphans of its tree, adopted by this process
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "max_rss_mb": usage.ru_maxrss / 1024}


def _datatrove_docs(path: Path) -> int:
    """Documents the tokenizer step of one datatrove task wrote (its stats file: a list of step stats)."""
    for step in json.loads(path.read_text()):
        if "Tokenizer" in step.get("name", "") or "Writer" in step.get("name", ""):
            return int(step.get("stats", {}).get("documents", {}).get("total", 0) if isinstance(step.get("stats", {}).get("documents"), dict) else step.get("stats", {}).get("documents", 0))
    return 0


def add(a: Dict[str, float], b: Dict[str, float]) -> Dict[str, float]:
    return {"wall_s": a["wall_s"] + b["wall_s"], "cpu_s": a["cpu_s"] + b["cpu_s"], "max_rss_mb": max(a["max_rss_mb"], b["max_rss_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-docs", type=int, default=None, help="the first N records of each source (smoke tests)")
    parser.add_argument("--peers-python", default=os.environ.get("STAGE2_PEERS_PYTHON") or "/tmp/peers/bin/python")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every stage2 run")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("STAGE2_SCALE_CACHE") or Path(tempfile.gettempdir()) / "stage2-scale-inputs"))
    args = parser.parse_args()
    if not Path(args.peers_python).exists():
        raise SystemExit(f"{args.peers_python}: no peers virtualenv (see the module docstring)")
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER (see timed)
    inputs = Inputs(args.cache, args.max_docs, False)
    folder, meta = inputs.scale(args.copies)
    data = folder
    work = Path(tempfile.mkdtemp(prefix="stage2-peers-"))
    env = child_env()
    peer_env = {k: v for k, v in env.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    peer_env["HF_DATASETS_OFFLINE"] = peer_env["HF_HUB_OFFLINE"] = "1"
    results: Dict[str, List[Dict[str, float]]] = {"stage2 filter+shard": [], "datatrove": [], "stage2 shard (raw)": [], "nanoGPT-style": [],
                                                  "stage2 filter, shard": []}
    try:
        # The tokenizer both sides use, trained once (not timed) on copy 0.
        copy0 = inputs.folder("peers_tokenizer_input", [next(iter(sorted(folder.iterdir())))])
        tok_run = work / "tokenizer"
        base = [str(BIN), "progress=false", "dataset=files", f"runs_index={work}/runs.jsonl", f"executor.workers={args.workers}"]
        timed([*base, "stage=tokenizer", f"dataset.paths=[{copy0}/*.jsonl]", f"hydra.run.dir={tok_run}", *args.set], work, env, work / "tokenizer.log")
        model = tok_run / json.loads((tok_run / "stats.json").read_text())["stages"]["tokenizer"]["model"]
        tokenizer_json = model.parent / "tokenizer.json"
        # The peers' fastText model: the file stage2 loads, where datatrove looks for lid.176 (it would download it).
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from stage2.lid.backends import fasttext_model_path

        where = ("import os; from datatrove.io import cached_assets_path, strip_protocol; from datatrove.utils.lid import FT176LID as M; "
                 "print(os.path.join(cached_assets_path(library_name='datatrove', namespace='lid', subfolder=M.MODEL_SUBFOLDER), "
                 "strip_protocol(M.MODEL_URL).replace('/', '_')))")  # (datatrove.io.cached_asset_path_or_download's path)
        target = Path(subprocess.run([args.peers_python, "-c", where], capture_output=True, text=True, check=True).stdout.strip())
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fasttext_model_path(), target)
        Path(f"{target}.completed").touch()  # (datatrove's own mark of a finished download)
        (work / "peer_datatrove.py").write_text(DATATROVE)
        (work / "peer_nanogpt.py").write_text(NANOGPT)
        stage2_filter = [*base, "filter=fasttext", f"dataset.paths=[{data}/*.jsonl]", "filter.function_words=0",
                         "filter.dedup.exact=false", "filter.dedup.near=false", *args.set]

        def run(contestant: str, r: int) -> Dict[str, float]:
            slug = "-".join(re.findall(r"\w+", contestant))
            out = work / f"r{r}-{slug}-{len(results[contestant])}"
            if contestant == "stage2 filter+shard":
                got = timed([*stage2_filter, "stage=pipeline", f"shard.tokenizer={model}", f"hydra.run.dir={out}"], work, env, work / f"{out.name}.log")
                stats = json.loads((out / "stats.json").read_text())["stages"]
                got["kept"] = stats["filter"]["kept"]
                got["tokens"] = sum(c["tokens"] for c in stats["shard"]["components"].values())
            elif contestant == "stage2 filter, shard":
                a = timed([*stage2_filter, "stage=filter", f"hydra.run.dir={out}-f"], work, env, work / f"{out.name}-f.log")
                b = timed([*base, "stage=shard", f"dataset.paths=[{data}/*.jsonl]", f"shard.input_run={out}-f", f"shard.tokenizer={model}",
                           f"hydra.run.dir={out}-s", *args.set], work, env, work / f"{out.name}-s.log")
                got = add(a, b)
                got["kept"] = json.loads((Path(f"{out}-f") / "stats.json").read_text())["stages"]["filter"]["kept"]
                got["tokens"] = sum(c["tokens"] for c in json.loads((Path(f"{out}-s") / "stats.json").read_text())["stages"]["shard"]["components"].values())
            elif contestant == "stage2 shard (raw)":
                got = timed([*base, "stage=shard", f"dataset.paths=[{data}/*.jsonl]", f"shard.tokenizer={model}", f"hydra.run.dir={out}", *args.set],
                            work, env, work / f"{out.name}.log")
                got["tokens"] = sum(c["tokens"] for c in json.loads((out / "stats.json").read_text())["stages"]["shard"]["components"].values())
            elif contestant == "datatrove":
                got = timed([args.peers_python, str(work / "peer_datatrove.py"), str(data), str(out), str(tokenizer_json), str(args.workers),
                             str(meta["files"]), str(MIN_CHARS), str(MAX_CHARS), str(LANG_THRESHOLD)], work, peer_env, work / f"{out.name}.log")
                stats_files = sorted((out / "logs" / "stats").glob("*.json"))
                got["tasks"] = len(stats_files)
                got["docs_written"] = sum(_datatrove_docs(f) for f in stats_files)
            else:
                out.mkdir(parents=True)
                got = timed([args.peers_python, str(work / "peer_nanogpt.py"), str(data), str(out), str(tokenizer_json), str(args.workers)],
                            work, peer_env, work / f"{out.name}.log")
                got["tokens"] = int((work / f"{out.name}.log").read_text().strip().splitlines()[-1])
            for path in work.glob(f"{out.name}*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
            print(f"[peers] round {r} {contestant}: {got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} CPU s", file=sys.stderr, flush=True)
            return got

        order = list(results)
        for r in range(args.rounds):
            for contestant in order[r % len(order):] + order[: r % len(order)]:
                results[contestant].append(run(contestant, r))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {c: {k: statistics.median(x[k] for x in runs) for k in ("wall_s", "cpu_s", "max_rss_mb")} for c, runs in results.items()}
    rows = [[c, f"{m['wall_s']:.1f}", f"{m['cpu_s']:.1f}", f"{m['max_rss_mb']:.0f}", f"{meta['text_bytes'] / 1e6 / m['wall_s']:.2f}",
             " / ".join(f"{x['wall_s']:.1f}" for x in results[c])] for c, m in med.items()]
    pairs = [("datatrove", "stage2 filter+shard", 4.0), ("nanoGPT-style", "stage2 shard (raw)", 2.0)]
    ratio_rows = [[f"{peer} / {ours}", f"{med[peer]['wall_s'] / med[ours]['wall_s']:.2f}x", f"{med[peer]['cpu_s'] / med[ours]['cpu_s']:.2f}x", f">= {goal:g}x",
                   "yes" if med[peer]["wall_s"] / med[ours]["wall_s"] >= goal else "NO"] for peer, ours, goal in pairs]
    tokens = {c: [x.get("tokens") for x in runs] for c, runs in results.items()}
    text = (
        "# stage2 against its peers (benchmarks/peers.py)\n\n"
        f"Machine: {machine()}, shared with other jobs (1-minute load {os.getloadavg()[0]:.1f} at the end). git {git_state()}.\n"
        f"Command: `uv run python -m benchmarks.peers --copies {args.copies} --rounds {args.rounds} --workers {args.workers}`. "
        f"Input: {meta['files']} perturbed copies of the English dev text (benchmarks/scale.py), {meta['docs']} documents, "
        f"{meta['text_bytes'] / 1e6:.1f} MB of text, uncompressed JSON lines. How each figure is measured: the module docstring.\n\n"
        + md_table(["contestant", "median wall s", "median CPU s", "max RSS MB", "MB of text / wall s", "wall s per round"], rows) + "\n\n"
        + md_table(["ratio", "wall", "CPU", "target (wall)", "met"], ratio_rows) + "\n\n"
        f"Tokens written per round: {json.dumps(tokens)}.\n"
    )
    print(text)
    write_results("peers", text, {"copies": args.copies, "rounds": args.rounds, "workers": args.workers, "median": med, "runs": results,
                                  "input": meta, "ratios": {f"{p} / {o}": med[p]["wall_s"] / med[o]["wall_s"] for p, o, _ in pairs}})


if __name__ == "__main__":
    main()
