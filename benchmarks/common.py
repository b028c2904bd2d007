"""Shared by the benchmarks: where the labelled dev corpora are, and how to read them."""

from __future__ import annotations

import gzip
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

REPO = Path(__file__).resolve().parents[1]
# `python -m benchmarks --quick` points this elsewhere, so a smoke test does not overwrite the full results.
RESULTS = Path(os.environ.get("STAGE2_BENCH_RESULTS") or REPO / "benchmarks" / "results")


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


def write_results(name: str, markdown: str, headline: Dict[str, Any]) -> None:
    """`<name>.md` for people and `<name>.json` (headline numbers) for `python -m benchmarks`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown, encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **headline}, indent=2) + "\n", encoding="utf-8")


def child_env() -> Dict[str, str]:
    """Environment for a timed `stage2` subprocess: bytecode cached in a temp folder.

    This box sets PYTHONDONTWRITEBYTECODE, so every spawned worker would recompile its imports
    (seconds of `compile`), which a normal install does not pay; the repo and venv are not touched.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "stage2-bench-pycache")
    return env


def md_table(header: List[str], rows: List[List[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
