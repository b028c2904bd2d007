"""The shard format: the one module that knows how a shard run lies on disk and how it is read back.

A run's `shards/` folder holds `manifest.json` (seq_len, dtype, tokenizer, and each component's name,
weight, index and rows) and a folder per component: its `index.json` (what a reader and
`stage=verify` need, and each shard's file, rows and sha256) and its shards `shard-NNNNN.npy`, each a
`[rows, seq_len]` C-order array in .npy format 1.0, of the smallest unsigned dtype that holds every
id of the vocabulary (`token_dtype`).

numpy is the only heavy import: the training reader (`stage2.reader`) is built on this module.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import numpy as np

from stage2.errors import Stage2Error
from stage2.io.files import atomic_path, file_sha256, write_array, write_json

if TYPE_CHECKING:
    from stage2.config import ShardConfig
    from stage2.shards.pack import PackResult

SHARDS_DIR = "shards"
INDEX = "index.json"
MANIFEST = "manifest.json"
_SHARD_NAME = "shard-{:05d}.npy"
# Records a reader needs in each file: without them a shard run cannot be read.
INDEX_KEYS = ("component", "seq_len", "dtype", "rows", "shards")
MANIFEST_KEYS = ("seq_len", "dtype", "components")
UINT16_VOCAB = 1 << 16


def shard_name(number: int) -> str:
    """The file name of a component's shard `number` (counting from 0)."""
    return _SHARD_NAME.format(number)


def is_shard_name(name: str) -> bool:
    return re.fullmatch(r"shard-\d{5,}\.npy", name) is not None


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a vocabulary."""
    if vocab_size <= 0:
        raise Stage2Error(f"vocabulary size {vocab_size} is not positive")
    return np.dtype(np.uint16) if vocab_size <= UINT16_VOCAB else np.dtype(np.uint32)


def shards_dir(path: Path) -> Path:
    """A run folder or its `shards/` folder -> the `shards/` folder."""
    path = Path(path)
    return path if (path / MANIFEST).exists() and path.name == SHARDS_DIR else path / SHARDS_DIR


# --- writing ----------------------------------------------------------------------------------------


def write_shard(path: Path, rows: np.ndarray) -> Dict[str, Any]:
    """Write one `[rows, seq_len]` shard atomically; read it back to check shape and dtype.

    Returns the shard's entry in its component's index.json."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write_array(f, rows, npy_header=True)
        back = np.load(tmp, mmap_mode="r")
        if back.dtype != rows.dtype or back.shape != rows.shape:
            raise Stage2Error(f"{path}: read back as {back.dtype}{back.shape}, wrote {rows.dtype}{rows.shape}")
        del back
        sha = file_sha256(tmp)
    return {"file": path.name, "rows": int(rows.shape[0]), "sha256": sha}


def component_index(name: str, weight: float, s: "ShardConfig", tok: Dict[str, Any], dtype: np.dtype, docs: int, packed: PackResult) -> Dict[str, Any]:
    """index.json: what a reader and `stage=verify` need; no timings, so it is the same in every run."""
    n_sep = docs * (int(s.add_eos) + int(s.add_bos))
    return {
        "component": name,
        "weight": weight,
        "seq_len": s.seq_len,
        "dtype": dtype.name,
        "vocab_size": tok["vocab_size"],
        "eos_id": tok["eos_id"],
        "bos_id": tok["bos_id"],
        "pad_id": tok["pad_id"],
        "add_eos": s.add_eos,
        "add_bos": s.add_bos,
        "remainder": str(s.remainder),
        "tokenizer": {"path": tok["path"], "sha256": tok["sha256"]},
        "documents": docs,
        "tokens": packed.stream_tokens - n_sep,  # document tokens, without separators
        "separators": n_sep,
        "rows": packed.rows,
        "padding": packed.padding,
        "tail_dropped": packed.tail_dropped,
        "shards": packed.shards,
    }


def write_index(comp_dir: Path, index: Dict[str, Any]) -> Path:
    path = Path(comp_dir) / INDEX
    write_json(path, index)
    return path


def manifest_entry(name: str, weight: float, rows: int) -> Dict[str, Any]:
    """A component's line in manifest.json."""
    return {"name": name, "weight": weight, "index": f"{name}/{INDEX}", "rows": rows}


def write_manifest(folder: Path, seq_len: int, dtype: np.dtype, tok: Dict[str, Any], components: List[Dict[str, Any]]) -> Path:
    """The `shards/` folder's manifest.json: `components` are `manifest_entry`s, in the run's order."""
    path = Path(folder) / MANIFEST
    write_json(path, {"seq_len": seq_len, "dtype": dtype.name, "tokenizer": tok, "components": components})
    return path


# --- reading ----------------------------------------------------------------------------------------


def open_shard(path: Path, rows: int, seq_len: int, dtype: str) -> np.ndarray:
    """A shard as a read-only `[rows, seq_len]` memory map, after checking that its .npy header and its
    length are what the component's index.json says: a cut-short file or a rewritten header fails here,
    naming the file, instead of shifting every later row. (The bytes of the rows are not hashed here:
    `stage=verify` compares every shard with the sha256 recorded in index.json.)"""
    path = Path(path)
    want = np.dtype(dtype)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, got = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, got = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version[0]}.{version[1]}, shards are written as 1.0")
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise Stage2Error(f"{path}: listed in its {INDEX} but missing") from None
    except OSError as exc:
        raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # numpy's header parser: a damaged or overwritten header
        raise Stage2Error(f"{path}: not a readable .npy shard ({str(exc).strip().splitlines()[0]}): the header is damaged") from None
    if got != want or fortran or tuple(shape) != (rows, seq_len):
        raise Stage2Error(
            f"{path}: the .npy header says {tuple(shape)} {got.name}{' (Fortran order)' if fortran else ''},"
            f" {INDEX} says ({rows}, {seq_len}) {want.name}: the file was rewritten or damaged"
        )
    expected = offset + rows * seq_len * want.itemsize
    if size != expected:
        raise Stage2Error(f"{path}: {size} bytes, its header and {INDEX} say {expected}: the file is {'cut short' if size < expected else 'longer'}")
    if rows == 0:  # (a map of no bytes cannot be made)
        return np.empty((0, seq_len), dtype=want)
    return np.memmap(path, dtype=want, mode="r", offset=offset, shape=(rows, seq_len), order="C")


def read_record(path: Path, keys: Sequence[str]) -> Dict[str, Any]:
    """A JSON record of a shard run (index.json, manifest.json) holding `keys`; a damaged one is a one-line error."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Stage2Error(f"{path}: missing") from None
    except OSError as exc:
        raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise Stage2Error(f"{path}: not valid JSON ({str(exc).strip().splitlines()[0]}): the file is damaged") from None
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise Stage2Error(f"{path}: no {', '.join(missing)}: not a shard run's record, or a damaged one")
    return record


def read_index(comp_dir: Path) -> Dict[str, Any]:
    """A component's index.json, with the records a reader needs."""
    return read_record(Path(comp_dir) / INDEX, INDEX_KEYS)


def read_manifest(folder: Path) -> Dict[str, Any]:
    """A `shards/` folder's manifest.json, with the records a reader needs."""
    return read_record(Path(folder) / MANIFEST, MANIFEST_KEYS)
