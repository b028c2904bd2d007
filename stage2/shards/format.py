"""The shard format: the one module that knows how a shard run lies on disk and how it is read back.

A run's `shards/` folder holds `manifest.json` (seq_len, dtype, tokenizer, formats, and each
component's name, weight, index and rows per split) and a folder per component:

    shards/<component>/index.json, shard-NNNNN.npy, documents.npy        the train split
    shards/<component>/validation/index.json, shard-NNNNN.npy, documents.npy
    shards/<component>/megatron/{train,validation}.{bin,idx}           shard.formats: megatron
    shards/<component>/datatrove/{train,validation}/00000.ds{,.index,.metadata}   datatrove
    shards/<component>/nanogpt/{train,val}.bin                         nanogpt

The train split stays where shards have always been, so readers of earlier runs read new ones.

* Packing (`Packer`): a component's documents are one token stream (each document followed by EOS,
  preceded by BOS when asked), cut into rows of `seq_len` tokens and written as shards of up to
  `rows_per_shard` rows; only one shard's worth of tokens is held in memory, so memory is set by the
  config (seq_len x rows_per_shard), not by the corpus size.
* npy shards: `[rows, seq_len]` C-order arrays in .npy format 1.0, of the smallest unsigned dtype that
  holds every id of the vocabulary (`token_dtype`); a split's index.json lists them with their sha256.
* documents.npy: the split's document table, a structured array (`DOC_FIELDS`: id and source as UTF-8
  bytes, record, first token in the split's stream, tokens including separators), in stream order.
* megatron, datatrove, nanogpt: the split's whole stream (every document, no tail dropped, no padding)
  in each trainer's own layout, written byte for byte as their writers do (docs/outputs.md cites the
  source); a split's index.json lists them under `formats` with their sha256.

numpy is the only heavy import: the training reader (`stage2.reader`) is built on this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from stage2.errors import Stage2Error
from stage2.io.files import HashingFile, atomic_path, atomic_write, write_array, write_json

if TYPE_CHECKING:
    from stage2.config import ShardConfig

SHARDS_DIR = "shards"
INDEX = "index.json"
MANIFEST = "manifest.json"
_SHARD_NAME = "shard-{:05d}.npy"
# Records a reader needs in each file: without them a shard run cannot be read.
INDEX_KEYS = ("component", "seq_len", "dtype", "rows", "shards")
MANIFEST_KEYS = ("seq_len", "dtype", "components")
UINT16_VOCAB = 1 << 16
SPLITS = ("train", "validation")
VALIDATION_DIR = "validation"
DOCUMENTS = "documents.npy"
FORMATS = ("npy", "megatron", "datatrove", "nanogpt")


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


def split_dir(comp_dir: Path, split: str) -> Path:
    """Where a component's split lies: train in the component's folder, validation in `validation/`."""
    if split not in SPLITS:
        raise Stage2Error(f"split={split!r}: use one of {', '.join(SPLITS)}")
    return Path(comp_dir) if split == "train" else Path(comp_dir) / VALIDATION_DIR


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
            out = HashingFile(f, hashlib.sha256())  # its sha256 taken from the bytes on their way out, not read back
            write_array(out, rows, npy_header=True)
        back = np.load(tmp, mmap_mode="r")
        if back.dtype != rows.dtype or back.shape != rows.shape or os.path.getsize(tmp) != out.size:
            raise Stage2Error(f"{path}: read back as {back.dtype}{back.shape}, wrote {rows.dtype}{rows.shape}")
        del back
        sha = out.digest.hexdigest()
    return {"file": path.name, "rows": int(rows.shape[0]), "sha256": sha}


@dataclass
class PackResult:
    rows: int = 0
    stream_tokens: int = 0  # document tokens + separators fed in
    padding: int = 0
    tail_dropped: int = 0
    shards: List[Dict[str, Any]] = field(default_factory=list)
    tail: Optional[np.ndarray] = field(default=None, compare=False)  # (an array: compared apart) the dropped tail's tokens (the trainer formats keep them)


class Packer:
    """Feed token chunks in stream order; full shards are written as soon as they fill."""

    def __init__(self, out_dir: Path, seq_len: int, rows_per_shard: int, dtype: np.dtype, on_shard=None):
        if seq_len < 2:
            raise Stage2Error(f"shard.seq_len={seq_len}: a row needs at least 2 tokens (an input and its next-token target)")
        if rows_per_shard < 1:
            raise Stage2Error(f"shard.sequences_per_shard={rows_per_shard} must be at least 1")
        self.out_dir = Path(out_dir)
        self.seq_len = seq_len
        self.rows_per_shard = rows_per_shard
        self.dtype = np.dtype(dtype)
        self.on_shard = on_shard  # called with each written shard's path
        self._buf = np.empty(seq_len * rows_per_shard, dtype=self.dtype)
        self._fill = 0
        self.result = PackResult()

    def add(self, tokens: np.ndarray) -> None:
        """Copy a chunk (an array or a memmap) into the shard buffer, flushing every full shard."""
        n, pos = len(tokens), 0
        self.result.stream_tokens += n
        while pos < n:
            take = min(n - pos, len(self._buf) - self._fill)
            self._buf[self._fill : self._fill + take] = tokens[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == len(self._buf):
                # Emptied before the flush, so `on_shard` sees the state a checkpoint can resume from.
                self._fill = 0
                self._flush(self._buf)

    @property
    def position(self) -> int:
        """Stream tokens fed so far (the next token's offset in the component's stream)."""
        return self.result.stream_tokens

    def state(self) -> Dict[str, Any]:
        """A checkpoint, taken when the buffer is empty (right after a full shard): what `restore` needs."""
        if self._fill:
            raise ValueError("a packer checkpoint needs an empty buffer (take it right after a full shard)")
        return {"rows": self.result.rows, "shards": [dict(s) for s in self.result.shards]}

    def restore(self, state: Dict[str, Any]) -> None:
        """Continue after the shards of a checkpoint: feed the stream from token rows * seq_len on."""
        if self.result.stream_tokens or self.result.shards:
            raise ValueError("restore a checkpoint into a fresh packer only")
        self.result.rows = int(state["rows"])
        self.result.shards = [dict(s) for s in state["shards"]]
        self.result.stream_tokens = self.result.rows * self.seq_len

    def rows_at_finish(self, remainder: str) -> int:
        """The rows `finish(remainder)` would leave."""
        full, tail = divmod(self._fill, self.seq_len)
        return self.result.rows + full + int(bool(tail) and remainder == "pad")

    def finish(self, remainder: str, pad_id: Optional[int]) -> PackResult:
        """Write the last, partial shard; the tail that does not fill a row is dropped or padded."""
        full = self._fill // self.seq_len
        tail = self._fill - full * self.seq_len
        rows = full
        if tail:
            if remainder == "pad":
                if pad_id is None or pad_id < 0:
                    raise Stage2Error("shard.remainder=pad but the tokenizer has no pad id; train it with a pad_id or use shard.remainder=drop")
                self._buf[self._fill : (full + 1) * self.seq_len] = pad_id
                self.result.padding = self.seq_len - tail
                rows += 1
            elif remainder == "drop":
                self.result.tail_dropped = tail
                self.result.tail = self._buf[full * self.seq_len : self._fill].copy()
            else:
                raise Stage2Error(f"shard.remainder={remainder!r}: use drop or pad")
        if rows:
            self._flush(self._buf[: rows * self.seq_len])
        self._fill = 0
        return self.result

    def _flush(self, flat: np.ndarray) -> None:
        rows = flat.reshape(-1, self.seq_len)
        path = self.out_dir / shard_name(len(self.result.shards))
        self.result.shards.append(write_shard(path, rows))
        self.result.rows += rows.shape[0]
        if self.on_shard is not None:
            self.on_shard(path)


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


def manifest_entry(name: str, weight: float, train: Dict[str, Any], validation: Dict[str, Any]) -> Dict[str, Any]:
    """A component's line in manifest.json, from its splits' index.json (`tokens`: the split's stream,
    separators included, all of which the trainer formats hold)."""
    def split(index: Dict[str, Any]) -> Dict[str, Any]:
        return {"rows": index["rows"], "tokens": index["tokens"] + index["separators"], "documents": index["documents"]}

    return {"name": name, "weight": weight, "index": f"{name}/{INDEX}", **split(train),
            "validation": {"index": f"{name}/{VALIDATION_DIR}/{INDEX}", **split(validation)}}


def write_manifest(folder: Path, seq_len: int, dtype: np.dtype, tok: Dict[str, Any], components: List[Dict[str, Any]], formats: Sequence[str] = ("npy",)) -> Path:
    """The `shards/` folder's manifest.json: `components` are `manifest_entry`s, in the run's order."""
    path = Path(folder) / MANIFEST
    write_json(path, {"seq_len": seq_len, "dtype": dtype.name, "tokenizer": tok, "formats": list(formats), "components": components})
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


# --- document tables --------------------------------------------------------------------------------

# A document table's columns: id and source as UTF-8 bytes (fixed width: the longest in the table),
# the record number in its source, the offset of its first token in the split's stream, and its
# tokens (separators included: EOS, and BOS with shard.add_bos).
DOC_FIELDS = (("id", "S"), ("source", "S"), ("record", "<i8"), ("first", "<i8"), ("tokens", "<i8"))


def documents_dtype(id_width: int, source_width: int) -> np.dtype:
    return np.dtype([("id", f"S{max(1, id_width)}"), ("source", f"S{max(1, source_width)}"), ("record", "<i8"), ("first", "<i8"), ("tokens", "<i8")])


def document_rows(ids: Sequence[str], sources: Sequence[str], records: Sequence[int], tokens: np.ndarray, first: int = 0) -> np.ndarray:
    """Documents -> table rows; `first` is the stream offset of the first document's first token."""
    bid = [i.encode("utf-8", "surrogatepass") for i in ids]
    bsrc = [x.encode("utf-8", "surrogatepass") for x in sources]
    rows = np.empty(len(bid), dtype=documents_dtype(max(map(len, bid), default=1), max(map(len, bsrc), default=1)))
    rows["id"], rows["source"] = bid, bsrc
    rows["record"] = np.asarray(records, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    rows["tokens"] = tokens
    rows["first"] = first + np.concatenate([[0], np.cumsum(tokens)[:-1]]) if len(tokens) else 0
    return rows


def utf8_fixed_width(offsets: np.ndarray, data: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Strings held as UTF-8 bytes `data` cut at `offsets` (Arrow's string layout), those at `keep`, as a
    numpy 'S' array as wide as the longest of them (at least 1): what `document_rows` makes of the
    same strings, without a Python object per string."""
    starts = np.asarray(offsets[:-1], dtype=np.int64)[keep]
    lens = np.asarray(offsets[1:], dtype=np.int64)[keep] - starts
    width = max(1, int(lens.max(initial=0)))
    out = np.zeros(len(starts) * width, np.uint8)
    total = int(lens.sum())
    if total:
        before = np.cumsum(lens) - lens  # bytes of the kept strings ahead of each one
        step = np.arange(total, dtype=np.int64)
        out[step + np.repeat(np.arange(len(starts), dtype=np.int64) * width - before, lens)] = data[step + np.repeat(starts - before, lens)]
    return out.view(f"S{width}")


def document_rows_fixed(ids: np.ndarray, sources: np.ndarray, records: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """`document_rows` from ids and sources already as 'S' arrays (`utf8_fixed_width`), first offset 0."""
    rows = np.empty(len(ids), dtype=documents_dtype(ids.dtype.itemsize, sources.dtype.itemsize))
    rows["id"], rows["source"], rows["record"] = ids, sources, records
    tokens = np.asarray(tokens, dtype=np.int64)
    rows["tokens"] = tokens
    rows["first"] = np.cumsum(tokens) - tokens
    return rows


def put_rows(out: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Copy document rows into `out` (rows of the same fields, ids and sources at least as wide), field by
    field: numpy casts a structured array element by element, far slower, to the same bytes."""
    for name in rows.dtype.names:
        out[name] = rows[name]
    return out


def write_documents(path: Path, parts: Iterable[np.ndarray], count: int, id_width: int, source_width: int) -> Dict[str, Any]:
    """A split's document table from its rows in stream order (widened to the table's widths), atomically;
    returns its entry in index.json."""
    dtype = documents_dtype(id_width, source_width)
    digest = hashlib.sha256()
    written = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            header = _npy_header(dtype, (count,))
            f.write(header)
            digest.update(header)
            for part in parts:
                if part.dtype != dtype:
                    part = put_rows(np.empty(len(part), dtype), part)
                data = np.ascontiguousarray(part).tobytes()
                f.write(data)
                digest.update(data)
                written += len(part)
    if written != count:
        raise Stage2Error(f"{path}: {written} document rows written, {count} expected")
    return {"file": path.name, "documents": count, "sha256": digest.hexdigest()}


def _npy_header(dtype: np.dtype, shape: Tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buf.getvalue()


def read_documents(folder: Path) -> np.ndarray:
    """A split's document table (read-only memory map), after checking its header: a damaged file fails here."""
    path = Path(folder) / DOCUMENTS
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise Stage2Error(f"{path}: missing: the split's document table (a run made before stage2 wrote them has none)") from None
    except (OSError, ValueError) as exc:
        raise Stage2Error(f"{path}: not a readable document table ({str(exc).strip().splitlines()[0]}): the file is damaged") from None
    if table.ndim != 1 or table.dtype.names != tuple(n for n, _ in DOC_FIELDS):
        raise Stage2Error(f"{path}: columns {table.dtype.names}, a document table has {tuple(n for n, _ in DOC_FIELDS)}: the file is damaged")
    return table


# --- trainer formats --------------------------------------------------------------------------------
# Megatron-LM: megatron/core/datasets/indexed_dataset.py (_INDEX_HEADER, DType, _IndexWriter).
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
                        np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8}


def megatron_dtype(vocab_size: int) -> np.dtype:
    """`DType.optimal_dtype(vocab_size)`, as Megatron's preprocess_data.py calls it: uint16 below 65500, else int32."""
    return np.dtype("<u2") if vocab_size < 65500 else np.dtype("<i4")


def megatron_idx_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """A whole .idx for one document per sequence: header, int32 lengths, int64 byte pointers, int64
    document indices [0, 1, ..., N] (N + 1 of them: the count field includes the leading 0)."""
    dtype = np.dtype(dtype)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and int(lengths.max()) > np.iinfo(np.int32).max:
        raise Stage2Error(f"a document of {int(lengths.max())} tokens does not fit Megatron's int32 sequence lengths")
    n = len(lengths)
    pointers = np.zeros(n, dtype="<i8")
    if n:
        np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    return b"".join([
        MEGATRON_MAGIC, struct.pack("<Q", MEGATRON_VERSION), struct.pack("<B", MEGATRON_DTYPE_CODES[np.dtype(dtype.newbyteorder("="))]),
        struct.pack("<Q", n), struct.pack("<Q", n + 1),
        lengths.astype("<i4").tobytes(), pointers.tobytes(), np.arange(n + 1, dtype="<i8").tobytes(),
    ])


def read_megatron_idx(path: Path) -> Tuple[np.dtype, np.ndarray]:
    """(dtype, sequence lengths) of a Megatron .idx, with every field checked (numpy only)."""
    data = Path(path).read_bytes()
    codes = {v: k for k, v in MEGATRON_DTYPE_CODES.items()}
    if len(data) < 34 or data[:9] != MEGATRON_MAGIC or struct.unpack("<Q", data[9:17])[0] != MEGATRON_VERSION or data[17] not in codes:
        raise Stage2Error(f"{path}: not a Megatron index (magic, version 1, dtype code): the file is damaged")
    n, docs = struct.unpack("<QQ", data[18:34])
    if docs != n + 1 or len(data) != 34 + 20 * n + 8:
        raise Stage2Error(f"{path}: {n} sequences, {docs} document indices and {len(data)} bytes do not agree: the file is damaged")
    dtype = codes[data[17]]
    lengths = np.frombuffer(data, "<i4", n, 34).astype(np.int64)
    pointers = np.frombuffer(data, "<i8", n, 34 + 4 * n)
    indices = np.frombuffer(data, "<i8", n + 1, 34 + 12 * n)
    want = np.concatenate([[0], np.cumsum(lengths * dtype.itemsize)[:-1]]) if n else np.empty(0, np.int64)
    if not np.array_equal(pointers, want) or not np.array_equal(indices, np.arange(n + 1)):
        raise Stage2Error(f"{path}: sequence pointers or document indices are not those of one document per sequence: the file is damaged")
    return dtype, lengths


# datatrove: src/datatrove/pipeline/tokens/tokenizer.py (TokenizedFile), utils/tokenization.py (token_size).
def datatrove_dtype(vocab_size: int) -> np.dtype:
    """2-byte tokens up to a vocabulary of 65536, 4-byte above (datatrove's `token_size`)."""
    return np.dtype("<u2") if vocab_size <= UINT16_VOCAB else np.dtype("<u4")


def humanize_metric(value: int, unit: str = "T", precision: int = 3) -> str:
    """`humanize.metric(value, unit)` (humanize 4.17), the third line of .ds.metadata (no reader parses it)."""
    exponent = math.floor(math.log10(abs(value))) if value else 0
    old_bucket = exponent // 3 * 3
    v = value / 10**old_bucket
    digits = int(max(0, precision - exponent % 3 - 1))
    if exponent < 30 and round(abs(v), digits) >= 10 ** (exponent % 3 + 1):
        exponent += 1
        v /= 10 ** (exponent // 3 * 3 - old_bucket)
        digits = int(max(0, precision - exponent % 3 - 1))
    ordinal = "kMGTPEZYRQ"[exponent // 3 - 1] if exponent >= 3 else ""
    return f"{format(v, f'.{digits}f')} {ordinal}{unit}"


def datatrove_metadata(tokenizer_name: str, token_size: int, tokens: int) -> bytes:
    """`TokenizedFile.write_final_metadata`: three lines, no newline at the end; only the first is read
    (by datatrove's merger: the tokenizer name and the token size)."""
    return "\n".join([f"{tokenizer_name}|{token_size}", str(tokens), humanize_metric(tokens)]).encode("utf-8")


# nanoGPT: data/openwebtext/prepare.py writes, train.py get_batch reads np.memmap(..., dtype=np.uint16).
def nanogpt_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= UINT16_VOCAB else np.dtype("<u4")


def format_files(fmt: str, split: str) -> List[str]:
    """A format's files for a split, relative to the component's folder; the first holds the tokens."""
    if fmt == "megatron":
        return [f"megatron/{split}.bin", f"megatron/{split}.idx"]
    if fmt == "datatrove":
        return [f"datatrove/{split}/00000.ds", f"datatrove/{split}/00000.ds.index", f"datatrove/{split}/00000.ds.metadata"]
    if fmt == "nanogpt":
        return [f"nanogpt/{'train' if split == 'train' else 'val'}.bin"]  # the names nanoGPT's train.py opens
    raise Stage2Error(f"format {fmt!r}: no files (the formats are {', '.join(FORMATS)})")


def format_dtype(fmt: str, vocab_size: int) -> np.dtype:
    return {"megatron": megatron_dtype, "datatrove": datatrove_dtype, "nanogpt": nanogpt_dtype}[fmt](vocab_size)


def write_formats(comp_dir: Path, split: str, formats: Sequence[str], chunks: Iterable[np.ndarray], lengths: np.ndarray, vocab_size: int, tokenizer_name: str) -> List[Dict[str, Any]]:
    """Every trainer format of a split, from its stream (`chunks` in order) and its documents' token
    counts, in one pass over the stream; returns their entries for index.json (`file` relative to the
    component's folder, `format`, `bytes`, `sha256`)."""
    formats = [f for f in formats if f != "npy"]
    if not formats:
        return []
    comp_dir = Path(comp_dir)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    with contextlib.ExitStack() as stack:
        token_files: List[Tuple[str, np.dtype, HashingFile, Path]] = []
        for fmt in formats:
            target = comp_dir / format_files(fmt, split)[0]
            tmp = stack.enter_context(atomic_path(target))
            token_files.append((fmt, format_dtype(fmt, vocab_size), HashingFile(stack.enter_context(open(tmp, "wb")), hashlib.sha256()), target))
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            converted: Dict[str, bytes] = {}
            for _, dtype, out, _ in token_files:
                data = converted.get(dtype.str)
                if data is None:
                    data = converted[dtype.str] = np.ascontiguousarray(chunk, dtype=dtype).tobytes()
                out.write(data)
        if seen != total:
            raise Stage2Error(f"{comp_dir}: the {split} stream has {seen} tokens, its documents {total}")
        # (the token files are renamed into place as the stack closes, every one complete)
    entries: List[Dict[str, Any]] = []
    for fmt, dtype, out, target in token_files:
        entries.append({"format": fmt, "file": format_files(fmt, split)[0], "dtype": dtype.name, "bytes": out.size, "sha256": out.digest.hexdigest()})
        extra: List[bytes] = []
        if fmt == "megatron":
            extra = [megatron_idx_bytes(lengths, dtype)]
        elif fmt == "datatrove":
            extra = [np.cumsum(lengths).astype("<u8").tobytes(), datatrove_metadata(tokenizer_name, dtype.itemsize, total)]
        for rel, data in zip(format_files(fmt, split)[1:], extra):
            atomic_write(comp_dir / rel, data)
            entries.append({"format": fmt, "file": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return entries


def read_format_tokens(comp_dir: Path, entry: Dict[str, Any]) -> np.ndarray:
    """A format's token file as a read-only flat memory map (its dtype from the index entry)."""
    path = Path(comp_dir) / entry["file"]
    dtype = np.dtype(entry["dtype"]).newbyteorder("<")
    if path.stat().st_size == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")
