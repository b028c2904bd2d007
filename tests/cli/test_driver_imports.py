"""With worker processes, the tokenizer and shard stages' driver does no table or array work of its own
at start-up: it never imports pyarrow (nor, for the tokenizer, numpy), whose imports were a large part of
its fixed CPU (benchmarks/results/scale.md, "Driver start-up (lazy imports)")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from helpers import corpus

pytestmark = pytest.mark.slow

HEAVY = ("pyarrow", "numpy", "pandas", "sentencepiece", "tiktoken", "datasets", "tokenizers")

# The console script's own entry point, with a report of the heavy modules this process (the driver;
# spawned workers re-import this file as __mp_main__ and skip the block) holds when it exits.
DRIVER = f"""
import atexit, os, sys

if __name__ == "__main__":
    atexit.register(lambda: os.write(2, ("driver modules: " + ",".join(m for m in {HEAVY!r} if m in sys.modules) + "\\n").encode()))
    sys.argv = ["stage2", *sys.argv[1:]]
    from stage2.cli import main

    main()
"""


def driver_modules(cwd: Path, *args: str) -> List[str]:
    out = subprocess.run([sys.executable, str(cwd / "driver.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stderr.splitlines() if x.startswith("driver modules: ")][-1]
    return [m for m in line[len("driver modules: "):].split(",") if m]


def test_multi_worker_drivers_import_no_table_or_array_library(tmp_path):
    paths = corpus(tmp_path)
    (tmp_path / "driver.py").write_text(DRIVER)
    common = ["dataset=files", f"dataset.paths=[{','.join(str(p) for p in paths)}]", f"runs_index={tmp_path}/runs.jsonl", "progress=false"]
    filtered = driver_modules(tmp_path, "stage=filter", *common, "executor.workers=1", "hydra.run.dir=f")
    assert "pyarrow" in filtered  # (with one worker the driver writes the parts itself: the probe sees imports)
    tokenizer = driver_modules(tmp_path, "stage=tokenizer", *common, "tokenizer.input_run=f", "tokenizer.vocab_size=400",
                               "executor.workers=2", "hydra.run.dir=t")
    assert tokenizer == [], tokenizer
    shard = driver_modules(tmp_path, "stage=shard", *common, "shard.input_run=f", "shard.tokenizer=t", "executor.workers=2", "hydra.run.dir=s")
    # The shard driver plans the mixture and cuts the token streams with numpy, and loads the tokenizer.
    assert "pyarrow" not in shard and "pandas" not in shard and "datasets" not in shard, shard
    assert (tmp_path / "s" / "shards").is_dir() and (tmp_path / "t" / "tokenizer").is_dir()
