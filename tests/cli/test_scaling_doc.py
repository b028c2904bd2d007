"""docs/scaling.md's commands, run: every line of its ```bash blocks (the sizing guide's one-box run and
the benchmark that measured it), with small inputs. Blocks it cannot run here (a Ray cluster of several
machines) are fenced as ```bash no-run and say so."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from helpers import REPO, SMALL_SAMPLE, stats

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "scaling.md"
SCALE_SOURCES = REPO / "tests" / "data" / "scale_sources"  # the first records of the three English dev files


def bash_lines() -> List[List[str]]:
    text = DOC.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(shlex.split(line))
    return out


def test_the_guide_runs_only_what_the_tests_run():
    lines = bash_lines()
    assert lines, "docs/scaling.md has no bash block"
    for words in lines:
        assert words[:3] in (["uv", "run", "stage2"], ["uv", "run", "python"]), words


def test_every_bash_line_of_the_guide_runs(tmp_path):
    env = dict(os.environ, STAGE2_SHARED_DATA=str(SCALE_SOURCES), STAGE2_BENCH_RESULTS=str(tmp_path / "results"),
               STAGE2_SCALE_CACHE=str(tmp_path / "cache"))
    for n, words in enumerate(bash_lines()):
        if words[2] == "stage2":
            run_dir = tmp_path / f"run{n}"
            args = [str(Path(sys.executable).parent / "stage2"), *words[3:], *SMALL_SAMPLE, "progress=false",
                    f"hydra.run.dir={run_dir}", f"runs_index={tmp_path}/runs.jsonl"]
            out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
            assert out.returncode == 0, (words, out.stderr[-2000:])
            assert stats(run_dir)["status"] == "finished"
        else:
            # The benchmark, on one copy of the first records (later options win): it must run every stage and report.
            small = ["--scales", "1", "--max-docs", "60", "--set", "tokenizer.vocab_size=500", "--set", "shard.sequences_per_shard=16"]
            out = subprocess.run([sys.executable, *words[3:], *small], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
            assert out.returncode == 0, (words, out.stderr[-2000:])
            report = (tmp_path / "results" / "scale.md").read_text()
            for stage in ("filter", "tokenizer", "shard"):
                assert f"| {stage} | 1x |" in report, stage
