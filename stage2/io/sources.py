"""Mixture components -> streams of documents, through HuggingFace `datasets` (streaming=True).

A component is local files (jsonl/json/parquet/txt, optionally .gz/.zst/.bz2/.xz compressed) or a hub
dataset. Files are streamed one at a time in manifest order so that every document knows the file and
record number it came from: that is the component's canonical order, and errors can name both.
At start-up every local file is read once (`input_fingerprints`): hashed, its records counted, and a
compressed one decompressed to the end of its last stream, so a damaged file fails before any work.

Partition planning (`plan_component`) decides from metadata only which records each unit of filter
work reads. The plan is fixed by the recipe (`dataset.partition_size`, `max_records`) and the inputs,
never by the machine, so it fixes the canonical order (component, file, record) and every artifact.
The driver never reads a document: units carry a file and a record range, and workers read their own.

  uncompressed JSON lines / text by line   one unit per partition: a byte range from the start-up
                                           scan's offsets of every partition_size-th record
  parquet (local or on the hub)            one unit per partition: a row range (footer metadata)
  compressed files, JSON arrays, text by   one unit per file (a stream cannot be entered midway);
  paragraph or document                    its records are still cut into partitions
A partition is partition_size consecutive records of one file; its id is (file index, chunk index),
chunk k holding the file's records k*P+1 .. (k+1)*P.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import itertools
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from stage2.documents import Document
from stage2.errors import Stage2Error, first_line
from stage2.config import ComponentConfig, DatasetConfig, check_name
from stage2.steps.base import HUB_PREFIX, parse_hub_entry

log = logging.getLogger(__name__)

COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
FORMAT_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet", ".txt": "text"}
ROW_BATCH = 1000  # rows per `datasets` batch (_rows)
# A byte-order mark opening a file (Windows editors write one) is dropped, as `utf-8-sig` and `datasets`'
# JSON reader do: in every format, so a .txt and a .jsonl with one read alike.
UTF8_BOM = b"\xef\xbb\xbf"
MAX_COMPONENTS = 256  # a canonical position has 8 bits for its component (COMPONENT_SHIFT below)


@dataclass(kw_only=True)
class ComponentSpec(ComponentConfig):
    """A component as the run reads it: its config (`max_records` capped by dataset.max_records), its
    name, and its files resolved to absolute paths. A plain object workers can receive."""

    name: str
    files: List[str] = field(default_factory=list)
    # file -> the name its records' fallback ids use (<component>/<name>/<record>): the file's stem,
    # with its folder below the glob's root when that is needed to tell files apart (resolve_components).
    id_names: Dict[str, str] = field(default_factory=dict)
    # The folder its files are named relative to in artifacts (the `source` column): the same bytes give
    # the same parts wherever they live. None: absolute paths (a spec not made by resolve_components).
    root: Optional[str] = None
    # file -> what the start-up scan saw (xxh3_128, bytes, mtime_ns, inode): every read checks the file is
    # still that one (`with_scans`; empty: not checked).
    scans: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # How messages name it when it is no component (a hub eval set: `hub_entry`); None: "component <name>".
    label: Optional[str] = None

    @property
    def is_hub(self) -> bool:
        return self.hub_path is not None

    @property
    def called(self) -> str:
        return self.label or f"component {self.name}"

    def fallback_id(self, path: str, record: int) -> str:
        return f"{self.name}/{self.id_names.get(path) or file_stem(path)}/{record}"

    def with_scans(self, scans: Mapping[str, Mapping[str, Any]]) -> "ComponentSpec":
        """The spec whose reads check each file against its start-up scan (`input_fingerprints`)."""
        keys = ("xxh3_128", "bytes", "mtime_ns", "inode")
        return replace(self, scans={p: {k: scans[p][k] for k in keys} for p in self.files if p in scans})

    def for_file(self, path: str) -> "ComponentSpec":
        """The component as a task reading one of its files needs it: that file, not the component's thousands."""
        def one(mapping: Dict[str, Any]) -> Dict[str, Any]:
            return {path: mapping[path]} if path in mapping else {}

        return replace(self, files=[path], id_names=one(self.id_names), scans=one(self.scans))


def infer_format(path: str) -> str:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise Stage2Error(f"{path}: cannot tell the file format from its name; set the component's `format` (json, parquet or text)")


def format_of_name(path: str) -> Optional[str]:
    """The format the file's name tells, or None where it tells none."""
    try:
        return infer_format(path)
    except Stage2Error:
        return None


def file_stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.split(".")[0]


def component_name(pattern: str) -> str:
    """`data/web.jsonl.gz` -> `web`; a glob `shards/web-*.jsonl` -> `web`; `shards/*.parquet` -> `shards`."""
    stem = re.sub(r"\[[^\]]*\]|[*?]", "", file_stem(pattern)).strip("-_. ")
    name = stem or os.path.basename(os.path.dirname(os.path.abspath(pattern.split("*")[0] + "x")))
    # It names folders of the run: other characters become '_' (stage2.config.check_name's alphabet).
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64] or "files"


def _single_format(files: List[str], what: str) -> str:
    formats = {infer_format(f) for f in files}
    if len(formats) > 1:
        raise Stage2Error(f"{what}: files of several formats {sorted(formats)}; split them into components")
    return formats.pop()


def expand_paths(patterns: List[str], launch_dir: str, what: str, need_files: bool = True) -> List[str]:
    """Globs and relative paths -> sorted absolute paths; a pattern that matches nothing is an error
    (with need_files=False: it gives no file).

    As HF `data_files` does: `**` matches any number of folders; `*`, `?` and `**` skip hidden names
    (a leading dot) unless the pattern spells the dot, and folders named `__*` (`__pycache__`) unless
    the pattern has `__`. A pattern that names an existing file is that file, glob characters and all
    (`web[1].jsonl`).
    """
    files: List[str] = []
    for pattern in patterns:
        absolute = pattern if os.path.isabs(pattern) else os.path.join(launch_dir, pattern)
        if os.path.isfile(absolute) or not glob.has_magic(absolute):
            matches = [absolute] if os.path.isfile(absolute) else []
        else:
            root = pattern_root(pattern, launch_dir)
            spelled = "__" in os.path.relpath(absolute, root)  # the pattern itself asks for `__*` folders
            matches = sorted(
                m for m in glob.glob(absolute, recursive=True)
                if os.path.isfile(m) and (spelled or not any(part.startswith("__") for part in Path(os.path.relpath(m, root)).parts[:-1]))
            )
        if not matches and need_files and os.path.isdir(absolute):
            raise Stage2Error(f"{what}: {pattern!r} is a folder, not a file: give a glob of its files ({os.path.join(pattern, '*.jsonl')!r}, or '**/*.parquet' below it)")
        if not matches and need_files:
            raise Stage2Error(f"{what}: no file matches {pattern!r} (looked in {os.path.dirname(absolute) or '.'})")
        files.extend(os.path.abspath(m) for m in matches)
    return files


def pattern_root(pattern: str, launch_dir: str) -> str:
    """The folder a path or glob starts from: `data/*/web.jsonl` -> `<launch_dir>/data`."""
    absolute = pattern if os.path.isabs(pattern) else os.path.join(launch_dir, pattern)
    if os.path.isfile(absolute):  # a file's own name, even if it looks like a glob
        return os.path.dirname(os.path.abspath(absolute))
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


def resolve_components(dataset: DatasetConfig, launch_dir: str, need_files: bool = True) -> List[ComponentSpec]:
    """The manifest (a resolved `dataset` config) -> components in manifest order.

    need_files=False: for a stage that reads a past run's parts, not the files (which may be gone): a
    path that matches nothing still names its component, with no files.

    `dataset.max_records` caps every component: one that sets its own reads the smaller of the two.
    `dataset=files`: every path's component gets `dataset.lang_filter` and its weight in `dataset.weights`.
    """
    specs: List[ComponentSpec] = []
    cap = dataset.max_records
    paths, weights = list(dataset.paths or []), list(dataset.weights or [])
    if weights and len(weights) != len(paths):  # (Config.check says so at start-up; this for direct callers)
        raise Stage2Error(f"dataset.weights has {len(weights)} values for {len(paths)} paths in dataset.paths: give one weight per path (or [] for 1.0 each)")
    entries = dict(dataset.components or {})
    for index, pattern in enumerate(paths):
        # One component per path or glob (a glob over a sharded dataset is one component).
        files = expand_paths([pattern], launch_dir, "dataset.paths", need_files)
        name = component_name(pattern)
        if any(s.name == name for s in specs):
            raise Stage2Error(f"dataset.paths: two paths give the component name {name!r}; rename a file, or name one with dataset.components.<name>.data_files=[...] (components are named after file stems)")
        settings = ComponentConfig(
            text_column=dataset.text_column,
            id_column=dataset.id_column,
            url_column=dataset.url_column,
            weight=float(weights[index]) if weights else 1.0,
            lang_filter=bool(dataset.lang_filter),
        )
        own = entries.get(name)
        if own is not None and (own.data_files or own.hub_path):  # two sources under one name would be mixed up
            raise Stage2Error(
                f"dataset.paths: {pattern!r} gives the component name {name!r}, which dataset.components.{name} already has"
                f" with files of its own; rename the file, or add it to dataset.components.{name}.data_files"
            )
        if own is not None:  # this path's own settings
            entries.pop(name)
            settings = path_settings(settings, own)
        config = {f.name: getattr(settings, f.name) for f in dataclasses.fields(ComponentConfig)}
        cap_own = settings.max_records
        fmt = settings.format or (_single_format(files, f"dataset.paths {pattern!r}") if files else None)
        if fmt == "text" and (own is None or own.data_files):  # a text file's one column (dataset.text_column names JSON's and parquet's)
            config["text_column"] = "text"
        config.update(
            format=fmt,
            max_records=cap if cap_own is None else cap_own if cap is None else min(cap_own, cap),
            languages=None if settings.languages is None else tuple(settings.languages),
            quality=None if settings.quality is None else tuple(settings.quality),
            id_names=id_names(files, pattern_root(pattern, launch_dir)),
            root=pattern_root(pattern, launch_dir),
        )
        specs.append(ComponentSpec(**config, name=name, files=files))
    for name, comp in entries.items():
        has_files, has_hub = bool(comp.data_files), bool(comp.hub_path)
        if has_files == has_hub:
            if not has_files and paths:
                given = ", ".join(s.name for s in specs)
                raise Stage2Error(f"dataset.components.{name}: no path in dataset.paths gives a component named {name!r} (they give {given}), "
                                  "and it sets neither data_files nor hub_path: name a path's component, or give this one its files")
            raise Stage2Error(f"dataset.components.{name}: set exactly one of data_files or hub_path")
        files = expand_paths(list(comp.data_files), launch_dir, f"dataset.components.{name}", need_files) if has_files else []
        fmt = comp.format
        if files and fmt is None:
            fmt = _single_format(files, f"dataset.components.{name}")
        own = comp.max_records
        resolved: Dict[str, Any] = {
            "format": fmt,
            "max_records": cap if own is None else own if cap is None else min(own, cap),
            "languages": None if comp.languages is None else tuple(comp.languages),
            "quality": None if comp.quality is None else tuple(comp.quality),
        }
        if has_hub and not os.path.isabs(comp.hub_path) and os.path.isdir(os.path.join(launch_dir, comp.hub_path)):
            resolved["hub_path"] = os.path.join(launch_dir, comp.hub_path)  # a local dataset folder, as for data_files
        if files:
            root = os.path.commonpath([pattern_root(p, launch_dir) for p in comp.data_files])
            resolved["id_names"] = id_names(files, root)
            resolved["root"] = root
        config = {f.name: getattr(comp, f.name) for f in dataclasses.fields(ComponentConfig)}
        specs.append(ComponentSpec(**{**config, **resolved}, name=name, files=files))
    if len(specs) > MAX_COMPONENTS:
        raise Stage2Error(f"the dataset has {len(specs)} components; at most {MAX_COMPONENTS} (merge files into fewer components: a glob makes one)")
    for spec in specs:
        check_name(spec.name, "dataset.paths" if dataset.paths and spec.name not in (dataset.components or {}) else f"dataset.components.{spec.name}")
    if not specs:
        raise Stage2Error("the dataset has no components: give files with 'dataset.paths=[a.jsonl.gz,...]' (dataset=files) or set dataset.components")
    return specs


def path_settings(shared: ComponentConfig, own: ComponentConfig) -> ComponentConfig:
    """A `dataset=files` path's settings: its entry `dataset.components.<its name>` (start-up has filled
    the keys the entry left unset from dataset.text_column, id_column, lang_filter and the path's
    dataset.weights value: `stage2.main.complete_path_entries`), with the path's files."""
    return replace(own, data_files=shared.data_files)


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
        reach_hub(spec)
        try:
            return datasets.load_dataset(
                spec.hub_path, spec.subset, split=spec.split, revision=spec.revision, streaming=True
            )
        except Exception as exc:  # the hub raises many kinds; all mean "could not open it"
            raise _hub_error(spec, exc) from exc
    kwargs: Dict[str, Any] = {}
    if spec.format == "text":
        kwargs["sample_by"] = spec.sample_by
    return datasets.load_dataset(spec.format, data_files=[path], split="train", streaming=True, **kwargs)


HUB_PROBE_TIMEOUT = 10  # seconds


def reach_hub(spec: ComponentSpec) -> None:
    """Fail at once when the hub cannot be reached (or does not have the dataset).

    `datasets` retries an unreachable hub for ~25 s (huggingface_hub's backoff) before its error; one
    request for the dataset's info answers at once. Not for a local `hub_path` folder, nor in
    huggingface_hub's offline mode (HF_HUB_OFFLINE=1), where `datasets` reads its cache.
    """
    from huggingface_hub import HfApi, is_offline_mode

    if os.path.exists(spec.hub_path) or is_offline_mode():
        return
    try:
        HfApi().dataset_info(spec.hub_path, revision=spec.revision, timeout=HUB_PROBE_TIMEOUT)
    except Exception as exc:  # httpx's ConnectError offline; RepositoryNotFoundError, an HTTP error of the hub
        raise _hub_error(spec, exc) from exc


def _hub_error(spec: ComponentSpec, exc: BaseException) -> Stage2Error:
    return Stage2Error(
        f"{spec.called}: cannot open hub dataset {spec.hub_path!r}"
        f"{' (' + spec.subset + ')' if spec.subset else ''}: {type(exc).__name__}: {first_line(exc).rstrip('.')}."
        " Without network access, download it elsewhere and use local files" + ("" if spec.label else " (dataset=files or data_files)")
    )


def usable(docs: Iterable[Document], skip_bad: bool) -> Iterator[Document]:
    """Raw records as a stage reads them: an unusable one fails the run, or is passed over when
    `skip_bad` (filter.on_bad_record=skip)."""
    for doc in docs:
        if doc.problem is None:
            yield doc
        elif not skip_bad:
            raise Stage2Error(f"{doc.location}: record {doc.record}: {doc.problem} (filter.on_bad_record=skip passes over such records)")


def iter_documents(spec: ComponentSpec) -> Iterator[Document]:
    """Every record of the component, in canonical order, as a Document (bounded by max_records).

    Unusable records come out as Documents with `problem` set (the consumer fails or counts them, by
    its `on_bad_record` policy). The filter reads the same records in partitions (`read_records` with
    a range, stage2/io/sources.py); this sequential read is their reference.
    """
    remaining = spec.max_records
    for path in spec.files or [None]:
        count = 0
        for doc in read_records(spec, path, 0, remaining):
            count += 1
            yield doc
        if path is not None and count == 0 and remaining != 0:
            raise Stage2Error(f"{path}: holds no records (empty file?)")
        if remaining is not None:
            remaining -= count
            if remaining <= 0:
                return


class _Source(NamedTuple):
    name: str  # as artifacts name it (the `source` column): below the component's root, or the hub URI
    path: str  # where it is (what messages name, and the key of id_names and scans)


def source_name(spec: ComponentSpec, path: Optional[str]) -> str:
    """A file as artifacts name it: its path below the component's root (`root`; a local `hub_path`
    folder), a hub file's URI, or a hub split's `hf://<path>[/<subset>][<split>]`."""
    if path is None:
        return f"hf://{spec.hub_path}" + (f"/{spec.subset}" if spec.subset else "") + f"[{spec.split}]"
    if is_remote(path):
        return path
    root = spec.root or (os.path.abspath(spec.hub_path) if spec.is_hub and os.path.isdir(spec.hub_path) else None)
    return Path(os.path.relpath(path, root)).as_posix() if root else path


def is_line_format(spec: ComponentSpec, path: Optional[str]) -> bool:
    """Whether a file is read by lines (JSON lines, text by line): splittable at line starts when uncompressed."""
    if path is None:
        return False
    return spec.format == "json" and not _is_json_array(path) or spec.format == "text" and spec.sample_by == "line"


def read_records(
    spec: ComponentSpec, path: Optional[str], first: int = 0, count: Optional[int] = None, byte_range: Optional[tuple] = None
) -> Iterator[Document]:
    """Records first+1 .. first+count of one file (to its end when count is None), in order.

    `byte_range` (start, end): the bytes of an uncompressed line file holding exactly those records
    (start is where record first+1 begins, from the start-up scan): a worker reads only its own range.
    """
    src = _Source(source_name(spec, path), path or source_name(spec, path))
    if count == 0:
        return iter(())
    if path is not None and spec.format == "parquet":
        records = _parquet_records(spec, path, src, first, count)
    elif is_line_format(spec, path):
        records = _line_records(spec, path, src, first, byte_range)
        records = records if count is None else itertools.islice(records, count)
    else:
        records = _text_block_records(spec, path, src) if path is not None and spec.format == "text" else _file_records(spec, path, src)
        records = itertools.islice(records, first, None if count is None else first + count)
    if path is None or path not in spec.scans:
        return records
    # A unit that streams the file from its start is checked against the hash too (one more fast read);
    # a byte or row range of it by what is cheap (size, modification time, inode).
    return _checked(records, spec, path, whole=byte_range is None and spec.format != "parquet")


def _checked(records: Iterator[Document], spec: ComponentSpec, path: str, whole: bool) -> Iterator[Document]:
    """`records`, read only while the file is the one the start-up scan saw: checked before the first
    record, at an unusable record or a read error (which a change may have caused), and after the last."""
    check_unchanged(spec, path)
    try:
        for doc in records:
            if doc.problem is not None:
                check_unchanged(spec, path)
            yield doc
    except Stage2Error:
        check_unchanged(spec, path, whole)
        raise
    check_unchanged(spec, path, whole)


def check_unchanged(spec: ComponentSpec, path: str, content: bool = False) -> None:
    """Fail unless `path` is still the file the start-up scan saw (size, mtime, inode; with `content`, its hash)."""
    seen = spec.scans.get(path)
    if seen is None:
        return
    try:
        now = os.stat(path)
    except OSError as exc:
        raise Stage2Error(f"{path}: changed during the run: it cannot be opened any more ({exc.strerror or exc}); inputs must stay as they were at start-up until the run ends") from None
    differ = [
        what for what, changed in (
            (f"{now.st_size} bytes, not {seen['bytes']}", now.st_size != seen["bytes"]),
            ("another modification time", now.st_mtime_ns != seen["mtime_ns"]),
            ("another file (inode) at its path", now.st_ino != seen["inode"]),
        ) if changed
    ]
    if not differ and content and _xxh3(path) != seen["xxh3_128"]:
        differ.append("other content (xxh3_128)")
    if differ:
        raise Stage2Error(
            f"{path}: changed during the run: it has {', '.join(differ)} since the start-up scan, so what was read from it"
            " may mix old and new contents; keep inputs unchanged until the run ends, and run again"
        )


def _xxh3(path: str) -> str:
    from stage2.io.files import file_fingerprint

    try:
        return file_fingerprint(Path(path))[1]
    except OSError as exc:
        raise Stage2Error(f"{path}: changed during the run: it cannot be read any more ({exc.strerror or exc})") from None


def _line_records(spec: ComponentSpec, path: str, src: "_Source", first: int, byte_range: Optional[tuple]) -> Iterator[Document]:
    """JSON-lines or text-line records of a file or of a byte range of it; bad lines become problems."""
    json_lines = spec.format == "json"
    start, end = byte_range or (0, None)
    if start == 0 and first:
        raise ValueError("records after the first are read through their byte range")
    if not is_remote(path) and os.path.getsize(path) == 0:
        raise Stage2Error(f"{src.path}: the file is empty")
    record = first
    line_no: Optional[int] = 0 if start == 0 else None  # line numbers are known when reading from the file's start
    try:
        if byte_range is not None:
            f = open(path, "rb")
            f.seek(start)
        else:
            f = open_stream(path)
    except OSError as exc:
        raise Stage2Error(f"{src.path}: cannot be read: {exc.strerror or exc}") from None
    with f:
        at = start
        lines = iter(f)
        while end is None or at < end:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except Exception as exc:  # a damaged compressed stream, an I/O error: the file cannot be read on
                raise Stage2Error(f"{src.path}: record {record + 1}: cannot be read: {type(exc).__name__}: {first_line(exc)}") from None
            where = f"line {line_no + 1}" if line_no is not None else f"the line at byte {at}"
            if at == 0 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]  # it marks the encoding (as `utf-8-sig`), no part of the text
                at += len(UTF8_BOM)
            at += len(raw)
            if line_no is not None:
                line_no += 1
            if json_lines and not raw.strip():
                continue
            record += 1
            if not json_lines:
                yield _text_line(spec, src, record, raw, where)
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problem = f"invalid UTF-8 (byte {exc.start} of {where})"
            except json.JSONDecodeError as exc:
                problem = f"malformed JSON on {where}: {exc.msg} (column {exc.colno})"
            else:
                if isinstance(row, dict):
                    yield _to_document(spec, src, record, row)
                    continue
                problem = f"{where} is a JSON {type(row).__name__}, not an object"
            yield Document(id=spec.fallback_id(src.path, record), text=None, component=spec.name, source=src.name, path=src.path, record=record, problem=problem)


def is_remote(path: str) -> bool:
    return "://" in path


def open_binary(path: str):
    """A local file, or a hub/remote one through fsspec (`hf://datasets/...`)."""
    if not is_remote(path):
        return open(path, "rb")
    import fsspec

    return fsspec.open(path, "rb").open()


def hub_data_files(spec: ComponentSpec) -> List[str]:
    """The data files of a hub dataset's split (parquet or JSON lines shards), as `datasets` resolves them.

    The filter plans its partitions over these files (footers give parquet row counts) and workers
    read them themselves; `hub_path` may also name a local dataset folder, resolved the same way.
    """
    datasets = _datasets()
    reach_hub(spec)
    try:
        builder = datasets.load_dataset_builder(spec.hub_path, spec.subset, revision=spec.revision)
        files = [str(f) for f in (builder.config.data_files or {}).get(spec.split) or []]
    except Exception as exc:  # the hub raises many kinds; all mean "could not open it"
        raise _hub_error(spec, exc) from exc
    if not files:
        raise Stage2Error(f"{spec.called}: hub dataset {spec.hub_path!r} has no data files for split {spec.split!r}")
    return files


# ---- hub datasets in a step's list of files (filter.decontaminate.paths) ----------------------------


def hub_entry(entry: str, what: str) -> ComponentSpec:
    """`hub:<path>[:<subset>[:<split>]][@<revision>]` (stage2.steps.base.parse_hub_entry) -> the spec of a
    hub component with those keys, named as the eval set it is."""
    parsed = parse_hub_entry(entry, what)
    return ComponentSpec(name=parsed.name, hub_path=parsed.path, subset=parsed.subset, split=parsed.split, revision=parsed.revision,
                         label=f"{what}: eval set {parsed.name} ({entry})")


def hub_entry_files(entry: str, what: str, launch_dir: str) -> List[str]:
    """A hub entry's data files (`hub_data_files`, split by split) as local files: a local folder's own (a
    relative one: from the launch directory), a remote dataset's downloaded once into the HF cache at the
    commit they resolved to, so that they are fingerprinted and read like any local input."""
    spec = hub_entry(entry, what)
    if os.path.isdir(os.path.join(launch_dir, spec.hub_path)):  # (as `datasets` does, a folder first, then the hub)
        spec = replace(spec, hub_path=os.path.abspath(os.path.join(launch_dir, spec.hub_path)))
    files = [f for split in spec.split.split("+") for f in hub_data_files(replace(spec, split=split))]
    return [hub_file_local(spec, f) for f in dict.fromkeys(files)]


def hub_file_local(spec: ComponentSpec, path: str) -> str:
    """A data file as `datasets` resolves it (`hf://datasets/<repo>@<commit>/<file>`, or local) -> a local path."""
    if not is_remote(path):
        return path
    remote = re.fullmatch(r"hf://datasets/(.+?)@([^/]+)/(.+)", path)
    if remote is None:
        raise Stage2Error(f"{spec.called}: cannot download {path!r}: not a file of a hub dataset")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(remote[1], remote[3], repo_type="dataset", revision=remote[2])
    except Exception as exc:  # offline, gated, gone: all mean "could not open it"
        raise _hub_error(spec, exc) from exc


def step_files(pattern: str, launch_dir: str, what: str) -> List[str]:
    """The files of one entry of a step's list: a path or glob (`expand_paths`), or a hub dataset (`hub:`)."""
    if pattern.startswith(HUB_PREFIX):
        return hub_entry_files(pattern, what, launch_dir)
    return expand_paths([pattern], launch_dir, what)


def open_stream(path: str):
    """A binary file object over a file's decompressed bytes (every stream of a multi-stream file)."""
    import io

    if is_remote(path):
        import fsspec

        return fsspec.open(path, "rb", compression="infer").open()
    suffix = next((s for s in COMPRESSION_SUFFIXES if path.lower().endswith(s)), None)
    if suffix == ".zst":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
        return io.BufferedReader(reader, buffer_size=READ_BLOCK)
    if suffix is None:
        return open(path, "rb")
    import bz2, gzip, lzma

    return {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix](path, "rb")


def _text_line(spec: ComponentSpec, src: "_Source", record: int, raw: bytes, where: str) -> Document:
    # As `datasets` reads text by line, but on "\n" alone ("\r\n" loses its "\r"; a lone "\r" is no line break).
    line = raw[:-1] if raw.endswith(b"\n") else raw
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Document(id=spec.fallback_id(src.path, record), text=None, component=spec.name, source=src.name, path=src.path, record=record,
                        problem=f"invalid UTF-8 (byte {exc.start} of {where})")
    return _to_document(spec, src, record, {spec.text_column: text})


def _text_block_records(spec: ComponentSpec, path: str, src: "_Source") -> Iterator[Document]:
    """A text file by paragraph (split at "\n\n", empty ones skipped) or as one document, as `datasets`
    reads it except for line breaks: only "\r\n" becomes "\n" and a lone "\r" stays, as in text by line
    (`datasets` opens the file with universal newlines, which turn every "\r" into "\n")."""
    record = 0

    def document(raw: bytes) -> Document:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Document(id=spec.fallback_id(src.path, record), text=None, component=spec.name, source=src.name, path=src.path,
                            record=record, problem=f"invalid UTF-8 (byte {exc.start} of the {spec.sample_by})")
        return _to_document(spec, src, record, {spec.text_column: text})

    if not is_remote(path) and os.path.getsize(path) == 0:
        raise Stage2Error(f"{src.path}: the file is empty")
    try:
        with open_stream(path) as f:
            if spec.sample_by == "document":
                data = f.read()
                data = data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data
                record = 1
                yield document(data.replace(b"\r\n", b"\n"))
                return
            buf, cr, first = bytearray(), b"", True
            while True:
                block = f.read(READ_BLOCK)
                if first:
                    block, first = (block[len(UTF8_BOM) :] if block.startswith(UTF8_BOM) else block), False
                data, cr = cr + block, b""
                if block and data.endswith(b"\r"):  # its "\n" may open the next block
                    data, cr = data[:-1], b"\r"
                search = max(0, len(buf) - 1)
                buf += data.replace(b"\r\n", b"\n")
                start = 0
                while (end := buf.find(b"\n\n", search)) != -1:
                    if end > start:
                        record += 1
                        yield document(bytes(buf[start:end]))
                    start = search = end + 2
                del buf[:start]
                if not block:
                    break
            if buf:
                record += 1
                yield document(bytes(buf))
    except Stage2Error:
        raise
    except Exception as exc:  # a damaged compressed stream, an I/O error: the file cannot be read on
        raise Stage2Error(f"{src.path}: record {record + 1}: cannot be read: {type(exc).__name__}: {first_line(exc)}") from None


def _batch_rows(batch: Any) -> List[Any]:
    """A parquet batch's rows as dicts; a row holding a string that is not valid UTF-8 (pyarrow reads it
    unchecked) becomes the description of its problem, so that the record, not the batch, is named."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    rows: List[Any] = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            rows.append(row.to_pylist()[0])
        except UnicodeDecodeError as exc:
            column = next(n for n in row.schema.names if not _decodes(row.column(n)))
            rows.append(f"invalid UTF-8 in column {column!r} (byte {exc.start})")
    return rows


def _decodes(column: Any) -> bool:
    try:
        column.to_pylist()
        return True
    except UnicodeDecodeError:
        return False


def _parquet_records(spec: ComponentSpec, path: str, src: "_Source", first: int, count: Optional[int]) -> Iterator[Document]:
    """Rows first+1 .. first+count, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    record = first
    try:
        pf = pq.ParquetFile(open_binary(path))
        meta = pf.metadata
        stop = meta.num_rows if count is None else min(meta.num_rows, first + count)
        groups: List[int] = []
        skip = row0 = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if row0 + rows > first and row0 < stop:
                if not groups:
                    skip = first - row0
                groups.append(g)
            row0 += rows
        for batch in pf.iter_batches(batch_size=ROW_BATCH, row_groups=groups) if groups else ():
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            rows_of_batch = _batch_rows(batch.slice(skip))
            skip = 0
            for row in rows_of_batch:
                if record >= stop:
                    return
                record += 1
                if isinstance(row, str):
                    yield Document(id=spec.fallback_id(src.path, record), text=None, component=spec.name, source=src.name, path=src.path,
                                   record=record, problem=row)
                else:
                    yield _to_document(spec, src, record, row)
    except Stage2Error:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: a damaged file
        raise Stage2Error(f"{src.path}: record {record + 1}: cannot be read: {type(exc).__name__}: {first_line(exc)}") from None


def _file_records(spec: ComponentSpec, path: Optional[str], src: "_Source") -> Iterator[Document]:
    if path is not None and not is_remote(path) and os.path.getsize(path) == 0:
        raise Stage2Error(f"{src.path}: the file is empty")
    record = 0
    try:
        for row in _json_file_rows(path) if path is not None and spec.format == "json" else _rows(spec, path):
            record += 1
            if not isinstance(row, dict):
                yield Document(id=spec.fallback_id(src.path, record), text=None, component=spec.name, source=src.name, path=src.path,
                               record=record, problem=f"is a JSON {type(row).__name__}, not an object")
                continue
            text = row.get(spec.text_column)
            if record == 1 and isinstance(text, str) and text.startswith("\ufeff") and spec.format == "text":
                row = {**row, spec.text_column: text[1:]}  # the file's BOM (`datasets` keeps it in text; JSON drops it)
            yield _to_document(spec, src, record, row)
    except Stage2Error:
        raise
    except Exception as exc:  # raised inside datasets/pyarrow, which cannot say which record
        raise Stage2Error(f"{src.path}: record {record + 1}: cannot be read: {type(exc).__name__}: {first_line(exc)}") from exc


def _json_file_rows(path: str) -> Iterator[Any]:
    """The records of a `.json` file as Python's json reads them: an array (strings become `{"text": s}`,
    as in `datasets`), or JSON lines. Not through `datasets`, whose pyarrow reader turns date-like
    strings ("2021-01-01") into timestamps: ids and texts would change."""
    with open_stream(path) as f:
        text = f.read().decode("utf-8")
    text = text[1:] if text.startswith("\ufeff") else text  # the file's BOM, as for every format
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):  # an array, broken (a JSON line is an object): no record of it is read
            end = len(text.rstrip())
            cut = " where the file ends: it is cut short" if exc.msg.startswith("Unterminated") or end - exc.pos <= 6 else ""
            raise Stage2Error(f"{path}: not a complete JSON array: {exc.msg} at line {exc.lineno}, column {exc.colno}{cut}; no record of it was read") from None
        value = None  # JSON lines in a file named .json (datasets reads those too)
    if isinstance(value, list):
        yield from ({"text": v} if isinstance(v, str) else v for v in value)
        return
    if value is not None:
        raise ValueError(f"the file holds a JSON {type(value).__name__}, not an array of records")
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"malformed JSON on line {number}: {exc.msg} (column {exc.colno})") from None


def _rows(spec: ComponentSpec, path: Optional[str]) -> Iterator[Dict[str, Any]]:
    """The rows `datasets` streams, in order, as it yields them one at a time, read ROW_BATCH at a time.

    One at a time, `datasets` formats every row as a table of its own: far more CPU than a batch. When
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


def _to_document(spec: ComponentSpec, src: "_Source", record: int, row: Dict[str, Any]) -> Document:
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
    doc_id = _id_text(raw_id) if raw_id is not None else spec.fallback_id(src.path, record)
    # (a URL that is also the id stays in the metadata too: filter.url reads it there)
    other = {k: v for k, v in row.items() if k != spec.text_column and (k != spec.id_column or k == spec.url_column)}
    # Only a non-ASCII string can hold a surrogate: the other columns are spelt out when one may.
    plain = all(isinstance(v, (int, float, bool, type(None))) or isinstance(v, str) and v.isascii() for v in other.values())
    meta = "" if plain else json.dumps(other, sort_keys=True, ensure_ascii=False, default=str)
    if problem is None:
        # JSON may spell a lone surrogate ("\ud800"): a str, but no Unicode text, which no file can hold.
        for what, value in (("text column " + repr(spec.text_column), text), ("id", doc_id), ("a column besides the text", meta)):
            bad = _lone_surrogate(value)
            if bad is not None:
                problem = f"{what} is not valid Unicode: a lone surrogate \\u{ord(value[bad]):04x} at character {bad + 1}"
                text = None
                break
    return Document(id=doc_id, text=text, component=spec.name, source=src.name, path=src.path, record=record, metadata=other, problem=problem)


def _id_text(raw: Any) -> str:
    """A record's id as text: a JSON value as JSON spells it (true, {"a": 1}), not as Python prints it
    (True, {'a': 1}); anything else a reader gives (a parquet timestamp, bytes) as `str` does."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bool, int, float, list, dict)):
        return json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    return str(raw)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Optional[str]) -> Optional[int]:
    """Where `value` holds a surrogate code point (only half of a UTF-16 pair), or None."""
    if value is None or value.isascii():  # (isascii: a flag, no scan)
        return None
    found = _SURROGATE.search(value)
    return found.start() if found else None


def input_fingerprints(
    specs: List[ComponentSpec], stride: Optional[int] = None, mapper: Any = map, other_files: List[str] = (),
) -> Dict[str, Dict[str, Any]]:
    """A content hash of every local input file (xxh3-128: fast enough for large corpora), its size and,
    where the file can tell, its record count and the byte offset of every `stride`-th record (an
    uncompressed line file's partitions); in the same read every compressed file is checked to its end
    (`scan_file`), so a damaged one fails at start-up, before any work. `mapper`: an executor's map
    (the files are read in parallel by workers), or the builtin one. `other_files`: files the filter's
    steps read (`step_input_files`), hashed and checked the same way."""
    jobs = [(path, spec.format, spec.sample_by, stride) for spec in specs for path in spec.files]
    jobs += [(path, None, "line", None) for path in other_files if path not in {job[0] for job in jobs}]
    # A `hub_path` that names a local folder: its data files are inputs like any (a rerun checks them).
    # (Their format from their names, as `datasets` tells it: provenance then has their record counts too.)
    jobs += [(path, format_of_name(path), spec.sample_by, None) for spec in specs if spec.is_hub and os.path.isdir(spec.hub_path) for path in hub_data_files(spec)]
    return {job[0]: scan for job, scan in zip(jobs, mapper(scan_job, jobs))}


def step_input_files(patterns: List[tuple], launch_dir: str) -> List[str]:
    """The files of the filter steps' (key, path or glob) pairs (FilterKeys.input_patterns), each once, in order."""
    return list(dict.fromkeys(path for key, pattern in patterns for path in step_files(pattern, launch_dir, key)))


def scan_job(job: tuple) -> Dict[str, Any]:
    return scan_file(*job)


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
    """Complete records in a stream of bytes: lines (text), or lines that are not blank (JSON lines).

    With `stride`, also where every stride-th record starts (records 0, stride, 2*stride, ... from 0):
    the byte offsets the filter cuts an uncompressed file's partitions at, so workers read their own
    line ranges.
    """

    def __init__(self, skip_blank: bool, stride: Optional[int] = None):
        self.skip_blank = skip_blank
        self.complete = 0
        self.stride = stride
        self.offsets: List[int] = []
        self._tail: List[bytes] = []  # the line being read, in pieces (a long line is not copied again and again)
        self._tail_start = 0  # its byte offset in the stream
        self._fresh = True  # nothing fed yet

    def feed(self, data: bytes) -> None:
        if self._fresh and data:
            self._fresh = False
            if data.startswith(UTF8_BOM):  # counted as blanks of the same length: the reader drops it (offsets stay)
                data = b" " * len(UTF8_BOM) + data[len(UTF8_BOM) :]
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail.append(data)
            return
        block = b"".join([*self._tail, data[: cut + 1]])
        start = self._tail_start
        self._tail = [data[cut + 1 :]]
        self._tail_start = start + len(block)
        lines = block.count(b"\n")
        if self.skip_blank:
            lines -= len(_BLANK_AFTER_NEWLINE.findall(block)) + bool(_BLANK_FIRST.match(block))
        if self.stride and (self.complete + lines - 1) // self.stride >= -(-self.complete // self.stride):
            self._mark(block, start)
        self.complete += lines

    def _mark(self, block: bytes, start: int) -> None:
        """Record the offsets of the stride-th records starting in this block (vectorised: few blocks hold one)."""
        import numpy as np

        ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)  # every line of the block ends with its newline
        begins = np.concatenate(([0], ends[:-1] + 1))
        if self.skip_blank:  # blank lines are few: found by the counting regexes, not by a mask of every byte
            blank = [m.start() + 1 for m in _BLANK_AFTER_NEWLINE.finditer(block)]
            if _BLANK_FIRST.match(block):
                blank.insert(0, 0)
            if blank:
                begins = begins[~np.isin(begins, np.array(blank, dtype=begins.dtype))]
        index = self.complete + np.arange(len(begins))
        self.offsets.extend(int(start + b) for b in begins[index % self.stride == 0])

    def total(self) -> int:
        """At the end of a good file: its last line counts too when it has no newline."""
        last = b"".join(self._tail)
        counts = bool(last.strip() if self.skip_blank else last)
        if counts and self.stride and self.complete % self.stride == 0:
            self.offsets.append(self._tail_start)
        return self.complete + counts


class _FirstRecord:
    """The first non-blank line of a JSON lines stream, to tell its columns at start-up (bounded: a first
    record longer than `limit` bytes is not looked at)."""

    def __init__(self, limit: int = 1 << 24):
        self.limit, self.pieces, self.size, self.done = limit, [], 0, False

    def feed(self, data: bytes) -> None:
        if self.done or not data:
            return
        if not self.pieces:  # blank lines before it
            data = data.lstrip()
            if not data:
                return
        end = data.find(b"\n")
        self.pieces.append(data if end < 0 else data[:end])
        self.size += len(self.pieces[-1])
        if end >= 0 or self.size > self.limit:
            self.done = True
            if self.size > self.limit:
                self.pieces = []

    def columns(self) -> Optional[List[str]]:
        """Its keys, or None when it is not a JSON object (the reader says what is wrong, and where)."""
        line = b"".join(self.pieces).strip()
        try:
            record = json.loads(line.decode("utf-8-sig")) if line else None
        except ValueError:
            return None
        return sorted(record) if isinstance(record, dict) else None


def scan_file(path: str, fmt: Optional[str], sample_by: str = "line", stride: Optional[int] = None) -> Dict[str, Any]:
    """Hash a file; decompress a compressed one to the end of its last stream, and count its records.

    A compressed file must end exactly where its last stream (gzip member, zstd frame ...) ends; one
    that is cut short, not compressed at all or followed by other bytes is a one-line error naming the
    first record that cannot be read (the records before it are complete); a corrupt one says no record
    can be trusted (damage decompresses to wrong text until it is noticed). Without this, a cut .zst
    (on a block boundary) streams as a shorter, "complete" file.
    """
    import xxhash

    suffix = next((s for s in COMPRESSION_SUFFIXES if path.lower().endswith(s)), None)
    counted = fmt == "json" and not _is_json_array(path) or fmt == "text" and sample_by == "line"
    counter = _RecordCounter(skip_blank=fmt == "json", stride=None if suffix else stride) if counted else None
    first = _FirstRecord() if counted and fmt == "json" else None
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
            before = os.fstat(f.fileno())
            for block in iter(lambda: f.read(READ_BLOCK), b""):
                digest.update(block)
                size += len(block)
                if decoder is None:
                    if counter is not None:
                        counter.feed(block)
                    if first is not None:
                        first.feed(block)
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
                            # Damaged bytes may decompress to wrong text for a while before the library notices (at
                            # the checksum, at the latest): the records before that point are not known to be good.
                            raise Stage2Error(f"{path}: cannot be read: corrupt {name} data, found by byte {at + len(data)}"
                                              f" ({first_line(exc) or type(exc).__name__}); the damage may lie before that, so no"
                                              " record of it can be trusted") from None
                        text_bytes += len(out)
                        if counter is not None and out:
                            counter.feed(out)
                        if first is not None:
                            first.feed(out)
                        at += len(data)
                        rest = getattr(decoder, "unused_data", b"") if decoder.eof else b""
                        at -= len(rest)
                        data = rest
            after = os.stat(path)
    except OSError as exc:  # permission denied, an I/O error of the disk
        raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if (size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino) or before.st_size != size:
        raise Stage2Error(f"{path}: changed while it was being scanned at start-up (its size or modification time changed); keep inputs unchanged while stage2 runs, and run again")
    if size == 0:
        raise Stage2Error(f"{path}: the file is empty")
    if decoder is not None and not decoder.eof:
        raise broken(f"truncated {name} stream: the file ends at byte {size} before the end of its {name} stream")
    records = counter.total() if counter is not None else None
    columns = first.columns() if first is not None else None
    if fmt == "parquet":
        records, columns = parquet_footer(path)
    scan = {"xxh3_128": digest.hexdigest(), "bytes": size, "records": records, "text_bytes": text_bytes if decoder else size,
            "mtime_ns": before.st_mtime_ns, "inode": before.st_ino}  # (what a read checks cheaply: check_unchanged)
    if columns is not None:
        scan["columns"] = columns  # not part of provenance either: for check_columns
    if counter is not None and counter.stride:
        scan["offsets"] = counter.offsets  # not part of provenance (stage2.runtime.run keeps it out)
    return scan


def parquet_rows(path: str) -> int:
    """A parquet file's row count from its footer (a local file or a hub one)."""
    return parquet_footer(path)[0]


def parquet_footer(path: str) -> Tuple[int, List[str]]:
    """A parquet file's row count and column names, from its footer only (no data is read)."""
    import pyarrow.parquet as pq

    try:
        with open_binary(path) as f:
            footer = pq.ParquetFile(f)
            return footer.metadata.num_rows, sorted(footer.schema_arrow.names)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: not parquet, or cut short
        raise Stage2Error(f"{path}: record 1: cannot be read: not a readable parquet file ({first_line(exc)})") from None


def check_columns(specs: List[ComponentSpec], scans: Mapping[str, Mapping[str, Any]]) -> None:
    """At start-up, from each file's first record (JSON lines) or schema (parquet): a text column that is
    not there fails before any work; an id column that is not there is said once per component, since
    its documents would get numbered ids (`<component>/<file>/<record>`) instead."""
    for spec in specs:
        if spec.format not in ("json", "parquet"):
            continue
        warned = False
        for path in spec.files:
            columns = (scans.get(path) or {}).get("columns")
            if columns is None:
                continue
            if spec.text_column not in columns:
                raise Stage2Error(f"{path}: record 1: has no text column {spec.text_column!r} (columns: {', '.join(columns)});"
                                  f" name it with dataset.components.{spec.name}.text_column (dataset.text_column for dataset.paths)")
            if spec.id_column and spec.id_column not in columns and not warned:
                warned = True
                log.warning("component %s: record 1 of %s has no id column %r (columns: %s): its documents get numbered ids"
                            " (%s/<file>/<record>); name the id column with id_column=..., or set id_column=null to say so",
                            spec.name, path, spec.id_column, ", ".join(columns), spec.name)


def hub_revisions(specs: List[ComponentSpec]) -> Dict[str, Dict[str, Any]]:
    """The commit each hub component resolves to (or why it could not be resolved)."""
    revisions: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        if not spec.is_hub:
            continue
        entry: Dict[str, Any] = {"path": spec.hub_path, "subset": spec.subset, "requested": spec.revision}
        if os.path.isdir(spec.hub_path):  # a local dataset folder: no revision; its files are in provenance's inputs
            entry["local"] = True
            revisions[spec.name] = entry
            continue
        try:
            from huggingface_hub import HfApi

            entry["sha"] = HfApi().dataset_info(spec.hub_path, revision=spec.revision, timeout=10).sha
        except Exception as exc:  # offline or unknown: record it rather than fail the run
            entry["sha"] = None
            entry["error"] = f"{type(exc).__name__}: {first_line(exc)}"
        revisions[spec.name] = entry
    return revisions

# Canonical positions as one uint64: component (8 bits) | file (20 bits) | record within the file (36 bits).
FILE_SHIFT = 36
COMPONENT_SHIFT = 56
MAX_FILES = 1 << (COMPONENT_SHIFT - FILE_SHIFT)


@dataclass(frozen=True)
class Unit:
    """One task of the filter's first pass: records first+1 .. first+count of one file of a component."""

    component: str
    comp_index: int
    file: Optional[str]
    file_index: int
    first: int  # records of the file before the unit's first
    count: Optional[int]  # None: to the end of the file
    byte_range: Optional[Tuple[int, int]] = None
    partition_size: int = 1

    @property
    def name(self) -> str:
        return f"{self.file_index:05d}-{self.first // self.partition_size:05d}"

    def position(self, record: int) -> int:
        """The canonical position of the file's `record`-th record (1-based)."""
        return (self.comp_index << COMPONENT_SHIFT) | (self.file_index << FILE_SHIFT) | (record - 1)

    def chunk_of(self, record: int) -> int:
        return (record - 1) // self.partition_size


def component_files(spec: ComponentSpec) -> Tuple[ComponentSpec, List[Optional[str]]]:
    """The files a component reads: its local files, or the data files its hub dataset resolves to."""
    if not spec.is_hub:
        return spec, list(spec.files)
    files = hub_data_files(spec)
    formats = {infer_format(f) for f in files}
    if len(formats) > 1:
        raise Stage2Error(f"component {spec.name}: hub dataset {spec.hub_path!r} has files of several formats {sorted(formats)}")
    return replace(spec, format=formats.pop()), files


def plan_component(
    spec: ComponentSpec,
    comp_index: int,
    files: List[Optional[str]],
    scans: Dict[str, Dict[str, Any]],
    partition_size: int,
    count_records: Callable[[ComponentSpec, str], int],
) -> List[Unit]:
    """The units of one component, in canonical order, holding exactly its first max_records records.

    `scans`: the start-up scan of each local file (records, offsets). `count_records(spec, file)` is
    called only where the count is unknown (a JSON array, text by paragraph, a compressed hub file)
    and a cap makes it matter.
    """
    if len(files) > MAX_FILES:
        raise Stage2Error(f"component {spec.name}: {len(files)} files; at most {MAX_FILES} per component")
    P = partition_size
    remaining = spec.max_records
    units: List[Unit] = []
    for file_index, path in enumerate(files):
        if remaining == 0:
            break
        scan = scans.get(path) or {} if path else {}
        records = scan.get("records")
        if records is None and path is not None and spec.format == "parquet":
            records = parquet_rows(path)
        if records is None and remaining is not None:
            records = count_records(spec, path)
        if records == 0:
            raise Stage2Error(f"{path}: holds no records (empty file?)")
        n = records if remaining is None else min(remaining, records) if records is not None else None
        unit = Unit(spec.name, comp_index, path, file_index, 0, n, None, P)
        offsets = scan.get("offsets")
        if offsets is not None and n is not None:  # (the scan records offsets of uncompressed line files only)
            for k in range(-(-n // P)):
                end = offsets[k + 1] if k + 1 < len(offsets) else scan["bytes"]
                units.append(replace(unit, first=k * P, count=min(P, n - k * P), byte_range=(offsets[k], end)))
        elif spec.format == "parquet" and n is not None:
            units.extend(replace(unit, first=k * P, count=min(P, n - k * P)) for k in range(-(-n // P)))
        else:
            units.append(unit)
        if remaining is not None:
            remaining -= n
    return units


def count_file_records(spec: ComponentSpec, path: Optional[str]) -> int:
    """Records of a file whose count no metadata gives (read once; a worker task)."""
    return sum(1 for _ in read_records(spec, path))


def _count_task(args: Tuple[ComponentSpec, Optional[str]]) -> int:
    return count_file_records(*args)


def counter_on(executor: Any) -> Callable[[ComponentSpec, Optional[str]], int]:
    """`plan_component`'s record counter, run on one of the executor's workers (the driver reads no document)."""
    return lambda spec, path: next(iter(executor.map(_count_task, [(spec, path)])))


def read_unit(spec: ComponentSpec, unit: Unit) -> Iterator[Document]:
    return read_records(spec, unit.file, unit.first, unit.count, unit.byte_range)
