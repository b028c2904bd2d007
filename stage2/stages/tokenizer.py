"""Tokenizer stage: sample every component, train SentencePiece, evaluate on held-out documents,
export tokenizer.json. The cores live in stage2/tokenizer/ (sample, train, evaluate, export).

Every phase runs as executor tasks, so the driver only plans and merges counts:

* sampling: one task per group of partitions (filtered parts grouped by bytes, in order; raw units
  as the filter plans them); each writes its candidates to `tokenizer/.work/` and returns counts;
* training: one task reads the final pass's candidates, merges them into the sample, trains with the
  recipe's `tokenizer.num_threads`, and writes the model, its .vocab and tokenizer.json, then
  `TRAIN_MARKER` (stage2/runtime/tasks.py), so a resume keeps a finished model;
* evaluation: one task per component on its held-out candidates; the driver merges the counts in
  manifest order.

Document text travels only through files in the run folder (a shared filesystem on a Ray cluster),
never through the driver or Ray's object store. `tokenizer/.work/` is removed when the stage ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from stage2.config import BadRecordPolicy, ModelType, TokenizerConfig
from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec
from stage2.runtime.progress import track
from stage2.runtime.run import filtered_source
from stage2.tokenizer import export
from stage2.tokenizer.sample import (
    Bounds, ComponentPlan, ComponentSample, PartitionCounts, component_sample, merge_held, merge_train, quotas,
    read_candidates, sample_partition, sample_passes, write_candidates,
)

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
# In the run folder, written last by a finished training: which model it wrote, and that file's
# fingerprint (a resume keeps the model only while its bytes are those). Not in tokenizer/, which
# holds only what a user loads or uploads.
TRAIN_MARKER = ".tokenizer.done.json"
# Scratch inside tokenizer/ (sampling candidates, the training task's progress line), removed at the end.
WORK_DIR = ".work"
PROGRESS_FILE = "progress.txt"
# Filtered parts are sampled in groups of about this many bytes of parquet (consecutive parts of one
# component): fewer, larger tasks than one per part. Fixed, so it never depends on the machine (nor
# could it change the sample: any grouping merges to the same bottom-k).
SAMPLE_TASK_BYTES = 16 << 20


def model_name(vocab_size: int, model_type: str) -> str:
    """Named after the vocabulary actually trained (fewer pieces than asked with hard_vocab_limit=false)."""
    return f"spm_{int(vocab_size)}_{model_type}"


def write_hf_files(model: bytes, out_dir: Path, model_max_length: int) -> Optional[str]:
    """tokenizer.json and its config files next to the model, when the recipe allows an exact export;
    else why not (for the driver's log: this may run in a worker)."""
    try:
        export.write(model, out_dir, model_max_length)
    except Stage2Error as exc:
        return str(exc).split(": ", 1)[1]
    return None


def finished_model(run_dir: Path, key: str) -> Optional[Path]:
    """The model a previous attempt of this run finished (`TRAIN_MARKER`), if its bytes are still the
    ones it wrote; None: train again (a damaged or missing model, a run from before the marker)."""
    from stage2.runtime.tasks import read_marker

    done = read_marker(run_dir / TRAIN_MARKER, key)
    return run_dir / TOKENIZER_DIR / done["model"] if done is not None else None


def _usage(started: float) -> Dict[str, Any]:
    """This task's CPU seconds since `started` (process_time) and its process's peak RSS and pid."""
    return {
        "cpu_s": time.process_time() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pid": os.getpid(),
    }


@dataclasses.dataclass(frozen=True)
class SampleTask:
    """Some consecutive partitions of one component, sampled in one pass into the files named `out`.

    A partition is (spec for reading it, kind, where): a filtered part ("part", its path), a planned
    range of a raw file ("unit", a plan Unit), or a whole hub component read as one stream ("component", None).
    """

    component: str
    partitions: Tuple[Tuple[ComponentSpec, str, Any], ...]
    skip_bad: bool
    bounds: Bounds
    quota: int
    heldout_percent: int
    eval_docs: int
    seed: int
    out: str  # candidate files' base path (sample.candidate_files)
    # Per partition: the sha256 check a deferred parts check left to the reader (`parts.part_check`), or None.
    checks: Tuple[Optional[Dict[str, str]], ...]


def _partition_documents(spec: ComponentSpec, kind: str, where: Any, skip_bad: bool, check: Optional[Dict[str, str]] = None) -> Iterable[Document]:
    from stage2.io import parts
    from stage2.io.sources import iter_documents, read_unit, usable

    if kind == "part":
        return parts.read_documents(where, check)
    if kind == "unit":
        return usable(read_unit(spec, where), skip_bad)
    return usable(iter_documents(spec), skip_bad)


def _sample_task(task: SampleTask) -> Tuple[str, PartitionCounts, str, Dict[str, Any]]:
    """One group's sample candidates, written next to the run's other scratch (a worker; top level: pickled)."""
    started = time.process_time()
    docs = (doc for (spec, kind, where), check in zip(task.partitions, task.checks) for doc in _partition_documents(spec, kind, where, task.skip_bad, check))
    part = sample_partition(docs, task.bounds, task.quota, task.heldout_percent, task.eval_docs, task.seed)
    write_candidates(task.out, part)
    return task.component, PartitionCounts.of(part), task.out, _usage(started)


def _grouped(partitions: List[Tuple[ComponentSpec, str, Any]]) -> List[Tuple[Tuple[ComponentSpec, str, Any], ...]]:
    """Consecutive filtered parts in groups of about SAMPLE_TASK_BYTES; other partitions one per group."""
    groups: List[List[Tuple[ComponentSpec, str, Any]]] = []
    size = 0
    for partition in partitions:
        spec, kind, where = partition
        n = Path(where).stat().st_size if kind == "part" else None
        if n is None or not groups or groups[-1][0][1] != "part" or size + n > SAMPLE_TASK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(partition)
        size += n or 0
    return [tuple(g) for g in groups]


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


def _mapper(run: Any) -> Any:
    return run.executor.map if run.executor is not None else map


# Less training text than this per piece and the vocabulary is mostly pieces seen once or twice. Measured:
# 1,624 bytes a piece on the embedded sample (8k), 423 at 1 GB of English web text (32k), against 4.9 for a
# 20k BPE on a 98 KB German sample (unigram refused it: at most 4,329 pieces, 23 bytes each), of whose
# pieces 2.8% occurred in the held-out documents.
MIN_SAMPLE_BYTES_PER_PIECE = 50


def sample_to_files(run: Any, t: TokenizerConfig, work: Path, usage: Optional[Dict[str, float]] = None) -> List[ComponentPlan]:
    """Every component's final sampling pass, in manifest order: counts, and the candidate files (under
    `work`) whose merge is its training sample and eval slice (stage2/tokenizer/sample.py: the same
    for any partitioning, grouping and worker count). `usage`, when given, gets the tasks' CPU seconds,
    largest peak RSS, and the passes and tasks run."""
    from stage2.io import parts

    # With workers, each sampling task checks its parts' sha256 as it reads them (nothing outside .work/
    # is written before every task has returned); in-process, the driver hashes them all first.
    with parts.deferred_hashes(run.executor is not None and not run.executor.in_process):
        filtered_dir = filtered_source(run, t.input_run, "tokenizer")
    shares = quotas(run.components, t.samples_per_component, t.sample_by_weight)
    partitions = sample_partitions_of(run, filtered_dir)
    groups = {name: _grouped(found) for name, (found, _) in partitions.items()}
    index = {spec.name: i for i, spec in enumerate(run.components)}
    skip_bad = run.cfg.filter.on_bad_record == BadRecordPolicy.skip
    passes = [0]

    def run_pass(bounds: Dict[str, Bounds]) -> Iterable[Tuple[str, PartitionCounts, str]]:
        passes[0] += 1
        tasks = [
            SampleTask(
                name, group, skip_bad, bounds[name], shares[name], t.heldout_percent, t.eval_docs_per_component, t.seed,
                str(work / f"pass{passes[0]}-c{index[name]:04d}-g{g:05d}"),
                tuple(parts.part_check(where) if kind == "part" else None for _, kind, where in group),
            )
            for name in bounds for g, group in enumerate(groups[name])
        ]
        if usage is not None:
            usage["passes"] = usage.get("passes", 0) + 1
            usage["tasks"] = usage.get("tasks", 0) + len(tasks)
        for name, counts, where, used in track(_mapper(run)(_sample_task, tasks), "tokenizer: sampling", total=len(tasks), unit="task", enabled=run.cfg.progress):
            if usage is not None:
                usage["tasks_cpu_s"] = usage.get("tasks_cpu_s", 0.0) + used["cpu_s"]
                usage["workers_peak_rss_mb"] = max(usage.get("workers_peak_rss_mb", 0.0), used["peak_rss_mb"])
            yield name, counts, where

    expected = {spec.name: partitions[spec.name][1] for spec in run.components}
    plans = sample_passes(expected, shares, t.heldout_percent, t.eval_docs_per_component, run_pass)
    return [plans[spec.name] for spec in run.components]


def collect_samples(run: Any, t: TokenizerConfig, usage: Optional[Dict[str, float]] = None) -> List[ComponentSample]:
    """Every component's training sample and eval slice in memory, in manifest order (for tests and
    benchmarks: the stage itself keeps the texts in files, `sample_to_files`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".tokenizer-sample-", dir=run.dir) as work:
        return [component_sample(plan, read_candidates) for plan in sample_to_files(run, t, Path(work), usage)]


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """The training: its sample is the merge of the candidate files; its outputs go to `run_dir`/tokenizer/.

    `keep`: the file name of a model a previous attempt finished (a resume): rewrite its .vocab and
    tokenizer.json from it instead of training.
    """

    run_dir: str
    key: str
    keep: Optional[str]
    components: Tuple[Tuple[str, int, Tuple[str, ...]], ...]  # (component, quota, candidate files) in manifest order
    options: Dict[str, Any]  # SentencePiece's trainer options (TokenizerConfig.trainer_options), num_threads included
    seed: int
    max_sentence_length: int
    keep_newlines: bool
    model_type: str
    model_max_length: int
    sample_note: str
    sample_capped: bool
    filtered: bool
    progress_seconds: float
    progress_file: str


def _train_task(task: TrainTask) -> Dict[str, Any]:
    """Merge the sample, train (or keep a finished model), write the tokenizer files, then the marker."""
    from stage2.io.files import atomic_write
    from stage2.runtime.tasks import write_marker
    from stage2.tokenizer.train import SentenceCounter, piece_count, sentence_stream, train_model, vocab_text

    started, wall = time.process_time(), time.time()
    out_dir = Path(task.run_dir) / TOKENIZER_DIR

    def texts() -> Iterator[str]:
        for _, quota, files in task.components:
            for _, _, text in merge_train((read_candidates(f, held=False) for f in files), quota):
                yield text

    counter = SentenceCounter()
    sentences = sentence_stream(texts(), task.max_sentence_length, counter, task.keep_newlines)
    if task.keep is not None:
        # Written atomically, so complete; same recipe (checked by start_run), so the same bytes.
        model_path = out_dir / task.keep
        model = model_path.read_bytes()
        hf_problem = write_hf_files(model, out_dir, task.model_max_length)  # made from the model again: a changed tokenizer.json or .vocab cannot stay
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        for _ in sentences:  # only to count the sample
            pass
    else:
        progress = Path(task.progress_file)
        model = train_model(
            sentences, task.options, task.seed, sample_note=task.sample_note, sample_capped=task.sample_capped,
            filtered=task.filtered, progress_seconds=task.progress_seconds,
            progress_emit=lambda line: atomic_write(progress, line, durable=False),  # the driver logs it
        )
        model_path = out_dir / f"{model_name(piece_count(model), task.model_type)}.model"
        atomic_write(model_path, model)
        hf_problem = write_hf_files(model, out_dir, task.model_max_length)
        atomic_write(model_path.with_suffix(".vocab"), vocab_text(model))
        write_marker(Path(task.run_dir) / TRAIN_MARKER, task.key, {"model": model_path.name}, [model_path])  # last: the model is finished
    return {
        "model": model_path.name,
        "pieces": piece_count(model),
        "sentences": counter.sentences,
        "bytes": counter.bytes,
        "hf_problem": hf_problem,
        "seconds": time.time() - wall,
        **_usage(started),
    }


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """One component's evaluation: its eval slice is the merge of the held-out candidate files."""

    component: str
    files: Tuple[str, ...]
    eval_docs: int
    model: str
    tokenizer_json: Optional[str]


def _eval_task(task: EvalTask) -> Tuple[Any, Optional[int], Dict[str, Any]]:
    """(EvalCounts, documents tokenizer.json encodes to the model's ids or None without it, usage)."""
    import sentencepiece as spm

    from stage2.tokenizer.evaluate import evaluate

    started = time.process_time()
    texts = [text for _, _, text in merge_held((read_candidates(f, train=False) for f in task.files), task.eval_docs)]
    sp = spm.SentencePieceProcessor(model_file=task.model)
    counts = evaluate(sp, texts)
    agreed = None
    if task.tokenizer_json is not None:
        from tokenizers import Tokenizer

        agreed = export.agreement(sp, Tokenizer.from_file(task.tokenizer_json), texts)
    return counts, agreed, _usage(started)


@contextlib.contextmanager
def _training_heartbeat(every: float, label: str, progress_file: Path) -> Iterator[None]:
    """Log the training task's progress line (it writes it to `progress_file`) every `every` seconds."""
    if every <= 0:
        yield
        return
    stop, started = threading.Event(), time.time()

    def beat() -> None:
        while not stop.wait(every):
            try:
                line = progress_file.read_text(encoding="utf-8").strip()
            except OSError:  # not written yet
                line = ""
            log.info(line or f"{label}: starting, {time.time() - started:.0f} s elapsed")

    threading.Thread(target=beat, name="tokenizer-progress", daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def run(run: Any) -> Dict[str, Any]:
    from stage2.tokenizer.evaluate import component_metrics

    t: TokenizerConfig = run.cfg.tokenizer
    stats = run.stage_stats("tokenizer")
    started = time.time()
    out_dir = run.dir / TOKENIZER_DIR
    work = out_dir / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)  # what a killed attempt left: sampled again below

    driver_cpu = [time.process_time()]
    usage: Dict[str, float] = {}
    plans = sample_to_files(run, t, work, usage)
    sampled = time.time()
    driver_cpu.append(time.process_time())
    train_docs = sum(p.train_docs for p in plans)
    if train_docs == 0:
        raise Stage2Error(f"tokenizer: no training documents in {', '.join(c.name for c in run.components)} (all empty or held out)")
    requested = t.vocab_size
    previous = finished_model(run.dir, run.digest) if run.cfg.resume else None
    options = t.trainer_options(verbose=run.cfg.verbose)
    label = f"tokenizer: SentencePiece {options['model_type']} {options['vocab_size']}"
    if previous is not None:
        log.info("tokenizer: resume: keeping %s", previous)
    else:
        if not options["byte_fallback"]:
            log.warning(
                "tokenizer: tokenizer.byte_fallback=false: characters outside the vocabulary will encode as <unk>, "
                "and a literal U+2581 (\u2581, SentencePiece's space marker) will decode as a space"
            )
        log.info("tokenizer: training %s %s on %d documents", t.model_type, requested, train_docs)
    task = TrainTask(
        run_dir=str(run.dir),
        key=run.digest,
        keep=previous.name if previous is not None else None,
        components=tuple((p.component, p.quota, tuple(p.partitions)) for p in plans),
        options=options,
        seed=t.seed,
        max_sentence_length=t.max_sentence_length,
        keep_newlines=t.keep_newlines,
        model_type=str(t.model_type),
        model_max_length=run.cfg.model_max_length(),
        sample_note=f" ({train_docs} documents)",
        sample_capped=any(p.docs_seen - p.heldout_docs > p.train_docs for p in plans),
        filtered=bool(t.input_run),
        progress_seconds=float(t.progress_seconds),
        progress_file=str(work / PROGRESS_FILE),
    )
    with _training_heartbeat(float(t.progress_seconds) if previous is None else 0.0, label, work / PROGRESS_FILE):
        trained_by = next(iter(_mapper(run)(_train_task, [task])))
    if previous is None and t.progress_seconds > 0:
        log.info("%s: done in %.0f s", label, trained_by["seconds"])
    if trained_by["hf_problem"]:
        log.warning("tokenizer: no tokenizer.json written: %s", trained_by["hf_problem"])
    model_path = out_dir / trained_by["model"]
    vocab_path = model_path.with_suffix(".vocab")
    trained = time.time()
    driver_cpu.append(time.process_time())
    actual = trained_by["pieces"]
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

    evaluations = list(_mapper(run)(_eval_task, [
        EvalTask(p.component, tuple(p.partitions), p.eval_docs, str(model_path), str(hf_json) if hf_json.exists() else None)
        for p in plans
    ]))
    vocab_size = actual
    components, overall = component_metrics(
        vocab_size, [(p.component, counts, p.docs_seen, p.heldout_docs, p.train_docs) for p, (counts, _, _) in zip(plans, evaluations)]
    )
    if hf_json.exists():
        for p, (counts, agreed, _) in zip(plans, evaluations):
            components[p.component]["hf_exact_share"] = round(agreed / counts.docs, 6) if counts.docs else None
    shutil.rmtree(work, ignore_errors=True)
    evaluated = time.time()
    driver_cpu.append(time.process_time())
    lossy = [c for c, m in components.items() if m["roundtrip_share"] is not None and m["roundtrip_share"] < 1]
    if lossy:
        log.warning(
            "tokenizer: decode(encode(text)) differs from the text on some held-out documents of %s (roundtrip_share in stats.json)%s",
            ", ".join(lossy), "" if t.keep_newlines else "; this recipe squeezes whitespace (tokenizer=lossy)",
        )

    if trained_by["bytes"] < MIN_SAMPLE_BYTES_PER_PIECE * vocab_size:
        used = overall.get("vocab_used_share")
        log.warning(
            "tokenizer: the training sample has %s bytes, %.0f per piece of tokenizer.vocab_size=%d: too little text for so many "
            "pieces%s%s; a smaller vocab_size, or more text, fits better", f"{trained_by['bytes']:,}", trained_by["bytes"] / vocab_size,
            vocab_size, f" ({100 * used:.1f}% of them occur in the held-out documents)" if used is not None else "",
            " (BPE trains every merge asked for, also of pairs the sample holds once)" if t.model_type == ModelType.bpe else "",
        )

    stats.update(
        {
            "model": str(model_path.relative_to(run.dir)),
            "tokenizer_json": str(hf_json.relative_to(run.dir)) if hf_json.exists() else None,
            "vocab_size": vocab_size,
            "vocab_size_requested": requested,
            "model_type": str(t.model_type),
            "num_threads": t.num_threads,
            "resumed": previous is not None,
            "sample": {
                "docs": train_docs,
                "sentences": trained_by["sentences"],
                "bytes": trained_by["bytes"],
                # SentencePiece keeps at most input_sentence_size of them (a seeded random subset if shuffled).
                "sentences_trained": min(trained_by["sentences"], t.input_sentence_size),
            },
            "components": components,
            "overall": overall,
            "seconds": {
                "sample": round(sampled - started, 3),
                "train": round(trained - sampled, 3),
                "evaluate": round(evaluated - trained, 3),
                "total": round(evaluated - started, 3),
            },
            # CPU by phase. Every phase runs as executor tasks (with one local worker, in this process):
            # the driver plans and merges counts; the training task's own CPU and process are under train_task.
            "resources": {
                "driver_cpu_s": {
                    phase: round(b - a, 3) for phase, a, b in zip(("sample", "train", "evaluate"), driver_cpu, driver_cpu[1:])
                },
                "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "driver_pid": os.getpid(),
                "sample_tasks_cpu_s": round(usage.get("tasks_cpu_s", 0.0), 3),
                "workers_peak_rss_mb": round(max([usage.get("workers_peak_rss_mb", 0.0), trained_by["peak_rss_mb"], *(u["peak_rss_mb"] for _, _, u in evaluations)]), 1),
                "sample_passes": int(usage.get("passes", 0)),
                "sample_tasks": int(usage.get("tasks", 0)),
                "train_task": {
                    "pid": trained_by["pid"],
                    "cpu_s": round(trained_by["cpu_s"], 3),
                    "peak_rss_mb": round(trained_by["peak_rss_mb"], 1),
                },
                "evaluate_tasks_cpu_s": round(sum(u["cpu_s"] for _, _, u in evaluations), 3),
            },
        }
    )
    return {"vocab_size": vocab_size, "bytes_per_token": stats["overall"]["bytes_per_token"]}
