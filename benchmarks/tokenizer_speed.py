"""Tokenizer stage wall time vs calling `SentencePieceTrainer.train` directly on the same sample.

The stage streams and samples the components, trains, writes the model and evaluates on the held-out
slice; the baseline trains on the stage's own sample, held in a list beforehand (untimed), with
the same options: what a user calling SentencePiece by hand would run. Goal: stage <= 1.15x baseline.

    uv run python benchmarks/tokenizer_speed.py [--vocab 8000] [--repeats 1] [--files a.jsonl.gz ...]

Reads the dev corpora in ../shared/data (or $STAGE2_SHARED_DATA); writes benchmarks/results/tokenizer_speed.md
and .json (headline numbers).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sentencepiece as spm  # noqa: E402

import stage2.main  # noqa: E402
from benchmarks.common import machine, md_table, shared_data_dir, write_results  # noqa: E402
from stage2.tokenizer import train as tok_train
from stage2.stages import tokenizer as tokenizer_stage  # noqa: E402
from stage2.runtime.run import start_run  # noqa: E402

DEFAULT_FILES = ["en_web_stackexchange_dev.jsonl.gz", "en_foldoc_dev.jsonl.gz", "multiling_tldr_dev.jsonl.gz"]


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (SentencePiece threads included)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_stage(run) -> tuple:
    t0, c0 = time.perf_counter(), cpu_seconds()
    tokenizer_stage.run(run)
    run.executor.close()  # reaps the workers, so their CPU time is counted
    return time.perf_counter() - t0, cpu_seconds() - c0


def time_direct(sentences: list, prefix: Path, t) -> tuple:
    options = t.trainer_options()
    spm.set_random_generator_seed(t.seed)
    t0, c0 = time.perf_counter(), cpu_seconds()
    # From a list in memory: the lossless recipe's training pieces hold newlines, which a text file cannot.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_prefix=str(prefix), **options)
    return time.perf_counter() - t0, cpu_seconds() - c0


def sample_sentences(run) -> list:
    """The stage's training sample as the pieces of text it hands to SentencePiece."""
    settings = run.cfg.tokenizer
    samples = tokenizer_stage.collect_samples(run, settings)
    texts = (t for s in samples for t in s.train_texts)
    return list(tok_train.sentence_stream(texts, settings.max_sentence_length, tok_train.SentenceCounter(), settings.keep_newlines))


def write_parts(folder: Path, paths) -> Path:
    """The input files as a filter run's parquet parts (what the pipeline's tokenizer step reads)."""
    import json

    from stage2.io import parts
    from stage2.config import DatasetConfig
    from stage2.io.sources import component_name, iter_documents, resolve_components

    manifest = {"components": {}}
    for spec in resolve_components(DatasetConfig(paths=[str(p) for p in paths]), str(folder)):
        docs = list(iter_documents(spec))
        path = parts.part_path(folder, spec.name, 0, 0)
        parts.write_table(path, parts.docs_to_table(docs))
        manifest["components"][component_name(str(spec.files[0]))] = {"parts": [str(path.relative_to(folder))], "kept": len(docs)}
    (folder / parts.FILTERED_DIR / parts.MANIFEST).write_text(json.dumps(manifest))
    return folder


def make_run(folder: Path, paths, vocab: int, workers: int, threads: int, input_run: Path = None):
    recipe = stage2.main.compose_recipe(
        [
            "stage=tokenizer",
            "dataset=files",
            f"dataset.paths=[{','.join(str(p) for p in paths)}]",
            f"executor.workers={workers}",
            f"runs_index={folder.parent / 'runs.jsonl'}",
            f"tokenizer.vocab_size={vocab}",
            f"tokenizer.num_threads={threads}",
            *([f"tokenizer.input_run={input_run}"] if input_run else []),
        ],
        str(folder.parent),
    )
    return start_run(folder, recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--files", nargs="*", default=DEFAULT_FILES)
    args = parser.parse_args()
    paths = [shared_data_dir() / f for f in args.files]

    rows, ratios, cpu_ratios, shares = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sentences: list = []  # the stage's sample, built after the first stage run (below)
        for rep in range(args.repeats):
            run = make_run(root / f"stage{rep}", paths, args.vocab, args.workers, args.threads)
            t = run.cfg.tokenizer
            # Odd repeats run the baseline first, so neither side always gets the calmer machine.
            if rep % 2 == 1:
                direct_s, direct_cpu = time_direct(sentences, root / "direct", t)
                stage_s, stage_cpu = time_stage(run)
            else:
                stage_s, stage_cpu = time_stage(run)
                if rep == 0:
                    # Built after the first stage run, which thus runs cold (pays the one-off `datasets` import).
                    sentences = sample_sentences(run)
                direct_s, direct_cpu = time_direct(sentences, root / "direct", t)
            stats = run.stage_stats("tokenizer")

            # Same learned vocabulary? (the file-trained model embeds its paths, so compare pieces)
            ours = spm.SentencePieceProcessor(model_file=str(run.dir / stats["model"]))
            theirs = spm.SentencePieceProcessor(model_file=str(root / "direct.model"))
            same = [ours.id_to_piece(i) for i in range(ours.get_piece_size())] == [theirs.id_to_piece(i) for i in range(theirs.get_piece_size())]

            ratio, cpu_ratio = stage_s / direct_s, stage_cpu / direct_cpu
            ratios.append(ratio)
            sec = stats["seconds"]
            cpu_ratios.append(cpu_ratio)
            overhead = stage_s - sec["train"]
            shares.append(overhead / sec["train"])
            rows.append([rep, "stage" if rep % 2 == 0 else "direct", f"{overhead:.2f}", f"{overhead / sec['train']:.3f}", stats["sample"]["docs"], stats["sample"]["sentences"], f"{stats['sample']['bytes'] / 1e6:.2f}", f"{sec['sample']:.2f}", f"{sec['train']:.2f}", f"{sec['evaluate']:.2f}", f"{stage_s:.2f}", f"{direct_s:.2f}", f"{ratio:.3f}", f"{stage_cpu:.1f}", f"{direct_cpu:.1f}", f"{cpu_ratio:.3f}", same])
            print(f"repeat {rep}: stage {stage_s:.2f}s (sample {sec['sample']:.2f}, train {sec['train']:.2f}, eval {sec['evaluate']:.2f}); direct {direct_s:.2f}s; "
                  f"wall ratio {ratio:.3f}; cpu {stage_cpu:.1f}s vs {direct_cpu:.1f}s, ratio {cpu_ratio:.3f}; same pieces: {same}; load {os.getloadavg()[0]:.1f}", flush=True)

        # The pipeline's path: the same documents as filtered parquet parts (no `datasets` reading).
        parts_dir = write_parts(root / "filtered_run", paths)
        parts_ratios = []
        for rep in range(args.repeats):
            run = make_run(root / f"parts{rep}", paths, args.vocab, args.workers, args.threads, input_run=parts_dir)
            stage_s, _ = time_stage(run)
            direct_s, _ = time_direct(sentences, root / "direct", run.cfg.tokenizer)
            parts_ratios.append(stage_s / direct_s)
            print(f"parts repeat {rep}: stage {stage_s:.2f}s, direct {direct_s:.2f}s, ratio {stage_s / direct_s:.3f}", flush=True)

    header = ["repeat", "first", "stage overhead s", "overhead / train", "train docs", "sentences", "MB", "stage: sample s", "stage: train s", "stage: eval s", "stage wall s", "direct wall s", "wall ratio", "stage CPU s", "direct CPU s", "CPU ratio", "same pieces"]
    report = "\n".join(
        [
            "# Tokenizer stage vs direct SentencePiece training",
            "",
            f"Machine: {machine()} (shared with other jobs: timings are noisy; compare the ratio within a run).",
            f"Command: `uv run python benchmarks/tokenizer_speed.py --vocab {args.vocab} --repeats {args.repeats} --workers {args.workers} --threads {args.threads}`",
            f"Inputs: {', '.join(args.files)} (shared dev corpora), the default recipe (lossless SentencePiece BPE), vocab {args.vocab}, num_threads {args.threads}, executor.workers {args.workers}, other options at their defaults.",
            "",
            "Stage = `stage2.stages.tokenizer.run` (stream + sample every component, train from an iterator, write .model/.vocab, "
            "evaluate the held-out slice). Direct = `SentencePieceTrainer.train(sentence_iterator=<the same sample, in a list>, ...)` "
            "with the same options; building that list is not timed.",
            "",
            md_table(header, rows),
            "",
            f"Wall ratio stage / direct: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}; goal <= 1.15). "
            f"CPU ratio (process + reaped workers): {', '.join(f'{r:.3f}' for r in cpu_ratios)} (median {statistics.median(cpu_ratios):.3f}).",
            f"Stage overhead (stage wall time outside SentencePiece training: sampling, writing, evaluation) / its training time: "
            f"{', '.join(f'{r:.3f}' for r in shares)} (median {statistics.median(shares):.3f}); less sensitive to the machine's load "
            "than the ratio of two separate trainings.",
            f"On filtered parquet parts (the pipeline's tokenizer step: `tokenizer.input_run=<filter run>`, same documents, "
            f"so the same sample): wall ratio {', '.join(f'{r:.3f}' for r in parts_ratios)} (median {statistics.median(parts_ratios):.3f}).",
            f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
            "",
        ]
    )
    write_results("tokenizer_speed", report, {
        "vocab": args.vocab, "repeats": args.repeats, "workers": args.workers, "threads": args.threads, "files": args.files,
        "wall_ratio": round(statistics.median(ratios), 4), "wall_ratios": [round(r, 4) for r in ratios],
        "wall_ratio_parts": round(statistics.median(parts_ratios), 4),
        "cpu_ratio": round(statistics.median(cpu_ratios), 4), "overhead_share": round(statistics.median(shares), 4),
        "load_end": os.getloadavg()[0],
    })
    print(report)


if __name__ == "__main__":
    main()
