"""SentencePiece unigram trainer options vs training time and held-out compression, on the sample recipe.

The tokenizer stage's own sample of a default filter run of the embedded sample mixture (every
`--step`-th training piece, to keep the run short), trained at `--vocab` with the stage's lossless
options plus each variant's; held-out bytes/token per component next to BPE and an HF ByteLevel BPE.
Variants run one after the other (compare CPU seconds: the machine is shared).

    uv run python -m benchmarks.unigram_options [--vocab 8000] [--step 4]

Writes benchmarks/results/unigram_options.md and .json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

from benchmarks.common import machine, md_table, write_results
from benchmarks.tokenizer_compression import bytelevel_bpe, filter_sample, measure, tokenizer_run
from stage2.stages import tokenizer as tokenizer_stage
from stage2.tokenizer import train as tok_train

VARIANTS = {
    "bpe (default)": {"model_type": "bpe"},
    "unigram": {"model_type": "unigram"},
    "unigram seed_sentencepiece_size=100000, shrinking_factor=0.5, num_sub_iterations=1":
        {"model_type": "unigram", "seed_sentencepiece_size": 100000, "shrinking_factor": 0.5, "num_sub_iterations": 1},
    "unigram seed_sentencepiece_size=100000": {"model_type": "unigram", "seed_sentencepiece_size": 100000},
    "unigram shrinking_factor=0.5": {"model_type": "unigram", "shrinking_factor": 0.5},
    "unigram num_sub_iterations=1": {"model_type": "unigram", "num_sub_iterations": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--step", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        filtered = filter_sample(root)
        run = tokenizer_run(root, filtered, args.vocab, [], "tok")
        t = run.cfg.tokenizer
        samples = tokenizer_stage.collect_samples(run, t)
        run.executor.close()
    texts = (x for s in samples for x in s.train_texts)
    sentences = list(tok_train.sentence_stream(texts, t.max_sentence_length, tok_train.SentenceCounter(), t.keep_newlines))[:: args.step]
    chars = sum(map(len, sentences))
    results = {}
    for name, extra in VARIANTS.items():
        started, cpu = time.perf_counter(), time.process_time()
        model = tok_train.train_model(iter(sentences), {**t.trainer_options(), **extra}, t.seed)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        sp = spm.SentencePieceProcessor(model_proto=model)
        results[name] = {"wall": wall, "cpu": cpu, "bpt": {s.component: measure(sp.encode, sp.decode, s.eval_texts)[0] for s in samples}}
        print(name, results[name], flush=True)
    hf = bytelevel_bpe((x for s in samples for x in s.train_texts), args.vocab)
    anchor = {s.component: measure(lambda x: hf.encode(x).ids, hf.decode, s.eval_texts)[0] for s in samples}
    rows = [[name, f"{r['cpu']:.1f}", f"{r['wall']:.1f}", *(f"{r['bpt'][c]:.3f} ({r['bpt'][c] / anchor[c]:.3f}x)" for c in anchor)]
            for name, r in results.items()]
    report = "\n".join([
        "# Unigram trainer options: training time and compression",
        "",
        f"Machine: {machine()} (shared: compare CPU seconds). Command: `uv run python -m benchmarks.unigram_options "
        f"--vocab {args.vocab} --step {args.step}`.",
        f"Training text: every {args.step}th piece of the tokenizer stage's sample of a default filter run of the embedded "
        f"sample ({len(sentences)} pieces, {chars / 1e6:.1f} M characters); bytes/token on the held-out documents "
        "(ratio to an HF ByteLevel BPE trained on the whole sample).",
        "",
        md_table(["recipe", "train CPU s", "train wall s", *(f"{c} bytes/token" for c in anchor)], rows),
        "",
    ])
    write_results("unigram_options", report, {"vocab": args.vocab, "step": args.step, "results": results, "anchor": anchor})
    print(report)


if __name__ == "__main__":
    main()
