"""Shared by the benchmarks: where the labelled dev corpora are, and how to read them."""

from __future__ import annotations

import gzip
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Iterator, List

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def shared_data_dir() -> Path:
    """`$STAGE2_SHARED_DATA`, else `../shared/data` next to the checkout."""
    override = os.environ.get("STAGE2_SHARED_DATA")
    path = Path(override) if override else Path(__file__).parents[1].parent / "shared" / "data"
    if not path.is_dir():
        raise SystemExit(f"benchmark data not found at {path}; set STAGE2_SHARED_DATA to the dev corpora folder")
    return path


def read_jsonl(path: Path) -> Iterator[Dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def md_table(header: List[str], rows: List[List[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
