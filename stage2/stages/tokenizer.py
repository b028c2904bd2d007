"""Tokenizer stage: sample every component, train SentencePiece, evaluate on held-out documents,
export tokenizer.json. The cores live in stage2/tokenizer/ (sample, train, evaluate, export).
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from stage2.config import BadRecordPolicy, TokenizerConfig
from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec
from stage2.runtime.progress import track
from stage2.runtime.run import filtered_source
from stage2.tokenizer import export
from stage2.tokenizer.evaluate import evaluate_samples
from stage2.tokenizer.sample import Bounds, ComponentSample, PartitionSample, quotas, sample_partition, sample_partitions
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


def _partition_task(task: Tuple[ComponentSpec, str, Any, bool, Bounds, int, int, int, int]) -> Tuple[str, PartitionSample, Dict[str, float]]:
    """One partition's sample candidates, in a worker (top level and plain arguments: it is pickled).

    A partition is a filtered part ("part", its path), a planned range of a raw file ("unit", a plan
    Unit), or a whole hub component read as one stream ("component", None).
    """
    from stage2.io import parts
    from stage2.io.sources import iter_documents, read_unit, usable

    started = time.process_time()
    spec, kind, where, skip_bad, bounds, quota, heldout_percent, eval_docs, seed = task
    if kind == "part":
        docs: Iterable[Document] = parts.read_documents(where)
    elif kind == "unit":
        docs = usable(read_unit(spec, where), skip_bad)
    else:
        docs = usable(iter_documents(spec), skip_bad)
    part = sample_partition(docs, bounds, quota, heldout_percent, eval_docs, seed)
    usage = {"cpu_s": time.process_time() - started, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return spec.name, part, usage


def sample_partitions_of(run: Any, filtered_dir: Optional[Path]) -> Dict[str, Tuple[List[Tuple[ComponentSpec, str, Any]], Optional[int]]]:
    """component -> (its partitions as (spec for the task, kind, where), its expected document count or None).

    Filtered parts are the partitions of filtered input; raw local files are cut as the filter cuts
    them (stage2/io/sources.py, from the start-up scan); a hub component is one stream.
    """
    from stage2.io import parts
    from stage2.io.sources import component_files, counter_on, plan_component

    out: Dict[str, Tuple[List[Tuple[ComponentSpec, str, Any]], Optional[int]]] = {}
    if filtered_dir is not None:
        manifest = parts.read_manifest(filtered_dir)
        for spec in run.components:
            task_spec = dataclasses.replace(spec, files=[], id_names={}, scans={})  # (parts carry their own ids)
            entry = manifest["components"][spec.name]
            out[spec.name] = ([(task_spec, "part", Path(filtered_dir) / rel) for rel in entry["parts"]], entry.get("kept"))
        return out
    counter = counter_on(run.executor)
    for index, spec in enumerate(run.components):
        if spec.is_hub:
            out[spec.name] = ([(spec, "component", None)], None)
            continue
        spec, files = component_files(spec)
        units = plan_component(spec, index, files, run.inputs, run.cfg.dataset.partition_size, counter)
        counts = [u.count for u in units]
        out[spec.name] = (
            [(spec.for_file(u.file) if u.file else spec, "unit", u) for u in units],
            None if None in counts else sum(counts),
        )
    return out


def collect_samples(run: Any, t: TokenizerConfig, usage: Optional[Dict[str, float]] = None) -> List[ComponentSample]:
    """Every component's training sample and eval slice, in manifest order, sampled in parallel over
    partitions (stage2/tokenizer/sample.py: the same sample for any partitioning and worker count).
    `usage`, when given, gets the tasks' CPU seconds, largest peak RSS, and the passes and tasks run."""
    filtered_dir = filtered_source(run, t.input_run, "tokenizer")
    shares = quotas(run.components, t.samples_per_component, t.sample_by_weight)
    partitions = sample_partitions_of(run, filtered_dir)
    skip_bad = run.cfg.filter.on_bad_record == BadRecordPolicy.skip
    mapper = run.executor.map if run.executor is not None else map

    def run_pass(bounds: Dict[str, Bounds]) -> Iterable[Tuple[str, PartitionSample]]:
        tasks = [
            (spec, kind, where, skip_bad, bounds[name], shares[name], t.heldout_percent, t.eval_docs_per_component, t.seed)
            for name in bounds for spec, kind, where in partitions[name][0]
        ]
        if usage is not None:
            usage["passes"] = usage.get("passes", 0) + 1
            usage["tasks"] = usage.get("tasks", 0) + len(tasks)
        for name, part, used in track(mapper(_partition_task, tasks), "tokenizer: sampling", total=len(tasks), unit="partition", enabled=run.cfg.progress):
            if usage is not None:
                usage["tasks_cpu_s"] = usage.get("tasks_cpu_s", 0.0) + used["cpu_s"]
                usage["workers_peak_rss_mb"] = max(usage.get("workers_peak_rss_mb", 0.0), used["peak_rss_mb"])
            yield name, part

    expected = {spec.name: partitions[spec.name][1] for spec in run.components}
    samples = sample_partitions(expected, shares, t.heldout_percent, t.eval_docs_per_component, run_pass)
    return [samples[spec.name] for spec in run.components]


def run(run: Any) -> Dict[str, Any]:
    from stage2.io.files import atomic_write
    from stage2.runtime.tasks import write_marker

    t: TokenizerConfig = run.cfg.tokenizer
    stats = run.stage_stats("tokenizer")
    started = time.time()

    driver_cpu = [time.process_time()]
    usage: Dict[str, float] = {}
    samples = collect_samples(run, t, usage)
    sampled = time.time()
    driver_cpu.append(time.process_time())
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
    driver_cpu.append(time.process_time())
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
    driver_cpu.append(time.process_time())
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
            # CPU by phase: sampling is spread over the workers; training and evaluation run in this
            # process (SentencePiece's threads), a cost fixed by the sample, not by the input.
            "resources": {
                "driver_cpu_s": {
                    phase: round(b - a, 3) for phase, a, b in zip(("sample", "train", "evaluate"), driver_cpu, driver_cpu[1:])
                },
                "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "sample_tasks_cpu_s": round(usage.get("tasks_cpu_s", 0.0), 3),
                "workers_peak_rss_mb": round(usage.get("workers_peak_rss_mb", 0.0), 1),
                "sample_passes": int(usage.get("passes", 0)),
                "sample_tasks": int(usage.get("tasks", 0)),
            },
        }
    )
    return {"vocab_size": vocab_size, "bytes_per_token": stats["overall"]["bytes_per_token"]}
