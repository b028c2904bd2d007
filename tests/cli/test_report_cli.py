"""Sweep summaries through the real command: the callback of a --multirun and a tiny tokenizer sweep end to end."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List
import pytest
from helpers import REPO
from unit.test_report import PNG_MAGIC, read_csv, write_index

pytestmark = pytest.mark.slow


def cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stage2.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_multirun_runs_the_callback(tmp_path):
    """A real Hydra multirun (of report jobs, which need no stages) writes the summary into its sweep folder."""
    write_index(tmp_path / "outputs" / "runs.jsonl", [{"folder": "x", "stage": "filter", "dataset": "sample"}])
    done = cli(["-m", "stage=report", "report.stage=filter,tokenizer"], tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = list((tmp_path / "multirun").glob("*/*"))
    rows = read_csv(sweep / "summary.csv")
    assert [r["overrides"] for r in rows] == ["stage=report report.stage=filter", "stage=report report.stage=tokenizer"]
    assert all((sweep / r["folder"] / "report.md").exists() for r in rows)


def test_cli_sweep_with_named_job_folders_is_summarised(tmp_path):
    """Job folders named by the overrides (`${hydra.job.override_dirname}`), not numbers: the summary and
    verify find every job, in job order."""
    write_index(tmp_path / "outputs" / "runs.jsonl", [{"folder": "x", "stage": "filter", "dataset": "sample"}])
    sweep = tmp_path / "sweep"
    done = cli(["-m", "stage=report", "report.stage=tokenizer,filter", f"hydra.sweep.dir={sweep}",
                "hydra.sweep.subdir=${hydra.job.override_dirname}"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["overrides"]) for r in rows] == [("0", "stage=report report.stage=tokenizer"), ("1", "stage=report report.stage=filter")]
    assert [r["folder"] for r in rows] == ["report.stage=tokenizer,stage=report", "report.stage=filter,stage=report"]
    # A value holding a path nests the job folders (a/b): still found.
    nested = tmp_path / "nested"
    done = cli(["-m", "stage=report", "report.stage=tokenizer,filter", f"runs_index={tmp_path}/outputs/runs.jsonl", f"hydra.sweep.dir={nested}",
                "hydra.sweep.subdir=${hydra.job.override_dirname}"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_csv(nested / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1"] and all("/outputs/runs.jsonl" in r["folder"] for r in rows), rows


def test_cli_tiny_tokenizer_sweep_end_to_end(tmp_path):
    """A real pipeline sweep over vocab sizes: the summary must carry the jobs' real stats."""
    # Two small components copied from the embedded sample keep this real sweep to seconds.
    for name in ("web_stackexchange", "foldoc"):
        with gzip.open(REPO / "data" / "sample" / f"{name}.jsonl.gz", "rt", encoding="utf-8") as src:
            lines = [next(src) for _ in range(150)]
        (tmp_path / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    sweep = tmp_path / "sweep"
    done = cli(["-m", "stage=pipeline", "tokenizer.vocab_size=500,1000", "tokenizer.hard_vocab_limit=false",
                "tokenizer.character_coverage=0.995", "dataset=files", "dataset.paths=[web_stackexchange.jsonl,foldoc.jsonl]",
                "shard.seq_len=64", "executor.workers=1", "progress=false", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [(r["status"], r["stage"]) for r in rows] == [("finished", "pipeline")] * 2
    for row in rows:
        stages = json.loads((sweep / row["folder"] / "stats.json").read_text())["stages"]
        for name in ("web_stackexchange", "foldoc"):
            comp = stages["filter"]["components"][name]
            assert float(row[f"kept_share.{name}"]) == pytest.approx(comp["kept"] / comp["records_in"])
            assert float(row[f"bytes_per_token.{name}"]) == pytest.approx(stages["tokenizer"]["components"][name]["bytes_per_token"])
        assert int(row["vocab_size"]) == stages["tokenizer"]["vocab_size"]
        assert int(row["shard_tokens"]) == sum(c["tokens"] for c in stages["shard"]["components"].values())
    # A larger vocabulary packs more bytes into a token.
    assert float(rows[1]["bytes_per_token.overall"]) > float(rows[0]["bytes_per_token.overall"])
    assert (sweep / "summary.png").read_bytes().startswith(PNG_MAGIC)
    assert "swept: tokenizer.vocab_size" in (sweep / "summary.md").read_text()
    listing = cli(["stage=report", "report.stage=pipeline"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "2 runs" in listing.stdout and "sweep/0" in listing.stdout and "sweep/1" in listing.stdout
    # stage=verify on the sweep folder checks every job, and fails naming the job with a changed byte.
    checked = cli(["stage=verify", f"verify.dir={sweep}"], tmp_path)
    assert checked.returncode == 0 and f"verify OK: {sweep}: 2 jobs of the sweep (0, 1)" in checked.stdout, checked.stderr
    model = next((sweep / "1" / "tokenizer").glob("*.model"))
    model.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))
    broken = cli(["stage=verify", f"verify.dir={sweep}"], tmp_path)
    assert broken.returncode == 1, broken.stdout
    assert broken.stderr.strip().startswith(f"stage2: error: {sweep}: 1 of 2 jobs of the sweep failed verification; 1: {model}: sha256"), broken.stderr
