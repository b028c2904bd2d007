"""Issue #22 (points 4, 12, 14) through the real CLI: recursive globs, artifacts that do not depend on where
the data lives, an unreachable hub that fails at once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from helpers import BIN, filter_run, one_line_error, sample_records, write_jsonl

pytestmark = pytest.mark.slow

RECORDS = sample_records("web_stackexchange.jsonl.gz", 40)


def test_double_star_through_the_cli(tmp_path):
    for i, rel in enumerate(["x/part.jsonl", "x/y/part.jsonl", "x/y/z/part.jsonl"]):
        write_jsonl(tmp_path / "data" / rel, RECORDS[i * 10 : i * 10 + 10])
    out = filter_run(tmp_path, "dataset.paths=[data/**/part.jsonl]", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stages"]["filter"]["components"]["part"]["records_in"] == 30  # before: 10 (one level only)


def test_the_same_data_in_two_folders_gives_the_same_filtered_parts(tmp_path):
    runs = {}
    for place in ("one/deep/checkout", "two"):
        launch = tmp_path / place
        write_jsonl(launch / "data" / "a" / "web.jsonl", RECORDS[:20] + RECORDS[:3])  # duplicates: rejected samples too
        write_jsonl(launch / "data" / "b" / "web.jsonl", RECORDS[20:])
        (launch / "data" / "notes.txt").write_bytes(b"\n".join(r["text"].encode() for r in RECORDS[:5] if "\n" not in r["text"]) + b"\n")
        out = filter_run(launch, "dataset.paths=[data/*/web.jsonl,data/notes.txt]", "hydra.run.dir=run", "filter.keep_rejected=3")
        assert out.returncode == 0, out.stderr[-2000:]
        runs[place] = launch / "run"
    hashes = {}
    for place, run_dir in runs.items():
        stats = json.loads((run_dir / "stats.json").read_text())
        filtered = [rel for rel in stats["artifacts"] if rel.startswith(("filtered/", "rejected/"))]
        assert any(rel.startswith("rejected/") for rel in filtered)
        hashes[place] = {rel: hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() for rel in filtered}
    assert hashes["one/deep/checkout"] == hashes["two"]  # before: every part held its absolute path
    parts = sorted((runs["two"] / "filtered" / "web").glob("part-*.parquet"))
    assert set(pq.read_table(parts, columns=["source"]).column("source").to_pylist()) == {"a/web.jsonl", "b/web.jsonl"}
    # provenance keeps the files' locations
    inputs = json.loads((runs["two"] / "provenance.json").read_text())["inputs"]
    assert str(tmp_path / "two" / "data" / "a" / "web.jsonl") in inputs


def test_an_unreachable_hub_fails_fast_through_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    started = time.monotonic()
    out = subprocess.run([str(BIN / "stage2"), "stage=filter", "dataset=refinedweb_mix", "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl",
                          "executor.workers=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.monotonic() - started
    one_line_error(out, "cannot open hub dataset 'HuggingFaceFW/fineweb'", "use local files")
    assert elapsed < 20, elapsed  # before: > 25 s of retries (the CLI's own start-up is a few seconds of it)
