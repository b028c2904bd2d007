"""Filter resume: the real CLI killed -9 mid-map resumes to byte-identical outputs, reusing the
partitions whose map results were saved; saved results are checked before they are trusted."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import artifact_hashes, sample_records, write_jsonl
from stage2.filter import MAP_FILE, Counts, DedupState, Settings, filter_documents
from stage2.sources import Document
from test_resume import assert_killed_mid_stage, assert_resumed_like, kill_when, resume, stage2, stats

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


def map_files(run_dir: Path, component: str) -> List[Path]:
    return sorted((run_dir / "filtered" / ".work" / component).glob("map-*.npz"))


@pytest.fixture(scope="module")
def filter_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume_filter")
    for name, sample, n in COMPONENTS:
        write_jsonl(base / "in" / f"{name}.jsonl", sample_records(sample, n))
    recipe = [*RECIPE, f"runs_index={base}/runs.jsonl"]
    stage2([*recipe, "executor.workers=2", "hydra.run.dir=fresh"], base)
    return base, recipe


def test_filter_killed_mid_map_resumes_to_identical_outputs(filter_base):
    base, recipe = filter_base
    fresh = stats(base / "fresh")["stages"]["filter"]
    total = sum(c["partitions"] for c in fresh["components"].values())
    assert fresh["components"]["web"]["partitions"] >= 10  # several partitions, or the kill proves little

    run_dir = base / "killed"
    kill_when([*recipe, "executor.workers=2"], base, run_dir, lambda d: len(map_files(d, "web")) >= 3)
    assert_killed_mid_stage(run_dir, run_dir / "filtered" / "manifest.json")
    done = {name: map_files(run_dir, name) for name, _, _ in COMPONENTS}  # stable now: every process is dead
    n_done = sum(map(len, done.values()))
    assert 3 <= n_done < total
    # A complete result under a temporary name (as a writer killed just before its rename leaves it)
    # for a partition that is not done: it must not be taken for that partition's result.
    names = {p.name for p in done["web"]}
    missing = next(i for i in range(total) if MAP_FILE.format(i) not in names)
    shutil.copy(done["web"][0], done["web"][0].with_name(f".{MAP_FILE.format(missing)}.tmp-99999"))

    resume(run_dir, base, "executor.workers=1")  # another worker count: still the same bytes
    assert_resumed_like(run_dir, base / "fresh")  # also: no .work folder and no temp file left
    filt = stats(run_dir)["stages"]["filter"]
    assert filt["resumed"] is True
    assert filt["partitions_resumed"] == n_done  # every saved partition reused, no other one
    for name, _, _ in COMPONENTS:
        entry = filt["components"][name]
        assert entry["partitions_resumed"] == len(done[name])
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
    assert filt["partitions_resumed"] == sum(c["partitions"] for c in filt["components"].values())
    assert filt["kept"] == stats(base / "fresh")["stages"]["filter"]["kept"]
    assert artifact_hashes(run_dir) == before == artifact_hashes(base / "fresh")
    assert {rel: (run_dir / rel).stat().st_mtime_ns for rel in before} == mtimes  # kept, not rewritten

    # An output changed since: the stage filters again (its map results are gone) to the same bytes.
    part = next(rel for rel in before if rel.endswith("part-00000.parquet"))
    (run_dir / part).write_bytes(b"not parquet")
    resume(run_dir, base)
    filt = stats(run_dir)["stages"]["filter"]
    assert "stage_finished_before" not in filt and filt["partitions_resumed"] == 0
    assert artifact_hashes(run_dir) == before


# ---- the pure core with saved map results --------------------------------------------------------


def _docs() -> List[Document]:
    records = sample_records("web_stackexchange.jsonl.gz", 60) + sample_records("noisy_fortunes.jsonl.gz", 80)
    return [Document(id=r["id"], text=r["text"], component="c", source="s", record=i) for i, r in enumerate(records)]


def _filter(work: Path) -> Dict[str, Any]:
    settings = Settings(min_chars=100, partition_size=10)
    results = list(filter_documents(_docs(), settings, True, DedupState.new(settings), Counts(), work_dir=work))
    return {
        "resumed": [r.resumed for r in results],
        "kept": [[d.id for d in r.kept] for r in results],
        "rejected": [[(x.doc.id, x.reason, x.language, x.score) for x in r.rejected] for r in results],
    }


def test_saved_map_results_are_reused_only_when_they_match(tmp_path):
    work = tmp_path / "work"
    first = _filter(work)
    n = len(first["kept"])
    assert n >= 6 and not any(first["resumed"])
    assert sorted(p.name for p in work.iterdir()) == [MAP_FILE.format(i) for i in range(n)]
    assert any(x[1] == "language" for r in first["rejected"] for x in r)  # the languages matter here

    again = _filter(work)
    assert all(again["resumed"])
    assert {k: v for k, v in again.items() if k != "resumed"} == {k: v for k, v in first.items() if k != "resumed"}

    # A truncated file, another partition's result and a temp file are recomputed, never trusted.
    (work / MAP_FILE.format(1)).write_bytes((work / MAP_FILE.format(1)).read_bytes()[:100])
    shutil.copy(work / MAP_FILE.format(2), work / MAP_FILE.format(3))
    (work / MAP_FILE.format(4)).rename(work / f".{MAP_FILE.format(4)}.tmp-123")
    third = _filter(work)
    assert [i for i, r in enumerate(third["resumed"]) if not r] == [1, 3, 4]
    assert {k: v for k, v in third.items() if k != "resumed"} == {k: v for k, v in first.items() if k != "resumed"}
    assert all(_filter(work)["resumed"])  # the recomputed ones were saved again
