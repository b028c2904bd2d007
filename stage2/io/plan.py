"""Partition planning: which records each unit of filter work reads, decided from metadata only.

The plan is fixed by the recipe (`dataset.partition_size`, `max_records`) and the inputs, never by the
machine, so it fixes the canonical order (component, file, record) and every artifact. The driver
never reads a document: units carry a file and a record range, and workers read their own.

  uncompressed JSON lines / text by line   one unit per partition: a byte range from the start-up
                                           scan's offsets of every partition_size-th record
  parquet (local or on the hub)            one unit per partition: a row range (footer metadata)
  compressed files, JSON arrays, text by   one unit per file (a stream cannot be entered midway);
  paragraph or document                    its records are still cut into partitions
A partition is partition_size consecutive records of one file; its id is (file index, chunk index),
chunk k holding the file's records k*P+1 .. (k+1)*P.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec, hub_data_files, infer_format, parquet_rows, read_records

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
