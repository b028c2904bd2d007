"""Mixture components -> streams of documents, through HuggingFace `datasets` (streaming=True).

A component is local files (jsonl/json/parquet/txt, optionally .gz/.zst/.bz2/.xz compressed) or a hub
dataset. Files are streamed one at a time in manifest order so that every document knows the file and
record number it came from: that is the component's canonical order, and errors can name both.
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

    @property
    def is_hub(self) -> bool:
        return self.hub_path is not None


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
        for line_no, raw in enumerate(f, 1):
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
            yield Document(id=f"{spec.name}/{file_stem(source)}/{record}", text=None, component=spec.name,
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
    doc_id = str(raw_id) if raw_id is not None else f"{spec.name}/{file_stem(source)}/{record}"
    other = {k: v for k, v in row.items() if k not in (spec.text_column, spec.id_column)}
    meta = json.dumps(other, sort_keys=True, ensure_ascii=False, default=str) if other else "{}"
    return Document(id=doc_id, text=text, component=spec.name, source=source, record=record, meta=meta, problem=problem)


def input_fingerprints(specs: List[ComponentSpec]) -> Dict[str, Dict[str, Any]]:
    """A content hash of every local input file (xxh3-128: fast enough for large corpora)."""
    import xxhash

    prints: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        for path in spec.files:
            digest = xxhash.xxh3_128()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            prints[path] = {"xxh3_128": digest.hexdigest(), "bytes": Path(path).stat().st_size}
    return prints


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
