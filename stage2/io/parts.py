"""Filtered parts: the parquet files the filter stage writes and the later stages read.

Layout: `<run>/filtered/<component>/part-<file>-<chunk>.parquet`, one file per partition that kept a
document (chunk k of input file f: its records k*P+1 .. (k+1)*P), plus `<run>/filtered/manifest.json`
listing the components in manifest order with their parts in canonical order.
Parts load with `datasets.load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.files import atomic_path, file_sha256

if TYPE_CHECKING:  # pyarrow is imported by what reads or writes a table: a driver that only checks parts needs none
    import pyarrow as pa


log = logging.getLogger(__name__)

FILTERED_DIR = "filtered"
# Rejected samples live outside filtered/, so reading a component's folder gives exactly its kept documents.
REJECTED_DIR = "rejected"
MANIFEST = "manifest.json"
FILTER_FINISHED = ".finished.json"  # the filter stage's record of its artifacts' sha256 (stage2.stages.filter.FINISHED)
PART_GLOB = "part-*.parquet"  # the names `part_path` gives
COLUMNS = ("id", "text", "component", "source", "record", "meta")


@functools.lru_cache(maxsize=None)
def schema() -> pa.Schema:
    """The parts' columns (`COLUMNS`) and their types."""
    import pyarrow as pa

    kinds = {"record": pa.int64()}
    return pa.schema([(name, kinds.get(name, pa.string())) for name in COLUMNS])


def arrow_without_pandas() -> None:
    """Let pyarrow build tables in this process without importing pandas (a cost in every worker).

    pyarrow imports pandas on its first array or table only to ask whether the input is a pandas
    object, which stage2's never are; told once that pandas is missing, it does not ask again. pandas
    stays importable: pyarrow's own pandas conversions (and `datasets`) import it when they need it.
    For worker processes, before their first table; a no-op where pandas is loaded already.
    """
    import sys

    import pyarrow as pa

    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NoPandas)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NoPandas)


class _NoPandas:
    """An import hook under which `import pandas` fails (as without pandas installed)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"No module named {name!r}")
        return None


def metadata_json(metadata: Dict[str, Any]) -> str:
    """A document's source metadata as the part's `meta` column: sorted JSON (the same bytes every run)."""
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str) if metadata else "{}"


def part_path(run_dir: Path, component: str, file_index: int, chunk: int) -> Path:
    """The part of a component's `chunk`-th partition of its `file_index`-th input file (both from 0)."""
    return Path(run_dir) / FILTERED_DIR / component / f"part-{file_index:05d}-{chunk:05d}.parquet"


def docs_to_table(docs: List[Document], extra: Optional[Dict[str, list]] = None, types: Optional[Dict[str, pa.DataType]] = None) -> pa.Table:
    """Documents as a parts table, with `extra` columns (lists; `types` where inference would not do)."""
    import pyarrow as pa

    columns = {
        "id": [d.id for d in docs],
        "text": [d.text for d in docs],
        "component": [d.component for d in docs],
        "source": [d.source for d in docs],
        "record": [d.record for d in docs],
        "meta": [metadata_json(d.metadata) for d in docs],
    }
    table_schema = schema()
    for name, values in (extra or {}).items():
        columns[name] = values
        kind = (types or {}).get(name) or (pa.infer_type(values) if values else pa.string())
        table_schema = table_schema.append(pa.field(name, kind))
    return pa.table(columns, schema=table_schema)


def write_table(path: Path, table: pa.Table) -> None:
    """Atomic, deterministic parquet (no timestamps in the file; same bytes for the same rows)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=10_000)


def read_documents(path: Path, check: Optional[Dict[str, str]] = None) -> Iterator[Document]:
    """A part's documents; `check` (`part_check`): the sha256 a deferred check left, compared with the bytes read."""
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas in every process.
    yield from table_documents(pq.ParquetFile(checked_source(path, check)).read(columns=list(COLUMNS)))


def checked_source(path: Path, check: Optional[Dict[str, str]]) -> Any:
    """What to open a part from: its path, or, with a deferred check (`part_check`), its bytes, read once
    and checked against the recorded sha256 (`verify_part`) before parquet parses them."""
    if not check:
        return path
    import pyarrow as pa

    data = Path(path).read_bytes()
    verify_part(Path(path), data, check)
    return pa.BufferReader(data)


def table_documents(table: pa.Table) -> List[Document]:
    """The rows of a parts table (other columns ignored) as Documents."""
    out = []
    for row in table.select(list(COLUMNS)).to_pylist():
        row["metadata"] = json.loads(row.pop("meta"))
        out.append(Document(**row))
    return out


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / FILTERED_DIR / MANIFEST
    if not path.exists():
        raise Stage2Error(f"{run_dir}: no filtered parts here ({FILTERED_DIR}/{MANIFEST} is missing); point at a filter or pipeline run folder")
    return json.loads(path.read_text())


# A run given a past run's parts reads the components its own `dataset` names.
SAME_DATASET = "; give the dataset that run filtered (its config.resolved.yaml), e.g. the same dataset=... overrides"


def filtered_part_files(run_dir: Path, component: str) -> List[Path]:
    manifest = read_manifest(run_dir)
    entry = manifest["components"].get(component)
    if entry is None:
        raise Stage2Error(f"{run_dir}: the filtered parts have no component {component!r} (have: {', '.join(manifest['components'])}){SAME_DATASET}")
    return [Path(run_dir) / rel for rel in entry["parts"]]


def iter_filtered(run_dir: Path, component: str) -> Iterator[Document]:
    for path in filtered_part_files(run_dir, component):
        yield from read_documents(path)


# Set by `deferred_hashes`: check_parts then leaves the parts' sha256 to the caller (`part_check`).
_DEFER = False
# Parts whose bytes a deferred check left unchecked: path -> what `verify_part` compares with.
_DEFERRED: Dict[Path, Dict[str, str]] = {}


@contextlib.contextmanager
def deferred_hashes(defer: bool = True) -> Iterator[None]:
    """Within: `check_parts` checks the set of parts, their records and the parts manifest, but not the
    parts' bytes; whoever reads a part then checks its sha256 (`part_check`, `verify_part`), so the
    hashing happens where the part is read (in a worker) instead of in the driver up front."""
    global _DEFER
    before, _DEFER = _DEFER, defer
    try:
        yield
    finally:
        _DEFER = before


def part_check(path: Path) -> Optional[Dict[str, str]]:
    """What a deferred check left to do for one part (for `verify_part`), or None when it was hashed."""
    return _DEFERRED.get(Path(path))


def verify_part(path: Path, data: bytes, check: Optional[Dict[str, str]]) -> None:
    """A part's bytes, as read, against the sha256 its run recorded (`part_check`): one-line error otherwise."""
    if not check:
        return
    got = hashlib.sha256(data).hexdigest()
    if got != check["sha256"]:
        raise Stage2Error(
            f"{path}: sha256 {got[:16]}... does not match {check['record']} ({check['sha256'][:16]}...) of {check['who']}:"
            " the file changed after that run wrote it"
        )


# Parts checked in this process: folder -> (components, each checked file's stat, digest). A later
# check of the same files, unchanged since (inode, size, mtime, ctime), need not hash them again.
_CHECKED: Dict[Path, Tuple[frozenset, Dict[str, Tuple[int, ...]], str]] = {}


def _stat(path: Path) -> Tuple[int, ...]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def part_records(folder: Path) -> List[Tuple[Path, Dict[str, str]]]:
    """The sha256 of the filtered artifacts as the run that wrote them recorded them: stats.json's
    `artifact_sha256` (when the run finished) and `filtered/.finished.json` (when its filter stage
    finished), each as (record file, relative path -> sha256 of the `filtered/` entries)."""
    from stage2.io.files import read_json

    out = []
    stats_path = folder / "stats.json"
    if stats_path.exists():
        recorded = read_json(stats_path).get("artifact_sha256")
        if recorded:
            out.append((stats_path, {rel: sha for rel, sha in recorded.items() if rel.startswith(f"{FILTERED_DIR}/")}))
    finished_path = folder / FILTERED_DIR / FILTER_FINISHED
    if finished_path.exists():
        finished = read_json(finished_path)
        # A task marker (stage2.runtime.tasks); runs from before it kept the map at the top level.
        result = finished.get("result") if isinstance(finished.get("result"), dict) else finished
        out.append((finished_path, dict(result.get("artifacts") or {})))
    return out


def check_parts(folder: Path, names: List[str], who: str) -> str:
    """Check that the parts of components `names` in a run folder are the ones that run recorded:
    the same set (none added, none removed) and the same bytes (sha256), and the parts manifest too.

    Returns the sha256 of the checked files' hashes (for the lineage); raises Stage2Error naming the
    first file that differs and `who` (the input run, or this run).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name in names:
        if name not in manifest["components"]:
            raise Stage2Error(f"{folder}: the filtered parts have no component {name!r} (have: {', '.join(manifest['components'])}){SAME_DATASET}")
    records = part_records(folder)
    if not records:
        raise Stage2Error(
            f"{folder}: no record of its filtered parts' sha256 (no artifact_sha256 in stats.json, no {FILTERED_DIR}/{FILTER_FINISHED}):"
            f" its filter stage did not finish, so its parts cannot be trusted; resume that run or filter again"
        )
    listed = {rel for name in names for rel in manifest["components"][name]["parts"]}
    on_disk = {str(p.relative_to(folder)) for name in names for p in (folder / FILTERED_DIR / name).glob(PART_GLOB)}
    wanted = sorted(listed | {f"{FILTERED_DIR}/{MANIFEST}"})
    # The records count as checked files too: a record edited since is a reason to check again.
    wanted_stats = wanted + [str(path.relative_to(folder)) for path, _ in records]
    cached = _CHECKED.get(folder)
    if cached and set(names) <= cached[0]:
        try:
            if all(cached[1].get(rel) == _stat(folder / rel) for rel in wanted_stats) and on_disk <= set(cached[1]):
                return cached[2]
        except OSError:
            pass  # (a file went missing: the full check below names it)
    changed = "the set of parts changed after the run wrote them"
    for record_path, recorded in records:
        in_record = {
            rel for rel in recorded
            if any(rel.startswith(f"{FILTERED_DIR}/{name}/") for name in names) and fnmatch.fnmatch(rel.rsplit("/", 1)[1], PART_GLOB)
        }
        if in_record - listed:
            rel = min(in_record - listed)
            raise Stage2Error(f"{folder / rel}: recorded in {record_path} but not listed in {FILTERED_DIR}/{MANIFEST} of {who}: {changed}")
        if listed - in_record:
            rel = min(listed - in_record)
            raise Stage2Error(f"{folder / rel}: listed in {FILTERED_DIR}/{MANIFEST} of {who} but not recorded in {record_path}: {changed}")
    if on_disk - listed:
        rel = min(on_disk - listed)
        raise Stage2Error(f"{folder / rel}: a part {who} did not write (in neither {FILTERED_DIR}/{MANIFEST} nor {records[0][0]}): {changed}")
    hashes: Dict[str, str] = {}
    stats: Dict[str, Tuple[int, ...]] = {}
    deferred: Dict[Path, Dict[str, str]] = {}
    for rel in wanted:
        path = folder / rel
        try:
            stats[rel] = _stat(path)
            if _DEFER and rel in listed:
                # The records must agree (the bytes cannot match two hashes); the reader checks the bytes.
                shas = {recorded.get(rel) for _, recorded in records}
                if len(shas) == 1 and None not in shas:
                    hashes[rel] = shas.pop()
                    deferred[path] = {"sha256": hashes[rel], "record": str(records[0][0]), "who": who}
                    continue
            hashes[rel] = file_sha256(path)
            _DEFERRED.pop(path, None)
        except FileNotFoundError:
            raise Stage2Error(f"{path}: recorded by {who} but missing") from None
        except OSError as exc:
            raise Stage2Error(f"{path}: cannot be read: {exc.strerror or exc}") from None
        for record_path, recorded in records:
            if rel not in recorded:
                raise Stage2Error(f"{path}: not recorded in {record_path} of {who}")
            if recorded[rel] != hashes[rel]:
                raise Stage2Error(
                    f"{path}: sha256 {hashes[rel][:16]}... does not match {record_path} ({recorded[rel][:16]}...) of {who}:"
                    " the file changed after that run wrote it"
                )
    for path, _ in records:
        stats[str(path.relative_to(folder))] = _stat(path)
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    if deferred:
        _DEFERRED.update(deferred)  # (not cached as checked: a check that hashes must still read them)
    else:
        _CHECKED[folder] = (frozenset(names), stats, digest)
    return digest
