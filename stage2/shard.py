"""The shard stage: tokenize every component and pack it into fixed-length `.npy` shards.

Partitions (a filtered part, or `dataset.partition_size` raw documents) are tokenized in parallel by
`run.executor`; each task writes its token stream to `shards/<component>/.work/`. The driver packs
those streams in partition order as they arrive, so the shards are byte-identical whatever the
worker count, and only one shard's worth of tokens (plus the partitions in flight) is in memory.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
from tqdm import tqdm

from stage2 import packing, parts
from stage2.errors import Stage2Error
from stage2.run import Run, atomic_path, write_json

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
WORK_DIR = ".work"
INDEX = "index.json"
MANIFEST = "manifest.json"


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
        # A model from a past run: note that run in this run's lineage.
        for folder in (model.parent, model.parent.parent):
            if (folder / "stats.json").exists() and folder.resolve() != run.dir.resolve():
                run.record_lineage("tokenizer", folder)
                break
        return model
    found = sorted((run.dir / "tokenizer").glob("*.model"))
    if len(found) != 1:
        raise Stage2Error(
            f"{run.dir / 'tokenizer'}: expected one .model from this run's tokenizer stage, found {len(found)};"
            " run stage=tokenizer first or set shard.tokenizer=<model or run folder>"
        )
    return found[0]


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


def tokenize_partition(task: Dict[str, Any]) -> Dict[str, Any]:
    """One partition's texts -> a raw token file (the shard dtype, no header). Runs in a worker."""
    started = time.time()
    sp = _processor(task["model"])
    if task.get("part"):
        import pyarrow.parquet as pq

        # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas (~3 s per process here).
        texts: List[str] = pq.ParquetFile(task["part"]).read(columns=["text"]).column("text").to_pylist()
    else:
        texts = task["texts"]
    out = Path(task["out"])
    dtype = np.dtype(task["dtype"])
    tokens = 0
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            for chunk in packing.encode_stream(sp, texts, task["batch_size"], task["num_threads"], task["bos"], task["eos"], dtype):
                chunk.tofile(f)
                tokens += len(chunk)
    return {"component": task["component"], "out": str(out), "docs": len(texts), "tokens": tokens, "seconds": time.time() - started}


def _tasks(run: Run, filtered: Optional[Path], base: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """One task per filtered part, or per `partition_size` raw documents, components in manifest order."""
    size = int(run.cfg["dataset"]["partition_size"])
    for spec in run.components:
        work = run.dir / SHARDS_DIR / spec.name / WORK_DIR
        if filtered is not None:
            sources = ({"part": str(p)} for p in parts.filtered_part_files(filtered, spec.name))
        else:
            docs = (d.text for d in parts.component_documents(run, spec, None))
            sources = ({"texts": list(chunk)} for chunk in iter(lambda: list(itertools.islice(docs, size)), []))
        for i, source in enumerate(sources):
            yield {**base, **source, "component": spec.name, "out": str(work / f"part-{i:05d}.bin")}
        # A sentinel so the driver knows the component ended even when it had no partition.
        yield {"component": spec.name, "end": True}


def _passthrough(task: Dict[str, Any]) -> Dict[str, Any]:
    return task if task.get("end") else tokenize_partition(task)


def _tokenizer_info(run: Run, model: Path, sp: Any) -> Dict[str, Any]:
    try:
        shown = str(model.relative_to(run.dir.resolve()))  # inside the run folder: stable across runs
    except ValueError:
        shown = str(model)
    return {
        "path": shown,
        "sha256": packing.file_sha256(model),
        "vocab_size": int(sp.get_piece_size()),
        "eos_id": int(sp.eos_id()),
        "bos_id": int(sp.bos_id()),
        "pad_id": int(sp.pad_id()),
    }


def component_index(name: str, weight: float, cfg: Dict[str, Any], tok: Dict[str, Any], dtype: np.dtype, docs: int, packed: packing.PackResult) -> Dict[str, Any]:
    """index.json: what a reader and `stage=verify` need; no timings, so it is the same in every run."""
    n_sep = docs * (int(bool(cfg["add_eos"])) + int(bool(cfg["add_bos"])))
    return {
        "component": name,
        "weight": weight,
        "seq_len": int(cfg["seq_len"]),
        "dtype": dtype.name,
        "vocab_size": tok["vocab_size"],
        "eos_id": tok["eos_id"],
        "bos_id": tok["bos_id"],
        "pad_id": tok["pad_id"],
        "add_eos": bool(cfg["add_eos"]),
        "add_bos": bool(cfg["add_bos"]),
        "remainder": cfg["remainder"],
        "tokenizer": {"path": tok["path"], "sha256": tok["sha256"]},
        "documents": docs,
        "tokens": packed.stream_tokens - n_sep,  # document tokens, without separators
        "separators": n_sep,
        "rows": packed.rows,
        "padding": packed.padding,
        "tail_dropped": packed.tail_dropped,
        "shards": packed.shards,
    }


def run(run: Run) -> Dict[str, Any]:
    import sentencepiece as spm

    cfg = run.cfg["shard"]
    seq_len, per_shard = int(cfg["seq_len"]), int(cfg["sequences_per_shard"])
    if seq_len < 2:
        raise Stage2Error(f"shard.seq_len={seq_len}: a row needs at least 2 tokens (an input and its next-token target)")
    model = resolve_tokenizer(run, cfg.get("tokenizer"))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = _tokenizer_info(run, model.resolve(), sp)
    if cfg["remainder"] == "pad" and tok["pad_id"] < 0:
        raise Stage2Error(f"{model}: shard.remainder=pad but this tokenizer has no pad id (-1); use shard.remainder=drop or a tokenizer trained with pad_id")
    for what, flag, tid in (("add_eos", cfg["add_eos"], tok["eos_id"]), ("add_bos", cfg["add_bos"], tok["bos_id"])):
        if flag and tid < 0:
            raise Stage2Error(f"{model}: shard.{what}=true but this tokenizer has no {what[4:]} id (-1)")
    dtype = packing.token_dtype(tok["vocab_size"])
    filtered = parts.filtered_source(run, cfg.get("input_run"))
    workers = getattr(run.executor, "workers", 1)
    base = {
        "model": str(model.resolve()),
        "batch_size": int(cfg["batch_size"]),
        "num_threads": encode_threads(int(cfg.get("num_threads") or 0), workers),
        "bos": tok["bos_id"] if cfg["add_bos"] else None,
        "eos": tok["eos_id"] if cfg["add_eos"] else None,
        "dtype": dtype.str,
    }
    stats = run.stage_stats("shard")
    stats.update({"tokenizer": tok["path"], "seq_len": seq_len, "dtype": dtype.name, "components": {}})
    weights = {s.name: s.weight for s in run.components}
    manifest: List[Dict[str, Any]] = []
    packer: Optional[packing.Packer] = None
    docs, busy, stage_started = 0, 0.0, time.time()

    results = run.executor.map(_passthrough, _tasks(run, filtered, base))
    for result in tqdm(results, desc="shard", unit="part", disable=not run.cfg.get("progress", True)):
        name = result["component"]
        out_dir = run.dir / SHARDS_DIR / name
        if packer is None:
            packer = packing.Packer(out_dir, seq_len, per_shard, dtype, on_shard=run.add_artifact)
            docs, busy = 0, 0.0
        packing_started = time.time()
        if not result.get("end"):
            work = Path(result["out"])
            packer.add(np.memmap(work, dtype=dtype, mode="r") if work.stat().st_size else np.empty(0, dtype))
            work.unlink()
            docs += result["docs"]
            # Time spent on this component (its tasks + packing), not wall time: partitions of
            # several components overlap when there are several workers.
            busy += result["seconds"] + time.time() - packing_started
            continue
        packed = packer.finish(cfg["remainder"], tok["pad_id"])
        packer = None
        seconds = busy + time.time() - packing_started
        index = component_index(name, weights[name], cfg, tok, dtype, docs, packed)
        write_json(out_dir / INDEX, index)
        run.add_artifact(out_dir / INDEX)
        _remove_empty(out_dir / WORK_DIR)
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
        manifest.append({"name": name, "weight": weights[name], "index": f"{name}/{INDEX}", "rows": packed.rows})
        log.info("shard %s: %d docs, %d tokens, %d rows in %d shards", name, docs, packed.stream_tokens, packed.rows, len(packed.shards))

    write_json(run.dir / SHARDS_DIR / MANIFEST, {"seq_len": seq_len, "dtype": dtype.name, "tokenizer": tok, "components": manifest})
    run.add_artifact(run.dir / SHARDS_DIR / MANIFEST)
    comps = stats["components"].values()
    wall = time.time() - stage_started
    stats["seconds"] = round(wall, 3)
    stats["tokens_per_s"] = round(sum(c["tokens"] for c in comps) / wall, 1) if wall > 0 else None
    return {"tokens": sum(c["tokens"] for c in comps), "sequences": sum(c["sequences"] for c in comps)}


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or left-overs of an interrupted run: harmless
