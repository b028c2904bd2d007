"""Filter resume: the real CLI killed -9 mid-stage resumes to byte-identical outputs, reusing the
tasks whose markers were written (a marker is checked before it is trusted: tests/unit/test_filter_task_marker.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import (
    artifact_hashes, assert_killed_mid_stage, assert_resumed_like, done_tasks, kill_when, resume, sample_records, stage2, stats,
    write_jsonl,
)

pytestmark = pytest.mark.slow

PARTITION = 25
# Two components; langdetect makes the map slow enough (about 0.25 s a partition of 25 on a 2-core box)
# for the kill to land mid-way through the first one.
COMPONENTS = [("web", "web_stackexchange.jsonl.gz", 500), ("fortunes", "noisy_fortunes.jsonl.gz", 400)]
RECIPE = [
    "stage=filter",
    "dataset=files",
    f"dataset.paths=[{','.join(f'in/{name}.jsonl' for name, _, _ in COMPONENTS)}]",
    f"dataset.partition_size={PARTITION}",
    "filter.lang_backend=langdetect",
    "filter.on_bad_record=skip",
    "filter.keep_rejected=3",
    "progress=false",
]


@pytest.fixture(scope="module")
def filter_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume_filter")
    for name, sample, n in COMPONENTS:
        write_jsonl(base / "in" / f"{name}.jsonl", sample_records(sample, n))
    recipe = [*RECIPE, f"runs_index={base}/runs.jsonl"]
    stage2([*recipe, "executor.workers=2", "hydra.run.dir=fresh"], base)
    return base, recipe


def test_filter_killed_mid_stage_resumes_to_identical_outputs(filter_base):
    base, recipe = filter_base
    fresh = stats(base / "fresh")["stages"]["filter"]
    assert fresh["components"]["web"]["units"] >= 10  # several tasks, or the kill proves little

    run_dir = base / "killed"
    kill_when([*recipe, "executor.workers=2"], base, run_dir, lambda d: len(done_tasks(d, "web")) >= 3)
    assert_killed_mid_stage(run_dir, run_dir / "filtered" / "manifest.json")
    done = done_tasks(run_dir)  # stable now: every process is dead
    units = sum(c["units"] for c in fresh["components"].values())
    assert 3 <= len(done) < 2 * units
    # A complete marker under a temporary name (as a writer killed just before its rename leaves it)
    # for a task that is not done: it must not be taken for that task's marker.
    web = run_dir / "filtered" / ".work" / "web"
    undone = next(web / f"00000-{k:05d}" for k in range(1000) if not (web / f"00000-{k:05d}" / "done-screen.json").exists())
    undone.mkdir(parents=True, exist_ok=True)
    shutil.copy(done[0], undone / ".done-screen.json.tmp-99999")

    # A killed Ray driver's tasks go on until Ray reaps them: a part's temporary whose writer still lives
    # when the resume starts is gone once the resumed run has finished.
    straggler = subprocess.Popen(["sleep", "300"])
    try:
        (run_dir / "filtered" / "web").mkdir(exist_ok=True)
        (run_dir / "filtered" / "web" / f".part-00000-00001.parquet.tmp-{straggler.pid}").write_bytes(b"half a part")
        resume(run_dir, base, "executor.workers=1")  # another worker count: still the same bytes
    finally:
        straggler.kill()
        straggler.wait()
    assert_resumed_like(run_dir, base / "fresh")  # also: no .work folder and no temp file left
    filt = stats(run_dir)["stages"]["filter"]
    assert filt["resumed"] is True
    assert filt["tasks_resumed"] == len(done)  # every finished task reused, no other one
    for name, _, _ in COMPONENTS:
        entry = filt["components"][name]
        for key in ("records_in", "kept", "dropped", "bytes_in", "bytes_out", "languages", "partitions"):
            assert entry[key] == fresh["components"][name][key], (name, key)
    assert "resume:" in (run_dir / "stage2.log").read_text()


def test_resuming_a_finished_filter_keeps_its_outputs(filter_base):
    """A pipeline killed in a later stage resumes its filter stage without redoing any map work."""
    base, recipe = filter_base
    run_dir = base / "finished"
    shutil.copytree(base / "fresh", run_dir)  # a finished run (workers=2), as a later stage's crash leaves it
    before = artifact_hashes(run_dir)
    mtimes = {rel: (run_dir / rel).stat().st_mtime_ns for rel in before}
    resume(run_dir, base)
    filt = stats(run_dir)["stages"]["filter"]
    assert filt["stage_finished_before"] is True
    assert filt["kept"] == stats(base / "fresh")["stages"]["filter"]["kept"]
    assert artifact_hashes(run_dir) == before == artifact_hashes(base / "fresh")
    assert {rel: (run_dir / rel).stat().st_mtime_ns for rel in before} == mtimes  # kept, not rewritten

    # An output changed since: the stage filters again (its map results are gone) to the same bytes.
    part = next(rel for rel in before if rel.endswith("part-00000-00000.parquet"))
    (run_dir / part).write_bytes(b"not parquet")
    resume(run_dir, base)
    filt = stats(run_dir)["stages"]["filter"]
    assert "stage_finished_before" not in filt and filt["tasks_resumed"] == 0
    assert artifact_hashes(run_dir) == before
