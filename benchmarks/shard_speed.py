"""Shard stage throughput vs SentencePiece batch encode alone, and peak memory at 1x and 10x input.

    uv run python benchmarks/shard_speed.py [--docs 100000] [--threads 2] [--repeats 3] [--out benchmarks/results/shard_speed.md]

Input: English documents of the shared dev corpora (`../shared/data`, or $STAGE2_SHARED_DATA), written
as filtered parquet parts (1000 docs each) of a fake filter run; the 10x input is the same parts
repeated ten times. A SentencePiece unigram model (8000 pieces) is trained once on part of the text;
with `--model-type bpe`, a BPE model of the default recipe's lossless options (8000 pieces), which the
stage encodes through FastBPE.

* encode alone: `sp.encode(texts, num_threads=N)` over the texts already in memory (one call per
  `shard.batch_size` docs, and one call over everything), ids left as Python lists. The best of these
  is the headline's denominator. An extra row, not in the denominator, encodes the same batches with
  `return_type="numpy"` (the output the stage uses, cheaper than Python lists): the stage's ratio to
  it shows what reading, packing and writing still cost on top of encoding.
* end to end: the shard stage (`stage2.stages.shard.run`) from the parquet parts to shards on disk, with
  1 worker x N threads and N workers x 1 thread.
* formats: the 10x stage again with `shard.formats=[npy,megatron,datatrove,nanogpt]` (its extra wall
  time over npy alone), and with `--base-repo <checkout>` the 10x stage of another checkout (e.g. the
  commit before a change: `git worktree add /tmp/base <commit>`), for npy alone against it.
Every figure, 1x and 10x, is the best of --repeats interleaved runs, each in its own subprocess, which
reports its wall time and peak RSS (its own plus its worker processes'), so the figures of one
invocation are comparable with each other.
Headline numbers also go to shard_speed.json next to the markdown (read by `python -m benchmarks`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script too (`python benchmarks/shard_speed.py`, and its children)
from benchmarks.common import RESULTS  # noqa: E402  ($STAGE2_BENCH_RESULTS moves it)

SHARED = Path(os.environ.get("STAGE2_SHARED_DATA") or REPO.parent / "shared" / "data")
FILES = ("en_foldoc_dev.jsonl.gz", "en_web_stackexchange_dev.jsonl.gz", "en_web_cc_samples_dev.jsonl.gz")
PART_DOCS = 1000
ALL_LABEL = "shard stage 10x, 1 worker x %d threads, shard.formats=[npy,megatron,datatrove,nanogpt]"
BASE_LABEL = "shard stage 10x, 1 worker x %d threads, --base-repo checkout"


def reset_peak() -> None:
    """Restart this process's peak RSS (VmHWM) count, so set-up (imports, loading) is not measured."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> dict:
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest finished worker process
    return {"peak_rss_mb": round(hwm / 1024, 1), "worker_peak_rss_mb": round(kids / 1024, 1)}  # both in KiB on Linux


def cpu_seconds() -> float:
    """CPU time of this process and its finished workers (user + system): less swayed than wall time by
    other jobs on a shared machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load_texts(n: int) -> list:
    texts = []
    for name in FILES:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    # Interleave sources so every part has a mix; a fixed stride, not a shuffle, keeps it simple.
    texts = texts[::2] + texts[1::2]
    return texts[:n]


def prepare(work: Path, n_docs: int, model_type: str = "unigram") -> dict:
    sys.path.insert(0, str(REPO))
    import sentencepiece as spm

    from stage2.io import parts
    from stage2.io.sources import Document

    texts = load_texts(n_docs)
    model = work / "spm.model"
    if model_type == "bpe":
        from stage2.config import TokenizerConfig

        options = {**TokenizerConfig(vocab_size=8000, num_threads=2).trainer_options(), "minloglevel": 2}
    else:
        options = dict(vocab_size=8000, model_type="unigram", pad_id=3, byte_fallback=True, num_threads=2, minloglevel=2)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts[:3000]), model_prefix=str(work / "spm"), **options)
    for scale in (1, 10):
        folder = work / f"x{scale}"
        rels = []
        for rep in range(scale):
            for start in range(0, len(texts), PART_DOCS):
                chunk = texts[start : start + PART_DOCS]
                docs = [Document(id=f"{rep}-{start + i}", text=t, component="en", source="bench", record=start + i + 1) for i, t in enumerate(chunk)]
                path = parts.part_path(folder, "en", 0, len(rels))
                parts.write_table(path, parts.docs_to_table(docs))
                rels.append(str(path.relative_to(folder)))
        (folder / parts.FILTERED_DIR / parts.MANIFEST).write_text(json.dumps({"components": {"en": {"parts": rels}}}))
        # The record a finished filter run leaves, which a shard run checks its input parts against.
        from stage2.io.files import file_sha256

        recorded = {rel: file_sha256(folder / rel) for rel in [*rels, f"{parts.FILTERED_DIR}/{parts.MANIFEST}"]}
        (folder / "stats.json").write_text(json.dumps({"status": "finished", "artifact_sha256": recorded, "artifacts": sorted(recorded)}))
    (work / "en.jsonl").write_text(json.dumps({"id": "x", "text": "placeholder"}) + "\n")  # names the component
    return {"model": str(model), "docs": len(texts), "chars": sum(map(len, texts)), "bytes": sum(len(t.encode()) for t in texts)}


# ------------------------------------------------------------------- children (one measurement each)


def child_encode(args) -> dict:
    import pyarrow.parquet as pq
    import sentencepiece as spm

    folder = Path(args.work) / "x1"
    manifest = json.loads((folder / "filtered" / "manifest.json").read_text())
    texts = []
    for rel in manifest["components"]["en"]["parts"]:
        texts += pq.read_table(folder / rel, columns=["text"]).column("text").to_pylist()
    sp = spm.SentencePieceProcessor(model_file=args.model)
    reset_peak()  # the texts are loaded: measure what encoding adds on top
    t0 = time.perf_counter()
    if args.numpy:
        tokens = sum(len(x) for i in range(0, len(texts), args.batch) for x in sp.encode(texts[i : i + args.batch], num_threads=args.threads, return_type="numpy"))
    elif args.batch:
        tokens = sum(len(x) for i in range(0, len(texts), args.batch) for x in sp.encode(texts[i : i + args.batch], num_threads=args.threads))
    else:
        tokens = sum(len(x) for x in sp.encode(texts, num_threads=args.threads))
    seconds = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": seconds, **peak_rss_mb(), "worker_peak_rss_mb": None}


def child_shard(args) -> dict:
    sys.path.insert(0, args.repo or str(REPO))  # --repo: another checkout's stage2 (the one before a change)
    import stage2.main as stage2_main
    from stage2.stages import shard
    from stage2.runtime.run import start_run
    # Imported before the clock starts, as child_encode does: module import is process start-up, not throughput.
    import pyarrow.parquet  # noqa: F401
    import sentencepiece  # noqa: F401

    work = Path(args.work)
    overrides = [
        "stage=shard", "dataset=files", f"dataset.paths=[{work / 'en.jsonl'}]", f"runs_index={work}/runs.jsonl",
        f"shard.tokenizer={args.model}", f"shard.input_run={work / f'x{args.scale}'}",
        f"executor.workers={args.workers}", f"shard.num_threads={args.threads}",
    ] + ([f"shard.formats=[{args.formats}]"] if args.formats else [])
    plain = stage2_main.compose_recipe(overrides, str(work))
    run = start_run(Path(tempfile.mkdtemp(dir=work, prefix=f"run-x{args.scale}-w{args.workers}-")), plain)
    reset_peak()
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    try:
        headline = shard.run(run)
    finally:
        run.executor.close()
    seconds = time.perf_counter() - t0
    result = {"tokens": headline["tokens"], "sequences": headline["sequences"], "seconds": seconds, "cpu_s": cpu_seconds() - cpu0, **peak_rss_mb(), "run": str(run.dir)}
    if args.workers == 1:
        result["worker_peak_rss_mb"] = None  # in-process: no worker (RUSAGE_CHILDREN would show `git`)
    return result


def measure(kind: str, work: Path, model: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), "--model", model]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100000)  # capped by what the files hold
    ap.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram", help="bpe: the default recipe's lossless BPE")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(RESULTS / "shard_speed.md"))
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each 1x figure; the best counts")
    ap.add_argument("--child")
    ap.add_argument("--work")
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--numpy", type=int, default=0, help="encode child: numpy output (needs --batch)")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--formats", default="", help="shard child: shard.formats, comma-separated (default: the recipe's)")
    ap.add_argument("--repo", default="", help="shard child: import stage2 from this checkout")
    ap.add_argument("--base-repo-name", default="", help="how the results name the --base-repo checkout (e.g. its commit)")
    ap.add_argument("--base-repo", default="", help="also measure the 10x stage with this checkout's stage2 (e.g. `git worktree add /tmp/base HEAD`)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps({"encode": child_encode, "shard": child_shard}[args.child](args)))
        return

    n = args.threads
    with tempfile.TemporaryDirectory(prefix="shard_speed-") as tmp:
        work = Path(tmp)
        info = prepare(work, args.docs, args.model_type)
        model = info["model"]
        rows = []
        # Interleaved repeats: the box is shared, so each figure is the best of --repeats.
        baseline = ["encode alone, one call, %d threads" % n, "encode alone, batches of 512, %d threads" % n]
        numpy_label = "numpy output: encode(batches of 512, %d threads, return_type=numpy)" % n
        plan = [
            (baseline[0], "encode", dict(threads=n, batch=0)),
            (baseline[1], "encode", dict(threads=n, batch=512)),
            (numpy_label, "encode", dict(threads=n, batch=512, numpy=1)),
            ("shard stage 1x, 1 worker x %d threads" % n, "shard", dict(threads=n, workers=1, scale=1)),
            ("shard stage 1x, %d workers x 1 thread" % n, "shard", dict(threads=1, workers=n, scale=1)),
            ("shard stage 10x, 1 worker x %d threads" % n, "shard", dict(threads=n, workers=1, scale=10)),
            ("shard stage 10x, %d workers x 1 thread" % n, "shard", dict(threads=1, workers=n, scale=10)),
            (ALL_LABEL % n, "shard", dict(threads=n, workers=1, scale=10, formats="npy,megatron,datatrove,nanogpt")),
        ]
        if args.base_repo:
            plan.append((BASE_LABEL % n, "shard", dict(threads=n, workers=1, scale=10, repo=args.base_repo)))
        results = {label: [] for label, _, _ in plan}
        load_start = os.getloadavg()[0]
        for _ in range(args.repeats):
            for label, kind, kw in plan:
                results[label].append(measure(kind, work, model, **kw))

        best = {label: min(rs, key=lambda r: r["seconds"]) for label, rs in results.items()}
        base = max(best[label]["tokens"] / best[label]["seconds"] for label in baseline)  # Python-list output only
        for label, r in best.items():
            tps = r["tokens"] / r["seconds"]
            rows.append((label, r["tokens"], r["seconds"], tps, tps / base, r["peak_rss_mb"], r["worker_peak_rss_mb"]))

    lines = [
        "# Shard stage throughput and memory",
        "",
        f"Measured by `uv run python benchmarks/shard_speed.py --threads {n} --model-type {args.model_type}` on this machine:"
        f" {platform.machine()}, {os.cpu_count()} cores (shared with other jobs, so absolute figures are noisy;"
        f" compare the ratios, all measured in the same invocation), Python {platform.python_version()};"
        f" 1-minute load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        f"Input (1x): {info['docs']} English documents of the shared dev corpora ({info['bytes'] / 1e6:.1f} MB of UTF-8 text),"
        f" as {-(-info['docs'] // PART_DOCS)} filtered parquet parts; 10x repeats the parts ten times."
        + (" SentencePiece BPE model of the default recipe (lossless options), 8000 pieces, encoded by FastBPE;"
           if args.model_type == "bpe" else " SentencePiece unigram model, 8000 pieces;")
        + " shard.seq_len=512, sequences_per_shard=8192 (defaults).",
        "",
        "Tokens: encode alone counts document tokens; the shard stage counts document tokens + EOS (one per document).",
        f"Each figure is the best of {args.repeats} interleaved repeats; the ratios are to the best encode alone (Python-list output). Peak RSS: the measuring process's VmHWM, reset"
        " after set-up (encode alone: after the texts are loaded and the model is read; shard stage: after the"
        " run folder is made), and the largest worker process (`RUSAGE_CHILDREN`; 2-worker runs only).",
        "",
        "| what | tokens | seconds | tokens/s | vs best encode alone | peak RSS MB | worker peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, tokens, seconds, tps, ratio, rss, wrss in rows:
        lines.append(f"| {label} | {tokens:,} | {seconds:.2f} | {tps:,.0f} | {ratio:.2f}x | {rss} | {wrss or '-'} |")
    by_label = {row[0]: row for row in rows}
    one_1x, one_10x = by_label["shard stage 1x, 1 worker x %d threads" % n], by_label["shard stage 10x, 1 worker x %d threads" % n]
    lines += [
        "",
        f"- End to end vs encode alone (1 worker x {n} threads): {one_1x[4]:.2f}x at 1x, {one_10x[4]:.2f}x at 10x (goal >= 0.85x).",
        f"- The same against the numpy-output encode (the encode the stage does, without packing or I/O):"
        f" {one_1x[4] / by_label[numpy_label][4]:.2f}x at 1x, {one_10x[4] / by_label[numpy_label][4]:.2f}x at 10x.",
        f"- Peak RSS of the stage at 10x / 1x input: {one_10x[5] / one_1x[5]:.2f} ({one_1x[5]} -> {one_10x[5]} MB) for ten times the"
        " tokens. The shard buffer is seq_len x sequences_per_shard tokens (512 x 8192 x 2 bytes = 8 MiB, touched"
        " in full only once a shard fills, which 1x input does not do); besides it, memory holds the partitions in flight.",
    ]
    npy_10x, all_10x = one_10x, by_label[ALL_LABEL % n]
    cpu = {label: min(r["cpu_s"] for r in results[label]) for label in results if "cpu_s" in results[label][0]}
    lines.append(
        f"- All four formats vs npy alone (10x, 1 worker): {all_10x[2] / npy_10x[2]:.3f}x the wall time ({npy_10x[2]:.2f} -> {all_10x[2]:.2f} s),"
        f" {cpu[ALL_LABEL % n] / cpu[npy_10x[0]]:.3f}x the CPU time ({cpu[npy_10x[0]]:.2f} -> {cpu[ALL_LABEL % n]:.2f} s; best of {args.repeats}, user + system); goal <= 1.15x."
    )
    if BASE_LABEL % n in by_label:
        base_10x = by_label[BASE_LABEL % n]
        lines.append(
            f"- npy alone vs the --base-repo checkout ({args.base_repo_name or args.base_repo}; 10x, 1 worker): {npy_10x[2] / base_10x[2]:.3f}x the wall time"
            f" ({base_10x[2]:.2f} -> {npy_10x[2]:.2f} s), {cpu[npy_10x[0]] / cpu[BASE_LABEL % n]:.3f}x the CPU time ({cpu[BASE_LABEL % n]:.2f} -> {cpu[npy_10x[0]]:.2f} s); goal <= 1.0x."
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    two = by_label["shard stage 1x, %d workers x 1 thread" % n]
    headline = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "docs": info["docs"], "mb": round(info["bytes"] / 1e6, 3), "threads": n, "repeats": args.repeats,
        "encode_tokens_per_s": round(base, 1),
        "stage_vs_encode_1x": round(one_1x[4], 4), "stage_vs_encode_10x": round(one_10x[4], 4),
        "stage_workers_vs_encode_1x": round(two[4], 4),
        "stage_vs_numpy_encode_1x": round(one_1x[4] / by_label[numpy_label][4], 4),
        "stage_vs_numpy_encode_10x": round(one_10x[4] / by_label[numpy_label][4], 4),
        "peak_rss_mb_1x": one_1x[5], "peak_rss_mb_10x": one_10x[5], "load_start": load_start, "load_end": os.getloadavg()[0],
        "all_formats_vs_npy_wall_10x": round(all_10x[2] / npy_10x[2], 4),
        "all_formats_vs_npy_cpu_10x": round(cpu[ALL_LABEL % n] / cpu[npy_10x[0]], 4),
    }
    if BASE_LABEL % n in by_label:
        headline["npy_vs_base_wall_10x"] = round(npy_10x[2] / by_label[BASE_LABEL % n][2], 4)
        headline["npy_vs_base_cpu_10x"] = round(cpu[npy_10x[0]] / cpu[BASE_LABEL % n], 4)
    Path(args.out).with_suffix(".json").write_text(json.dumps(headline, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
