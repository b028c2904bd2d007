"""The hygiene steps' cost per MB next to the existing steps, and decontamination's memory per worker.

    uv run python -m benchmarks.hygiene [--repeats 3] [--train-mb 0] [--no-memory]

1. Cost: every step judges the same documents (the prose dev corpora: stackexchange, tldr, fortunes,
   foldoc; 200..8000 characters), a partition of 1000 at a time, in this process, each step on all of
   them (not after the others, as in a chain); least CPU seconds of `--repeats` runs, per MB of text.
   decontaminate's index is of a 10 MB eval set (below); url's blocklist has 10,000 domains.
2. Memory of decontamination against the 10 MB eval set, isolated: a fresh process that builds the
   index (the driver's part), and one that judges every document with it (a worker's part), each
   reporting its peak RSS (VmHWM, reset first) above what it held before (imports, the documents); then the
   real filter stage (`stage2 stage=filter dataset=files`, 2 workers) with and without it: the
   workers' and the driver's peak RSS from stats.json (the language models dominate those).
The 10 MB eval set: the code corpus (pip/setuptools sources, one item per file) plus UDHR articles,
to 10 MB of text; none of it is in the training documents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

from benchmarks.common import REPO, child_env, machine, md_table, read_jsonl, shared_data_dir, write_results

TRAIN = ["en_web_stackexchange_dev.jsonl.gz", "multiling_tldr_dev.jsonl.gz", "multiling_fortunes_dev.jsonl.gz", "en_foldoc_dev.jsonl.gz"]
PARTITION = 1000


def train_docs(data: Path, limit_mb: float) -> List[Dict[str, Any]]:
    out, size = [], 0
    for name in TRAIN:
        for r in read_jsonl(data / name):
            text = r.get("text") or ""
            if 200 <= len(text) <= 8000:
                out.append({"id": r["id"], "text": text})
                size += len(text.encode("utf-8"))
                if limit_mb and size >= limit_mb * 1e6:
                    return out
    return out


def eval_items(data: Path, mb: float = 10.0) -> List[Dict[str, Any]]:
    out, size = [], 0
    for name in ("code_python_pip_setuptools_dev.jsonl.gz", "multiling_udhr_dev.jsonl.gz"):
        for r in read_jsonl(data / name):
            text = r.get("text") or ""
            out.append({"id": r["id"], "text": text})
            size += len(text.encode("utf-8"))
            if size >= mb * 1e6:
                return out
    return out


def write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def build_steps(folder: Path, eval_path: Path) -> Tuple[Dict[str, Any], float, Dict[str, Any]]:
    """name -> step (built as the tasks build them), the index's build seconds, its description."""
    from stage2.config import FilterConfig
    from stage2.lid.backends import get_backend
    from stage2.stages.filter import RunInputs
    from stage2.steps import STEPS
    from stage2.steps.decontaminate import DecontaminateSettings
    from stage2.steps.pii import PiiSettings
    from stage2.steps.url import UrlSettings

    f = FilterConfig()
    rule = f.language_rule()
    for backend in filter(None, (rule.backend, rule.check_backend)):
        get_backend(backend)  # loaded before the clock starts, as a worker's warm-up does
    (folder / "block.txt").write_text("".join(f"site{i}.example.org\n" for i in range(10000)))
    plain: Dict[str, Dict[str, Any]] = {
        "length": {"min_chars": 200, "max_chars": 8000},
        "language": asdict(rule),
        "gopher_repetition": asdict(f.gopher_repetition),
        "gopher_quality": asdict(f.gopher_quality),
        "c4_quality": asdict(f.c4_quality),
        "fineweb_quality": asdict(f.fineweb_quality),
        "url": {**asdict(UrlSettings(blocklist=[str(folder / "block.txt")], banned_words=["casino", "xxx"])), "url_column": "url"},
        "pii": asdict(PiiSettings(kinds=["email", "ip"])),
    }
    started = time.perf_counter()
    plain["decontaminate"] = STEPS["decontaminate"].prepare(asdict(DecontaminateSettings(paths=[str(eval_path)])), folder, RunInputs(str(folder)))
    build_s = time.perf_counter() - started
    steps = {name: STEPS[name].from_plain(settings) for name, settings in plain.items()}
    return steps, build_s, STEPS["decontaminate"].describe(plain["decontaminate"])


def cost(args: argparse.Namespace, data: Path, folder: Path) -> Tuple[str, Dict[str, Any]]:
    from stage2.documents import Document

    rows = train_docs(data, args.train_mb)
    urls = [r["meta"]["url"] for r in read_jsonl(data / "en_web_cc_samples_dev.jsonl.gz")]
    docs = [Document(id=r["id"], text=r["text"], component="c", source="s", record=i + 1, metadata={"url": urls[i % len(urls)]})
            for i, r in enumerate(rows)]
    mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
    eval_path = write_jsonl(folder / "eval.jsonl", eval_items(data))
    steps, build_s, meta = build_steps(folder, eval_path)
    table, headline = [], {}
    for name, step in steps.items():
        best = float("inf")
        dropped = 0
        for _ in range(args.repeats):
            start = time.process_time()
            dropped = 0
            for at in range(0, len(docs), PARTITION):
                verdicts = step.judge(docs[at : at + PARTITION])
                dropped += sum(v is not None for v in verdicts)
            best = min(best, time.process_time() - start)
        per_mb = best / mb * 1000
        headline[f"{name}_ms_per_mb"] = round(per_mb, 1)
        hygiene = name in ("url", "pii", "decontaminate")
        table.append([("**" + name + "**") if hygiene else name, f"{best:.3f}", f"{per_mb:.1f}", f"{mb / best:.1f}" if best else "", dropped])
    eval_mb = eval_path.stat().st_size / 1e6
    text = (
        f"Input: {len(docs)} documents, {mb:.2f} MB of text ({', '.join(TRAIN)}; 200..8000 characters), judged {PARTITION} at a time;"
        f" least CPU of {args.repeats} runs in one process (time.process_time).\n\n"
        + md_table(["step", "CPU s", "ms per MB", "MB per CPU s", "documents it drops or edits (alone)"], table)
        + f"\nThe hygiene steps are in bold. decontaminate: an index of {sum(s['ngrams'] for s in meta['sets']):,} distinct 13-grams"
        f" from {sum(s['items'] for s in meta['sets']):,} eval items ({eval_mb:.1f} MB of JSON lines), built by the driver in {build_s:.1f} s;"
        " url: a blocklist of 10,000 domains and two banned words, every document with a real URL of the web sample;"
        " pii: kinds [email, ip] (a document it edits is counted).\n"
    )
    headline.update({"train_mb": round(mb, 2), "index_build_s": round(build_s, 2), "index_ngrams": sum(s["ngrams"] for s in meta["sets"])})
    return text, headline


def memory(data: Path, folder: Path, train_mb: float) -> Tuple[str, Dict[str, Any]]:
    train = write_jsonl(folder / "train.jsonl", train_docs(data, train_mb))
    eval_path = folder / "eval.jsonl"
    if not eval_path.is_file():
        write_jsonl(eval_path, eval_items(data))
    results: Dict[str, Dict[str, Any]] = {}
    for name, extra in (("without", []), ("with", [f"filter.decontaminate.paths=[{eval_path}]"])):
        run = folder / f"run-{name}"
        command = [str(Path(sys.executable).parent / "stage2"), "stage=filter", "dataset=files", f"dataset.paths=[{train}]", "executor.workers=2",
                   "progress=false", f"hydra.run.dir={run}", f"runs_index={folder}/runs.jsonl", "dataset.partition_size=1000", *extra]
        started = time.perf_counter()
        subprocess.run(command, cwd=folder, env=child_env(), check=True, capture_output=True)
        wall = time.perf_counter() - started
        stats = json.loads((run / "stats.json").read_text())["stages"]["filter"]
        results[name] = {"wall_s": round(wall, 2), **stats["resources"], "kept": stats["kept"], "dropped_decontaminate": stats["dropped"].get("decontaminate", 0)}
    index_bytes = sum(p.stat().st_size for p in (folder / "decontaminate").rglob("*.npy")) if (folder / "decontaminate").is_dir() else 0
    isolated = {mode: probe_memory(mode, folder, train, eval_path) for mode in ("build", "judge")}
    w, wo = results["with"], results["without"]
    rows = [[name, f"{r['wall_s']:.1f}", f"{r['workers_peak_rss_mb']:.0f}", f"{r['driver_peak_rss_mb']:.0f}", r["kept"], r["dropped_decontaminate"]] for name, r in results.items()]
    build, judge = isolated["build"], isolated["judge"]
    text = (
        f"Isolated, each in a fresh process: building the index from the 10 MB eval set (the driver's part) takes"
        f" {build['peak_mb'] - build['base_mb']:.0f} MB above the {build['base_mb']:.0f} MB the process held before;"
        f" judging all {judge['docs']} documents with it, a partition of {PARTITION} at a time (a worker's part), takes"
        f" {judge['peak_mb'] - judge['base_mb']:.0f} MB above the {judge['base_mb']:.0f} MB held before (imports and the documents themselves)."
        f" The index's .npy files hold {index_bytes / 1e6:.1f} MB; workers memory-map them (the pages are the page cache's,"
        " shared by the workers; a process's RSS counts those it touched).\n\n"
        f"The filter stage over {train.stat().st_size / 1e6:.1f} MB of JSON lines (the documents above), 2 workers, default recipe,"
        f" without and with `filter.decontaminate.paths=[<10 MB eval set>]`; peak RSS as stats.json records it (ru_maxrss):\n\n"
        + md_table(["decontamination", "wall s", "worker peak RSS MB", "driver peak RSS MB", "kept", "dropped as decontaminate"], rows)
        + f"\nBetween these two runs the workers' peak differs by {w['workers_peak_rss_mb'] - wo['workers_peak_rss_mb']:+.0f} MB; language models"
        " and dedup make most of those peaks and they vary from run to run, so the isolated figures above are the step's own cost.\n"
    )
    return text, {"decontaminate_build_mb": round(build["peak_mb"] - build["base_mb"], 1), "decontaminate_judge_mb": round(judge["peak_mb"] - judge["base_mb"], 1),
                  "worker_peak_rss_mb_with": w["workers_peak_rss_mb"], "worker_peak_rss_mb_without": wo["workers_peak_rss_mb"],
                  "driver_peak_rss_mb_with": w["driver_peak_rss_mb"], "driver_peak_rss_mb_without": wo["driver_peak_rss_mb"], "index_mb": round(index_bytes / 1e6, 1)}


def probe_memory(mode: str, folder: Path, train: Path, eval_path: Path) -> Dict[str, Any]:
    """Run `--probe <mode>` in a fresh process; its peak RSS before and after the measured part."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.hygiene", "--probe", mode, str(folder), str(train), str(eval_path)],
                         cwd=REPO, env=child_env(), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe(mode: str, folder: Path, train: Path, eval_path: Path) -> None:
    """`build`: the index from the eval set; `judge`: every training document against it."""
    from stage2.documents import Document
    from stage2.stages.filter import RunInputs
    from stage2.steps import STEPS
    from stage2.steps.decontaminate import DecontaminateSettings

    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024

    settings = asdict(DecontaminateSettings(paths=[str(eval_path)]))
    docs: List[Document] = []
    if mode == "judge":
        prepared = STEPS["decontaminate"].prepare(settings, folder, RunInputs(str(folder)))  # (built by the `build` probe: reused)
        with open(train, encoding="utf-8") as f:
            docs = [Document(id=r["id"], text=r["text"], component="c", source="s", record=i + 1) for i, r in enumerate(map(json.loads, f))]
    import gc

    gc.collect()
    base = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to what the process holds now: imports' transient peaks do not count
    if mode == "build":
        import shutil

        shutil.rmtree(folder / "decontaminate", ignore_errors=True)
        STEPS["decontaminate"].prepare(settings, folder, RunInputs(str(folder)))
    else:
        step = STEPS["decontaminate"].from_plain(prepared)
        for at in range(0, len(docs), PARTITION):
            step.judge(docs[at : at + PARTITION])
    print(json.dumps({"base_mb": round(base, 1), "peak_mb": round(status("VmHWM"), 1), "docs": len(docs)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-mb", type=float, default=0, help="cut the training documents to this many MB (0: all)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--probe", nargs=4, metavar=("MODE", "FOLDER", "TRAIN", "EVAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        mode, *paths = args.probe
        probe(mode, *map(Path, paths))
        return
    data = shared_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text, headline = cost(args, data, folder)
        parts = ["# Hygiene steps (benchmarks/hygiene.py)", "", f"Machine: {machine()}, shared with other jobs (noisy: compare ratios within one run).",
                 f"Command: `uv run python -m benchmarks.hygiene{' --train-mb ' + str(args.train_mb) if args.train_mb else ''}`.", "",
                 "## Cost per MB", "", text]
        if not args.no_memory:
            more, mem = memory(data, folder, args.train_mb)
            parts += ["## Decontamination's memory", "", more]
            headline.update(mem)
    write_results("hygiene", "\n".join(parts), headline)
    print("\n".join(parts))


if __name__ == "__main__":
    main()
