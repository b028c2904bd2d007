"""Mixture components -> streams of documents, through HuggingFace `datasets` (streaming=True).

A component is local files (jsonl/json/parquet/txt, optionally .gz/.zst/.bz2/.xz compressed) or a hub
dataset. Files are streamed one at a time in manifest order so that every document knows the file and
record number it came from: that is the component's canonical order, and errors can name both.
At start-up every local file is read once (`input_fingerprints`): hashed, its records counted, and a
compressed one decompressed to the end of its last stream, so a damaged file fails before any work.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from stage2.errors import Stage2Error

log = logging.getLogger(__name__)

COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
FORMAT_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet", ".txt": "text"}
ROW_BATCH = 1000  # rows per `datasets` batch (_rows)


@dataclass(frozen=True)
class Document:
    id: str
    text: Optional[str]
    component: str
    source: str  # the file or hub dataset it came from
    record: int  # 1-based record number within `source`
    meta: str = "{}"  # the record's other columns, as sorted JSON
    problem: Optional[str] = None  # set when the record is unusable (null text, wrong type, ...)


@dataclass(frozen=True)
class ComponentSpec:
    """A component with its files resolved to absolute paths: a plain object workers can receive."""

    name: str
    files: List[str] = field(default_factory=list)
    format: Optional[str] = None
    hub_path: Optional[str] = None
    subset: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None
    text_column: str = "text"
    id_column: Optional[str] = "id"
    sample_by: str = "line"
    max_records: Optional[int] = None
    weight: float = 1.0
    lang_filter: bool = True
    # file -> the name its records' fallback ids use (<component>/<name>/<record>): the file's stem,
    # with its folder below the glob's root when that is needed to tell files apart (resolve_components).
    id_names: Dict[str, str] = field(default_factory=dict)

    @property
    def is_hub(self) -> bool:
        return self.hub_path is not None

    def fallback_id(self, source: str, record: int) -> str:
        return f"{self.name}/{self.id_names.get(source) or file_stem(source)}/{record}"


def infer_format(path: str) -> str:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise Stage2Error(f"{path}: cannot tell the file format from its name; set the component's `format` (json, parquet or text)")


def file_stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.split(".")[0]


def component_name(pattern: str) -> str:
    """`data/web.jsonl.gz` -> `web`; a glob `shards/web-*.jsonl` -> `web`; `shards/*.parquet` -> `shards`."""
    stem = re.sub(r"\[[^\]]*\]|[*?]", "", file_stem(pattern)).strip("-_. ")
    return stem or os.path.basename(os.path.dirname(os.path.abspath(pattern.split("*")[0] + "x"))) or "files"


def _single_format(files: List[str], what: str) -> str:
    formats = {infer_format(f) for f in files}
    if len(formats) > 1:
        raise Stage2Error(f"{what}: files of several formats {sorted(formats)}; split them into components")
    return formats.pop()


def expand_paths(patterns: List[str], launch_dir: str, what: str) -> List[str]:
    """Globs and relative paths -> sorted absolute paths; a pattern that matches nothing is an error."""
    files: List[str] = []
    for pattern in patterns:
        absolute = pattern if os.path.isabs(pattern) else os.path.join(launch_dir, pattern)
        matches = sorted(glob.glob(absolute)) if glob.has_magic(absolute) else ([absolute] if os.path.exists(absolute) else [])
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise Stage2Error(f"{what}: no file matches {pattern!r} (looked in {os.path.dirname(absolute) or '.'})")
        files.extend(os.path.abspath(m) for m in matches)
    return files


def pattern_root(pattern: str, launch_dir: str) -> str:
    """The folder a path or glob starts from: `data/*/web.jsonl` -> `<launch_dir>/data`."""
    absolute = pattern if os.path.isabs(pattern) else os.path.join(launch_dir, pattern)
    parts = Path(absolute).parts
    plain = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts[:-1]))
    return os.path.abspath(os.path.join(*plain)) if plain else os.path.abspath(os.sep)


def id_names(files: List[str], root: str) -> Dict[str, str]:
    """The name each file's fallback ids use, unique within the component.

    The stem (ids as they always were) where it is unique; where several files share it, the file's
    path below the root without its suffixes (`a/part`, `b/part`), or with them (`part.jsonl`, `part.jsonl.gz`).
    """
    def below_root(path: str) -> str:
        folder = os.path.relpath(os.path.dirname(path), root)
        return file_stem(path) if folder == "." else f"{folder}/{file_stem(path)}"

    names = {path: file_stem(path) for path in files}
    for rename in (below_root, lambda path: os.path.relpath(path, root)):
        taken = Counter(names.values())
        names = {path: rename(path) if taken[name] > 1 else name for path, name in names.items()}
    return names


def resolve_components(dataset: Dict[str, Any], launch_dir: str) -> List[ComponentSpec]:
    """The manifest (a resolved `dataset` config) -> components in manifest order."""
    specs: List[ComponentSpec] = []
    for pattern in dataset.get("paths") or []:
        # One component per path or glob (a glob over a sharded dataset is one component).
        files = expand_paths([pattern], launch_dir, "dataset.paths")
        name = component_name(pattern)
        if any(s.name == name for s in specs):
            raise Stage2Error(f"dataset.paths: two paths give the component name {name!r}; rename a file (components are named after file stems)")
        specs.append(
            ComponentSpec(
                name=name,
                files=files,
                format=_single_format(files, f"dataset.paths {pattern!r}"),
                text_column=dataset.get("text_column", "text"),
                id_column=dataset.get("id_column", "id"),
                max_records=dataset.get("max_records"),
                id_names=id_names(files, pattern_root(pattern, launch_dir)),
            )
        )
    for name, comp in (dataset.get("components") or {}).items():
        has_files, has_hub = bool(comp.get("data_files")), bool(comp.get("hub_path"))
        if has_files == has_hub:
            raise Stage2Error(f"dataset.components.{name}: set exactly one of data_files or hub_path")
        files = expand_paths(list(comp["data_files"]), launch_dir, f"dataset.components.{name}") if has_files else []
        fmt = comp.get("format")
        if has_files and fmt is None:
            fmt = _single_format(files, f"dataset.components.{name}")
        fields = {k: v for k, v in comp.items() if k not in ("data_files", "format")}
        if fields.get("max_records") is None:  # dataset.max_records bounds every component without its own
            fields["max_records"] = dataset.get("max_records")
        if files:
            root = os.path.commonpath([pattern_root(p, launch_dir) for p in comp["data_files"]])
            fields["id_names"] = id_names(files, root)
        specs.append(ComponentSpec(name=name, files=files, format=fmt, **fields))
    if not specs:
        raise Stage2Error("the dataset has no components: give files with 'dataset.paths=[a.jsonl.gz,...]' (dataset=files) or set dataset.components")
    return specs


@functools.lru_cache(maxsize=None)
def _datasets():
    """`datasets`, imported on first use (it is slow to import), logging once through our handlers.

    On import it adds its own stderr handler and also propagates to the root logger (Hydra's console
    and file handlers), so every message would be printed twice.
    """
    import datasets

    logging.getLogger("datasets").handlers.clear()
    datasets.disable_progress_bars()
    return datasets


def _load_stream(spec: ComponentSpec, path: Optional[str]):
    datasets = _datasets()

    if path is None:
        try:
            return datasets.load_dataset(
                spec.hub_path, spec.subset, split=spec.split, revision=spec.revision, streaming=True
            )
        except Exception as exc:  # the hub raises many kinds; all mean "could not open it"
            raise Stage2Error(
                f"component {spec.name}: cannot open hub dataset {spec.hub_path!r}"
                f"{' (' + spec.subset + ')' if spec.subset else ''}: {type(exc).__name__}: {_first_line(exc)}."
                " Without network access, download it elsewhere and use local files (dataset=files or data_files)"
            ) from exc
    kwargs: Dict[str, Any] = {}
    if spec.format == "text":
        kwargs["sample_by"] = spec.sample_by
    return datasets.load_dataset(spec.format, data_files=[path], split="train", streaming=True, **kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def iter_documents(spec: ComponentSpec) -> Iterator[Document]:
    """Every record of the component, in canonical order, as a Document (bounded by max_records).

    Unusable records come out as Documents with `problem` set (the consumer fails or counts them, by
    its `on_bad_record` policy). A JSON-lines file that `datasets` cannot parse is read again line by
    line from where `datasets` stopped, so the bad line is named and the good ones are not lost.
    """
    remaining = spec.max_records
    for path in spec.files or [None]:
        source = path or f"hf://{spec.hub_path}" + (f"/{spec.subset}" if spec.subset else "") + f"[{spec.split}]"
        records = _file_records(spec, path, source)
        count = 0
        for doc in records if remaining is None else itertools.islice(records, remaining):
            count += 1
            yield doc
        if path is not None and count == 0 and remaining != 0:
            raise Stage2Error(f"{source}: holds no records (empty file?)")
        if remaining is not None:
            remaining -= count
            if remaining <= 0:
                return


def _file_records(spec: ComponentSpec, path: Optional[str], source: str) -> Iterator[Document]:
    if path is not None and os.path.getsize(path) == 0:
        raise Stage2Error(f"{source}: the file is empty")
    record = 0
    try:
        for row in _rows(spec, path):
            record += 1
            yield _to_document(spec, source, record, row)
    except Stage2Error:
        raise
    except Exception as exc:  # raised inside datasets/pyarrow, which cannot say which record
        if path is None or spec.format != "json" or infer_format(path) != "json" or _is_json_array(path):
            raise Stage2Error(f"{source}: record {record + 1}: cannot be read: {type(exc).__name__}: {_first_line(exc)}") from exc
        log.warning("%s: datasets could not parse it (%s); reading it line by line from record %d", source, _first_line(exc), record + 1)
        yield from _scan_json_lines(spec, path, source, already=record)


def _rows(spec: ComponentSpec, path: Optional[str]) -> Iterator[Dict[str, Any]]:
    """The rows `datasets` streams, in order, as it yields them one at a time, read ROW_BATCH at a time.

    One at a time, `datasets` formats every row as a table of its own: 2-3x the CPU of a batch. When
    a batch fails, a fresh stream yields the rows before the failure again one at a time, so exactly
    the rows a row-by-row read would have yielded come out before the same error is raised.
    """
    stream = _load_stream(spec, path)
    done = 0
    try:
        for batch in stream.iter(batch_size=ROW_BATCH):
            columns = list(batch)
            for values in zip(*batch.values()):
                done += 1
                yield dict(zip(columns, values))
        return
    except Exception:  # raised inside datasets/pyarrow: replayed below, row by row
        pass
    with _datasets_quiet():  # the replay meets the same error, which `datasets` has logged already
        rows = itertools.islice(iter(_load_stream(spec, path)), done, None)
    while True:
        with _datasets_quiet():  # (only while datasets runs: the consumer's own logging goes on between rows)
            row = next(rows, None)
        if row is None:
            return
        yield row


@contextlib.contextmanager
def _datasets_quiet() -> Iterator[None]:
    logger = logging.getLogger("datasets")  # its modules' loggers inherit its level
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_json_array(path: str) -> bool:
    return ".jsonl" not in path.lower() and ".ndjson" not in path.lower()


def _scan_json_lines(spec: ComponentSpec, path: str, source: str, already: int) -> Iterator[Document]:
    """Records of a JSON-lines file after the first `already`, one line at a time; bad lines become problems."""
    import fsspec

    record = 0
    with fsspec.open(path, "rb", compression="infer") as f:
        lines = enumerate(f, 1)
        while True:
            try:
                line_no, raw = next(lines)
            except StopIteration:
                return
            except Exception as exc:  # a damaged compressed stream, an I/O error: the file cannot be read on
                raise Stage2Error(f"{source}: record {record + 1}: cannot be read: {type(exc).__name__}: {_first_line(exc)}") from None
            if not raw.strip():
                continue
            record += 1
            if record <= already:
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problem = f"invalid UTF-8 (byte {exc.start} of line {line_no})"
            except json.JSONDecodeError as exc:
                problem = f"malformed JSON on line {line_no}: {exc.msg} (column {exc.colno})"
            else:
                if isinstance(row, dict):
                    yield _to_document(spec, source, record, row)
                    continue
                problem = f"line {line_no} is a JSON {type(row).__name__}, not an object"
            yield Document(id=spec.fallback_id(source, record), text=None, component=spec.name,
                           source=source, record=record, problem=problem)


def _to_document(spec: ComponentSpec, source: str, record: int, row: Dict[str, Any]) -> Document:
    problem = None
    if spec.text_column not in row:
        problem = f"has no text column {spec.text_column!r} (columns: {', '.join(sorted(row))})"
        text = None
    else:
        text = row[spec.text_column]
        if text is None:
            problem = f"text column {spec.text_column!r} is null"
        elif not isinstance(text, str):
            problem = f"text column {spec.text_column!r} is {type(text).__name__}, not a string"
            text = None
    raw_id = row.get(spec.id_column) if spec.id_column else None
    doc_id = str(raw_id) if raw_id is not None else spec.fallback_id(source, record)
    other = {k: v for k, v in row.items() if k not in (spec.text_column, spec.id_column)}
    meta = json.dumps(other, sort_keys=True, ensure_ascii=False, default=str) if other else "{}"
    if problem is None:
        # JSON may spell a lone surrogate ("\ud800"): a str, but no Unicode text, which no file can hold.
        for what, value in (("text column " + repr(spec.text_column), text), ("id", doc_id), ("a column besides the text", meta)):
            bad = _lone_surrogate(value)
            if bad is not None:
                problem = f"{what} is not valid Unicode: a lone surrogate \\u{ord(value[bad]):04x} at character {bad + 1}"
                text = None
                break
    return Document(id=doc_id, text=text, component=spec.name, source=source, record=record, meta=meta, problem=problem)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Optional[str]) -> Optional[int]:
    """Where `value` holds a surrogate code point (only half of a UTF-16 pair), or None."""
    if value is None or value.isascii():  # (isascii: a flag, no scan)
        return None
    found = _SURROGATE.search(value)
    return found.start() if found else None


def input_fingerprints(specs: List[ComponentSpec]) -> Dict[str, Dict[str, Any]]:
    """A content hash of every local input file (xxh3-128: fast enough for large corpora), its size and,
    where the file can tell, its record count; in the same read every compressed file is checked to
    its end (`scan_file`), so a damaged one fails at start-up, before any work."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(path, spec.format, spec.sample_by) for spec in specs for path in spec.files]
    # Threads: hashing and decompressing run in C without the GIL, one file per thread.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1, len(jobs)))) as pool:
        scans = list(pool.map(lambda job: scan_file(*job), jobs))
    return {path: scan for (path, _, _), scan in zip(jobs, scans)}


def expected_records(spec: ComponentSpec, inputs: Dict[str, Dict[str, Any]]) -> Optional[int]:
    """How many records the component will yield, when its files told (`scan_file`), for progress bars."""
    counts = [(inputs.get(path) or {}).get("records") for path in spec.files]
    known = sum(counts) if counts and None not in counts else None
    if spec.max_records is None:
        return known
    return spec.max_records if known is None else min(known, spec.max_records)


def expected_bytes(spec: ComponentSpec, inputs: Dict[str, Dict[str, Any]]) -> Optional[int]:
    """The component's bytes of text (decompressed), for a progress bar in bytes where records are not counted."""
    sizes = [(inputs.get(path) or {}).get("text_bytes") for path in spec.files]
    return sum(sizes) if sizes and None not in sizes else None


READ_BLOCK = 1 << 20
FEED = 1 << 12  # compressed bytes per decompressor call: at a corrupt block, at most this much output is not counted
# Each compression's magic bytes, the library's streaming decompressor (`eof` once a stream/frame ended,
# `unused_data` after it) and its name. Several streams may follow one another (pigz, pzstd, cat a.gz b.gz).
MAGIC = {
    ".gz": (b"\x1f\x8b", "gzip"),
    ".zst": (b"\x28\xb5\x2f\xfd", "zstd"),
    ".bz2": (b"BZh", "bzip2"),
    ".xz": (b"\xfd7zXZ\x00", "xz"),
}
_BLANK_AFTER_NEWLINE = re.compile(rb"\n[ \t\r\f\v]*(?=\n)")
_BLANK_FIRST = re.compile(rb"[ \t\r\f\v]*\n")


def _decompressor(suffix: str):
    if suffix == ".gz":
        import zlib

        return zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer (CRC and length checked)
    if suffix == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    if suffix == ".bz2":
        import bz2

        return bz2.BZ2Decompressor()
    import lzma

    return lzma.LZMADecompressor()


def _starts_stream(suffix: str, data: bytes) -> bool:
    """Whether `data` (perhaps only its first bytes) begins another stream of this compression."""
    if data.startswith(MAGIC[suffix][0][: len(data)]):
        return True
    # zstd's skippable frames (magic 0x184D2A50-5F, e.g. pzstd's index), which its decompressor passes over
    return suffix == ".zst" and data[0] & 0xF0 == 0x50 and data[1:4] == b"\x2a\x4d\x18"[: len(data) - 1]


class _RecordCounter:
    """Complete records in a stream of bytes: lines (text), or lines that are not blank (JSON lines)."""

    def __init__(self, skip_blank: bool):
        self.skip_blank = skip_blank
        self.complete = 0
        self._tail: List[bytes] = []  # the line being read, in pieces (a long line is not copied again and again)

    def feed(self, data: bytes) -> None:
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail.append(data)
            return
        block = b"".join([*self._tail, data[: cut + 1]])
        self._tail = [data[cut + 1 :]]
        lines = block.count(b"\n")
        if self.skip_blank:
            lines -= len(_BLANK_AFTER_NEWLINE.findall(block)) + bool(_BLANK_FIRST.match(block))
        self.complete += lines

    def total(self) -> int:
        """At the end of a good file: its last line counts too when it has no newline."""
        last = b"".join(self._tail)
        return self.complete + bool(last.strip() if self.skip_blank else last)


def scan_file(path: str, fmt: Optional[str], sample_by: str = "line") -> Dict[str, Any]:
    """Hash a file; decompress a compressed one to the end of its last stream, and count its records.

    A compressed file must end exactly where its last stream (gzip member, zstd frame ...) ends; one
    that is cut short, corrupt, not compressed at all or followed by other bytes is a one-line error
    naming the first record that cannot be read (the records before it are complete). Without this,
    a cut .zst (on a block boundary) streams as a shorter, "complete" file.
    """
    import xxhash

    suffix = next((s for s in COMPRESSION_SUFFIXES if path.lower().endswith(s)), None)
    counted = fmt == "json" and not _is_json_array(path) or fmt == "text" and sample_by == "line"
    counter = _RecordCounter(skip_blank=fmt == "json") if counted else None
    digest = xxhash.xxh3_128()
    size = 0
    decoder = _decompressor(suffix) if suffix else None
    name = MAGIC[suffix][1] if suffix else None
    at = 0  # compressed bytes fed so far
    text_bytes = 0  # decompressed

    def broken(what: str) -> Stage2Error:
        if counter is None:
            return Stage2Error(f"{path}: cannot be read: {what}")
        good = counter.complete
        before = f"records 1-{good} are complete" if good > 1 else "record 1 is complete" if good == 1 else "no record before it is complete"
        return Stage2Error(f"{path}: record {good + 1}: cannot be read: {what}; {before}")

    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(READ_BLOCK), b""):
                digest.update(block)
                size += len(block)
                if decoder is None:
                    if counter is not None:
                        counter.feed(block)
                    continue
                for start in range(0, len(block), FEED):
                    data = block[start : start + FEED]
                    while data:
                        if decoder.eof:  # the next stream, or bytes that are none
                            if suffix == ".gz" and not data.strip(b"\0"):
                                at += len(data)  # zero padding after the last member, which gzip allows
                                break
                            if not _starts_stream(suffix, data):
                                raise broken(f"other bytes follow the end of the {name} stream at byte {at}")
                            decoder = _decompressor(suffix)
                        try:
                            out = decoder.decompress(data)
                        except Exception as exc:  # zlib.error, zstd.ZstdError, OSError, LZMAError: the library's own check
                            if at == 0 and not block.startswith(MAGIC[suffix][0]):
                                raise broken(f"not {name}-compressed: it starts with {block[:8]!r}, not {name}'s magic bytes (plain text named {suffix}?)") from None
                            raise broken(f"corrupt {name} data near byte {at} ({_first_line(exc) or type(exc).__name__})") from None
                        text_bytes += len(out)
                        if counter is not None and out:
                            counter.feed(out)
                        at += len(data)
                        rest = getattr(decoder, "unused_data", b"") if decoder.eof else b""
                        at -= len(rest)
                        data = rest
    except OSError as exc:  # permission denied, an I/O error of the disk
        raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise Stage2Error(f"{path}: the file is empty")
    if decoder is not None and not decoder.eof:
        raise broken(f"truncated {name} stream: the file ends at byte {size} before the end of its {name} stream")
    records = counter.total() if counter is not None else None
    if fmt == "parquet":
        records = _parquet_rows(path)
    return {"xxh3_128": digest.hexdigest(), "bytes": size, "records": records, "text_bytes": text_bytes if decoder else size}


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows  # the footer only: no data is read
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: not parquet, or cut short
        raise Stage2Error(f"{path}: record 1: cannot be read: not a readable parquet file ({_first_line(exc)})") from None


def hub_revisions(specs: List[ComponentSpec]) -> Dict[str, Dict[str, Any]]:
    """The commit each hub component resolves to (or why it could not be resolved)."""
    revisions: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        if not spec.is_hub:
            continue
        entry: Dict[str, Any] = {"path": spec.hub_path, "subset": spec.subset, "requested": spec.revision}
        try:
            from huggingface_hub import HfApi

            entry["sha"] = HfApi().dataset_info(spec.hub_path, revision=spec.revision, timeout=10).sha
        except Exception as exc:  # offline or unknown: record it rather than fail the run
            entry["sha"] = None
            entry["error"] = f"{type(exc).__name__}: {_first_line(exc)}"
        revisions[spec.name] = entry
    return revisions
