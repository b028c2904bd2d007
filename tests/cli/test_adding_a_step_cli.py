"""docs/filter.md's "Adding a step": its file, copied verbatim into a copy of the package, runs through the real command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
import pyarrow.parquet as pq
import pytest
from helpers import REPO, sample_records, write_jsonl
from unit.test_steps import readme_step_file

pytestmark = pytest.mark.slow




BIN = Path(sys.executable).parent


def test_the_readme_step_is_one_new_file_the_cli_runs(tmp_path):
    # A copy of the package gets the file, so that other stage2 processes sharing this checkout (a
    # new step adds keys to every recipe) never see it; the CLI imports the copy through PYTHONPATH.
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "stage2", checkout / "stage2", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("conf", "data"):
        (checkout / folder).symlink_to(REPO / folder)
    (checkout / "stage2" / "steps" / "max_digits.py").write_text(readme_step_file())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}

    prose = [r for r in sample_records("web_stackexchange.jsonl.gz", 30) if 200 <= len(r["text"]) <= 8000]
    figures = [{"id": f"figures-{i}", "text": "Table of figures. " + " ".join(f"{i}{n:05d}" for n in range(60))} for i in range(5)]
    write_jsonl(tmp_path / "docs.jsonl", prose + figures)

    def frac(text):  # the README step's measure
        return sum(map(text.count, "0123456789")) / max(1, len(text))

    def stage2(*args):
        return subprocess.run(
            [str(BIN / "stage2"), "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "hydra.run.dir=run",
             f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "progress=false", "filter.quality=[max_digits]", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )

    out = stage2("filter.max_digits.max_digit_frac=1.5")  # its check() runs at start-up
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "stage2: error: filter.max_digits.max_digit_frac=1.5 must be between 0 and 1"

    out = stage2("filter.max_digits.max_digit_frac=0.2", "filter.keep_rejected=50")
    assert out.returncode == 0, out.stderr[-3000:]
    entry = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["docs"]
    expected = sum(frac(r["text"]) > 0.2 for r in prose + figures)
    assert expected >= len(figures)
    assert entry["dropped"]["max_digits"] == expected
    # Its place in the chain (order 15): after the length screen, before language ID.
    assert list(entry["dropped"])[:5] == ["invalid", "too_short", "too_long", "max_digits", "language"]
    rejected = pq.read_table(tmp_path / "run" / entry["rejected_file"]).to_pylist()
    digits = [r for r in rejected if r["reason"] == "max_digits"]
    assert len(digits) == expected and all(re.fullmatch(r"digit_frac=0\.\d{3} > 0\.2", r["detail"]) for r in digits)
