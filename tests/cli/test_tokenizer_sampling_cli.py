"""The tokenizer's sample is taken in partitions (tasks of one or more each) and merged: the model's bytes must not
depend on the worker count or the partition size, reading raw files or a filter run's parts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Tuple

import pytest

from helpers import sample_records, stage2, stats, write_jsonl

pytestmark = pytest.mark.slow

COMPONENTS = {"web": ("web_stackexchange.jsonl.gz", 500), "encyclopedia": ("foldoc.jsonl.gz", 600)}
RECIPE = [
    "dataset=files",
    f"dataset.paths=[{','.join(f'in/{name}.jsonl' for name in COMPONENTS)}]",
    "tokenizer.vocab_size=600",
    "tokenizer.samples_per_component=150",  # fewer than each component holds: the bounds matter
    "tokenizer.eval_docs_per_component=12",
    "tokenizer.heldout_percent=10",
    "progress=false",
]


def model_and_sample(run_dir: Path) -> Tuple[str, Dict]:
    tok = stats(run_dir)["stages"]["tokenizer"]
    model = (run_dir / tok["model"]).read_bytes()
    counts = {name: {k: c[k] for k in ("docs_seen", "heldout_docs", "eval_docs")} for name, c in tok["components"].items()}
    return hashlib.sha256(model).hexdigest(), {"sample": tok["sample"], "components": counts}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tok_sampling")
    for name, (sample, n) in COMPONENTS.items():
        write_jsonl(base / "in" / f"{name}.jsonl", sample_records(sample, n))  # uncompressed: cut by byte ranges
    return base


def run(base: Path, name: str, *overrides: str) -> Path:
    stage2([*RECIPE, *overrides, f"runs_index={base}/runs.jsonl", f"hydra.run.dir={name}"], base)
    return base / name


def test_raw_sample_and_model_are_the_same_for_any_workers_and_partition_size(inputs):
    one = run(inputs, "raw_w1_whole", "stage=tokenizer", "executor.workers=1", "dataset.partition_size=100000")
    many = run(inputs, "raw_w2_p37", "stage=tokenizer", "executor.workers=2", "dataset.partition_size=37")
    sha, sample = model_and_sample(one)
    assert model_and_sample(many) == (sha, sample)
    assert sample["sample"]["docs"] == 2 * 150  # the quota, not every document
    # One local worker runs the tasks in the driver's process; with a pool, training runs in a worker.
    in_process, pooled = (stats(d)["stages"]["tokenizer"]["resources"] for d in (one, many))
    assert in_process["train_task"]["pid"] == in_process["driver_pid"]
    assert pooled["train_task"]["pid"] != pooled["driver_pid"]
    assert pooled["driver_cpu_s"]["train"] < pooled["train_task"]["cpu_s"] / 2
    for name, (_, n) in COMPONENTS.items():
        assert sample["components"][name]["docs_seen"] <= n and sample["components"][name]["eval_docs"] == 12
    # Really cut: the raw files were read in many tasks (a filter of the same recipe plans the same units).
    filt = run(inputs, "filter_p37", "stage=filter", "executor.workers=2", "dataset.partition_size=37")
    assert sum(c["units"] for c in stats(filt)["stages"]["filter"]["components"].values()) >= 25


def test_sample_from_parts_is_the_same_for_any_workers_and_partition_size(inputs):
    coarse = run(inputs, "filter_whole", "stage=filter", "executor.workers=1", "dataset.partition_size=100000")
    fine = run(inputs, "filter_p29", "stage=filter", "executor.workers=2", "dataset.partition_size=29")
    parts = lambda d: sum(len(list((d / "filtered" / name).glob("part-*.parquet"))) for name in COMPONENTS)  # noqa: E731
    assert parts(coarse) == 2 and parts(fine) >= 25
    a = run(inputs, "tok_whole_w1", "stage=tokenizer", f"tokenizer.input_run={coarse}", "executor.workers=1")
    b = run(inputs, "tok_p29_w2", "stage=tokenizer", f"tokenizer.input_run={fine}", "executor.workers=2")
    assert model_and_sample(a) == model_and_sample(b)
    # The many small parts were sampled in a few tasks (grouped by bytes), not one task each.
    assert stats(b)["stages"]["tokenizer"]["resources"]["sample_tasks"] == len(COMPONENTS) < parts(fine)
    # The runs read the parts: every kept document was seen, and only those.
    kept = {name: c["kept"] for name, c in stats(fine)["stages"]["filter"]["components"].items()}
    assert {name: c["docs_seen"] for name, c in model_and_sample(b)[1]["components"].items()} == kept
