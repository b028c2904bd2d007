"""With worker processes, the driver does no table or array work of its own. The filter's and the
tokenizer's drivers import neither pyarrow nor numpy, the shard stage's no pyarrow: those imports were
a large part of their fixed CPU (benchmarks/results/scale.md, "Driver start-up (lazy imports)"). The
filter's driver reads no part its workers wrote (their hashes come with the tasks' results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from helpers import corpus

pytestmark = pytest.mark.slow

HEAVY = ("pyarrow", "numpy", "pandas", "sentencepiece", "tiktoken", "datasets", "tokenizers")

# The console script's own entry point, with a report of the heavy modules this process (the driver;
# spawned workers re-import this file as __mp_main__ and skip the block) holds when it exits, and of the
# parquet files it opened (an audit hook sees every open of this process, none of the workers').
DRIVER = f"""
import atexit, os, sys

if __name__ == "__main__":
    opened = set()
    sys.addaudithook(lambda event, args: opened.add(str(args[0])) if event == "open" and str(args[0]).endswith(".parquet") else None)
    atexit.register(lambda: os.write(2, ("driver modules: " + ",".join(m for m in {HEAVY!r} if m in sys.modules) + "\\n").encode()))
    atexit.register(lambda: os.write(2, ("driver opened: " + ",".join(sorted(opened)) + "\\n").encode()))
    sys.argv = ["stage2", *sys.argv[1:]]
    from stage2.cli import main

    main()
"""


def driver_report(cwd: Path, what: str, *args: str) -> List[str]:
    """Run stage2 through the probe; `what`: "modules" or "opened"."""
    out = subprocess.run([sys.executable, str(cwd / "driver.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stderr.splitlines() if x.startswith(f"driver {what}: ")][-1]
    return [m for m in line[len(f"driver {what}: "):].split(",") if m]


def driver_modules(cwd: Path, *args: str) -> List[str]:
    return driver_report(cwd, "modules", *args)


def test_multi_worker_drivers_import_no_table_or_array_library(tmp_path):
    paths = corpus(tmp_path)
    (tmp_path / "driver.py").write_text(DRIVER)
    common = ["dataset=files", f"dataset.paths=[{','.join(str(p) for p in paths)}]", f"runs_index={tmp_path}/runs.jsonl", "progress=false"]
    filtered = driver_modules(tmp_path, "stage=filter", *common, "executor.workers=2", "hydra.run.dir=f")
    assert filtered == [], filtered
    tokenizer = driver_modules(tmp_path, "stage=tokenizer", *common, "tokenizer.input_run=f", "tokenizer.vocab_size=400",
                               "executor.workers=2", "hydra.run.dir=t")
    assert tokenizer == [], tokenizer
    shard = driver_modules(tmp_path, "stage=shard", *common, "shard.input_run=f", "shard.tokenizer=t", "executor.workers=2", "hydra.run.dir=s")
    # The shard driver plans the mixture and cuts the token streams with numpy, and loads the tokenizer.
    assert "pyarrow" not in shard and "pandas" not in shard and "datasets" not in shard, shard
    assert "numpy" in shard and "sentencepiece" in shard  # (the probe does see a driver's imports)
    assert (tmp_path / "s" / "shards").is_dir() and (tmp_path / "t" / "tokenizer").is_dir()


def test_the_filters_driver_reads_no_part_its_workers_wrote(tmp_path):
    """A part's sha256 and fingerprint (stats.json, filtered/.finished.json) come from the task that wrote
    it: the driver would otherwise read every part's bytes, twice, in one process at the stage's end."""
    paths = corpus(tmp_path)
    (tmp_path / "driver.py").write_text(DRIVER)
    common = ["dataset=files", f"dataset.paths=[{','.join(str(p) for p in paths)}]", f"runs_index={tmp_path}/runs.jsonl", "progress=false",
              "dataset.partition_size=100"]
    opened = driver_report(tmp_path, "opened", "stage=filter", *common, "executor.workers=2", "hydra.run.dir=f")
    parts = sorted(str(p) for p in (tmp_path / "f" / "filtered").rglob("*.parquet"))
    assert len(parts) > 2, parts
    assert not set(parts) & set(opened), opened
    # What it recorded is what the parts hold, and what the one-process run records.
    from stage2.io.files import file_sha256

    recorded = json.loads((tmp_path / "f" / "stats.json").read_text())["artifact_sha256"]
    assert {rel: recorded[rel] for rel in recorded if rel.endswith(".parquet")} == {
        str(Path(p).relative_to(tmp_path / "f")): file_sha256(Path(p)) for p in parts}
    opened_alone = driver_report(tmp_path, "opened", "stage=filter", *common, "executor.workers=1", "hydra.run.dir=f1")
    assert any(p.endswith(".parquet") for p in opened_alone)  # (the probe does see a driver that reads parts)
    assert json.loads((tmp_path / "f1" / "stats.json").read_text())["artifact_sha256"] == recorded
