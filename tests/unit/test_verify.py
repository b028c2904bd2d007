"""`stage=verify`: passes on a fresh run, fails naming the file after any tampering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import SMALL_SAMPLE, artifact_hashes, compose_plain, corpus, shard_run
from stage2.errors import Stage2Error
from stage2.stages.pipeline import run_stage
from stage2.stages.verify import verify_folder

SMALL = [*SMALL_SAMPLE, "executor.workers=1", "progress=false"]


def finish(run):
    """What pipeline.run_stage does at the end of a run: stats.json gets its steps, status finished and artifact_sha256."""
    run.stats["steps"] = [str(run.cfg.stage)]
    run.save_stats(status="finished")
    return run


def rerecord(folder: Path) -> None:
    """stats.json's artifact_sha256 recorded again after an edit, so the deeper checks are what catch it."""
    stats = json.loads((folder / "stats.json").read_text())
    stats["artifact_sha256"] = artifact_hashes(folder)
    (folder / "stats.json").write_text(json.dumps(stats))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def sharded(tmp_path, tiny_model):
    run = shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.seq_len=64", "shard.sequences_per_shard=16")
    return finish(run)


def test_verify_passes_then_fails_on_one_flipped_byte(sharded):
    report = verify_folder(sharded.dir)
    assert set(report["components"]) == {"web", "enc"}
    assert report["components"]["enc"]["shards"] > 1
    target = sharded.dir / "shards" / "enc" / "shard-00001.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one token: the shape and dtype are still fine
    target.write_bytes(bytes(data))
    with pytest.raises(Stage2Error, match="enc/shard-00001.npy"):
        verify_folder(sharded.dir)


def test_verify_catches_index_invariant_and_missing_file(sharded):
    index_path = sharded.dir / "shards" / "web" / "index.json"
    index = json.loads(index_path.read_text())
    index["tokens"] += 1
    index_path.write_text(json.dumps(index))
    rerecord(sharded.dir)  # else the edited index.json fails its recorded sha256 first
    with pytest.raises(Stage2Error, match="web/index.json: tokens \\+ separators"):
        verify_folder(sharded.dir)
    index["tokens"] -= 1
    index_path.write_text(json.dumps(index))
    rerecord(sharded.dir)
    verify_folder(sharded.dir)
    (sharded.dir / "shards" / "web" / "shard-00000.npy").unlink()
    with pytest.raises(Stage2Error, match="web/shard-00000.npy: listed in"):
        verify_folder(sharded.dir)


def test_verify_checks_filter_stats(sharded):
    stats = json.loads((sharded.dir / "stats.json").read_text())
    web = {"records_in": 130, "kept": 120, "dropped": {"short": 7, "language": 3}}  # 120 documents were sharded
    stats.setdefault("stages", {})["filter"] = {"components": {"web": web}}
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    assert verify_folder(sharded.dir)["filter_components"] == 1
    web["kept"] = 121
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match="stats.json: filter component web: records_in 130 != kept 121"):
        verify_folder(sharded.dir)
    web["records_in"] = 131  # consistent filter stats, but one kept document is not in the shards
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match="web/index.json: 120 documents sharded but the filter kept 121"):
        verify_folder(sharded.dir)


def test_verify_checks_the_run_tokenizer(tmp_path, tiny_model):
    def place_model(run):
        (run.dir / "tokenizer").mkdir()
        (run.dir / "tokenizer" / "spm_500_unigram.model").write_bytes(tiny_model.read_bytes())

    run = finish(shard_run(tmp_path, "run", corpus(tmp_path), "shard.seq_len=64", before=place_model))
    verify_folder(run.dir)
    with open(run.dir / "tokenizer" / "spm_500_unigram.model", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Stage2Error, match="spm_500_unigram.model: sha256 does not match"):
        verify_folder(run.dir)


def test_shard_hash_check_against_index_applies_on_its_own(sharded):
    flip_byte(sharded.dir / "shards" / "enc" / "shard-00001.npy")
    rerecord(sharded.dir)
    with pytest.raises(Stage2Error, match="enc/shard-00001.npy: sha256 .* does not match .*index.json"):
        verify_folder(sharded.dir)


# --- every artifact of a finished run -------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """One real pipeline run and one tokenizer-only run of the small sample, built once; tests copy them."""
    base = tmp_path_factory.mktemp("verify_runs")
    runs = {}
    for stage in ("pipeline", "tokenizer"):
        plain = compose_plain([f"runs_index={base}/runs.jsonl", f"stage={stage}", *SMALL], base)
        runs[stage] = run_stage(plain, base / stage)
    return runs


@pytest.fixture
def pipeline_run(pipeline_runs, tmp_path):
    return Path(shutil.copytree(pipeline_runs["pipeline"], tmp_path / "pipeline"))


@pytest.fixture
def tokenizer_run(pipeline_runs, tmp_path):
    return Path(shutil.copytree(pipeline_runs["tokenizer"], tmp_path / "tokenizer"))


def test_finished_run_records_the_sha256_of_every_artifact(pipeline_run):
    stats = json.loads((pipeline_run / "stats.json").read_text())
    assert stats["status"] == "finished"
    assert sorted(stats["artifact_sha256"]) == stats["artifacts"]
    assert stats["artifact_sha256"] == artifact_hashes(pipeline_run)
    kinds = {rel.split("/")[0] for rel in stats["artifacts"]}
    assert {"filtered", "tokenizer", "shards"} <= kinds
    report = verify_folder(pipeline_run)
    assert report["artifacts"] == len(stats["artifacts"]) and report["parts"] > 0


def test_flipped_byte_in_a_filtered_part_is_named(pipeline_run):
    part = pipeline_run / "filtered" / "web" / "part-00000-00000.parquet"
    flip_byte(part)
    with pytest.raises(Stage2Error, match="filtered/web/part-00000-00000.parquet: sha256 .* does not match stats.json"):
        verify_folder(pipeline_run)


def test_deleted_filtered_part_is_named(pipeline_run):
    (pipeline_run / "filtered" / "web" / "part-00000-00000.parquet").unlink()
    with pytest.raises(Stage2Error, match="filtered/web/part-00000-00000.parquet: listed in .*stats.json but missing"):
        verify_folder(pipeline_run)
    stats = json.loads((pipeline_run / "stats.json").read_text())  # hidden from stats.json: the parts manifest still catches it
    stats["artifacts"].remove("filtered/web/part-00000-00000.parquet")
    del stats["artifact_sha256"]["filtered/web/part-00000-00000.parquet"]
    (pipeline_run / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match="filtered/web/part-00000-00000.parquet: listed in .*filtered/manifest.json"):
        verify_folder(pipeline_run)


def test_flipped_byte_in_the_tokenizer_model_is_named(pipeline_run):
    (model,) = (pipeline_run / "tokenizer").glob("*.model")
    flip_byte(model)
    with pytest.raises(Stage2Error, match=f"tokenizer/{model.name}: sha256 .* does not match stats.json"):
        verify_folder(pipeline_run)


def test_tokenizer_only_run_verifies_then_fails_after_its_model_changes(tokenizer_run, capsys):
    from stage2.stages import verify
    from stage2.config import Config, VerifyConfig

    report = verify_folder(tokenizer_run)
    assert report["artifacts"] >= 2 and not report["components"]  # the model and its vocab, no shards
    verify.run(Config(verify=VerifyConfig(dir=str(tokenizer_run))), tokenizer_run)
    said = capsys.readouterr().out
    assert f"{report['artifacts']} artifacts match" in said and "shards" not in said  # nothing said of what is not there
    (model,) = (tokenizer_run / "tokenizer").glob("*.model")
    with open(model, "ab") as f:
        f.write(b"\0")
    with pytest.raises(Stage2Error, match=f"tokenizer/{model.name}: sha256 .* does not match stats.json"):
        verify_folder(tokenizer_run)


@pytest.mark.parametrize("status", ["running", "failed"])
def test_unfinished_run_is_refused(pipeline_run, status):
    stats = json.loads((pipeline_run / "stats.json").read_text())
    stats["status"] = status
    (pipeline_run / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match=f"the run did not finish \\(status {status}\\); resume it with .*resume=true"):
        verify_folder(pipeline_run)


def test_a_run_that_stopped_at_start_up_is_not_said_to_be_resumable(tmp_path):
    # A sweep's job refused by a check: stats.json says failed and why, and nothing else was written.
    job = tmp_path / "1"
    job.mkdir()
    (job / "stats.json").write_text(json.dumps({"status": "failed", "error": "filter.min_chars=900 and filter.max_chars=100: need min_chars <= max_chars"}))
    with pytest.raises(Stage2Error, match=r"did not finish \(status failed: filter.min_chars=900 .*\); it stopped before any work: run its recipe again$"):
        verify_folder(job)
