"""Task markers: the one protocol by which a stage's task is done once and reused by a resume.

A task writes its outputs (each atomically), then its marker, `{"key", "result", "outputs"}`: the key
says what the outputs depend on (the recipe and inputs, never where they go), `outputs` holds each
output file's fingerprint (bytes, xxh3). A resume reuses a task only when its marker has the task's key
and every output still has the bytes it had: a task killed midway has no marker, and a file changed
since (a flipped byte) makes its task run again. Markers are scratch files: not fsync'd (a killed
process loses nothing; the page cache keeps them), like the outputs they vouch for.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from stage2.errors import Stage2Error
from stage2.io.files import file_fingerprint, read_json, unchanged, write_json


def write_marker(marker: Path, key: str, result: Dict[str, Any], outputs: Union[Iterable[Path], Mapping[Path, List[Any]]], durable: bool = False) -> None:
    """Mark a task done: written after its outputs, which it vouches for (paths relative to the marker's folder).
    `outputs`: paths, or paths with the fingerprints their bytes had as they were written (`FingerprintingFile`).
    `durable`: fsync'd, for a stage's own record of being finished (a task's scratch marker need not be)."""
    known = outputs if isinstance(outputs, Mapping) else {path: file_fingerprint(Path(path)) for path in outputs}
    written = {os.path.relpath(path, marker.parent): fingerprint for path, fingerprint in known.items()}
    write_json(marker, {"key": key, "result": result, "outputs": written}, durable=durable)


def read_state(path: Path) -> Optional[Dict[str, Any]]:
    """A marker or checkpoint a killed run may have left: its JSON object, or None when it is missing or
    damaged (then its work is redone; a run's own records, stats and provenance, are read strictly)."""
    try:
        state = read_json(path)
    except Stage2Error:  # never half-written (renamed into place), but perhaps changed by hand
        return None
    return state if isinstance(state, dict) else None


def read_marker(marker: Path, key: str, outputs: Optional[Iterable[str]] = None) -> Optional[Dict[str, Any]]:
    """The result a finished task left, or None: no marker, a damaged one, another key, or an output
    that is missing or changed since the task wrote it. `outputs`: check only these of its outputs (names
    relative to the marker's folder, each one it must list), for a task whose outputs are used up one by one."""
    done = read_state(marker) or {}
    written = done.get("outputs")
    if done.get("key") != key or not isinstance(written, dict) or not isinstance(done.get("result"), dict):
        return None
    names = list(written) if outputs is None else list(outputs)
    if not all(rel in written and unchanged(marker.parent / rel, written[rel]) for rel in names):
        return None
    return done["result"]


def once(marker: Path, key: str, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """`compute()` unless a finished run of the same task left its marker (`read_marker`); the result
    gains "resumed". `compute()` names the files it wrote in its result's "outputs"."""
    done = read_marker(marker, key)
    if done is not None:
        return {**done, "resumed": True}
    started = time.process_time()
    result = compute()
    outputs = result.pop("outputs")
    result["cpu_s"] = round(time.process_time() - started, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_marker(marker, key, result, outputs)
    return {**result, "resumed": False}
