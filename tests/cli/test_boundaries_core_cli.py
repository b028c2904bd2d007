"""Issue #22, the run's own boundaries: names that become paths, scratch files a resume reuses, and
every value that can be checked before any work.

Each case runs the real CLI and fails on the code before these checks: a name used as a path, a resume
that trusted a changed scratch file, a value SentencePiece or numpy refused only after the filter stage
had run. The cases on the stage functions alone are in tests/unit/test_boundaries_core.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import (
    assert_killed_mid_stage, assert_resumed_like, cli, done_tasks, kill_when, one_line_error, resume, sample_records, stage2, stats, tree,
    write_jsonl,
)

pytestmark = pytest.mark.slow

RECORDS = sample_records("web_stackexchange.jsonl.gz", 40)


def own_manifest(base: Path, components: dict) -> list:
    folder = base / "conf" / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.yaml").write_text(yaml.safe_dump({"name": "mine", "components": components}))
    return ["dataset=mine", f"hydra.searchpath=[file://{base / 'conf'}]"]


# ---- 1. names are not paths ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["VICTIM", "..", "a/b", ".work", ".env", "", "web.v2", "x" * 65])
def test_a_component_name_that_is_no_plain_name_is_refused_before_any_work(tmp_path, bad):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "my_embeddings.npy").write_bytes(np.arange(4).tobytes())
    (victim / ".env").write_text("SECRET=1\n")
    before = tree(victim)
    name = str(victim) if bad == "VICTIM" else bad
    write_jsonl(tmp_path / "docs.jsonl", RECORDS)
    args = own_manifest(tmp_path, {name: {"data_files": [str(tmp_path / "docs.jsonl")]}, "good": {"data_files": [str(tmp_path / "docs.jsonl")]}})
    out = cli(tmp_path, "stage=pipeline", *args, "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1")
    line = one_line_error(out, "dataset.components.", "letters, digits")
    assert repr(name) in line
    assert tree(victim) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs.jsonl").exists()


# ---- 5. resume checks every scratch file it reuses ----------------------------------------------

FILTER_RECIPE = [
    "stage=filter",
    "dataset=files",
    "dataset.paths=[in/web.jsonl]",
    "dataset.partition_size=25",
    "filter.lang_backend=langdetect",  # slow enough for the kill to land mid-stage
    "filter.keep_rejected=2",
    "progress=false",
]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_filter_resume_redoes_a_task_whose_scratch_file_changed(tmp_path):
    write_jsonl(tmp_path / "in" / "web.jsonl", sample_records("web_stackexchange.jsonl.gz", 400))
    recipe = [*FILTER_RECIPE, f"runs_index={tmp_path}/runs.jsonl"]
    stage2([*recipe, "executor.workers=1", "hydra.run.dir=fresh"], tmp_path)
    run_dir = tmp_path / "killed"
    kill_when([*recipe, "executor.workers=2"], tmp_path, run_dir, lambda d: len(done_tasks(d)) >= 4)
    assert_killed_mid_stage(run_dir, run_dir / "filtered" / "manifest.json")
    done = done_tasks(run_dir)
    screened = [m for m in done if m.name == "done-screen.json"]
    candidates = sorted(screened[0].parent.glob("cand-*.parquet"))
    spills = sorted(p for m in screened[1:] for p in m.parent.glob("near-*.npy"))
    assert candidates and spills
    flip_a_byte(candidates[0])  # the text of a document in a candidates file
    flip_a_byte(spills[0])  # a hash in a spill file
    resume(run_dir, tmp_path, "executor.workers=1")
    assert_resumed_like(run_dir, tmp_path / "fresh")
    # Exactly the two tasks whose files changed were done again.
    assert stats(run_dir)["stages"]["filter"]["tasks_resumed"] == len(done) - 2


SHARD_RECIPE = [
    "stage=shard",
    "dataset=files",
    "dataset.paths=[in/web.jsonl]",
    "dataset.partition_size=20",
    "shard.batch_size=1",
    "shard.seq_len=64",
    "shard.sequences_per_shard=4096",  # one shard: no checkpoint consumes the token files early
    "progress=false",
]


def test_shard_resume_redoes_a_partition_whose_token_file_changed(tmp_path):
    import sentencepiece as spm

    write_jsonl(tmp_path / "in" / "web.jsonl", sample_records("web_stackexchange.jsonl.gz", 300))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(r["text"] for r in sample_records("foldoc.jsonl.gz", 600)), model_prefix=str(tmp_path / "tiny"),
        vocab_size=500, model_type="unigram", num_threads=2, minloglevel=2,
    )
    recipe = [*SHARD_RECIPE, f"shard.tokenizer={tmp_path / 'tiny.model'}", f"runs_index={tmp_path}/runs.jsonl"]
    stage2([*recipe, "executor.workers=1", "hydra.run.dir=fresh"], tmp_path)
    run_dir = tmp_path / "killed"
    work = run_dir / "shards" / "web" / ".work"
    # A partition is done once its marker exists (written after its files of both splits).
    kill_when([*recipe, "executor.workers=2"], tmp_path, run_dir, lambda d: len(list(work.glob("part-*.done.json"))) >= 3)
    assert_killed_mid_stage(run_dir, run_dir / "shards" / "manifest.json")
    done = sorted(work.glob("part-*.done.json"))
    tokens = next(p for p in (work / m.name.replace(".done.json", ".train.bin") for m in done) if p.exists())
    marker = work / tokens.name.replace(".train.bin", ".done.json")
    assert json.loads(marker.read_text())["outputs"][tokens.name][0] == tokens.stat().st_size
    flip_a_byte(tokens)  # a token id: the same size, another id
    resume(run_dir, tmp_path, "executor.workers=1")
    assert_resumed_like(run_dir, tmp_path / "fresh")
    assert stats(run_dir)["stages"]["shard"]["partitions_resumed"] == len(done) - 1


# ---- 8 and 10: everything that can be checked at start-up is -----------------------------------


@pytest.mark.parametrize("override, key", [
    ("tokenizer.input_sentence_size=-1", "tokenizer.input_sentence_size"),
    ("tokenizer.seed=-3", "tokenizer.seed"),
    ("tokenizer.character_coverage=0.5", "tokenizer.character_coverage"),
    ("tokenizer.eos_id=1", "tokenizer.bos_id=1 and tokenizer.eos_id=1"),
    ("tokenizer.max_sentence_length=5", "tokenizer.max_sentence_length"),
    ("tokenizer.num_threads=2000", "tokenizer.num_threads"),
    ("tokenizer.user_defined_symbols=[sym,sym]", "tokenizer.user_defined_symbols"),
    ("tokenizer.eval_docs_per_component=-1", "tokenizer.eval_docs_per_component"),
    ('tokenizer.user_defined_symbols=["a b"]', "a symbol holds a space"),
    ("shard.sequences_per_shard=1000000000000", "shard.sequences_per_shard"),
    ("dataset.partition_size=100000000000000000000", "dataset.partition_size"),
    ("dataset.components.web.weight=0", "dataset.components.web.weight"),
    ("dataset.components.web.weight=-1", "dataset.components.web.weight"),
    ("dataset.components.web.weight=nan", "dataset.components.web.weight"),
])
def test_a_value_out_of_range_is_refused_before_the_filter_runs(tmp_path, override, key):
    out = cli(tmp_path, "stage=pipeline", override, "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1")
    one_line_error(out, key)
    assert not (tmp_path / "run").exists()


def test_an_interpolation_in_a_path_is_one_line_and_an_escaped_one_is_literal(tmp_path):
    write_jsonl(tmp_path / "a${b}.jsonl", RECORDS)
    common = ("stage=filter", "dataset=files", "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "filter.lang_check=null")
    one_line_error(cli(tmp_path, *common, "dataset.paths=[a${b}.jsonl]"), "dataset.paths[0]", "Interpolation key 'b'", "\\${")
    assert not (tmp_path / "run").exists()
    out = cli(tmp_path, *common, "dataset.paths=[a\\${b}.jsonl]")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["a_b"]["records_in"] == len(RECORDS)


# ---- second attack: a folder another process began a run in while this one only watched it -------


def test_a_read_only_stage_leaves_a_run_another_process_began_in_its_folder(tmp_path):
    import subprocess
    import sys

    from stage2.runtime import folder

    # A finished run appears in the folder a `stage=verify ... hydra.run.dir=X` (no lock) was watching.
    done = tmp_path / "finished"
    folder.watch(done)
    (done / "filtered").mkdir(parents=True)
    (done / "stats.json").write_text('{"status": "finished"}')
    folder.abandon(done)
    assert (done / "stats.json").is_file() and (done / "filtered").is_dir()

    # A run still starting there (it holds the lock, has no stats.json yet) keeps its files too.
    starting = tmp_path / "starting"
    folder.watch(starting)
    (starting / ".hydra").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
         " fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(starting / folder.LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        folder.abandon(starting)
        assert (starting / ".hydra").is_dir() and (starting / folder.LOCK_FILE).is_file()
    finally:
        holder.kill()
        holder.wait()

    # Nobody else there: what the watching process added goes, as before.
    alone = tmp_path / "alone"
    folder.watch(alone)
    (alone / ".hydra").mkdir(parents=True)
    folder.abandon(alone)
    assert not alone.exists()


def sweep(cwd: Path, *args: str):
    return cli(cwd, "--multirun", "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "executor.workers=1",
               "filter.lang_check=null", f"runs_index={cwd}/runs.jsonl", *args)


def test_a_sweep_job_refused_by_a_finished_run_leaves_it_as_it_was_and_the_sweep_fails(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS)
    assert sweep(tmp_path, "filter.min_chars=100,300", "hydra.sweep.dir=sw").returncode == 0
    before = {job: tree(tmp_path / "sw" / job) for job in ("0", "1")}
    again = sweep(tmp_path, "filter.min_chars=100,300", "hydra.sweep.dir=sw")
    one_line_error(again, "holds the runs of an earlier sweep", "resume=true")
    assert {job: tree(tmp_path / "sw" / job) for job in ("0", "1")} == before
    # Continued with another recipe for job 0: that job is refused and fails the sweep, the run that
    # finished there stays as it was; job 1, the same recipe, resumes.
    stats = (tmp_path / "sw" / "0" / "stats.json").read_bytes()
    record = (tmp_path / "sw" / "multirun.yaml").read_bytes()
    mixed = sweep(tmp_path, "filter.min_chars=200,300", "hydra.sweep.dir=sw", "resume=true")
    assert mixed.returncode == 1
    assert (tmp_path / "sw" / "0" / "stats.json").read_bytes() == stats
    assert json.loads((tmp_path / "sw" / "1" / "stats.json").read_text())["status"] == "finished"
    # Hydra rewrote every job's .hydra/ record (and multirun.yaml) before stage2 could check the job: put
    # back, the refused job's folder is exactly as it was (log included), and the resumed job keeps its
    # run's record, as a single run's resume does. A rerun of job 0 is still its min_chars=100 run.
    assert tree(tmp_path / "sw" / "0") == before["0"]
    after = tree(tmp_path / "sw" / "1")
    assert {k: v for k, v in after.items() if k.startswith(".hydra")} == {k: v for k, v in before["1"].items() if k.startswith(".hydra")}
    assert (tmp_path / "sw" / "multirun.yaml").read_bytes() == record
    assert "min_chars=100" in (tmp_path / "sw" / "summary.md").read_text() and "min_chars=200" not in (tmp_path / "sw" / "summary.md").read_text()


def test_a_report_does_not_write_into_another_programs_sweep_folder(tmp_path):
    other = tmp_path / "othersweep"
    (other / "0" / ".hydra").mkdir(parents=True)
    (other / "1" / ".hydra").mkdir(parents=True)
    (other / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": "train"}}}))
    for name in ("summary.md", "summary.csv", "summary.png"):
        (other / name).write_text(f"the user's {name}\n")
    before = tree(other)
    out = cli(tmp_path, "stage=report", f"report.dir={other}", f"runs_index={tmp_path}/runs.jsonl")
    one_line_error(out, str(other), "stage2 sweep")
    assert tree(other) == before


def test_a_runs_index_must_be_one(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS)
    common = ("stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "executor.workers=1", "filter.lang_check=null")
    before = (tmp_path / "docs.jsonl").read_bytes()
    one_line_error(cli(tmp_path, *common, "hydra.run.dir=a", "runs_index=docs.jsonl"), "runs_index=", "not a runs index")
    assert (tmp_path / "docs.jsonl").read_bytes() == before and not (tmp_path / "a").exists()
    # An index whose last line lost its newline (an edit): the next run's line stays whole; a damaged
    # line is named by the listing.
    assert cli(tmp_path, *common, "hydra.run.dir=b", "runs_index=runs.jsonl").returncode == 0
    index = tmp_path / "runs.jsonl"
    index.write_bytes(index.read_bytes().rstrip(b"\n") + b"\n{not json\n" + index.read_bytes().rstrip(b"\n"))
    assert cli(tmp_path, *common, "hydra.run.dir=c", "runs_index=runs.jsonl").returncode == 0
    lines = index.read_text().splitlines()
    assert json.loads(lines[-1])["folder"].endswith("/c") and json.loads(lines[0])["folder"].endswith("/b")
    one_line_error(cli(tmp_path, "stage=report", "runs_index=runs.jsonl"), "line 2 is not valid JSON", "mend or remove that line")


def test_a_local_hub_folder_is_fingerprinted_so_a_rerun_sees_it_change(tmp_path):
    folder = tmp_path / "hubset" / "data"
    write_jsonl(folder / "train.jsonl", RECORDS)
    args = own_manifest(tmp_path, {"web": {"hub_path": str(tmp_path / "hubset")}})
    out = cli(tmp_path, "stage=filter", *args, "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "filter.lang_check=null")
    assert out.returncode == 0, out.stderr[-2000:]
    inputs = json.loads((tmp_path / "run" / "provenance.json").read_text())["inputs"]
    assert list(inputs) == [str(folder / "train.jsonl")]
    assert inputs[str(folder / "train.jsonl")]["records"] == len(RECORDS)  # counted as a data_files input's are
    write_jsonl(folder / "train.jsonl", RECORDS[:5])
    one_line_error(cli(tmp_path, str(tmp_path / "run"), "hydra.run.dir=again", command="stage2-rerun"), "inputs differ", "train.jsonl")


def test_a_component_too_short_for_one_row_is_an_error_not_a_silent_gap(tmp_path, ):
    import sentencepiece as spm

    write_jsonl(tmp_path / "long.jsonl", sample_records("foldoc.jsonl.gz", 200))
    write_jsonl(tmp_path / "short.jsonl", RECORDS[:2])
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(r["text"] for r in sample_records("foldoc.jsonl.gz", 600)), model_prefix=str(tmp_path / "tiny"),
        vocab_size=500, model_type="unigram", num_threads=2, minloglevel=2,
    )
    out = cli(tmp_path, "stage=shard", "dataset=files", "dataset.paths=[long.jsonl,short.jsonl]", f"shard.tokenizer={tmp_path / 'tiny.model'}",
              "shard.seq_len=2048", "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1")
    one_line_error(out, "component short", "fill no row of shard.seq_len=2048")


def test_a_copied_tokenizer_gets_a_tokenizer_json_made_from_its_own_model(tmp_path):
    import sentencepiece as spm
    from tokenizers import Tokenizer

    texts = [r["text"] for r in sample_records("foldoc.jsonl.gz", 600)]
    for name, size in (("a", 500), ("b", 600)):
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / name), vocab_size=size,
                                       model_type="bpe", byte_fallback=True, num_threads=2, minloglevel=2,
                                       normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False)
    from stage2.tokenizer import export

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.model").write_bytes((tmp_path / "a.model").read_bytes())
    export.write((tmp_path / "b.model").read_bytes(), mixed, 512)  # another model's tokenizer.json beside it
    write_jsonl(tmp_path / "docs.jsonl", RECORDS)
    out = cli(tmp_path, "stage=shard", "dataset=files", "dataset.paths=[docs.jsonl]", f"shard.tokenizer={mixed / 'a.model'}",
              "shard.seq_len=64", "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1")
    assert out.returncode == 0, out.stderr[-2000:]
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "a.model"))
    hf = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer" / "tokenizer.json"))
    text = RECORDS[0]["text"]
    assert hf.encode(text).ids == sp.encode(text)


def test_more_components_than_a_position_can_name_are_refused_at_start_up(tmp_path):
    paths = []
    for i in range(257):
        write_jsonl(tmp_path / f"c{i}.jsonl", RECORDS[:1])
        paths.append(f"c{i}.jsonl")
    out = cli(tmp_path, "stage=filter", "dataset=files", f"dataset.paths=[{','.join(paths)}]", "hydra.run.dir=run",
              f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1")
    one_line_error(out, "257 components; at most 256")
    assert not (tmp_path / "run").exists()


def test_a_tokenizer_resume_trains_again_when_the_model_changed(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", sample_records("foldoc.jsonl.gz", 300))
    recipe = ["stage=tokenizer", "dataset=files", "dataset.paths=[docs.jsonl]", "tokenizer.vocab_size=400",
              "executor.workers=1", f"runs_index={tmp_path}/runs.jsonl", "hydra.run.dir=run"]
    assert cli(tmp_path, *recipe).returncode == 0
    model = next((tmp_path / "run" / "tokenizer").glob("*.model"))
    fresh = model.read_bytes()
    again = cli(tmp_path, *recipe, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["tokenizer"]["resumed"] is True
    flip_a_byte(model)
    again = cli(tmp_path, *recipe, "resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert model.read_bytes() == fresh  # trained again, to the same bytes
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["tokenizer"]["resumed"] is False
