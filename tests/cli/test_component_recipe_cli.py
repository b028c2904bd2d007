"""A bad per-component setting through the real CLI: one line on stderr, exit 1, before any work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import BIN

pytestmark = pytest.mark.slow


@pytest.fixture
def two_files(tmp_path):
    for name in ("web", "code"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"id": name, "text": "x" * 300}) + "\n")
    return tmp_path


def stage2(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "stage2"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args,line",
    [
        (["dataset.components.code.min_chars=-1"],
         "stage2: error: dataset.components.code.min_chars=-1 must be 0 or more (null: filter.min_chars)"),
        (["dataset=files", "dataset.paths=[web.jsonl,code.jsonl]", "dataset.weights=[0.5]"],
         "stage2: error: dataset.weights=[0.5] has 1 value for 2 paths in dataset.paths: give one weight per path (or [] for 1.0 each)"),
    ],
)
def test_cli_refuses_a_bad_component_setting_in_one_line_before_any_work(two_files, args, line):
    out = stage2(*args, "stage=filter", "hydra.run.dir=run", f"runs_index={two_files}/runs.jsonl", cwd=two_files)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [line]
    assert not (two_files / "run" / "stats.json").exists() and not (two_files / "runs.jsonl").exists()
