"""The shard stage: tokenize every component and pack it into fixed-length `.npy` shards.

Partitions (a filtered part, or `dataset.partition_size` raw documents) are tokenized in parallel by
`run.executor`; each task writes its token stream to `shards/<component>/.work/`. The driver packs
those streams in partition order as they arrive, so the shards are byte-identical whatever the
worker count, and only one shard's worth of tokens (plus the partitions in flight) is in memory.
With one local worker there is no process pool: threads of this process read, encode and pack at
once (`_tokenize_in_process`), writing the same token files and markers, in the same order.

Resume (`resume=true`): a partition is done once its token file and then its done-marker (its stats)
are on disk; the packer writes a checkpoint (`.work/pack.json`) after every full shard, and a token
file is deleted only once a checkpoint lies past its last token. A component is done once its
index.json is written (after its last shard). A resumed run keeps done components, restores the
packer from the checkpoint, reuses done partitions and tokenizes the rest: the same shards as an
uninterrupted run, whatever moment the kill came. Temporary files (`.name.tmp-<pid>`) and token
files without a marker are never taken for outputs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from stage2.io import parts
from stage2.config import BadRecordPolicy, Remainder, ShardConfig
from stage2.errors import Stage2Error
from stage2.runtime.executor import LocalExecutor
from stage2.runtime.progress import Progress
from stage2.io.files import atomic_write, is_temporary, write_array
from stage2.runtime.tasks import read_marker, read_state, write_marker
from stage2.runtime.run import Run, atomic_path, file_sha256, filtered_source, write_json
from stage2.shards.format import INDEX, SHARDS_DIR, component_index, is_shard_name, manifest_entry, token_dtype, write_index, write_manifest
from stage2.shards.pack import PackResult, Packer

log = logging.getLogger(__name__)

WORK_DIR = ".work"
PART = "part-{:05d}.bin"
DONE = "part-{:05d}.done.json"  # a partition's done-marker: written after its token file
CHECKPOINT = "pack.json"  # the packer's state after its last full shard
# One worker, in-process: partitions encoded ahead of the packer, enough that the encoder keeps going
# while the packer writes and hashes a full shard (benchmarks/results/code_notes.md).
IN_PROCESS_AHEAD = 3


def resolve_tokenizer(run: Run, setting: Optional[str]) -> Path:
    """`shard.tokenizer` (a .model file or a folder holding one) or this run's tokenizer stage output."""
    if setting:
        path = run.resolve_path(setting).resolve()
        if path.is_dir():
            found = sorted(path.glob("tokenizer/*.model")) or sorted(path.glob("*.model"))
            if len(found) != 1:
                raise Stage2Error(f"shard.tokenizer={setting}: expected one tokenizer/*.model in that folder, found {len(found)}")
            model = found[0]
        elif path.is_file():
            model = path
        else:
            raise Stage2Error(f"shard.tokenizer={setting}: no such file or folder ({path})")
        load_processor(model)
        if run.dir.resolve() in model.parents:
            return model
        # A model from a past run: note that run in this run's lineage.
        for folder in (model.parent, model.parent.parent):
            if (folder / "stats.json").exists() and folder.resolve() != run.dir.resolve():
                run.record_lineage("shard.tokenizer", folder)
                break
        return copy_tokenizer(run, model)
    found = sorted((run.dir / "tokenizer").glob("*.model"))
    if len(found) != 1:
        raise Stage2Error(
            f"{run.dir / 'tokenizer'}: expected one .model from this run's tokenizer stage, found {len(found)};"
            " run stage=tokenizer first or set shard.tokenizer=<model or run folder>"
        )
    run.record_lineage("shard.tokenizer", run.dir, note=f"this run's tokenizer/{found[0].name}")
    return found[0]


def load_processor(model: Path) -> Any:
    """The SentencePiece processor of `model`, or a one-line error naming the file."""
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(model))
    except (RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split()).split("] ")[-1]
        raise Stage2Error(f"{model}: not a SentencePiece model ({reason})") from None


def _copy_file(source: Path, target: Path) -> None:
    """Copy atomically, unless a resumed run already holds the same bytes."""
    data = source.read_bytes()
    if not target.exists() or target.read_bytes() != data:
        atomic_write(target, data)


def copy_tokenizer(run: Run, model: Path) -> Path:
    """Copy a model from elsewhere into this run's tokenizer/ folder, with its tokenizer.json files made
    from the model itself (never copied from beside it: they could be another model's).

    The shards can then be trained on without the other folder; hashes go to stats.
    """
    from stage2.tokenizer import export

    out_dir = run.dir / "tokenizer"
    target = out_dir / model.name
    others = [p for p in out_dir.glob("*.model") if p.name != model.name]
    if others:
        raise Stage2Error(f"{others[0]}: this run has its own tokenizer; shard.tokenizer={model} would be a second one in {out_dir}")
    data = model.read_bytes()
    _copy_file(model, target)
    copied = {target.name: file_sha256(target)}
    made = {}
    try:
        for written in export.write(data, out_dir, run.cfg.model_max_length()):
            made[written.name] = file_sha256(written)
    except Stage2Error as exc:
        log.warning("shard: no tokenizer.json for %s: %s", model, str(exc).split(": ", 1)[1])
    for name in (*copied, *made):
        run.add_artifact(out_dir / name)
    run.stage_stats("shard")["tokenizer_copy"] = {"source": str(model), "copied": copied, "made_here": made}
    log.info("shard: copied %s into %s", model, out_dir)
    return target


def encode_threads(setting: int, workers: int) -> int:
    return setting if setting > 0 else max(1, (os.cpu_count() or 1) // max(1, workers))


# Per worker process: load each model once, not once per partition.
_PROCESSORS: Dict[str, Any] = {}


def _processor(model: str):
    sp = _PROCESSORS.get(model)
    if sp is None:
        import sentencepiece as spm

        sp = _PROCESSORS[model] = spm.SentencePieceProcessor(model_file=model)
    return sp


def read_texts(task: Dict[str, Any]) -> List[str]:
    """A partition's documents: its filtered parquet part, or the raw texts the task carries."""
    if not task.get("part"):
        return task["texts"]
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas in every process.
    return pq.ParquetFile(task["part"]).read(columns=["text"]).column("text").to_pylist()


def encode_partition(task: Dict[str, Any], texts: List[str]) -> np.ndarray:
    """A partition's texts -> its token stream (the shard dtype), in `shard.batch_size` encode calls.

    Held whole: at about 2 bytes a token, far smaller than the texts it comes from.
    """
    from stage2.tokenizer import encoding

    sp = _processor(task["model"])
    dtype = np.dtype(task["dtype"])
    # A literal U+2581 goes in as its byte pieces, so it decodes as itself, not as a space.
    chunks = list(encoding.encode_stream(sp, texts, task["batch_size"], task["num_threads"], task["bos"], task["eos"], dtype))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype)


def save_partition(task: Dict[str, Any], tokens: np.ndarray, docs: int, seconds: float) -> Dict[str, Any]:
    """Write a partition's token file (raw, no header), then its done-marker; the result for the driver.

    `seconds`: the time the partition took before (reading, encoding); the result adds this write's.
    """
    started = time.time()
    out = Path(task["out"])
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            write_array(f, tokens)
    # Last: the partition is done from here on (its key: the tokenizer's bytes and the dtype).
    write_marker(out.parent / DONE.format(task["index"]), partition_key(task["tokenizer_sha256"], tokens.dtype), {"docs": docs, "tokens": len(tokens)}, [out])
    return {"component": task["component"], "index": task["index"], "out": str(out), "docs": docs, "tokens": len(tokens), "seconds": seconds + time.time() - started}


def tokenize_partition(task: Dict[str, Any]) -> Dict[str, Any]:
    """One partition: texts -> token file + done-marker. Runs in a worker."""
    started = time.time()
    texts = read_texts(task)
    tokens = encode_partition(task, texts)
    return save_partition(task, tokens, len(texts), time.time() - started)


@dataclass
class ComponentResume:
    """What a killed run left of one component: its index (finished), packer checkpoint, done partitions."""

    index: Optional[Dict[str, Any]] = None
    checkpoint: Optional[Dict[str, Any]] = None
    done: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # partition -> marker

    @property
    def first(self) -> int:
        """The first partition still to pack: earlier ones are inside the checkpoint's shards."""
        return int(self.checkpoint["partition"]) if self.checkpoint else 0


def partition_key(tokenizer_sha256: str, dtype: np.dtype) -> str:
    """What a partition's token file depends on besides its texts (fixed by the recipe and inputs)."""
    return f"{tokenizer_sha256}:{np.dtype(dtype).str}"


def _shards_intact(out_dir: Path, shards: List[Dict[str, Any]]) -> bool:
    """Whether every shard a checkpoint or index lists still has the sha256 recorded when it was written."""
    return all((out_dir / s["file"]).is_file() and file_sha256(out_dir / s["file"]) == s["sha256"] for s in shards)


def find_resume(out_dir: Path, tok_sha: str, dtype: np.dtype) -> ComponentResume:
    """Outputs a killed run left in `shards/<component>/` that this run may keep: same tokenizer bytes, and
    every file still with the bytes its marker, checkpoint or index recorded (else it is made again)."""
    found = ComponentResume()
    index = read_state(out_dir / INDEX)
    if index and index["tokenizer"]["sha256"] == tok_sha and _shards_intact(out_dir, index["shards"]):
        found.index = index
        return found
    work = out_dir / WORK_DIR
    checkpoint = read_state(work / CHECKPOINT)
    if checkpoint and checkpoint["tokenizer_sha256"] == tok_sha and _shards_intact(out_dir, checkpoint["packer"]["shards"]):
        found.checkpoint = checkpoint
    for marker_path in sorted(work.glob("part-*.done.json")):
        i = int(marker_path.name.split(".")[0].split("-")[1])
        done = read_marker(marker_path, partition_key(tok_sha, dtype))
        if done is not None:
            found.done[i] = done
    if found.checkpoint and found.first not in found.done:
        found.checkpoint = None  # its partition's tokens are gone or changed: pack from the start
    return found


def _tasks(run: Run, filtered: Optional[Path], base: Dict[str, Any], resume: Dict[str, ComponentResume]) -> Iterator[Dict[str, Any]]:
    """One task per filtered part, or per `partition_size` raw documents, components in manifest order.

    On resume, finished components and partitions inside the checkpoint's shards get no task, and done
    partitions a task that only hands back their marker.
    """
    size = run.cfg.dataset.partition_size
    for spec in run.components:
        state = resume.get(spec.name, ComponentResume())
        if state.index is not None:
            yield {"component": spec.name, "end": True, "finished": True}
            continue
        work = run.dir / SHARDS_DIR / spec.name / WORK_DIR
        if filtered is not None:
            sources = ({"part": str(p)} for p in parts.filtered_part_files(filtered, spec.name))
        else:
            docs = (d.text for d in parts.component_documents(spec, None, skip_bad=run.cfg.filter.on_bad_record == BadRecordPolicy.skip))
            sources = ({"texts": list(chunk)} for chunk in iter(lambda: list(itertools.islice(docs, size)), []))
        for i, source in enumerate(sources):
            out = str(work / PART.format(i))
            if i < state.first:
                continue  # packed into the checkpoint's shards (raw text is still read to find later partitions)
            if i in state.done:
                yield {"component": spec.name, "index": i, "out": out, "marker": state.done[i]}
            else:
                yield {**base, **source, "component": spec.name, "index": i, "out": out}
        # A sentinel so the driver knows the component ended even when it had no partition.
        yield {"component": spec.name, "end": True}


def _passthrough(task: Dict[str, Any]) -> Dict[str, Any]:
    if task.get("end"):
        return task
    if "marker" in task:  # done by a killed run: nothing to compute
        marker = task["marker"]
        return {"component": task["component"], "index": task["index"], "out": task["out"], "docs": marker["docs"], "tokens": marker["tokens"], "seconds": 0.0, "resumed": True}
    return tokenize_partition(task)


def _in_process(executor: Any) -> bool:
    return isinstance(executor, LocalExecutor) and executor.workers == 1


def _encode_read(task: Dict[str, Any], texts: Future[List[str]]) -> Tuple[np.ndarray, int, float]:
    """On the encoder thread: wait for the reader's texts, encode them; tokens, documents, seconds."""
    started = time.time()
    docs = texts.result()
    return encode_partition(task, docs), len(docs), time.time() - started


def _save_encoded(task: Dict[str, Any], encoded: Optional[Future[Tuple[np.ndarray, int, float]]]) -> Dict[str, Any]:
    """On the caller's thread: write an encoded partition's token file and marker; keep its tokens in memory."""
    if encoded is None:
        return _passthrough(task)  # a component's end, or a partition a killed run tokenized
    tokens, docs, seconds = encoded.result()
    return {**save_partition(task, tokens, docs, seconds), "array": tokens}


def _tokenize_in_process(tasks: Iterator[Dict[str, Any]], ahead: int = IN_PROCESS_AHEAD) -> Iterator[Dict[str, Any]]:
    """One worker in this process: reading, encoding, and saving + packing overlap on threads.

    SentencePiece releases the GIL while it encodes, so the Python-side work can run meanwhile instead
    of between encode calls with the cores idle: a reader thread reads parquet parts, one encoder
    thread encodes one partition at a time (so never more encode threads than shard.num_threads), and
    the caller's thread writes each token file and marker (here, when it takes the result) and packs
    the tokens from memory (result["array"]). Results come in task order. At most `ahead` + 1
    partitions are in flight, like a process pool's tasks, so memory stays set by the config.
    """
    reader = ThreadPoolExecutor(1, thread_name_prefix="shard-read")
    encoder = ThreadPoolExecutor(1, thread_name_prefix="shard-encode")
    pending: deque = deque()
    try:
        for task in tasks:
            encoded = None
            if not task.get("end") and "marker" not in task:
                encoded = encoder.submit(_encode_read, task, reader.submit(read_texts, task))
            pending.append((task, encoded))
            if len(pending) > ahead:
                yield _save_encoded(*pending.popleft())
        while pending:
            yield _save_encoded(*pending.popleft())
    finally:
        # An error, or the caller stopped: queued partitions never start and the running encode ends
        # (these threads write no file). Reader first: a running encode may wait on a queued read.
        reader.shutdown(wait=True, cancel_futures=True)
        encoder.shutdown(wait=True, cancel_futures=True)


def _partition_tokens(result: Dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """A tokenized partition's stream: in memory (in-process) or its token file, mapped (from a worker)."""
    if "array" in result:
        return result["array"]
    path = Path(result["out"])
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.empty(0, dtype)


class ComponentPacker:
    """Packs one component's partitions in order; a checkpoint after every full shard lets a killed run go on."""

    def __init__(self, run: Run, name: str, seq_len: int, per_shard: int, dtype: np.dtype, tok_sha: str, checkpoint: Optional[Dict[str, Any]]):
        self.run, self.tok_sha, self.dtype = run, tok_sha, dtype
        self.out_dir = run.dir / SHARDS_DIR / name
        self.work = self.out_dir / WORK_DIR
        self.packer = Packer(self.out_dir, seq_len, per_shard, dtype, on_shard=self._on_shard)
        self.docs = 0
        self.partition, self.partition_start, self.docs_before = 0, 0, 0
        self.skip = 0  # tokens of the checkpoint's partition already in its shards
        self.unpacked: List[int] = []  # partitions whose token files may still be needed
        self.finishing = False
        if checkpoint:
            self.packer.restore(checkpoint["packer"])
            for entry in checkpoint["packer"]["shards"]:
                run.add_artifact(self.out_dir / entry["file"])
            self.docs = int(checkpoint["docs_before"])
            self.partition, self.skip = int(checkpoint["partition"]), int(checkpoint["offset"])

    def add(self, index: int, tokens: np.ndarray, docs: int) -> None:
        skip = self.skip if index == self.partition else 0
        self.skip = 0
        self.partition, self.docs_before = index, self.docs
        self.partition_start = self.packer.position - skip
        self.unpacked.append(index)
        self.packer.add(tokens[skip:])
        self.docs += docs

    def _on_shard(self, path: Path) -> None:
        self.run.add_artifact(path)
        if self.finishing:
            return  # the last shard: index.json follows and marks the component done
        checkpoint = {
            "partition": self.partition,
            "offset": self.packer.result.rows * self.packer.seq_len - self.partition_start,
            "docs_before": self.docs_before,
            "tokenizer_sha256": self.tok_sha,
            "packer": self.packer.state(),
        }
        write_json(self.work / CHECKPOINT, checkpoint)
        # Only now may the token files before the checkpoint's partition go (marker first: a marker
        # without its token file is never reused, a token file without its marker never trusted).
        for i in [i for i in self.unpacked if i < self.partition]:
            (self.work / DONE.format(i)).unlink(missing_ok=True)
            (self.work / PART.format(i)).unlink(missing_ok=True)
        self.unpacked = [i for i in self.unpacked if i >= self.partition]

    def finish(self, remainder: str, pad_id: int) -> PackResult:
        self.finishing = True
        return self.packer.finish(remainder, pad_id)


def _clean_component(out_dir: Path, keep: List[Dict[str, Any]]) -> None:
    """After index.json: drop the work folder, and the shards and temporaries a killed run of this stage
    left that the index does not list; nothing else (only names this stage writes)."""
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    listed = {s["file"] for s in keep}
    for path in out_dir.iterdir():
        if path.is_file() and path.name not in listed and (is_shard_name(path.name) or is_temporary(path.name)):
            path.unlink(missing_ok=True)


def _tokenizer_info(run: Run, model: Path, sp: Any) -> Dict[str, Any]:
    try:
        shown = str(model.relative_to(run.dir.resolve()))  # inside the run folder: stable across runs
    except ValueError:
        shown = str(model)
    return {
        "path": shown,
        "sha256": file_sha256(model),
        "vocab_size": int(sp.get_piece_size()),
        "eos_id": int(sp.eos_id()),
        "bos_id": int(sp.bos_id()),
        "pad_id": int(sp.pad_id()),
    }


def run(run: Run) -> Dict[str, Any]:
    s: ShardConfig = run.cfg.shard
    seq_len, per_shard = s.seq_len, s.sequences_per_shard
    if seq_len < 2:
        raise Stage2Error(f"shard.seq_len={seq_len}: a row needs at least 2 tokens (an input and its next-token target)")
    model = resolve_tokenizer(run, s.tokenizer)
    sp = load_processor(model)
    tok = _tokenizer_info(run, model.resolve(), sp)
    if s.remainder == Remainder.pad and tok["pad_id"] < 0:
        raise Stage2Error(f"{model}: shard.remainder=pad but this tokenizer has no pad id (-1); use shard.remainder=drop or a tokenizer trained with pad_id")
    for what, flag, tid in (("add_eos", s.add_eos, tok["eos_id"]), ("add_bos", s.add_bos, tok["bos_id"])):
        if flag and tid < 0:
            raise Stage2Error(f"{model}: shard.{what}=true but this tokenizer has no {what[4:]} id (-1)")
    dtype = token_dtype(tok["vocab_size"])
    filtered = filtered_source(run, s.input_run, "shard")
    workers = getattr(run.executor, "workers", 1)
    base = {
        "model": str(model.resolve()),
        "tokenizer_sha256": tok["sha256"],
        "batch_size": s.batch_size,
        "num_threads": encode_threads(s.num_threads, workers),
        "bos": tok["bos_id"] if s.add_bos else None,
        "eos": tok["eos_id"] if s.add_eos else None,
        "dtype": dtype.str,
    }
    stats = run.stage_stats("shard")
    stats.update({"tokenizer": tok["path"], "seq_len": seq_len, "dtype": dtype.name, "components": {}})
    resume: Dict[str, ComponentResume] = {}
    if run.cfg.resume:
        resume = {s.name: find_resume(run.dir / SHARDS_DIR / s.name, tok["sha256"], dtype) for s in run.components}
        stats["resumed"] = True
        stats["components_resumed"] = 0
        stats["partitions_resumed"] = 0  # partitions not tokenized again
    weights = {s.name: s.weight for s in run.components}
    manifest: List[Dict[str, Any]] = []
    current: Optional[ComponentPacker] = None
    docs, busy, stage_started = 0, 0.0, time.time()

    tasks = _tasks(run, filtered, base, resume)
    if _in_process(run.executor):
        _PROCESSORS[base["model"]] = sp  # loaded above: a second load costs as much as encoding a small part
        results = _tokenize_in_process(tasks)
    else:
        results = run.executor.map(_passthrough, tasks)
    progress = Progress("shard", unit="token", enabled=run.cfg.progress)
    # Closed on an error too: in-process, that stops the tokenizing threads before the error propagates.
    with contextlib.closing(results):
        for result in results:
            progress.update(result.get("tokens", 0))
            name = result["component"]
            out_dir = run.dir / SHARDS_DIR / name
            state = resume.get(name, ComponentResume())
            if result.get("finished"):
                index = state.index or {}
                _keep_finished(run, out_dir, index, stats)
                manifest.append(manifest_entry(name, weights[name], index["rows"]))
                log.info("shard %s: resume: finished by the interrupted run, kept", name)
                continue
            if current is None:
                current = ComponentPacker(run, name, seq_len, per_shard, dtype, tok["sha256"], state.checkpoint)
                busy = 0.0
                if run.cfg.resume:
                    stats["partitions_resumed"] += state.first
                    log.info(
                        "shard %s: resume: %d shards kept (holding partitions before %d), %d partitions already tokenized",
                        name, len(current.packer.result.shards), state.first, len(state.done),
                    )
            packing_started = time.time()
            if not result.get("end"):
                current.add(result["index"], _partition_tokens(result, dtype), result["docs"])
                if result.get("resumed"):
                    stats["partitions_resumed"] += 1
                # Time spent on this component (its tasks + packing), not wall time: tasks run ahead of
                # the packing (on workers, or on threads in-process), so several components may overlap.
                busy += result["seconds"] + time.time() - packing_started
                continue
            packed = current.finish(str(s.remainder), tok["pad_id"])
            if packed.rows == 0:  # the mixture would lose it without a word: the reader skips a component without rows
                raise Stage2Error(
                    f"component {name}: its {packed.stream_tokens:,} tokens fill no row of shard.seq_len={s.seq_len}"
                    " (shard.remainder=drop); lower shard.seq_len, set shard.remainder=pad, or remove the component"
                )
            docs, current = current.docs, None
            seconds = busy + time.time() - packing_started
            index = component_index(name, weights[name], s, tok, dtype, docs, packed)
            run.add_artifact(write_index(out_dir, index))  # after the last shard: from here on the component is done
            _clean_component(out_dir, packed.shards)
            stats["components"][name] = {
                "records": docs,
                "sequences": packed.rows,
                "shards": len(packed.shards),
                "tokens": packed.stream_tokens,  # document tokens + separators (the packed stream)
                "padding": packed.padding,
                "tail_dropped": packed.tail_dropped,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(packed.stream_tokens / seconds, 1) if seconds > 0 else None,
            }
            manifest.append(manifest_entry(name, weights[name], packed.rows))
            log.info("shard %s: %d docs, %d tokens, %d rows in %d shards", name, docs, packed.stream_tokens, packed.rows, len(packed.shards))

    progress.close()
    run.add_artifact(write_manifest(run.dir / SHARDS_DIR, seq_len, dtype, tok, manifest))
    comps = stats["components"].values()
    wall = time.time() - stage_started
    stats["seconds"] = round(wall, 3)
    stats["tokens_per_s"] = round(sum(c["tokens"] for c in comps) / wall, 1) if wall > 0 else None
    return {"tokens": sum(c["tokens"] for c in comps), "sequences": sum(c["sequences"] for c in comps)}


def _keep_finished(run: Run, out_dir: Path, index: Dict[str, Any], stats: Dict[str, Any]) -> None:
    """A component the interrupted run finished: register its files, take its stats from its index."""
    _clean_component(out_dir, index["shards"])
    for entry in index["shards"]:
        run.add_artifact(out_dir / entry["file"])
    run.add_artifact(out_dir / INDEX)
    stats["components_resumed"] += 1
    stats["components"][index["component"]] = {
        "records": index["documents"],
        "sequences": index["rows"],
        "shards": len(index["shards"]),
        "tokens": index["tokens"] + index["separators"],
        "padding": index["padding"],
        "tail_dropped": index["tail_dropped"],
        "seconds": 0.0,
        "tokens_per_s": None,
        "resumed": True,
    }
