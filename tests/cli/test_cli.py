"""The CLI as a user runs it: run folder contract, start-up failures, reruns, worker counts, runs index."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import BIN, SAMPLE, SMALL_SAMPLE, artifact_hashes, sample_records, write_jsonl

pytestmark = pytest.mark.slow


def stage2(*args: str, cwd: Path, command: str = "stage2", check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"{command} {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    out = stage2("hydra.run.dir=run_a", f"runs_index={base}/runs.jsonl", "executor.workers=2", *SMALL_SAMPLE, cwd=base)
    return base, base / "run_a", out


def test_pipeline_run_folder_holds_every_file_of_the_contract(first_run):
    base, run_dir, out = first_run
    assert str(run_dir) in out.stdout or "run_a" in out.stdout
    for name in [".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "config.resolved.yaml",
                 "stats.json", "provenance.json", "stage2.log"]:
        assert (run_dir / name).is_file(), name
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["stage"] == "pipeline" and stats["status"] == "finished"
    assert set(stats["stages"]) == {"filter", "tokenizer", "shard"}
    assert set(stats["stages"]["filter"]["components"]) == {"web", "encyclopedia", "code", "noisy"}
    kinds = {rel.split("/")[0] for rel in stats["artifacts"]}
    assert kinds >= {"filtered", "tokenizer", "shards"}
    for rel in stats["artifacts"]:
        assert not Path(rel).is_absolute() and (run_dir / rel).is_file(), rel
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["packages"]["sentencepiece"] and prov["python"]
    assert set(prov["inputs"]) == {str(p) for p in SAMPLE.glob("*") if p.suffix in (".gz", ".zst", ".parquet")}
    resolved = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    assert resolved["launch_dir"] == str(base)
    assert "stage filter" in (run_dir / "stage2.log").read_text()


def test_typo_and_wrong_type_fail_before_any_work(tmp_path):
    for override, key in [("tokenizer.vocab_sise=8000", "vocab_sise"), ("filter.min_chars=abc", "min_chars")]:
        out = stage2(override, "hydra.run.dir=run", cwd=tmp_path, check=False)
        assert out.returncode != 0 and key in out.stderr
        assert not (tmp_path / "run").exists()
        if key == "vocab_sise":  # said with its config path and the key meant, not OmegaConf's class name
            assert out.stderr.strip().splitlines()[-1].startswith(
                "stage2: error: tokenizer.vocab_sise: no such key in tokenizer; did you mean tokenizer.vocab_size?"), out.stderr


def test_rerun_and_other_worker_count_give_identical_artifacts(first_run):
    base, run_dir, _ = first_run
    stage2(str(run_dir), "hydra.run.dir=run_b", cwd=base, command="stage2-rerun")
    stage2(str(run_dir), "hydra.run.dir=run_c", "executor.workers=1", cwd=base, command="stage2-rerun")
    original = artifact_hashes(run_dir)
    assert original and artifact_hashes(base / "run_b") == original
    assert artifact_hashes(base / "run_c") == original
    digests = {json.loads((base / r / "stats.json").read_text())["config_digest"] for r in ("run_a", "run_b", "run_c")}
    assert len(digests) == 1
    # The plain Hydra form works too and never writes into the old folder.
    stage2("--config-path", str(run_dir / ".hydra"), "--config-name", "config", "hydra.run.dir=run_d", "stage=filter", cwd=base)
    assert (base / "run_d" / "filtered").is_dir()


def test_stats_split_each_stages_cpu_between_its_driver_and_its_tasks(first_run):
    base, run_dir, _ = first_run
    pooled = json.loads((run_dir / "stats.json").read_text())["driver_cpu"]
    assert pooled["start_up_s"] > 0 and set(pooled["stages"]) == {"filter", "tokenizer", "shard"}
    for step, cpu in pooled["stages"].items():
        assert cpu["tasks_s"] > 0 and cpu["driver_s"] >= 0, step
        # The seconds are rounded to 1 ms and the share to 1e-4: the share lies between the extremes they allow.
        low = (cpu["driver_s"] - 5e-4) / (cpu["driver_s"] + cpu["tasks_s"] + 1e-3)
        high = (cpu["driver_s"] + 5e-4) / (cpu["driver_s"] + cpu["tasks_s"] - 1e-3)
        assert low - 5e-5 <= cpu["driver_share"] <= high + 5e-5, (step, cpu)
    # In-process tasks run in the driver's own process: their CPU is theirs, not the driver's.
    stage2("stage=filter", "hydra.run.dir=in_process", f"runs_index={base}/runs.jsonl", "executor.workers=1", *SMALL_SAMPLE, cwd=base)
    alone = json.loads((base / "in_process" / "stats.json").read_text())["driver_cpu"]["stages"]["filter"]
    assert alone["driver_s"] < alone["tasks_s"] and alone["driver_share"] < 0.5


def test_a_pipeline_given_a_tokenizer_filters_and_shards_with_it(first_run):
    """`stage=pipeline shard.tokenizer=<run>` trains no tokenizer: the same recipe and the same model give
    the same parts, tokenizer files and shards as the run that trained it."""
    base, run_dir, _ = first_run
    stage2("hydra.run.dir=given", f"runs_index={base}/runs.jsonl", "executor.workers=2", *SMALL_SAMPLE, f"shard.tokenizer={run_dir}", cwd=base)
    stats = json.loads((base / "given" / "stats.json").read_text())
    assert stats["steps"] == ["filter", "shard"] and "tokenizer" not in stats["stages"]
    given, trained = artifact_hashes(base / "given"), artifact_hashes(run_dir)
    assert {rel for rel in given if rel.startswith("tokenizer/")} == {rel for rel in trained if rel.startswith("tokenizer/") and not rel.endswith(".vocab")}
    assert {rel: h for rel, h in given.items() if not rel.startswith("tokenizer/")} == {rel: h for rel, h in trained.items() if not rel.startswith("tokenizer/")}
    assert all(trained[rel] == h for rel, h in given.items())


def test_runs_index_has_a_line_per_run(first_run):
    base, run_dir, _ = first_run
    lines = [json.loads(l) for l in (base / "runs.jsonl").read_text().splitlines()]
    first = next(l for l in lines if l["folder"] == str(run_dir))
    assert first["stage"] == "pipeline" and first["dataset"] == "sample"
    assert first["config_digest"] == json.loads((run_dir / "stats.json").read_text())["config_digest"]
    assert first["inputs_digest"] and "tokens" in first


def test_a_finished_run_folder_is_not_overwritten(first_run):
    base, run_dir, _ = first_run
    before = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    out = stage2("hydra.run.dir=run_a", "stage=filter", f"runs_index={base}/runs.jsonl", cwd=base, check=False)
    assert out.returncode == 1 and "already holds a run" in out.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == before


def test_rerun_with_another_option_of_a_group_is_the_recipe_the_command_line_gives(first_run):
    # The saved config has no defaults list, so `stage2-rerun <run> executor=local` was a merge error
    # ("str is not a subclass of ExecutorConfig"). A group's option now becomes the keys it changes for
    # this run; the recipe is the one the run's own command line composes with that option.
    base, run_dir, _ = first_run
    original = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    for option in ("tokenizer=unigram", "tokenizer=lossy", "filter=fineweb", "executor=ray"):
        rerun = stage2(str(run_dir), option, "--cfg", "job", cwd=base, command="stage2-rerun")
        direct = stage2(*original, option, "--cfg", "job", cwd=base)
        assert yaml.safe_load(rerun.stdout) == yaml.safe_load(direct.stdout), option
        assert rerun.stderr.startswith(f"stage2-rerun: {option}: ++"), rerun.stderr
    saved = yaml.safe_load(stage2(str(run_dir), "--cfg", "job", cwd=base, command="stage2-rerun").stdout)
    # The run's own option changes nothing; a key after an option wins over it.
    same = stage2(str(run_dir), "executor=local", "--cfg", "job", cwd=base, command="stage2-rerun")
    assert yaml.safe_load(same.stdout) == saved and "nothing changes" in same.stderr
    both = yaml.safe_load(stage2(str(run_dir), "tokenizer=unigram", "tokenizer.vocab_size=900", "--cfg", "job", cwd=base, command="stage2-rerun").stdout)
    assert (both["tokenizer"]["model_type"], both["tokenizer"]["vocab_size"]) == ("unigram", 900)
    assert saved["tokenizer"]["vocab_size"] != 900
    missing = stage2(str(run_dir), "executor=nope", "hydra.run.dir=never", cwd=base, command="stage2-rerun", check=False)
    assert missing.returncode != 0 and not (base / "never").exists()
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()] and "executor" in missing.stderr and "local" in missing.stderr
    swept = stage2(str(run_dir), "--multirun", "tokenizer=bpe,unigram", cwd=base, command="stage2-rerun", check=False)
    assert swept.returncode != 0 and swept.stderr.strip().startswith("stage2-rerun: tokenizer=bpe,unigram: a rerun takes one option of a group")


def test_rerun_keeps_the_values_the_run_read_from_the_environment(tmp_path, monkeypatch):
    # A manifest of one's own with `${oc.env:MYDATA}`: the rerun is the recipe the run used (config.resolved.yaml),
    # not what this shell's MYDATA says, or a failure where it is unset. A key given to the rerun still wins.
    records = sample_records("web_stackexchange.jsonl.gz", 40)
    write_jsonl(tmp_path / "a" / "docs.jsonl", records[:30])
    write_jsonl(tmp_path / "b" / "docs.jsonl", records[30:])
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "envmix.yaml").write_text('name: envmix\ncomponents:\n  docs:\n    data_files: ["${oc.env:MYDATA}/docs.jsonl"]\n')
    common = ["stage=filter", "filter.min_chars=0", f"runs_index={tmp_path}/runs.jsonl"]
    monkeypatch.setenv("MYDATA", str(tmp_path / "a"))
    stage2("--config-dir", "conf", "dataset=envmix", *common, "hydra.run.dir=first", cwd=tmp_path)
    kept = json.loads((tmp_path / "first" / "stats.json").read_text())["stages"]["filter"]["components"]["docs"]["records_in"]
    assert kept == 30
    monkeypatch.delenv("MYDATA")
    again = stage2(str(tmp_path / "first"), "hydra.run.dir=again", cwd=tmp_path, command="stage2-rerun")
    assert "values the run read from environment variables: ++dataset.components.docs.data_files=" in again.stderr
    assert filter_parts(tmp_path / "again") == filter_parts(tmp_path / "first")
    monkeypatch.setenv("MYDATA", str(tmp_path / "b"))
    stage2(str(tmp_path / "first"), "hydra.run.dir=same", cwd=tmp_path, command="stage2-rerun")
    assert filter_parts(tmp_path / "same") == filter_parts(tmp_path / "first")
    moved = stage2(str(tmp_path / "first"), f"dataset.components.docs.data_files=[{tmp_path / 'b' / 'docs.jsonl'}]", "allow_changed_inputs=true",
                   "hydra.run.dir=moved", cwd=tmp_path, command="stage2-rerun")
    assert moved.returncode == 0
    assert json.loads((tmp_path / "moved" / "stats.json").read_text())["stages"]["filter"]["components"]["docs"]["records_in"] == 10


def filter_parts(run_dir: Path) -> dict:
    return {rel: h for rel, h in artifact_hashes(run_dir).items() if rel.startswith("filtered/")}


def test_changed_input_is_detected_before_a_rerun(tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", sample_records("web_stackexchange.jsonl.gz", 40))
    stage2("stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "hydra.run.dir=orig", f"runs_index={tmp_path}/runs.jsonl", cwd=tmp_path)
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "new", "text": "x" * 300}) + "\n")
    out = stage2(str(tmp_path / "orig"), "hydra.run.dir=again", cwd=tmp_path, command="stage2-rerun", check=False)
    assert out.returncode == 1 and "docs.jsonl" in out.stderr and "content changed" in out.stderr
    assert not (tmp_path / "again" / "filtered").exists()
    stage2(str(tmp_path / "orig"), "hydra.run.dir=again2", "allow_changed_inputs=true", cwd=tmp_path, command="stage2-rerun")
    stats = json.loads((tmp_path / "again2" / "stats.json").read_text())
    assert stats["stages"]["filter"]["components"]["docs"]["records_in"] == 41


def test_multirun_jobs_each_get_a_folder_and_an_index_line(tmp_path):
    shutil.copy(SAMPLE / "web_stackexchange.jsonl.gz", tmp_path / "web.jsonl.gz")
    stage2("--multirun", "stage=filter", "dataset=files", "dataset.paths=[web.jsonl.gz]", "dataset.max_records=200",
           "filter.min_chars=100,400", "hydra.sweep.dir=sweep", f"runs_index={tmp_path}/runs.jsonl", cwd=tmp_path)
    kept = [json.loads((tmp_path / "sweep" / str(j) / "stats.json").read_text())["stages"]["filter"]["components"]["web"]["kept"] for j in (0, 1)]
    assert kept[0] > kept[1] > 0
    lines = [json.loads(l) for l in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(Path(l["folder"]).name for l in lines) == ["0", "1"]
    assert len({l["config_digest"] for l in lines}) == 2


def test_ray_executor_gives_the_same_artifacts_as_local(first_run):
    pytest.importorskip("ray")
    base, run_dir, _ = first_run
    stage2("hydra.run.dir=run_ray", f"runs_index={base}/runs.jsonl", "executor=ray", "executor.workers=2", *SMALL_SAMPLE, cwd=base)
    assert artifact_hashes(base / "run_ray") == artifact_hashes(run_dir)
    assert json.loads((base / "run_ray" / "stats.json").read_text())["config_digest"] == json.loads((run_dir / "stats.json").read_text())["config_digest"]


def test_a_key_added_with_plus_that_the_schema_lacks_is_refused(tmp_path):
    # Hydra's own typo message suggests `+key=value`; that must not smuggle the typo in.
    out = stage2("+tokenizer.vocab_sise=8000", "stage=filter", "hydra.run.dir=run", cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "stage2: error: tokenizer.vocab_sise: no such key in tokenizer; did you mean tokenizer.vocab_size? (every key: docs/configuration.md)")
    assert not (tmp_path / "run" / "stats.json").exists()
