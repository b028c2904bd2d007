"""Shared helpers: compose the real `conf/` with Hydra's compose API and build runs from it."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

import stage2.main as stage2_main
from stage2.dedup.hashing import exact_key, window_hashes

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"


# The sample mixture cut small, so that a whole pipeline takes seconds.
SMALL_SAMPLE = [
    "dataset.components.web.max_records=150",
    "dataset.components.encyclopedia.max_records=250",
    "dataset.components.code.max_records=60",
    "dataset.components.noisy.max_records=300",
    "dataset.partition_size=100",
    "tokenizer.vocab_size=800",
    "shard.sequences_per_shard=64",
]


def compose_plain(overrides: List[str], launch_dir: Path) -> Dict[str, Any]:
    """The resolved plain config a run of `stage2 <overrides>` launched from `launch_dir` would get."""
    return stage2_main.compose_recipe(overrides, str(launch_dir))


def sample_records(name: str, n: int) -> List[Dict[str, Any]]:
    """The first n records of one of the embedded sample's jsonl.gz files."""
    out = []
    with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def write_jsonl(path: Path, records: List[Dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def artifact_hashes(run_dir: Path) -> Dict[str, str]:
    """sha256 of every artifact a finished run lists in its stats.json."""
    stats = json.loads((run_dir / "stats.json").read_text())
    return {rel: hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() for rel in stats["artifacts"]}


@pytest.fixture
def plain_config(tmp_path):
    def make(*overrides: str) -> Dict[str, Any]:
        return compose_plain([f"runs_index={tmp_path}/runs.jsonl", *overrides], tmp_path)

    return make


def dedup_reference(texts, k, threshold):
    """Dedup's rule (stage2/dedup/__init__.py) applied one document at a time in canonical order: every
    document's hashes count for the later ones, whatever its own verdict."""
    seen_text, seen_windows, out = set(), set(), []
    for text in texts:
        key, windows = exact_key(text), set(window_hashes(text, k).tolist())
        if key in seen_text:
            out.append("duplicate")
        elif windows and len(windows & seen_windows) >= threshold * len(windows):
            out.append("near_duplicate")
        else:
            out.append("kept")
        seen_text.add(key)
        seen_windows |= windows
    return out
