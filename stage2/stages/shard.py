"""The shard stage: tokenize every component and pack it into fixed-length `.npy` shards (and trainer formats).

Partitions (a filtered part, or `dataset.partition_size` raw documents) are tokenized in parallel by
`run.executor`; each task writes its token stream to `shards/<component>/.work/`. With worker
processes (a pool or Ray, `_pack_with_workers`), the driver then only plans: from the partitions' token
counts it cuts each split's stream into shards, and write tasks in the workers read their slices of the
token files and write (and hash) each shard, and each split's document table and trainer formats; the
driver writes the index.json files. With one local worker there is no process pool: threads of this
process read, encode and pack at once (`_tokenize_in_process`, `_pack_in_process`), the driver packing
the streams in partition order as they come, one shard's worth of tokens per split in memory. Both
make the same bytes whatever the worker count (tests/unit/test_shard_partitions.py checks the write
tasks against the packer).

Each partition's documents go to the train or the validation split by a hash of their id
(`shard.validation_percent`, the tokenizer's held-out rule); each split has its own packer, shards,
document table and trainer formats (`stage2.shards.format`), written when the component ends.

Resume (`resume=true`): a partition is done once its file per split (document rows, then tokens), then
its one done-marker, are on disk. With workers, each write task leaves a marker vouching for its files
(`SHARD_MARKER`, `TABLE_MARKER`), and the partitions' files stay until their component's index.json is
written, so a resumed run re-plans the same tasks and keeps the finished ones. A partition stays done
for a split while that split's file is unchanged. In-process, each split's packer writes a checkpoint after every full shard (a task marker, `stage2.runtime.tasks`,
vouching for the document rows put behind that shard, whose sha256 it records), and a split's partition
files are deleted only once its checkpoint lies past them (the marker once neither split has a file
left). A component is done once its train index.json is written (after everything else). A resumed run
keeps done components, restores each split's packer from its last trusted checkpoint, reuses done
partitions and tokenizes the rest: the same files as an uninterrupted run, whatever moment the kill
came. Temporary files (`.name.tmp-<pid>`) and files without a marker are never taken for outputs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from stage2.io import parts
from stage2.io.sources import iter_documents, usable
from stage2.config import BadRecordPolicy, Remainder, ShardConfig
from stage2.errors import Stage2Error
from stage2.runtime.progress import Progress
from stage2.io.files import FingerprintingFile, atomic_write, is_temporary, write_array
from stage2.runtime.tasks import read_marker, read_state, write_marker
from stage2.runtime.run import Run, atomic_path, file_sha256, filtered_source
from stage2.shards.format import (
    DOCUMENTS, INDEX, SHARDS_DIR, SPLITS, component_index, document_rows, document_rows_fixed, documents_dtype, format_files, is_shard_name,
    manifest_entry, open_shard, PackResult, Packer, put_rows, read_documents, shard_name, split_dir, token_dtype, utf8_fixed_width,
    write_documents, write_formats, write_index, write_manifest, write_shard,
)

log = logging.getLogger(__name__)

WORK_DIR = ".work"
PART = "part-{:05d}.{}.bin"  # a partition's split: its document rows (.npy), then its raw token stream
DONE = "part-{:05d}.done.json"  # a partition's done-marker: written after its files of both splits
DONE_NAME = re.compile(r"part-(\d{5})\.done\.json")
CHECKPOINT = "pack.{}.{:05d}.json"  # a split's packer state after its full shard N (a task marker vouching for it)
DOC_SEGMENT = "docs.{}.{:05d}.npy"  # the document rows that checkpoint N put behind it
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


def export_tokenizer_json(task: Dict[str, Any]) -> Dict[str, Any]:
    """The tokenizer.json files of a model (`stage2.tokenizer.export`) and their sha256; runs in a worker."""
    from stage2.tokenizer import export

    made: Dict[str, str] = {}
    try:
        for written in export.write(Path(task["model"]).read_bytes(), Path(task["out_dir"]), task["model_max_length"]):
            made[written.name] = file_sha256(written)
    except Stage2Error as exc:
        return {"made": made, "error": str(exc).split(": ", 1)[1]}
    return {"made": made, "error": None}


def copy_tokenizer(run: Run, model: Path) -> Path:
    """Copy a model from elsewhere into this run's tokenizer/ folder, with its tokenizer.json files made
    from the model itself (never copied from beside it: they could be another model's).

    The shards can then be trained on without the other folder; hashes go to stats.
    """
    out_dir = run.dir / "tokenizer"
    target = out_dir / model.name
    others = [p for p in out_dir.glob("*.model") if p.name != model.name]
    if others:
        raise Stage2Error(f"{others[0]}: this run has its own tokenizer; shard.tokenizer={model} would be a second one in {out_dir}")
    _copy_file(model, target)
    copied = {target.name: file_sha256(target)}
    # In a task: building the tokenizer.json files is about half a second of CPU, the driver's to save.
    task = {"model": str(target), "out_dir": str(out_dir), "model_max_length": run.cfg.model_max_length()}
    (exported,) = list((run.executor.map if run.executor is not None else map)(export_tokenizer_json, [task]))
    made = exported["made"]
    if exported["error"]:
        log.warning("shard: no tokenizer.json for %s: %s", model, exported["error"])
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


@dataclass
class PartitionDocs:
    """A partition's documents, column by column. From a filtered part, ids and sources stay Arrow
    string arrays (their bytes go to the document rows without a Python object per document); raw
    documents carry Python lists."""

    texts: List[str]
    ids: Any  # pyarrow string array, or a list of str
    sources: Any
    records: Any  # numpy int64, or a list of int

    def id_bytes(self) -> List[bytes]:
        """Each id's UTF-8 bytes (what the held-out hash reads)."""
        if isinstance(self.ids, list):
            return [i.encode("utf-8", "surrogatepass") for i in self.ids]
        offsets, data = _arrow_utf8(self.ids)
        bounds, raw = offsets.tolist(), data.tobytes()  # (no pyarrow.compute: its import costs more than this)
        return [raw[a:b] for a, b in zip(bounds, bounds[1:])]

    def rows(self, keep: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The document rows of the documents at `keep` (in order), with their token counts."""
        if isinstance(self.ids, list):
            return document_rows([self.ids[i] for i in keep], [self.sources[i] for i in keep], [self.records[i] for i in keep], lengths)
        return document_rows_fixed(utf8_fixed_width(*_arrow_utf8(self.ids), keep), utf8_fixed_width(*_arrow_utf8(self.sources), keep), self.records[keep], lengths)


def _arrow_utf8(array: Any) -> Tuple[np.ndarray, np.ndarray]:
    """An Arrow string array's offsets and UTF-8 bytes, as numpy views of its buffers."""
    import pyarrow as pa

    _, offsets_buffer, data = array.buffers()
    if offsets_buffer is None:  # an empty array may have none
        return np.zeros(1, np.int64), np.empty(0, np.uint8)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if pa.types.is_large_string(array.type) else np.int32)[array.offset : array.offset + len(array) + 1]
    return offsets, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8))


def _string_column(column: Any) -> Any:
    """A parquet string column as one Arrow array, or as a Python list where it is not plain strings
    without nulls (those take the plain path, with its errors)."""
    import pyarrow as pa

    array = column.combine_chunks()
    if array.null_count or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return array.to_pylist()
    return array


def read_partition(task: Dict[str, Any]) -> PartitionDocs:
    """A partition's documents: its filtered parquet part, or the raw documents the task carries."""
    if not task.get("part"):
        return PartitionDocs(task["texts"], task["ids"], task["sources"], task["records"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas in every process.
    # One thread: the encoder's threads use the cores.
    source = parts.checked_source(Path(task["part"]), task.get("part_check"))  # (`parts.deferred_hashes`)
    table = pq.ParquetFile(source).read(columns=["text", "id", "source", "record"], use_threads=False)
    texts = table.column("text").to_pylist()
    ids, sources, record = _string_column(table.column("id")), _string_column(table.column("source")), table.column("record").combine_chunks()
    if isinstance(ids, list) or isinstance(sources, list) or record.null_count or not pa.types.is_signed_integer(record.type):
        return PartitionDocs(texts, _as_list(ids), _as_list(sources), record.to_pylist())
    # From the buffer: Array.to_numpy imports pandas.
    records = np.frombuffer(record.buffers()[1], dtype=np.dtype(str(record.type)))[record.offset : record.offset + len(record)]
    return PartitionDocs(texts, ids, sources, records.astype(np.int64))


def _as_list(column: Any) -> List[Any]:
    return column if isinstance(column, list) else column.to_pylist()


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


def document_lengths(task: Dict[str, Any], texts: List[str], tokens: np.ndarray) -> np.ndarray:
    """Each document's tokens in the stream, separators included. No text encodes to EOS or BOS
    (SentencePiece never emits control pieces), so the separators mark the documents' ends."""
    if task["eos"] is not None:
        ends = np.flatnonzero(tokens == task["eos"]) + 1
    elif task["bos"] is not None:
        ends = np.append(np.flatnonzero(tokens == task["bos"])[1:], len(tokens)) if len(tokens) else np.empty(0, np.int64)
    else:  # no separators: count each document's ids
        from stage2.tokenizer import encoding

        ends = np.cumsum([len(ids) for ids in encoding.encode(_processor(task["model"]), texts, task["num_threads"])]).astype(np.int64)
    if len(ends) != len(texts) or (len(ends) and ends[-1] != len(tokens)):
        raise Stage2Error(f"{task.get('part') or task['component']}: {len(texts)} documents but {len(ends)} document ends in their token stream")
    return np.diff(ends, prepend=0).astype(np.int64)


def take_documents(tokens: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The stream of the documents at `keep` (sorted), as slices of runs of consecutive documents."""
    if len(keep) == len(lengths):
        return tokens
    if not len(keep):
        return tokens[:0]
    ends = np.cumsum(lengths)
    breaks = np.flatnonzero(np.diff(keep) != 1)  # a run ends where the next kept document is not the next one
    firsts, lasts = keep[np.r_[0, breaks + 1]], keep[np.r_[breaks, len(keep) - 1]]
    return np.concatenate([tokens[ends[a] - lengths[a] : ends[b]] for a, b in zip(firsts.tolist(), lasts.tolist())])


def split_partition(task: Dict[str, Any], docs: PartitionDocs, tokens: np.ndarray) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """A partition's stream and documents -> per split (its stream, its document rows), in document order."""
    lengths = document_lengths(task, docs.texts, tokens)
    from stage2.tokenizer.sample import heldout_mask

    held = heldout_mask(docs.id_bytes(), task["validation_percent"])
    out = {}
    for split, mask in (("train", ~held), ("validation", held)):
        keep = np.flatnonzero(mask)
        out[split] = (take_documents(tokens, lengths, keep), docs.rows(keep, lengths[keep]))
    return out


def save_partition(task: Dict[str, Any], splits: Dict[str, Tuple[np.ndarray, np.ndarray]], seconds: float) -> Dict[str, Any]:
    """Write a partition's file per split (its document rows as .npy, then its raw tokens), then one
    done-marker for both; the result for the driver.

    `seconds`: the time the partition took before (reading, encoding); the result adds this write's.
    """
    started = time.time()
    work = Path(task["out"]).parent
    files: Dict[Path, List[Any]] = {}
    done = {}
    for split, (tokens, rows) in splits.items():
        path = work / PART.format(task["index"], split)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                out = FingerprintingFile(f)  # the marker's fingerprint, taken on the way out (no read back)
                write_array(out, rows, npy_header=True)
                write_array(out, tokens)
        files[path] = out.fingerprint()
        # The rows' widths let the driver find rows and tokens in the file without parsing its header.
        done[split] = {"docs": len(rows), "tokens": len(tokens), "widths": [rows.dtype["id"].itemsize, rows.dtype["source"].itemsize]}
    # Last: the partition is done from here on (each split's part for as long as its file is unchanged).
    write_marker(work / DONE.format(task["index"]), task["partition_key"], done, files)
    result: Dict[str, Any] = {"component": task["component"], "index": task["index"], "splits": {s: {**d, "file": str(p)} for (s, d), p in zip(done.items(), list(files))}}
    result["docs"] = sum(v["docs"] for v in done.values())
    result["tokens"] = sum(v["tokens"] for v in done.values())
    result["seconds"] = seconds + time.time() - started
    return result


def tokenize_partition(task: Dict[str, Any]) -> Dict[str, Any]:
    """One partition: documents -> a file per split and a done-marker. Runs in a worker."""
    started = time.time()
    docs = read_partition(task)
    tokens = encode_partition(task, docs.texts)
    return save_partition(task, split_partition(task, docs, tokens), time.time() - started)


def read_partition_file(path: Path, dtype: np.dtype, entry: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """A split's partition file -> (its tokens, its document rows), placed by its entry in the partition's
    result (counts and row widths): read whole, a partition's file being small."""
    data = Path(path).read_bytes()
    rows_dtype = documents_dtype(*entry["widths"])
    tokens_at = len(data) - int(entry["tokens"]) * dtype.itemsize
    rows_at = tokens_at - int(entry["docs"]) * rows_dtype.itemsize
    if rows_at < 0:
        raise Stage2Error(f"{path}: {len(data)} bytes, too short for its {entry['docs']} document rows and {entry['tokens']} tokens")
    return np.frombuffer(data, dtype=dtype, offset=tokens_at), np.frombuffer(data, dtype=rows_dtype, count=int(entry["docs"]), offset=rows_at)


@dataclass
class SplitResume:
    """What a killed run left of one split of a component: its last trusted packer checkpoint."""

    checkpoint: Optional[Dict[str, Any]] = None  # the result of the last checkpoint marker

    @property
    def first(self) -> int:
        """The first partition still to pack: earlier ones are inside the checkpoint's shards."""
        return int(self.checkpoint["partition"]) if self.checkpoint else 0


@dataclass
class ComponentResume:
    """What a killed run left of one component: its indexes (finished), per split a packer checkpoint,
    and the done partitions per split."""

    index: Optional[Dict[str, Any]] = None
    splits: Dict[str, SplitResume] = field(default_factory=lambda: {s: SplitResume() for s in SPLITS})
    done: Dict[str, Dict[int, Dict[str, Any]]] = field(default_factory=lambda: {s: {} for s in SPLITS})  # split -> partition -> marker

    @property
    def first(self) -> int:
        """The first partition any split still needs."""
        return min(r.first for r in self.splits.values())

    def needs(self, index: int) -> List[str]:
        """The splits that still pack partition `index`."""
        return [s for s, r in self.splits.items() if index >= r.first]


def partition_key(tokenizer_sha256: str, dtype: np.dtype, validation_percent: float) -> str:
    """What a partition's files depend on besides its documents (fixed by the recipe and inputs)."""
    return f"{tokenizer_sha256}:{np.dtype(dtype).str}:validation={validation_percent!r}"


def checkpoint_key(part_key: str, split: str, seq_len: int, per_shard: int) -> str:
    return f"{part_key}:{split}:{seq_len}x{per_shard}"


def _listed_intact(comp_dir: Path, index: Dict[str, Any]) -> bool:
    """Whether every file a finished split's index lists still has the sha256 recorded when it was written."""
    folder = split_dir(comp_dir, index.get("split", "train"))
    files = [folder / s["file"] for s in index["shards"]] + [folder / index["documents_table"]["file"]]
    files += [comp_dir / e["file"] for e in index.get("formats", [])]
    shas = [s["sha256"] for s in index["shards"]] + [index["documents_table"]["sha256"]] + [e["sha256"] for e in index.get("formats", [])]
    return all(p.is_file() and file_sha256(p) == sha for p, sha in zip(files, shas))


def _shard_intact(folder: Path, entry: Dict[str, Any]) -> bool:
    path = folder / str(entry.get("file", ""))
    return bool(entry.get("file")) and path.is_file() and file_sha256(path) == entry.get("sha256")


def find_resume(comp_dir: Path, part_key: str, seq_len: int, per_shard: int) -> ComponentResume:
    """Outputs a killed run left in `shards/<component>/` that this run may keep: the same recipe (the
    markers' keys), and every file still with the bytes its marker or index recorded (else it is made again)."""
    found = ComponentResume()
    indexes = [read_state(split_dir(comp_dir, s) / INDEX) for s in SPLITS]
    same = lambda i: i.get("tokenizer", {}).get("sha256") == part_key.split(":")[0] and f"validation={i.get('validation_percent')!r}" == part_key.split(":")[-1]  # noqa: E731
    if all(i and "documents_table" in i and same(i) for i in indexes):
        if all(_listed_intact(comp_dir, i) for i in indexes):  # type: ignore[arg-type]
            found.index = indexes[0]
            return found
    work = comp_dir / WORK_DIR
    for split in SPLITS:
        key = checkpoint_key(part_key, split, seq_len, per_shard)
        n = 0
        folder = split_dir(comp_dir, split)
        while True:  # the checkpoints of a split's shards in order; the last of an unbroken run is trusted
            done = read_marker(work / CHECKPOINT.format(split, n), key)
            # Its shard (the last it lists) must still have the sha256 recorded when it was written.
            shard = ((done or {}).get("packer", {}).get("shards") or [{}])[-1]
            if done is None or not _shard_intact(folder, shard):
                break
            found.splits[split].checkpoint = done
            n += 1
        for marker_path in sorted(work.glob("part-*.done.json")):
            name = DONE_NAME.fullmatch(marker_path.name)
            i = int(name.group(1)) if name else -1
            # Each split's part is done while its own file is unchanged (the packer deletes the files
            # of a split once that split's checkpoint lies past them).
            done = read_marker(marker_path, part_key, outputs=[PART.format(i, split)]) if name else None
            if done is not None and isinstance(done.get(split), dict):
                found.done[split][i] = done[split]
        if found.splits[split].checkpoint and found.splits[split].first not in found.done[split]:
            found.splits[split].checkpoint = None  # its partition's tokens are gone or changed: pack from the start
    return found


def _tasks(run: Run, filtered: Optional[Path], base: Dict[str, Any], resume: Dict[str, ComponentResume]) -> Iterator[Dict[str, Any]]:
    """One task per filtered part, or per `partition_size` raw documents, components in manifest order.

    On resume, finished components and partitions inside every split's checkpoint get no task, and
    partitions done for every split that still needs them a task that only hands back their markers.
    """
    size = run.cfg.dataset.partition_size
    for spec in run.components:
        state = resume.get(spec.name, ComponentResume())
        if state.index is not None:
            yield {"component": spec.name, "end": True, "finished": True}
            continue
        work = run.dir / SHARDS_DIR / spec.name / WORK_DIR
        if filtered is not None:
            sources = ({"part": str(p), "part_check": parts.part_check(p)} for p in parts.filtered_part_files(filtered, spec.name))
        else:
            docs = usable(iter_documents(spec), skip_bad=run.cfg.filter.on_bad_record == BadRecordPolicy.skip)
            chunks = iter(lambda: list(itertools.islice(docs, size)), [])
            sources = ({"texts": [d.text for d in c], "ids": [d.id for d in c], "sources": [d.source for d in c], "records": [d.record for d in c]} for c in chunks)
        for i, source in enumerate(sources):
            out = str(work / f"part-{i:05d}")
            if i < state.first:
                continue  # packed into every split's checkpoint (raw text is still read to find later partitions)
            needed = state.needs(i)
            if all(i in state.done[s] for s in needed):
                # (a part's sha256 is still checked: its tokens are reused only if it is the part they came from)
                yield {"component": spec.name, "index": i, "out": out, "markers": {s: state.done[s][i] for s in needed},
                       **{k: v for k, v in source.items() if k in ("part", "part_check")}}
            else:
                yield {**base, **source, "component": spec.name, "index": i, "out": out}
        # A sentinel so the driver knows the component ended even when it had no partition.
        yield {"component": spec.name, "end": True}


def _passthrough(task: Dict[str, Any]) -> Dict[str, Any]:
    if task.get("end"):
        return task
    if "markers" in task:  # done by a killed run: nothing to compute
        if task.get("part_check"):
            parts.verify_part(Path(task["part"]), Path(task["part"]).read_bytes(), task["part_check"])
        work = Path(task["out"]).parent
        splits = {s: {**m, "file": str(work / PART.format(task["index"], s))} for s, m in task["markers"].items()}
        return {"component": task["component"], "index": task["index"], "splits": splits, "docs": sum(m["docs"] for m in splits.values()),
                "tokens": sum(m["tokens"] for m in splits.values()), "seconds": 0.0, "resumed": True}
    return tokenize_partition(task)


def _in_process(executor: Any) -> bool:
    return bool(getattr(executor, "in_process", False))


def _encode_read(task: Dict[str, Any], read: Future[PartitionDocs]) -> Tuple[PartitionDocs, np.ndarray, float]:
    """On the encoder thread: wait for the reader's documents and encode them; documents, tokens, seconds."""
    started = time.time()
    docs = read.result()
    return docs, encode_partition(task, docs.texts), time.time() - started


def _save_encoded(task: Dict[str, Any], encoded: Optional[Future[Tuple[PartitionDocs, np.ndarray, float]]]) -> Dict[str, Any]:
    """On the caller's thread (the encoder meanwhile encodes the next partition): split an encoded
    partition, write its files and marker; keep its splits in memory."""
    if encoded is None:
        return _passthrough(task)  # a component's end, or a partition a killed run tokenized
    docs, tokens, seconds = encoded.result()
    started = time.time()
    splits = split_partition(task, docs, tokens)
    return {**save_partition(task, splits, seconds + time.time() - started), "arrays": splits}


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
            if not task.get("end") and "markers" not in task:
                encoded = encoder.submit(_encode_read, task, reader.submit(read_partition, task))
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


def _partition_split(result: Dict[str, Any], split: str, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    """A tokenized partition's stream and document rows of one split: in memory (in-process) or its
    file, the stream mapped (from a worker or a killed run)."""
    if "arrays" in result:
        return result["arrays"][split]
    entry = result["splits"][split]
    return read_partition_file(Path(entry["file"]), dtype, entry)


class SplitPacker:
    """Packs one split of a component, partition by partition; a checkpoint after every full shard (a task
    marker vouching for the document rows put behind that shard, and the shard's sha256) lets a killed run go on."""

    def __init__(self, run: Run, comp_dir: Path, split: str, seq_len: int, per_shard: int, dtype: np.dtype, key: str, checkpoint: Optional[Dict[str, Any]]):
        self.run, self.split, self.key = run, split, key
        self.folder = split_dir(comp_dir, split)
        self.work = comp_dir / WORK_DIR
        self.packer = Packer(self.folder, seq_len, per_shard, dtype, on_shard=self._on_shard)
        self.docs = 0
        self.first = 0  # partitions before it are in the checkpoint's shards
        self.partition, self.partition_start, self.docs_before = 0, 0, 0
        self.skip = 0  # tokens of the checkpoint's partition already in its shards
        self.unpacked: List[int] = []  # partitions whose files may still be needed
        self.pending: List[Tuple[int, np.ndarray]] = []  # (partition, document rows) not yet in a segment
        self.segments: List[str] = []
        self.widths = [1, 1]  # the longest id and source (UTF-8 bytes)
        self.finishing = False
        if checkpoint:
            self.packer.restore(checkpoint["packer"])
            for entry in checkpoint["packer"]["shards"]:
                run.add_artifact(self.folder / entry["file"])
            self.docs = int(checkpoint["docs_before"])
            self.first = self.partition = int(checkpoint["partition"])
            self.skip = int(checkpoint["offset"])
            self.segments, self.widths = list(checkpoint["segments"]), list(checkpoint["widths"])
        else:  # a killed run's checkpoints of this split are not taken up: none may vouch for a later resume
            for stale in self.work.glob(CHECKPOINT.format(split, 0).replace("00000", "*")):
                stale.unlink(missing_ok=True)

    def add(self, index: int, tokens: np.ndarray, rows: np.ndarray) -> None:
        if index < self.first:
            return
        skip = self.skip if index == self.partition else 0
        self.skip = 0
        self.partition, self.docs_before = index, self.docs
        self.partition_start = self.packer.position - skip
        rows = np.array(rows)
        rows["first"] += self.partition_start
        if len(rows):
            self.widths = [max(self.widths[0], rows.dtype["id"].itemsize), max(self.widths[1], rows.dtype["source"].itemsize)]
        self.pending.append((index, rows))
        self.unpacked.append(index)
        self.packer.add(tokens[skip:])
        self.docs += len(rows)

    def _on_shard(self, path: Path) -> None:
        self.run.add_artifact(path, self.packer.result.shards[-1]["sha256"])
        if self.finishing:
            return  # the last shard: index.json follows and marks the split done
        number = len(self.packer.result.shards) - 1
        # The rows of the partitions before the checkpoint's go behind it; its own partition is packed again on resume.
        segment = self.work / DOC_SEGMENT.format(self.split, number)
        behind = [rows for i, rows in self.pending if i < self.partition]
        self.pending = [(i, rows) for i, rows in self.pending if i >= self.partition]
        with atomic_path(segment) as tmp:
            with open(tmp, "wb") as f:
                write_array(f, _concat_rows(behind), npy_header=True)
        self.segments.append(segment.name)
        state = {
            "partition": self.partition,
            "offset": self.packer.result.rows * self.packer.seq_len - self.partition_start,
            "docs_before": self.docs_before,
            "packer": self.packer.state(),
            "segments": self.segments,
            "widths": self.widths,
        }
        # The marker vouches for the segment; the shard is vouched for by the sha256 in the packer's state.
        write_marker(self.work / CHECKPOINT.format(self.split, number), self.key, state, [segment])
        # Only now may this split's files of the partitions before the checkpoint's go (marker first: a
        # marker without its files is never reused, files without their marker never trusted).
        for i in [i for i in self.unpacked if i < self.partition]:
            (self.work / PART.format(i, self.split)).unlink(missing_ok=True)
            if not any((self.work / PART.format(i, s)).exists() for s in SPLITS):
                (self.work / DONE.format(i)).unlink(missing_ok=True)  # no split's file left to vouch for
        self.unpacked = [i for i in self.unpacked if i >= self.partition]

    def finish(self, remainder: str, pad_id: int) -> PackResult:
        self.finishing = True
        return self.packer.finish(remainder, pad_id)

    def documents(self) -> Iterator[np.ndarray]:
        """The split's document rows in stream order: the checkpoints' segments, then the rest."""
        for name in self.segments:
            yield np.load(self.work / name, allow_pickle=False)
        for _, rows in self.pending:
            yield rows


def _concat_rows(rows: List[np.ndarray]) -> np.ndarray:
    if not rows:
        return document_rows([], [], [], np.empty(0, np.int64))
    out = np.empty(sum(len(r) for r in rows), dtype=documents_dtype(max(r.dtype["id"].itemsize for r in rows), max(r.dtype["source"].itemsize for r in rows)))
    at = 0
    for r in rows:
        put_rows(out[at : at + len(r)], r)
        at += len(r)
    return out


def split_stream(folder: Path, packed: PackResult, seq_len: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """A split's whole stream, chunk by chunk: its shards' rows (without padding), then the dropped tail."""
    left = packed.rows * seq_len - packed.padding
    for entry in packed.shards:
        flat = open_shard(folder / entry["file"], int(entry["rows"]), seq_len, dtype.name).reshape(-1)
        yield flat[: min(len(flat), left)]
        left -= len(flat)
    if packed.tail is not None and len(packed.tail):
        yield packed.tail


class ComponentPacker:
    """Packs one component's partitions into its splits, in order."""

    def __init__(self, run: Run, name: str, seq_len: int, per_shard: int, dtype: np.dtype, part_key: str, state: ComponentResume):
        self.run, self.dtype, self.name = run, dtype, name
        self.comp_dir = run.dir / SHARDS_DIR / name
        self.splits = {
            split: SplitPacker(run, self.comp_dir, split, seq_len, per_shard, dtype, checkpoint_key(part_key, split, seq_len, per_shard), state.splits[split].checkpoint)
            for split in SPLITS
        }

    def add(self, result: Dict[str, Any]) -> None:
        for split, packer in self.splits.items():
            if result["index"] >= packer.first:
                packer.add(result["index"], *_partition_split(result, split, self.dtype))

    @property
    def docs(self) -> int:
        return sum(p.docs for p in self.splits.values())


def finish_split(run: Run, packer: SplitPacker, s: ShardConfig, tok: Dict[str, Any], weight: float) -> Dict[str, Any]:
    """A split's last shard, document table and trainer formats, then its index.json (written last)."""
    packed = packer.finish(str(s.remainder), tok["pad_id"])
    folder = packer.folder
    counted = [0]

    def rows_counted() -> Iterator[np.ndarray]:
        for rows in packer.documents():
            counted[0] += int(rows["tokens"].sum())
            yield rows

    table = write_documents(folder / DOCUMENTS, rows_counted(), packer.docs, *packer.widths)
    if counted[0] != packed.stream_tokens:
        raise Stage2Error(f"{folder / DOCUMENTS}: its documents hold {counted[0]} tokens, the {packer.split} stream {packed.stream_tokens}")
    run.add_artifact(folder / DOCUMENTS, table["sha256"])
    comp_dir = packer.folder if packer.split == "train" else packer.folder.parent
    formats: List[Dict[str, Any]] = []
    if set(s.formats) - {"npy"}:  # (the table is read back only for them: its pages would count in the driver's RSS)
        lengths = np.asarray(read_documents(folder)["tokens"])
        formats = write_formats(comp_dir, packer.split, s.formats, split_stream(folder, packed, s.seq_len, packer.packer.dtype), lengths, tok["vocab_size"], tok["path"])
    for entry in formats:
        run.add_artifact(comp_dir / entry["file"], entry["sha256"])
    index = component_index(comp_dir.name, weight, s, tok, packer.packer.dtype, packer.docs, packed)
    index.update({"split": packer.split, "validation_percent": s.validation_percent, "documents_table": table, "formats": formats})
    run.add_artifact(write_index(folder, index))
    _clean_split(folder, packed.shards)
    return index


def _clean_split(folder: Path, keep: List[Dict[str, Any]]) -> None:
    """After index.json: drop the shards and temporaries a killed run of this stage left that the index
    does not list; nothing else (only names this stage writes)."""
    listed = {s["file"] for s in keep}
    for path in folder.iterdir():
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


def _component_stats(train: Dict[str, Any], val: Dict[str, Any], seconds: Optional[float]) -> Dict[str, Any]:
    stream = train["tokens"] + train["separators"]
    return {
        "records": train["documents"] + val["documents"],
        "validation_records": val["documents"],
        "sequences": train["rows"],
        "validation_sequences": val["rows"],
        "shards": len(train["shards"]),
        "tokens": stream,  # document tokens + separators of the train split (the packed stream)
        "validation_tokens": val["tokens"] + val["separators"],
        "padding": train["padding"],
        "tail_dropped": train["tail_dropped"],
        "seconds": round(seconds, 3) if seconds is not None else 0.0,
        "tokens_per_s": round(stream / seconds, 1) if seconds else None,
    }



# --- with worker processes (a pool or Ray): the driver plans, the workers write ----------------------
#
# Tokenize tasks first (their results: each partition's document and token count per split), then one
# task per shard (it reads its slices of the partitions' token files, writes the shard and hashes it) and
# one per split for its document table and trainer formats; the driver only adds up counts, plans the
# slices and writes the index.json files. Tasks go several to an executor task (`group_size`); each
# write task leaves a task marker vouching for its files, so a resumed run keeps the tasks that
# finished. The partitions' files stay in `.work/` until their
# component's index.json is written: scratch holds every unfinished component's token stream and
# document rows (about 2 bytes a token and 100 bytes a document).

GROUP_MAX = 32  # filtered parts to a tokenize task, or shards to a write task, at most (`group_size`)
SHARD_MARKER = "shard.{}.{:05d}.json"  # a write task's marker: the shard it wrote (and its sha256)
TABLE_MARKER = "table.{}.json"  # a write task's marker: a split's document table and trainer formats


def _token_slice(entry: Dict[str, Any], dtype: np.dtype, start: int, end: int, out: np.ndarray) -> None:
    """Tokens [start, end) of a split's partition file into `out`; its tokens are the file's last bytes."""
    path = Path(entry["file"])
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        at = size - int(entry["tokens"]) * dtype.itemsize + start * dtype.itemsize
        if at < 0:
            raise Stage2Error(f"{path}: {size} bytes, too short for its {entry['tokens']} tokens")
        f.seek(at)
        got = f.readinto(memoryview(out).cast("B"))
    if got != (end - start) * dtype.itemsize:
        raise Stage2Error(f"{path}: cut short: {got} of {(end - start) * dtype.itemsize} bytes of tokens at byte {at}")


def _partition_rows(entry: Dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """A split's partition file -> its document rows (placed by the result's counts and widths)."""
    path = Path(entry["file"])
    rows_dtype = documents_dtype(*entry["widths"])
    size = path.stat().st_size
    rows_at = size - int(entry["tokens"]) * dtype.itemsize - int(entry["docs"]) * rows_dtype.itemsize
    if rows_at < 0:
        raise Stage2Error(f"{path}: {size} bytes, too short for its {entry['docs']} document rows and {entry['tokens']} tokens")
    return np.fromfile(path, dtype=rows_dtype, count=int(entry["docs"]), offset=rows_at)


def write_shard_task(task: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in a worker: one shard from its slices of the partitions' token files (and any padding),
    its sha256 taken as it is written; kept as it is when a killed run's marker vouches for it."""
    marker = Path(task["marker"])
    done = read_marker(marker, task["key"])
    if done is not None:
        return {**done, "resumed": True}
    dtype = np.dtype(task["dtype"])
    flat = np.empty(task["rows"] * task["seq_len"], dtype=dtype)
    at = 0
    for entry, start, end in task["pieces"]:
        _token_slice(entry, dtype, start, end, flat[at : at + end - start])
        at += end - start
    if len(flat) - at != task["padding"]:
        raise Stage2Error(f"{task['path']}: its slices hold {at} tokens, its rows {len(flat)} with {task['padding']} of padding")
    flat[at:] = task["pad_id"]  # the last shard's padded row (shard.remainder=pad)
    path = Path(task["path"])
    entry = write_shard(path, flat.reshape(-1, task["seq_len"]))
    write_marker(marker, task["key"], {"shard": entry}, [path])
    return {"shard": entry, "resumed": False}


def write_table_task(task: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in a worker: a split's document table (each partition's rows placed at its offset in the
    split's stream) and its trainer formats (the partitions' token streams in order)."""
    marker = Path(task["marker"])
    done = read_marker(marker, task["key"])
    if done is not None:
        return {**done, "resumed": True}
    dtype = np.dtype(task["dtype"])
    folder, comp_dir = Path(task["folder"]), Path(task["comp_dir"])
    lengths: List[np.ndarray] = []

    def rows() -> Iterator[np.ndarray]:
        for entry, first in zip(task["partitions"], task["firsts"]):
            part = _partition_rows(entry, dtype)
            part["first"] += first
            lengths.append(part["tokens"].astype(np.int64))  # a copy: a view would keep every partition's rows alive
            yield part

    table = write_documents(folder / DOCUMENTS, rows(), task["docs"], *task["widths"])
    counted = int(sum(int(x.sum()) for x in lengths))
    if counted != task["stream_tokens"]:
        raise Stage2Error(f"{folder / DOCUMENTS}: its documents hold {counted} tokens, the {task['split']} stream {task['stream_tokens']}")
    outputs = [folder / DOCUMENTS]
    formats: List[Dict[str, Any]] = []
    if set(task["formats"]) - {"npy"}:
        def stream() -> Iterator[np.ndarray]:
            for entry in task["partitions"]:
                tokens = np.empty(int(entry["tokens"]), dtype=dtype)
                _token_slice(entry, dtype, 0, len(tokens), tokens)
                yield tokens

        all_lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
        formats = write_formats(comp_dir, task["split"], task["formats"], stream(), all_lengths, task["vocab_size"], task["tokenizer_name"])
        outputs += [comp_dir / e["file"] for e in formats]
    result = {"documents_table": table, "formats": formats}
    write_marker(marker, task["key"], result, outputs)
    return {**result, "resumed": False}


def write_task(task: Dict[str, Any]) -> Dict[str, Any]:
    return {**task["reply"], **(write_shard_task(task) if task["kind"] == "shard" else write_table_task(task))}


@dataclass
class SplitPlan:
    """One split of a component, planned from its partitions' counts."""

    partitions: List[Dict[str, Any]] = field(default_factory=list)  # result["splits"][split] of each partition, in order

    def counts(self) -> Tuple[int, int, List[int]]:
        """(documents, stream tokens, widths)."""
        docs = sum(int(p["docs"]) for p in self.partitions)
        tokens = sum(int(p["tokens"]) for p in self.partitions)
        widths = [1, 1]
        for p in self.partitions:
            if int(p["docs"]):
                widths = [max(widths[0], int(p["widths"][0])), max(widths[1], int(p["widths"][1]))]
        return docs, tokens, widths


def plan_split(plan: SplitPlan, seq_len: int, per_shard: int, remainder: str, pad_id: Optional[int]) -> Tuple[PackResult, List[Dict[str, Any]]]:
    """What `Packer` makes of the split's stream (rows, padding, tail), and per shard its slices of the
    partitions (entry, start, end), its rows and padding: the same shards, planned from the counts."""
    _, total, _ = plan.counts()
    per = seq_len * per_shard
    full, left = divmod(total, per)
    rows_last, tail = divmod(left, seq_len)
    packed = PackResult(stream_tokens=total)
    if tail:
        if remainder == "pad":
            if pad_id is None or pad_id < 0:
                raise Stage2Error("shard.remainder=pad but the tokenizer has no pad id; train it with a pad_id or use shard.remainder=drop")
            packed.padding = seq_len - tail
            rows_last += 1
        elif remainder == "drop":
            packed.tail_dropped = tail
        else:
            raise Stage2Error(f"shard.remainder={remainder!r}: use drop or pad")
    sizes = [per_shard] * full + ([rows_last] if rows_last else [])
    packed.rows = full * per_shard + rows_last
    shards: List[Dict[str, Any]] = []
    starts = np.cumsum([0] + [int(p["tokens"]) for p in plan.partitions]).tolist()
    j = 0  # the first partition that may hold the shard's first token
    for number, rows in enumerate(sizes):
        begin, end = number * per, min(number * per + rows * seq_len, total)
        pieces = []
        while j < len(plan.partitions) and starts[j + 1] <= begin:
            j += 1
        k = j
        while k < len(plan.partitions) and starts[k] < end:
            a, b = max(begin, starts[k]) - starts[k], min(end, starts[k + 1]) - starts[k]
            if b > a:
                pieces.append((k, a, b))
            k += 1
        shards.append({"number": number, "rows": rows, "pieces": pieces})
    return packed, shards


def _write_key(part_key: str, split: str, seq_len: int, per_shard: int, what: Any) -> str:
    """A write task's marker key: the recipe, and the slices of which partitions it writes (their tokens
    are fixed by the partition key and the input parts)."""
    return f"{checkpoint_key(part_key, split, seq_len, per_shard)}:{json.dumps(what, sort_keys=True, separators=(',', ':'))}"


def _run_group(tasks: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [_passthrough(task) for task in tasks]


def _write_group(tasks: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [write_task(task) for task in tasks]


def _groups(tasks: Iterator[Dict[str, Any]], per: int) -> Iterator[List[Dict[str, Any]]]:
    """Consecutive tasks, `per` to a group (a task of the executor's)."""
    while True:
        group = list(itertools.islice(tasks, per))
        if not group:
            return
        yield group


def group_size(parts_count: int, workers: int) -> int:
    """Partitions per tokenize task (or shards per write task): each task costs the driver about a
    millisecond (the pool's queues and pickling), so several go to a task, while every worker still gets
    about 4 tasks."""
    return max(1, min(GROUP_MAX, parts_count // (4 * max(1, workers))))


def _pack_with_workers(run: Run, tasks: Iterator[Dict[str, Any]], s: ShardConfig, tok: Dict[str, Any], dtype: np.dtype, part_key: str,
                       weights: Dict[str, float], stats: Dict[str, Any], progress: Progress, per: int = 1) -> List[Dict[str, Any]]:
    """The stage with worker processes: tokenize every partition (`per` to a task), then write every shard,
    document table and trainer format in write tasks, then the index.json files; the manifest's entries, in order."""
    order: List[str] = []
    finished: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
    plans: Dict[str, Dict[str, SplitPlan]] = {}
    busy: Dict[str, float] = {}
    for result in itertools.chain.from_iterable(run.executor.map(_run_group, _groups(tasks, per))):
        progress.update(result.get("tokens", 0))
        name = result["component"]
        if name not in plans and name not in finished:
            order.append(name)
            if result.get("finished"):
                finished[name] = _keep_finished(run, run.dir / SHARDS_DIR / name)
                stats["components_resumed"] += 1
                stats["components"][name] = {**_component_stats(*finished[name], None), "resumed": True}
                log.info("shard %s: resume: finished by an earlier attempt, kept", name)
                continue
            plans[name] = {split: SplitPlan() for split in SPLITS}
            busy[name] = 0.0
        if result.get("end"):
            continue
        for split in SPLITS:
            plans[name][split].partitions.append({**result["splits"][split], "index": result["index"], "resumed": bool(result.get("resumed"))})
        busy[name] += result["seconds"]
        if result.get("resumed"):
            stats["partitions_resumed"] += 1
    # Plan every write task (an empty train split fails here, before anything is written).
    writes: List[Dict[str, Any]] = []
    packs: Dict[Tuple[str, str], PackResult] = {}
    for name, splits in plans.items():
        comp_dir = run.dir / SHARDS_DIR / name
        work = comp_dir / WORK_DIR
        if run.cfg.resume:
            log.info("shard %s: resume: %d partitions already tokenized", name, sum(1 for p in splits["train"].partitions if p.get("resumed")))
        for split, plan in splits.items():
            packed, shards = plan_split(plan, s.seq_len, s.sequences_per_shard, str(s.remainder), tok["pad_id"])
            if split == "train" and packed.rows == 0:
                # the mixture would lose it without a word: the reader skips a component without rows
                raise Stage2Error(
                    f"component {name}: its {packed.stream_tokens:,} train tokens fill no row of shard.seq_len={s.seq_len}"
                    " (shard.remainder=drop); lower shard.seq_len, set shard.remainder=pad, or remove the component"
                )
            packs[name, split] = packed
            folder = split_dir(comp_dir, split)
            for shard in shards:
                pieces = [(plan.partitions[k], a, b) for k, a, b in shard["pieces"]]
                what = {"shard": shard["number"], "rows": shard["rows"], "pad": tok["pad_id"] if packed.padding else None,
                        "pieces": [(p["index"], a, b) for p, a, b in pieces]}
                writes.append({
                    "kind": "shard", "reply": {"component": name, "split": split, "number": shard["number"]},
                    "path": str(folder / shard_name(shard["number"])), "rows": shard["rows"], "seq_len": s.seq_len, "dtype": dtype.str,
                    "pieces": pieces, "pad_id": tok["pad_id"] if packed.padding else 0,
                    "padding": shard["rows"] * s.seq_len - sum(b - a for _, a, b in pieces),
                    "marker": str(work / SHARD_MARKER.format(split, shard["number"])), "key": _write_key(part_key, split, s.seq_len, s.sequences_per_shard, what),
                })
            docs, total, widths = plan.counts()
            firsts = np.cumsum([0] + [int(p["tokens"]) for p in plan.partitions])[:-1].tolist()
            what = {"table": [(p["index"], int(p["docs"]), int(p["tokens"])) for p in plan.partitions], "widths": widths, "formats": list(s.formats)}
            writes.append({
                "kind": "table", "reply": {"component": name, "split": split}, "split": split, "folder": str(folder), "comp_dir": str(comp_dir),
                "partitions": plan.partitions, "firsts": firsts, "docs": docs, "stream_tokens": total, "widths": widths, "dtype": dtype.str,
                "formats": list(s.formats), "vocab_size": tok["vocab_size"], "tokenizer_name": tok["path"],
                "marker": str(work / TABLE_MARKER.format(split)), "key": _write_key(part_key, split, s.seq_len, s.sequences_per_shard, what),
            })
    tables: Dict[Tuple[str, str], Dict[str, Any]] = {}
    writing = time.time()
    per_write = group_size(len(writes), run.executor.workers)
    for result in itertools.chain.from_iterable(run.executor.map(_write_group, _groups(iter(writes), per_write))):
        if result["resumed"]:
            stats["write_tasks_resumed"] = stats.get("write_tasks_resumed", 0) + 1
        key = (result["component"], result["split"])
        if "number" in result:
            packs[key].shards.append(result["shard"])  # (in order: the executor's results come in task order)
        else:
            tables[key] = result
    write_seconds = time.time() - writing
    manifest = []
    for name in order:
        if name in finished:
            manifest.append(manifest_entry(name, weights[name], *finished[name]))
            continue
        comp_dir = run.dir / SHARDS_DIR / name
        indexes = {}
        for split in ("validation", "train"):  # the train split's index.json, written last, marks the component done
            folder = split_dir(comp_dir, split)
            packed, table = packs[name, split], tables[name, split]
            for entry in packed.shards:
                run.add_artifact(folder / entry["file"], entry["sha256"])
            run.add_artifact(folder / DOCUMENTS, table["documents_table"]["sha256"])
            for entry in table["formats"]:
                run.add_artifact(comp_dir / entry["file"], entry["sha256"])
            docs = plans[name][split].counts()[0]
            index = component_index(name, weights[name], s, tok, dtype, docs, packed)
            index.update({"split": split, "validation_percent": s.validation_percent, "documents_table": table["documents_table"], "formats": table["formats"]})
            run.add_artifact(write_index(folder, index))
            _clean_split(folder, packed.shards)
            indexes[split] = index
        shutil.rmtree(comp_dir / WORK_DIR, ignore_errors=True)
        train_index, val_index = indexes["train"], indexes["validation"]
        # Its tasks' time (tokenize, and its share of the write tasks by tokens), not wall time: components overlap.
        share = (train_index["tokens"] + train_index["separators"]) / max(1, sum(p.stream_tokens for p in packs.values()))
        stats["components"][name] = _component_stats(train_index, val_index, busy[name] + write_seconds * share)
        manifest.append(manifest_entry(name, weights[name], train_index, val_index))
        _log_component(name, train_index, val_index)
    return manifest


def _pack_in_process(run: Run, tasks: Iterator[Dict[str, Any]], s: ShardConfig, tok: Dict[str, Any], dtype: np.dtype, part_key: str,
                     weights: Dict[str, float], stats: Dict[str, Any], progress: Progress, resume: Dict[str, "ComponentResume"]) -> List[Dict[str, Any]]:
    """The stage with one worker, in this process: partitions tokenized on threads, packed here as they come, in order."""
    seq_len, per_shard = s.seq_len, s.sequences_per_shard
    manifest: List[Dict[str, Any]] = []
    current: Optional[ComponentPacker] = None
    busy = 0.0

    results = _tokenize_in_process(tasks)
    # Closed on an error too: in-process, that stops the tokenizing threads before the error propagates.
    with contextlib.closing(results):
        for result in results:
            progress.update(result.get("tokens", 0))
            name = result["component"]
            comp_dir = run.dir / SHARDS_DIR / name
            state = resume.get(name, ComponentResume())
            if result.get("finished"):
                indexes = _keep_finished(run, comp_dir)
                stats["components_resumed"] += 1
                stats["components"][name] = {**_component_stats(*indexes, None), "resumed": True}
                manifest.append(manifest_entry(name, weights[name], *indexes))
                log.info("shard %s: resume: finished by an earlier attempt, kept", name)
                continue
            if current is None:
                current = ComponentPacker(run, name, seq_len, per_shard, dtype, part_key, state)
                busy = 0.0
                if run.cfg.resume:
                    stats["partitions_resumed"] += state.first
                    log.info(
                        "shard %s: resume: %s kept, partitions before %d packed, %d already tokenized",
                        name, ", ".join(f"{len(p.packer.result.shards)} {p.split} shards" for p in current.splits.values()),
                        state.first, len(state.done["train"]),
                    )
            packing_started = time.time()
            if not result.get("end"):
                current.add(result)
                if result.get("resumed"):
                    stats["partitions_resumed"] += 1
                # Time spent on this component (its tasks + packing), not wall time: tasks run ahead of
                # the packing (on workers, or on threads in-process), so several components may overlap.
                busy += result["seconds"] + time.time() - packing_started
                continue
            train = current.splits["train"]
            if train.packer.rows_at_finish(str(s.remainder)) == 0:
                # the mixture would lose it without a word: the reader skips a component without rows
                raise Stage2Error(
                    f"component {name}: its {train.packer.position:,} train tokens fill no row of shard.seq_len={s.seq_len}"
                    " (shard.remainder=drop); lower shard.seq_len, set shard.remainder=pad, or remove the component"
                )
            # Validation first: the train split's index.json, written last, marks the component done.
            val_index = finish_split(run, current.splits["validation"], s, tok, weights[name])
            train_index = finish_split(run, train, s, tok, weights[name])
            shutil.rmtree(comp_dir / WORK_DIR, ignore_errors=True)
            current = None
            stats["components"][name] = _component_stats(train_index, val_index, busy + time.time() - packing_started)
            manifest.append(manifest_entry(name, weights[name], train_index, val_index))
            _log_component(name, train_index, val_index)

    return manifest


def _log_component(name: str, train: Dict[str, Any], validation: Dict[str, Any]) -> None:
    log.info(
        "shard %s: %d docs (%d of them validation); train split: %d tokens (separators included), %d rows in %d shards",
        name, train["documents"] + validation["documents"], validation["documents"], train["tokens"] + train["separators"],
        train["rows"], len(train["shards"]),
    )


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
    # With workers, each tokenize task checks its part's sha256 as it reads it, and nothing is written
    # outside .work/ before every task has returned; in-process, the driver reads them all first.
    with parts.deferred_hashes(not _in_process(run.executor)):
        filtered = filtered_source(run, s.input_run, "shard")
    workers = getattr(run.executor, "workers", 1)
    part_key = partition_key(tok["sha256"], dtype, s.validation_percent)
    base = {
        "model": str(model.resolve()),
        "partition_key": part_key,
        "batch_size": s.batch_size,
        "num_threads": encode_threads(s.num_threads, workers),
        "bos": tok["bos_id"] if s.add_bos else None,
        "eos": tok["eos_id"] if s.add_eos else None,
        "dtype": dtype.str,
        "validation_percent": s.validation_percent,
    }
    if run.cfg.stage == "pipeline" and s.validation_percent > run.cfg.tokenizer.heldout_percent:
        log.warning(
            "shard: shard.validation_percent=%s is above tokenizer.heldout_percent=%s: the tokenizer trained on some validation documents",
            s.validation_percent, run.cfg.tokenizer.heldout_percent,
        )
    stats = run.stage_stats("shard")
    stats.update({"tokenizer": tok["path"], "seq_len": seq_len, "dtype": dtype.name, "formats": list(s.formats), "validation_percent": s.validation_percent, "components": {}})
    resume: Dict[str, ComponentResume] = {}
    if run.cfg.resume:
        resume = {c.name: find_resume(run.dir / SHARDS_DIR / c.name, part_key, seq_len, per_shard) for c in run.components}
        stats["resumed"] = True
        stats["components_resumed"] = 0
        stats["partitions_resumed"] = 0  # partitions not tokenized again
    weights = {c.name: c.weight for c in run.components}
    stage_started = time.time()
    progress = Progress("shard", unit="token", enabled=run.cfg.progress)
    if _in_process(run.executor):
        _PROCESSORS[base["model"]] = sp  # loaded above: a second load costs as much as encoding a small part
        manifest = _pack_in_process(run, _tasks(run, filtered, base, resume), s, tok, dtype, part_key, weights, stats, progress, resume)
    else:
        for state in resume.values():  # (checkpoints are the in-process packer's: every partition's tokens are read again)
            state.splits = {split: SplitResume() for split in SPLITS}
        # (raw documents travel in their tasks: one partition to a task)
        count = sum(len(parts.filtered_part_files(filtered, c.name)) for c in run.components) if filtered is not None else 0
        per = group_size(count, workers)
        manifest = _pack_with_workers(run, _tasks(run, filtered, base, resume), s, tok, dtype, part_key, weights, stats, progress, per)
    progress.close()
    plan = mixture_plan(manifest, seq_len, s.plan_tokens, s.max_epochs)
    stats["plan"] = plan
    if "megatron" in s.formats:
        stats["megatron_data_path"] = megatron_data_path(manifest)
    for name, p in plan["components"].items():
        if p["epochs"] > s.max_epochs:
            log.warning(
                "shard: component %s would be repeated %.1f times for a budget of %s tokens (more than shard.max_epochs=%s,"
                " beyond which repeated data returns less, Muennighoff et al. 2023); lower its weight or the budget",
                name, p["epochs"], f"{plan['tokens']:,}", s.max_epochs,
            )
    for name, c in stats["components"].items():
        for split, tokens, rows in (("train", c["tokens"], c["sequences"]), ("validation", c["validation_tokens"], c["validation_sequences"])):
            if tokens and not rows:  # its tokens are only the dropped tail: a reader finds no row of it
                log.warning("shard: component %s has %s %s tokens, fewer than one row of shard.seq_len=%d: it has no %s rows",
                            name, f"{tokens:,}", split, seq_len, split)
        if s.validation_percent > 0 and c["records"] and not c["validation_records"]:  # (validation then samples the others only)
            log.warning("shard: component %s has no validation documents: shard.validation_percent=%s of its %s documents picked none",
                        name, s.validation_percent, f"{c['records']:,}")
    if s.validation_percent == 0 and set(s.formats) - {"npy"}:
        log.warning("shard: shard.validation_percent=0: the validation files of %s are empty (nanoGPT's train.py reads val.bin"
                    " at its first step; Megatron gets no --valid-data-path)", ", ".join(f for f in s.formats if f != "npy"))
    run.add_artifact(write_manifest(run.dir / SHARDS_DIR, seq_len, dtype, tok, manifest, list(s.formats)))
    comps = stats["components"].values()
    wall = time.time() - stage_started
    stats["seconds"] = round(wall, 3)
    stats["tokens_per_s"] = round(sum(c["tokens"] + c["validation_tokens"] for c in comps) / wall, 1) if wall > 0 else None
    return {"tokens": sum(c["tokens"] for c in comps), "sequences": sum(c["sequences"] for c in comps)}


def mixture_plan(manifest: List[Dict[str, Any]], seq_len: int, budget: Optional[float], max_epochs: float) -> Dict[str, Any]:
    """Per component: weight, train tokens (in rows: what a sampler draws), validation tokens (its whole
    stream), share of the mixture's train tokens and of its draws (the weight as realised), and the
    passes a training run of `budget` tokens makes over it (`stage2.reader.plan_epochs`, the numbers
    `MixtureSampler.epochs` gives); budget None: one pass over the component with the most tokens."""
    from stage2.reader import plan_epochs

    names = [c["name"] for c in manifest]
    rows = np.array([c["rows"] for c in manifest], dtype=np.int64)
    weights = np.array([c["weight"] if c["rows"] else 0.0 for c in manifest], dtype=np.float64)
    total = int(rows.sum()) * seq_len
    if not names or weights.sum() <= 0:
        return {"tokens": 0, "max_epochs": max_epochs, "components": {}}
    epochs_of, shares = plan_epochs(weights, rows, 0)
    if budget is None:
        largest = int(np.argmax(np.where(weights > 0, rows, -1)))
        budget = int(rows[largest]) * seq_len / shares[largest]  # the draws that make one pass over it
    draws = int(budget) // seq_len
    epochs, _ = plan_epochs(weights, rows, draws)
    out = {}
    for i, c in enumerate(manifest):
        out[c["name"]] = {
            "weight": c["weight"],
            "train_tokens": int(rows[i]) * seq_len,
            "validation_tokens": int(c["validation"]["tokens"]),
            "token_share": round(int(rows[i]) * seq_len / total, 6) if total else 0.0,
            "mixture_share": round(float(shares[i]), 6),
            "epochs": round(float(epochs[i]), 4),
        }
    return {"tokens": draws * seq_len, "max_epochs": max_epochs, "components": out}


def megatron_data_path(manifest: List[Dict[str, Any]]) -> Dict[str, str]:
    """Megatron's `--train-data-path` and `--valid-data-path` arguments: weight and prefix per component
    (prefixes relative to the run folder); "" for a split no component has a document of. A component
    whose split is empty is left out of it: Megatron cannot open an empty dataset (mmap of a 0-byte .bin)."""
    def arg(split: str) -> str:
        return " ".join(
            f"{c['weight']:g} {SHARDS_DIR}/{c['name']}/{format_files('megatron', split)[0][:-4]}"
            for c in manifest if c["weight"] > 0 and (c if split == "train" else c["validation"])["documents"]
        )

    return {"train": arg("train"), "validation": arg("validation")}


def _keep_finished(run: Run, comp_dir: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A component the interrupted run finished: register its files; its indexes (train, validation)."""
    shutil.rmtree(comp_dir / WORK_DIR, ignore_errors=True)
    indexes = []
    for split in SPLITS:
        folder = split_dir(comp_dir, split)
        index = read_state(folder / INDEX) or {}
        _clean_split(folder, index["shards"])
        for entry in index["shards"]:
            run.add_artifact(folder / entry["file"])
        for entry in index["formats"]:
            run.add_artifact(comp_dir / entry["file"])
        run.add_artifact(folder / DOCUMENTS)
        run.add_artifact(folder / INDEX)
        indexes.append(index)
    return indexes[0], indexes[1]


def plan_table(shard_stats: Dict[str, Any], run_dir: Optional[Path] = None) -> str:
    """The mixture plan for the end-of-run table (and `stage=report report.tokens=N`), and Megatron's arguments."""
    plan = shard_stats.get("plan") or {}
    comps = plan.get("components") or {}
    if not comps:
        return ""
    rows = [["component", "weight", "train tokens", "validation tokens", "token share", "epochs"]]
    for name, c in comps.items():
        flag = " (> max_epochs)" if c["epochs"] > plan["max_epochs"] else ""
        rows.append([name, f"{c['weight']:g}", f"{c['train_tokens']:,}", f"{c['validation_tokens']:,}", f"{c['token_share']:.1%}", f"{c['epochs']:.2f}{flag}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"mixture plan for {plan['tokens']:,} training tokens:"]
    lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    data_path = shard_stats.get("megatron_data_path")
    if data_path:
        prefix = f"{run_dir}/" if run_dir is not None else ""
        def absolute(arg: str) -> str:
            parts = arg.split()
            return " ".join(p if i % 2 == 0 else prefix + p for i, p in enumerate(parts))
        lines.append(f"megatron: --train-data-path {absolute(data_path['train'])}")
        if data_path["validation"]:
            lines.append(f"          --valid-data-path {absolute(data_path['validation'])}")
        else:
            lines.append("          (no --valid-data-path: no component has a validation document)")
    return "\n".join(lines)
