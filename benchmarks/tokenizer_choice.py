"""Which tokenizer recipe is the default: SentencePiece BPE vs unigram, both lossless, at 8k and 32k.

Every model is trained by the real stage (`stage2` subprocesses, alternating the two recipes):
  8k:  the default pipeline (`stage2`, the embedded sample mixture) and `stage2 tokenizer=unigram`;
  32k: `stage2 stage=tokenizer dataset=files` on the development corpora (../shared/data, one
       component per file; the sample holds too little text for 32k unigram pieces), bpe and unigram.
Per model: training wall and CPU time (the subprocess's), held-out bytes/token per component (the
stage's own evaluation; ratio to an HF ByteLevel BPE trained on the same sample at the same size),
the share of held-out documents whose tokenizer.json ids equal the shards' (stage2's encoding.encode),
and SentencePiece encode speed on English web text (data/sample/web_*.jsonl.gz, 1 and 2 threads,
every model in turn per repeat, median).

    uv run python -m benchmarks.tokenizer_choice [--repeats 5]

Writes benchmarks/results/tokenizer_choice.md and .json. Goal (issue #25): the default encodes at
>= 0.85x the lossless unigram's speed (1 thread), decodes 100%, tokenizer.json ids 100% equal, and
compresses at least as well as the ByteLevel BPE on every component.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import sentencepiece as spm

import stage2.main
from benchmarks.common import child_env, machine, md_table, read_jsonl, shared_data_dir, write_results
from benchmarks.tokenizer_compression import bytelevel_bpe
from stage2.runtime.run import start_run
from stage2.stages import tokenizer as tokenizer_stage
from stage2.tokenizer import encoding

SAMPLE = Path(stage2.main.DATA_DIR) / "sample"
WEB = [SAMPLE / "web_stackexchange.jsonl.gz", SAMPLE / "web_cc.jsonl.gz"]
STAGE2 = str(Path(sys.executable).parent / "stage2")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stage2(folder: Path, root: Path, overrides: List[str]) -> Dict[str, Any]:
    """One `stage2` run; its wall and CPU seconds and its stats.json."""
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run([STAGE2, f"hydra.run.dir={folder}", f"runs_index={root}/runs.jsonl", *overrides],
                   check=True, capture_output=True, cwd=root, env=child_env())
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    stats = json.loads((folder / "stats.json").read_text())
    return {"wall": wall, "cpu": cpu, "folder": folder, "stats": stats}


def anchor(folder: Path, root: Path, overrides: List[str], vocab: int) -> Dict[str, float]:
    """Held-out bytes/token per component of an HF ByteLevel BPE trained on the run's own sample."""
    recipe = stage2.main.compose_recipe([*overrides, f"runs_index={root}/runs.jsonl", "executor.workers=1"], str(root))
    run = start_run(root / f"anchor-{folder.name}", recipe)
    samples = tokenizer_stage.collect_samples(run, run.cfg.tokenizer)
    run.executor.close()
    hf = bytelevel_bpe((t for s in samples for t in s.train_texts), vocab)
    out = {}
    for s in samples:
        ids = [e.ids for e in hf.encode_batch(s.eval_texts)]
        out[s.component] = sum(len(t.encode("utf-8")) for t in s.eval_texts) / sum(map(len, ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shared = shared_data_dir()
    corpora = sorted(str(p) for p in shared.glob("*.jsonl.gz") if "pairs" not in p.name)
    dev = ["stage=tokenizer", "dataset=files", f"dataset.paths=[{','.join(corpora)}]", "tokenizer.vocab_size=32000"]
    setups = {  # name: (overrides of the run, vocab)
        "bpe 8k": ([], 8000),
        "unigram 8k": (["tokenizer=unigram"], 8000),
        "bpe 32k": ([*dev, "tokenizer=bpe"], 32000),
        "unigram 32k": ([*dev, "tokenizer=unigram"], 32000),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {}
        for name, (overrides, _) in setups.items():
            runs[name] = run_stage2(root / name.replace(" ", "_"), root, overrides)
            print(f"{name}: {runs[name]['wall']:.1f} s wall, load {os.getloadavg()[0]:.1f}", flush=True)
        # The 8k runs are pipelines: their tokenizer trained on the filter's parts.
        filtered = runs["bpe 8k"]["folder"]
        anchors = {8000: anchor(root / "a8", root, ["stage=tokenizer", f"tokenizer.input_run={filtered}", "tokenizer.vocab_size=8000"], 8000),
                   32000: anchor(root / "a32", root, dev, 32000)}
        models = {}
        for name, r in runs.items():
            tok = r["stats"]["stages"]["tokenizer"]
            models[name] = spm.SentencePieceProcessor(model_file=str(r["folder"] / tok["model"]))
        web = [d["text"] for p in WEB for d in read_jsonl(p)]
        web_mb = sum(len(t.encode("utf-8")) for t in web) / 1e6
        # 1, 2: encoding.encode (ids per document) on 1 and 2 threads; "stream": what the shard stage runs
        # (encode_stream, 512 documents a batch, EOS after each, 1 thread); "sentencepiece": sp.encode, 1 thread.
        speed: Dict[str, Dict[Any, List[float]]] = {name: {1: [], 2: [], "stream": [], "sentencepiece": []} for name in models}
        eos_dtype = np.dtype(np.uint16)
        ways = {1: lambda sp: encoding.encode(sp, web, num_threads=1), 2: lambda sp: encoding.encode(sp, web, num_threads=2),
                "stream": lambda sp: list(encoding.encode_stream(sp, web, 512, 1, None, sp.eos_id(), eos_dtype)),
                "sentencepiece": lambda sp: sp.encode(web, num_threads=1)}
        for _ in range(args.repeats):
            for way, encode in ways.items():
                for name, sp in models.items():
                    started = time.perf_counter()
                    encode(sp)
                    speed[name][way].append(web_mb / (time.perf_counter() - started))
        load = os.getloadavg()[0]

    med = {name: {n: statistics.median(v) for n, v in d.items()} for name, d in speed.items()}
    rows, table = [], {}
    for name, r in runs.items():
        vocab = setups[name][1]
        tok = r["stats"]["stages"]["tokenizer"]
        comps = tok["components"]
        table[name] = {
            "train_wall_s": round(r["wall"], 1), "run_cpu_s": round(r["cpu"], 1), "stage_train_s": tok["seconds"]["train"],
            "encode_MBps": {n: round(v, 2) for n, v in med[name].items()},
            "bytes_per_token": {c: m["bytes_per_token"] for c, m in comps.items()},
            "vs_bytelevel": {c: round(m["bytes_per_token"] / anchors[vocab][c], 4) for c, m in comps.items()},
            "roundtrip_min": min(m["roundtrip_share"] for m in comps.values()),
            "hf_exact_min": min(m["hf_exact_share"] for m in comps.values()),
        }
        t = table[name]
        rows.append([name, f"{t['encode_MBps'][1]:.2f}", f"{t['encode_MBps'][2]:.2f}", f"{t['encode_MBps']['stream']:.2f}",
                     f"{t['encode_MBps']['sentencepiece']:.2f}", f"{t['stage_train_s']:.1f}",
                     f"{t['train_wall_s']:.1f}", f"{t['run_cpu_s']:.1f}", f"{t['hf_exact_min']:.4f}", f"{t['roundtrip_min']:.4f}",
                     ", ".join(f"{c} {b:.3f} ({t['vs_bytelevel'][c]:.3f}x)" for c, b in t["bytes_per_token"].items())])
    ratio = {v: med[f"bpe {v}"][1] / med[f"unigram {v}"][1] for v in ("8k", "32k")}
    stream_ratio = {v: med[f"bpe {v}"]["stream"] / med[f"unigram {v}"]["stream"] for v in ("8k", "32k")}
    train_ratio = {v: table[f"unigram {v}"]["stage_train_s"] / table[f"bpe {v}"]["stage_train_s"] for v in ("8k", "32k")}
    report = "\n".join([
        "# Tokenizer choice: SentencePiece BPE vs unigram (both lossless)",
        "",
        f"Machine: {machine()}, shared with other jobs (load average {load:.1f} at the end): compare ratios within this run.",
        f"Command: `uv run python -m benchmarks.tokenizer_choice --repeats {args.repeats}`.",
        "8k: `stage2` (the default pipeline on the embedded sample) and `stage2 tokenizer=unigram`; 32k: `stage2 stage=tokenizer "
        "dataset=files` on the 8 development corpora (one component each), `tokenizer=bpe` and `tokenizer=unigram`.",
        f"Encode: stage2's `encoding.encode` (BPE: FastBPE, SentencePiece's merges run by tiktoken; unigram: SentencePiece) on "
        f"the sample's English web text ({len(web)} documents, {web_mb:.2f} MB), median of {args.repeats} repeats, every model "
        "in turn per repeat; shard stream: `encoding.encode_stream` as the shard stage calls it (batches of 512, EOS after "
        "each document); SentencePiece's encode: `sp.encode` itself.",
        "Train s: the stage's training seconds (stats.json); run wall / CPU: the whole `stage2` command (8k: filter, tokenizer "
        "and shard). HF exact and decode: the lowest share over components of held-out documents whose tokenizer.json ids "
        "equal the shards' / that decode to exactly their text. Bytes/token: held-out, per component (ratio to an HF "
        "ByteLevel BPE of the same size trained on the same sample; >= 1: compresses at least as well).",
        "",
        md_table(["recipe", "encode MB/s 1 thread", "encode MB/s 2 threads", "shard stream MB/s 1 thread",
                  "SentencePiece's encode MB/s 1 thread", "train s", "run wall s", "run CPU s",
                  "HF exact", "decode", "bytes/token per component"], rows),
        "",
        f"BPE / unigram encode speed, 1 thread: 8k {ratio['8k']:.2f}x, 32k {ratio['32k']:.2f}x (goal for the default: >= 0.85x); "
        f"as the shard stage encodes (stream): 8k {stream_ratio['8k']:.2f}x, 32k {stream_ratio['32k']:.2f}x. "
        f"Unigram / BPE training time: 8k {train_ratio['8k']:.1f}x, 32k {train_ratio['32k']:.1f}x.",
        "",
    ])
    write_results("tokenizer_choice", report, {"table": table, "bpe_vs_unigram_speed_1thread": ratio, "bpe_vs_unigram_stream_1thread": stream_ratio,
                                               "unigram_vs_bpe_train": train_ratio, "anchor_bytes_per_token": anchors})
    print(report)


if __name__ == "__main__":
    main()
