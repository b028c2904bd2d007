"""Tokenizer stage: sample every component, train SentencePiece, evaluate on held-out documents,
export tokenizer.json. The cores live in stage2/tokenizer/ (sample, train, evaluate, export).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from stage2.config import BadRecordPolicy, TokenizerConfig
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec
from stage2.runtime.progress import track
from stage2.runtime.run import filtered_source
from stage2.tokenizer import export
from stage2.tokenizer.evaluate import evaluate_samples
from stage2.tokenizer.sample import ComponentSample, quotas, sample_documents
from stage2.tokenizer.train import SentenceCounter, piece_count, sentence_stream, train_model, vocab_text

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
# In the run folder, written last by a finished training: which model it wrote, and that file's
# fingerprint (a resume keeps the model only while its bytes are those). Not in tokenizer/, which
# holds only what a user loads or uploads.
TRAIN_MARKER = ".tokenizer.done.json"




def model_name(vocab_size: int, model_type: str) -> str:
    """Named after the vocabulary actually trained (fewer pieces than asked with hard_vocab_limit=false)."""
    return f"spm_{int(vocab_size)}_{model_type}"


def write_hf_files(model: bytes, out_dir: Path, model_max_length: int) -> None:
    """tokenizer.json and its config files next to the model, when the recipe allows an exact export."""
    try:
        export.write(model, out_dir, model_max_length)
    except Stage2Error as exc:
        log.warning("tokenizer: no tokenizer.json written: %s", str(exc).split(": ", 1)[1])


def finished_model(run_dir: Path, key: str) -> Optional[Path]:
    """The model a previous attempt of this run finished (`TRAIN_MARKER`), if its bytes are still the
    ones it wrote; None: train again (a damaged or missing model, a run from before the marker)."""
    from stage2.runtime.tasks import read_marker

    done = read_marker(run_dir / TRAIN_MARKER, key)
    return run_dir / TOKENIZER_DIR / done["model"] if done is not None else None


def _sample_task(task: Tuple[Any, ComponentSpec, Optional[Path], int, int, int, int]) -> ComponentSample:
    """One component's sample, in a worker (top level and plain arguments: it is pickled)."""
    from stage2.io import parts

    run, spec, filtered_dir, quota, heldout_percent, eval_docs, seed = task
    docs = parts.component_documents(spec, filtered_dir, skip_bad=run.cfg.filter.on_bad_record == BadRecordPolicy.skip)
    return sample_documents(spec.name, docs, quota, heldout_percent, eval_docs, seed)


def collect_samples(run: Any, t: TokenizerConfig) -> List[ComponentSample]:
    """Every component's training sample and eval slice, in manifest order (parallel over components)."""
    filtered_dir = filtered_source(run, t.input_run, "tokenizer")
    shares = quotas(run.components, t.samples_per_component, t.sample_by_weight)
    light = dataclasses.replace(run, executor=None)  # workers need no pool, and a pool does not pickle
    tasks = [
        (light, spec, filtered_dir, shares[spec.name], t.heldout_percent, t.eval_docs_per_component, t.seed)
        for spec in run.components
    ]
    mapper = run.executor.map if run.executor is not None else map
    return list(track(mapper(_sample_task, tasks), "tokenizer: sampling", total=len(tasks), unit="component", enabled=run.cfg.progress))


def run(run: Any) -> Dict[str, Any]:
    from stage2.io.files import atomic_write
    from stage2.runtime.tasks import write_marker

    t: TokenizerConfig = run.cfg.tokenizer
    stats = run.stage_stats("tokenizer")
    started = time.time()

    samples = collect_samples(run, t)
    sampled = time.time()
    train_docs = sum(len(s.train_texts) for s in samples)
    if train_docs == 0:
        raise Stage2Error(f"tokenizer: no training documents in {', '.join(c.name for c in run.components)} (all empty or held out)")
    counter = SentenceCounter()
    texts = (text for s in samples for text in s.train_texts)
    sentences = sentence_stream(texts, t.max_sentence_length, counter, t.keep_newlines)
    out_dir = run.dir / TOKENIZER_DIR
    requested = t.vocab_size
    previous = finished_model(run.dir, run.digest) if run.cfg.resume else None
    resumed = previous is not None
    if previous is not None:
        # Written atomically, so complete; same recipe (checked by start_run), so the same bytes.
        log.info("tokenizer: resume: keeping %s", previous)
        model_path = previous
        model = model_path.read_bytes()
        write_hf_files(model, out_dir, run.cfg.model_max_length())  # made from the model again: a changed tokenizer.json or .vocab cannot stay
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        for _ in sentences:  # only to count the sample
            pass
    else:
        options = t.trainer_options(verbose=run.cfg.verbose)
        if not options["byte_fallback"]:
            log.warning(
                "tokenizer: tokenizer.byte_fallback=false: characters outside the vocabulary will encode as <unk>, "
                "and a literal U+2581 (\u2581, SentencePiece's space marker) will decode as a space"
            )
        log.info("tokenizer: training %s %s on %d documents", t.model_type, requested, train_docs)
        capped = any(s.docs_seen - s.heldout_docs > len(s.train_texts) for s in samples)
        model = train_model(
            sentences, options, t.seed, sample_note=f" ({train_docs} documents)",
            sample_capped=capped, filtered=bool(t.input_run),
            progress_seconds=float(t.progress_seconds),
        )
        model_path = out_dir / f"{model_name(piece_count(model), str(t.model_type))}.model"
        atomic_write(model_path, model)
        write_hf_files(model, out_dir, run.cfg.model_max_length())
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        write_marker(run.dir / TRAIN_MARKER, run.digest, {"model": model_path.name}, [model_path])  # last: the model is finished
    vocab_path = model_path.with_suffix(".vocab")
    trained = time.time()
    actual = piece_count(model)
    if actual < requested:
        log.warning(
            "tokenizer: trained %d pieces, fewer than tokenizer.vocab_size=%d (hard_vocab_limit=false and the "
            "sample supports no more); wrote %s", actual, requested, model_path.name,
        )
    run.add_artifact(model_path)
    run.add_artifact(vocab_path)
    hf_json = out_dir / export.TOKENIZER_JSON
    for name in export.EXPORT_FILES:
        if (out_dir / name).exists():
            run.add_artifact(out_dir / name)

    vocab_size, components, overall = evaluate_samples(model, samples)
    if hf_json.exists():
        import sentencepiece as spm
        from tokenizers import Tokenizer

        sp, hf = spm.SentencePieceProcessor(model_proto=model), Tokenizer.from_file(str(hf_json))
        for s in samples:
            components[s.component]["hf_exact_share"] = (
                round(export.agreement(sp, hf, s.eval_texts) / len(s.eval_texts), 6) if s.eval_texts else None
            )
    evaluated = time.time()
    lossy = [c for c, m in components.items() if m["roundtrip_share"] is not None and m["roundtrip_share"] < 1]
    if lossy:
        log.warning(
            "tokenizer: decode(encode(text)) differs from the text on some held-out documents of %s (roundtrip_share in stats.json)%s",
            ", ".join(lossy), "" if t.keep_newlines else "; this recipe squeezes whitespace (tokenizer=lossy)",
        )

    stats.update(
        {
            "model": str(model_path.relative_to(run.dir)),
            "tokenizer_json": str(hf_json.relative_to(run.dir)) if hf_json.exists() else None,
            "vocab_size": vocab_size,
            "vocab_size_requested": requested,
            "model_type": str(t.model_type),
            "num_threads": t.num_threads,
            "resumed": resumed,
            "sample": {
                "docs": train_docs,
                "sentences": counter.sentences,
                "bytes": counter.bytes,
                # SentencePiece keeps at most input_sentence_size of them (a seeded random subset if shuffled).
                "sentences_trained": min(counter.sentences, t.input_sentence_size),
            },
            "components": components,
            "overall": overall,
            "seconds": {
                "sample": round(sampled - started, 3),
                "train": round(trained - sampled, 3),
                "evaluate": round(evaluated - trained, 3),
                "total": round(evaluated - started, 3),
            },
        }
    )
    return {"vocab_size": vocab_size, "bytes_per_token": stats["overall"]["bytes_per_token"]}
