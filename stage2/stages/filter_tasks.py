"""The filter's worker tasks: each reads and writes its own files and returns a few counts.

  screen   one plan unit: read its records, run the component's step chain, write the survivors
           (`cand-<chunk>.parquet`), their dedup hashes (spill files) and rejected samples
  resolve  one hash bucket (stage2/dedup.py)
  decide   one plan unit again: exact/near verdicts from the buckets, the kept documents written as
           the unit's final parts (a partition that keeps all its candidates: their file, hard-linked)
Each task is done once its `done-<pass>.json` marker exists with the task's key; a resumed run
returns the marker's counts instead of redoing the task (outputs are written before the marker, each
atomically, so a task killed midway is simply redone).

numpy, pyarrow and the dedup passes are imported inside the task bodies: with worker processes the
driver imports this module only to hand its tasks out, and their imports were a fifth of its CPU at
40x (benchmarks/results/scale.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from stage2.documents import Document
from stage2.io.files import file_digests, share_file
from stage2.io.parts import docs_to_table, part_path, table_documents, write_table
from stage2.io.sources import Unit, read_unit
from stage2.runtime.tasks import once
from stage2.steps import STEPS, Chain, Drop, Edit

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

# Part of every task key: bump it when a task's outputs change, so a resume with newer code redoes them.
TASK_VERSION = 3
DEDUP_REASONS = ("duplicate", "near_duplicate")


def task_key(task: Dict[str, Any]) -> str:
    """What a task's outputs depend on (everything but where they go)."""
    plain = {k: v for k, v in task.items() if k not in ("dir", "parts_dir")}
    return hashlib.sha256(json.dumps([TASK_VERSION, plain], sort_keys=True, default=_plain).encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return asdict(value)
    return str(value)


def build_chain(steps: Iterable[Tuple[str, Dict[str, Any]]]) -> Chain:
    """The chain that (name, settings) pairs describe (`component_steps`), each step from the registry."""
    return Chain([STEPS[name].from_plain(settings) for name, settings in steps])


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # (isascii: a flag, no scan)


def _chunks(docs: Iterable[Document], unit: Unit) -> Iterable[Tuple[int, List[Document]]]:
    chunk: List[Document] = []
    current = None
    for doc in docs:
        k = unit.chunk_of(doc.record)
        if current is not None and k != current:
            yield current, chunk
            chunk = []
        current = k
        chunk.append(doc)
    if chunk:
        yield current, chunk


class Samples:
    """The first `limit` rejected (or edited) documents per reason, with why (for rejected/<component>.parquet)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: List[Tuple[Document, Any]] = []
        self.taken: Counter = Counter()

    def offer(self, doc: Document, drop: Any) -> None:  # a Drop, or an Edit (the document as it was read)
        if self.taken[drop.reason] < self.limit:
            self.taken[drop.reason] += 1
            self.rows.append((doc, drop))

    def write(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if not self.rows:
            return
        keys = list(dict.fromkeys(k for _, drop in self.rows for k in drop.values))
        extra: Dict[str, list] = {"reason": [d.reason for _, d in self.rows], "detail": [d.detail for _, d in self.rows]}
        for key in keys:
            extra[key] = [_column_value(d.values.get(key)) for _, d in self.rows]
        write_table(path, docs_to_table([doc for doc, _ in self.rows], extra))


def _column_value(value: Any) -> Any:
    import numpy as np

    return float(value) if isinstance(value, (float, np.floating)) else value


def screen(task: Dict[str, Any]) -> Dict[str, Any]:
    """Pass 1 over one unit (see the module docstring)."""
    folder = Path(task["dir"])
    return once(folder / "done-screen.json", task_key(task), lambda: _screen(task, folder))


def _screen(task: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    import numpy as np

    from stage2.dedup import batch_window_hashes, exact_key, spill

    unit: Unit = task["unit"]
    chain = build_chain(task["steps"])
    dedup = task["dedup"]  # {"exact": bool, "near": bool, "window_words": k} or None
    samples = Samples(task["keep_rejected"])
    dropped: Counter = Counter({r: 0 for r in chain.reasons})
    records = bytes_in = candidates = 0
    pairs = {"exact": 0, "near": 0}
    spilled: Dict[str, List[str]] = {"exact": [], "near": []}  # spill files with pairs (an empty .npy cannot be memory-mapped)
    chunks: List[int] = []
    chunk_bytes: List[int] = []  # the candidates' text bytes (a part that keeps them all has these)
    for k, docs in _chunks(read_unit(task["spec"], unit), unit):
        records += len(docs)
        sizes = [utf8_len(d.text) if d.text is not None else 0 for d in docs]
        bytes_in += sum(sizes)
        verdicts = chain.judge(docs)
        kept = []
        kept_bytes = 0
        for doc, size, verdict in zip(docs, sizes, verdicts):
            if isinstance(verdict, Edit):  # kept, with the text the chain's edits made
                samples.offer(doc, verdict)
                doc = replace(doc, text=verdict.text)
                size = utf8_len(doc.text)
                verdict = None
            if verdict is None:
                kept.append(doc)
                kept_bytes += size
            else:
                dropped[verdict.reason] += 1
                samples.offer(doc, verdict)
        candidates += len(kept)
        chunks.append(k)
        chunk_bytes.append(kept_bytes)
        positions = _positions(unit, np.fromiter((d.record for d in kept), dtype=np.int64, count=len(kept)))
        if dedup and dedup["exact"] and kept:
            hashes = np.fromiter((exact_key(d.text) for d in kept), dtype=np.uint64, count=len(kept))
            pairs["exact"] += spill(folder / f"exact-{k:05d}.npy", hashes, positions)
            spilled["exact"].append(f"exact-{k:05d}.npy")
        if dedup and dedup["near"] and kept:
            hashes, offsets = batch_window_hashes([d.text for d in kept], dedup["window_words"])
            if len(hashes):
                pairs["near"] += spill(folder / f"near-{k:05d}.npy", hashes, np.repeat(positions, np.diff(offsets)))
                spilled["near"].append(f"near-{k:05d}.npy")
        # In the parts' own schema: a partition without duplicates becomes its part as it is (decide).
        write_table(folder / f"cand-{k:05d}.parquet", docs_to_table(kept))
    _describe_undetected(samples, task["steps"])
    samples.write(folder / "rejected-screen.parquet")
    outputs = [folder / f"cand-{k:05d}.parquet" for k in chunks] + [folder / name for kind in ("exact", "near") for name in spilled[kind]]
    return {
        "outputs": outputs + _existing(folder / "rejected-screen.parquet"),
        "records": records,
        "bytes_in": bytes_in,
        "candidates": candidates,
        "dropped": dict(dropped),
        "tally": chain.tally(),
        "chunks": chunks,
        "chunk_bytes": chunk_bytes,
        "pairs": pairs,
        "spilled": spilled,
    }


def _describe_undetected(samples: Samples, steps: List[Tuple[str, Dict[str, Any]]]) -> None:
    """Saved samples the function-word check dropped before any detector: what the first detector takes
    them for (a few documents). No threshold was compared with its answer, so target_score stays empty."""
    from dataclasses import replace

    from stage2.lid.rule import first_detection

    todo = [i for i, (_, drop) in enumerate(samples.rows) if drop.reason == "language" and not drop.values.get("language")]
    if not todo:
        return
    rule = build_chain([s for s in steps if s[0] == "language"]).steps[0].settings
    for i, (language, score) in zip(todo, first_detection([samples.rows[i][0].text for i in todo], rule)):
        doc, drop = samples.rows[i]
        samples.rows[i] = (doc, replace(drop, values={**drop.values, "language": language, "score": score}))


def resolve(task: Dict[str, Any]) -> Dict[str, Any]:
    """Pass 2: one hash bucket (stage2/dedup.py)."""
    from stage2.dedup import resolve_bucket

    return once(Path(task["dir"]) / "done-resolve.json", task_key(task), lambda: {**resolve_bucket(task), "outputs": [task["exact_out"], task["near_out"]]})


def decide(task: Dict[str, Any]) -> Dict[str, Any]:
    """Pass 3 over one unit (see the module docstring)."""
    folder = Path(task["dir"])
    return once(folder / "done-decide.json", task_key(task), lambda: _decide(task, folder))


def _existing(path: Path) -> List[Path]:
    return [path] if path.is_file() else []


def _positions(unit: Unit, records: np.ndarray) -> np.ndarray:
    """The canonical positions of the unit's file's records (1-based numbers), as Unit.position."""
    import numpy as np

    return np.uint64(unit.position(1)) + (records - 1).astype(np.uint64)


def _decide(task: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from stage2.dedup import lookup

    unit: Unit = task["unit"]
    samples = Samples(task["keep_rejected"])
    dropped = Counter({r: 0 for r in DEDUP_REASONS})
    kept = bytes_out = 0
    parts: List[str] = []
    digests: Dict[str, Dict[str, Any]] = {}
    threshold = task["threshold"]
    for k, candidate_bytes in zip(task["chunks"], task["chunk_bytes"]):
        candidates = pq.ParquetFile(folder / f"cand-{k:05d}.parquet")
        rows = candidates.metadata.num_rows
        keep = np.ones(rows, dtype=bool)
        if task["dedup"] and rows:
            positions = _positions(unit, candidates.read(columns=["record"]).column("record").to_numpy())
            dups, near = lookup(task["exact_files"], task["near_files"], int(positions.min()), int(positions.max()) + 1)
            exact = np.isin(positions, dups)
            seen = np.array([near.get(int(p), 0) for p in positions], dtype=np.int64)
            windows = _windows(folder / f"near-{k:05d}.npy", positions) if near else np.zeros(rows, dtype=np.int64)
            near_dup = ~exact & (windows > 0) & (seen >= threshold * windows)
            keep = ~(exact | near_dup)
            dropped["duplicate"] += int(exact.sum())
            dropped["near_duplicate"] += int(near_dup.sum())
        path = part_path(Path(task["parts_dir"]), unit.component, unit.file_index, k)
        if keep.all():  # (most partitions): the candidates file is the part
            if not rows:
                continue
            share_file(folder / f"cand-{k:05d}.parquet", path)
            kept += rows
            bytes_out += candidate_bytes
        else:
            table = candidates.read()
            if samples.limit:
                for i in np.flatnonzero(~keep):
                    if exact[i]:
                        drop = Drop("duplicate", "an earlier document has the same normalised text")
                    else:
                        share = seen[i] / windows[i]
                        drop = Drop("near_duplicate", f"seen_window_frac={share:.3f} >= {threshold}", {"seen_window_frac": float(share)})
                    samples.offer(table_documents(table.take([int(i)]))[0], drop)
            if not keep.any():
                continue
            kept_table = table.take(np.flatnonzero(keep))
            write_table(path, kept_table)
            kept += kept_table.num_rows
            bytes_out += sum(utf8_len(t) for t in kept_table.column("text").to_pylist())
        parts.append(os.path.relpath(path, task["parts_dir"]))
        digests[parts[-1]] = file_digests(path)  # here, in parallel: the driver records them without a read
    samples.write(folder / "rejected-decide.parquet")
    outputs = [Path(task["parts_dir"]) / rel for rel in parts] + _existing(folder / "rejected-decide.parquet")
    return {"outputs": outputs, "kept": kept, "bytes_out": bytes_out, "dropped": dict(dropped), "parts": parts, "part_digests": digests}


def _windows(near_spill: Path, positions: np.ndarray) -> np.ndarray:
    """How many distinct windows each candidate has: its pairs in the partition's near spill."""
    import numpy as np

    if not near_spill.is_file():  # (no candidate had a window)
        return np.zeros(len(positions), dtype=np.int64)
    owners, counts = np.unique(np.load(near_spill, mmap_mode="r")[:, 1], return_counts=True)
    at = np.searchsorted(owners, positions)
    found = (at < len(owners)) & (owners[np.minimum(at, len(owners) - 1)] == positions)
    return np.where(found, counts[np.minimum(at, len(owners) - 1)], 0)


def merge_rejected(paths: Iterable[Path], reasons: List[str], limit: int) -> Optional[pa.Table]:
    """The first `limit` samples per reason over the units' sample files (in canonical order), reasons in chain order."""
    existing = [p for p in paths if p.is_file()] if limit else []
    if not existing:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.ParquetFile(p).read() for p in existing], promote_options="default")
    reason = table.column("reason").to_pylist()
    taken: Counter = Counter()
    rows = []
    for r in reasons:
        for i, x in enumerate(reason):
            if x == r and taken[r] < limit:
                taken[r] += 1
                rows.append(i)
    return table.take(pa.array(rows, type=pa.int64())) if rows else None

