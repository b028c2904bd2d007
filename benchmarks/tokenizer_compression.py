"""Bytes per token of stage2's tokenizer recipes next to an HF `tokenizers` ByteLevel BPE (GPT-2's scheme).

All tokenizers train on the same sample (the tokenizer stage's own, from a filter run of the embedded
sample mixture) at the same vocabulary size, and are measured on the same held-out documents; the
share of those documents that decode back to exactly their text is given for each.

    uv run python -m benchmarks.tokenizer_compression [--vocab 8000]

Writes benchmarks/results/tokenizer_compression.md and .json. Goal (issue #13): the default recipe at
>= 0.97x the ByteLevel BPE's bytes/token on every component, lossless.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import sentencepiece as spm

import stage2.main
from benchmarks.common import machine, md_table, write_results
from stage2.tokenizer import train as tok_train
from stage2.stages import tokenizer as tokenizer_stage
from stage2.runtime.run import Run, start_run

RECIPES = {"default (bpe)": [], "tokenizer=unigram": ["tokenizer=unigram"], "tokenizer=lossy (old)": ["tokenizer=lossy"]}


def bytelevel_bpe(texts, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def measure(encode, decode, texts):
    ids = [encode(t) for t in texts]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    exact = sum(decode(i) == t for i, t in zip(ids, texts))
    return n_bytes / sum(len(i) for i in ids), exact / len(texts)


def filter_sample(root: Path) -> Path:
    """The embedded sample, filtered once: the tokenizers compared train on its parts."""
    filtered = root / "filter"
    subprocess.run([str(Path(sys.executable).parent / "stage2"), "stage=filter", f"hydra.run.dir={filtered}",
                    f"runs_index={root}/runs.jsonl"], check=True, capture_output=True, cwd=root)
    return filtered


def tokenizer_run(root: Path, filtered: Path, vocab: int, overrides: List[str], folder: str) -> Run:
    """A tokenizer run (not started training) on the filtered sample, one worker."""
    recipe = stage2.main.compose_recipe(
        ["stage=tokenizer", f"tokenizer.input_run={filtered}", f"tokenizer.vocab_size={vocab}",
         f"runs_index={root}/runs.jsonl", "executor.workers=1", *overrides], str(root))
    return start_run(root / folder, recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        filtered = filter_sample(root)
        results, seconds = {}, {}
        samples = None
        for name, overrides in RECIPES.items():
            run = tokenizer_run(root, filtered, args.vocab, list(overrides), name.split()[0].replace("=", "_"))
            t = run.cfg.tokenizer
            samples = tokenizer_stage.collect_samples(run, t)
            run.executor.close()
            texts = (t for s in samples for t in s.train_texts)
            started = time.perf_counter()
            sentences = tok_train.sentence_stream(texts, t.max_sentence_length, tok_train.SentenceCounter(), t.keep_newlines)
            model = tok_train.train_model(sentences, t.trainer_options(), t.seed)
            seconds[name] = time.perf_counter() - started
            sp = spm.SentencePieceProcessor(model_proto=model)
            results[name] = {s.component: measure(sp.encode, sp.decode, s.eval_texts) for s in samples}
        started = time.perf_counter()
        hf = bytelevel_bpe((t for s in samples for t in s.train_texts), args.vocab)
        seconds["ByteLevel BPE (tokenizers)"] = time.perf_counter() - started
        results["ByteLevel BPE (tokenizers)"] = {
            s.component: measure(lambda t: hf.encode(t).ids, hf.decode, s.eval_texts) for s in samples
        }
    components = [s.component for s in samples]
    peer = results["ByteLevel BPE (tokenizers)"]
    rows = [[name, f"{seconds[name]:.1f}", *(f"{r[c][0]:.3f} ({r[c][0] / peer[c][0]:.3f}x)" for c in components),
             *(f"{r[c][1]:.3f}" for c in components)] for name, r in results.items()]
    ratios = {c: round(results["default (bpe)"][c][0] / peer[c][0], 4) for c in components}
    report = "\n".join([
        "# Tokenizer compression: stage2 recipes vs an HF ByteLevel BPE",
        "",
        f"Machine: {machine()}. Command: `uv run python -m benchmarks.tokenizer_compression --vocab {args.vocab}`.",
        f"Sample: the tokenizer stage's sample of a default filter run of the embedded sample mixture; vocabulary {args.vocab} "
        "for every tokenizer (specials and, for SentencePiece, the 256 byte pieces included); measured on the held-out documents.",
        "Cells: bytes/token (ratio to the ByteLevel BPE); then the share of held-out documents that decode to exactly their text.",
        "",
        md_table(["tokenizer", "train s", *(f"{c} bytes/token" for c in components), *(f"{c} lossless" for c in components)], rows),
        "",
        f"Default recipe / ByteLevel BPE: {', '.join(f'{c} {v:.3f}x' for c, v in ratios.items())} (goal >= 0.97x on every component).",
        "",
    ])
    write_results("tokenizer_compression", report, {"vocab": args.vocab, "default_vs_bytelevel": ratios,
                                                    "lossless_default": {c: results['default (bpe)'][c][1] for c in components}})
    print(report)


if __name__ == "__main__":
    main()
