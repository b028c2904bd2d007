"""Filtered parts: the parquet files the filter stage writes and the later stages read.

Layout: `<run>/filtered/<component>/part-<file>-<chunk>.parquet`, one file per partition that kept a
document (chunk k of input file f: its records k*P+1 .. (k+1)*P), plus `<run>/filtered/manifest.json`
listing the components in manifest order with their parts in canonical order.
Parts load with `datasets.load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.files import atomic_path
from stage2.sources import ComponentSpec, iter_documents

if TYPE_CHECKING:  # (workers write parts: they need not import the run folder's module)
    from stage2.run import Run

log = logging.getLogger(__name__)

FILTERED_DIR = "filtered"
MANIFEST = "manifest.json"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("component", pa.string()),
        ("source", pa.string()),
        ("record", pa.int64()),
        ("meta", pa.string()),
    ]
)


def arrow_without_pandas() -> None:
    """Let pyarrow build tables in this process without importing pandas (~0.25 CPU s per process).

    pyarrow imports pandas on its first array or table only to ask whether the input is a pandas
    object, which stage2's never are; told once that pandas is missing, it does not ask again. pandas
    stays importable: pyarrow's own pandas conversions (and `datasets`) import it when they need it.
    For worker processes, before their first table; a no-op where pandas is loaded already.
    """
    import sys

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
    columns = {
        "id": [d.id for d in docs],
        "text": [d.text for d in docs],
        "component": [d.component for d in docs],
        "source": [d.source for d in docs],
        "record": [d.record for d in docs],
        "meta": [metadata_json(d.metadata) for d in docs],
    }
    schema = SCHEMA
    for name, values in (extra or {}).items():
        columns[name] = values
        kind = (types or {}).get(name) or (pa.infer_type(values) if values else pa.string())
        schema = schema.append(pa.field(name, kind))
    return pa.table(columns, schema=schema)


def write_table(path: Path, table: pa.Table) -> None:
    """Atomic, deterministic parquet (no timestamps in the file; same bytes for the same rows)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=10_000)


def read_documents(path: Path) -> Iterator[Document]:
    # ParquetFile, not read_table: read_table imports pyarrow.dataset and pandas (~0.25 s per process).
    yield from table_documents(pq.ParquetFile(path).read(columns=list(SCHEMA.names)))


def table_documents(table: pa.Table) -> List[Document]:
    """The rows of a parts table (other columns ignored) as Documents."""
    out = []
    for row in table.select(list(SCHEMA.names)).to_pylist():
        row["metadata"] = json.loads(row.pop("meta"))
        out.append(Document(**row))
    return out


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / FILTERED_DIR / MANIFEST
    if not path.exists():
        raise Stage2Error(f"{run_dir}: no filtered parts here ({FILTERED_DIR}/{MANIFEST} is missing); point at a filter or pipeline run folder")
    return json.loads(path.read_text())


def filtered_part_files(run_dir: Path, component: str) -> List[Path]:
    manifest = read_manifest(run_dir)
    entry = manifest["components"].get(component)
    if entry is None:
        raise Stage2Error(f"{run_dir}: the filtered parts have no component {component!r} (have: {', '.join(manifest['components'])})")
    return [Path(run_dir) / rel for rel in entry["parts"]]


def iter_filtered(run_dir: Path, component: str) -> Iterator[Document]:
    for path in filtered_part_files(run_dir, component):
        yield from read_documents(path)


def filtered_source(run: Run, input_run: Optional[str], consumer: str) -> Optional[Path]:
    """Where a tokenizer/shard stage reads filtered text: a past run, this run's own parts, or None (raw).

    The choice is recorded in the run's lineage under `<consumer>.documents`.
    """
    if input_run:
        folder = run.resolve_path(input_run).resolve()
        read_manifest(folder)  # fail early with a clear message
        run.record_lineage(f"{consumer}.documents", folder)
        return folder
    if (run.dir / FILTERED_DIR / MANIFEST).exists():
        run.record_lineage(f"{consumer}.documents", run.dir, note=f"this run's {FILTERED_DIR}/")
        return run.dir
    run.record_lineage(f"{consumer}.documents", None, note="raw sources of the manifest")
    return None


def component_documents(run: Run, spec: ComponentSpec, filtered_dir: Optional[Path]) -> Iterator[Document]:
    """A component's documents: filtered parts when there are any, else the raw source.

    Unusable raw records fail the run, or are passed over with filter.on_bad_record=skip.
    """
    if filtered_dir is not None:
        yield from iter_filtered(filtered_dir, spec.name)
        return
    skip_bad = run.cfg["filter"]["on_bad_record"] == "skip"
    for doc in iter_documents(spec):
        if doc.problem is None:
            yield doc
        elif not skip_bad:
            raise Stage2Error(f"{doc.source}: record {doc.record}: {doc.problem} (filter.on_bad_record=skip passes over such records)")
