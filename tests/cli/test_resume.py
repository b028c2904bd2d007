"""Kill -9 and resume: the real CLI is killed mid-stage, `stage2-rerun <folder> resume=true` continues it,
and every artifact listed in stats.json must be byte-identical to an uninterrupted run of the same recipe.

The helpers (`kill_when`, `resume`, `artifact_hashes`, `assert_resumed_like`, in tests/helpers.py) serve any
stage: give `kill_when` a predicate over the run folder that is true once the stage is demonstrably mid-way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import sentencepiece as spm

from helpers import artifact_hashes, assert_killed_mid_stage, assert_resumed_like, kill_when, resume, sample_records, stage2, stats, write_jsonl
from stage2.tokenizer.export import EXPORT_FILES

pytestmark = pytest.mark.slow


# --- shard stage --------------------------------------------------------------------------------

COMPONENTS = [("foldoc", 3000), ("noisy_tldr", 1500), ("web_stackexchange", 600)]
PARTITION = 100
# Small shards and one-document encode batches: many partitions and many shard files, so that the
# stage runs long enough (about 2 s on a 2-core box) for a kill to land inside it.
SHARD_RECIPE = [
    "stage=shard",
    "dataset=files",
    f"dataset.paths=[{','.join(f'in/{name}.jsonl' for name, _ in COMPONENTS)}]",
    f"dataset.partition_size={PARTITION}",
    "shard.batch_size=1",
    "shard.seq_len=64",
    "shard.sequences_per_shard=64",
    # Every format, and a validation split large enough to fill shards (and checkpoints) of its own.
    "shard.formats=[npy,megatron,datatrove,nanogpt]",
    "shard.validation_percent=10",
    "progress=false",
]


@pytest.fixture(scope="module")
def shard_base(tmp_path_factory):
    """Inputs, a real tokenizer and an uninterrupted reference run."""
    base = tmp_path_factory.mktemp("resume_shard")
    for name, n in COMPONENTS:
        write_jsonl(base / "in" / f"{name}.jsonl", sample_records(f"{name}.jsonl.gz", n))
    texts = [r["text"] for r in sample_records("foldoc.jsonl.gz", 600)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(base / "tiny"), vocab_size=500, model_type="unigram",
        pad_id=3, num_threads=2, minloglevel=2,
    )
    recipe = [*SHARD_RECIPE, f"shard.tokenizer={base / 'tiny.model'}", f"runs_index={base}/runs.jsonl"]
    stage2([*recipe, "executor.workers=1", "hydra.run.dir=fresh"], base)
    return base, recipe


def shard_progress(run_dir: Path, component: str) -> Dict[str, Any]:
    comp = run_dir / "shards" / component
    work = comp / ".work"
    return {
        # Partitions tokenized: one marker per partition, written after its files of both splits.
        "markers": len(list(work.glob("part-*.done.json"))),
        "checkpoint": bool(list(work.glob("pack.train.*.json"))),
        "shards": len(list(comp.glob("shard-*.npy"))),
        "index": (comp / "index.json").exists(),
    }


def first_partitions_done(run_dir: Path) -> Any:
    """Mid-way through the first component: shards checkpointed past its first partitions (whose token
    files the packer has then deleted) and a partition tokenized."""
    p = shard_progress(run_dir, "foldoc")
    if not (p["checkpoint"] and p["markers"]):
        return None
    try:
        last = sorted((run_dir / "shards" / "foldoc" / ".work").glob("pack.train.*.json"))[-1]
        checkpoint = json.loads(last.read_text())["result"]
    except (OSError, ValueError, IndexError):
        return None  # removed between the check and the read
    return p if checkpoint["partition"] >= 2 else None


def first_component_done(run_dir: Path) -> Any:
    """Between components: the first is finished, the second is not."""
    p = shard_progress(run_dir, "foldoc")
    return p if p["index"] else None


def two_partitions_tokenized(run_dir: Path) -> Any:
    p = shard_progress(run_dir, "foldoc")
    return p if p["markers"] >= 2 else None


@pytest.mark.parametrize(
    "workers,ready",
    [(1, first_partitions_done), (1, first_component_done), (2, two_partitions_tokenized)],
    ids=["mid-component", "between-components", "two-workers"],
)
def test_shard_killed_mid_stage_resumes_to_identical_shards(shard_base, workers, ready):
    base, recipe = shard_base
    run_dir = base / f"killed-{ready.__name__}-{workers}"
    seen = kill_when([*recipe, f"executor.workers={workers}"], base, run_dir, ready)
    assert_killed_mid_stage(run_dir, run_dir / "shards" / "manifest.json")
    total_partitions = sum(-(-n // PARTITION) for _, n in COMPONENTS)
    left = {name: shard_progress(run_dir, name) for name, _ in COMPONENTS}
    assert not left["web_stackexchange"]["index"]  # the last component was not finished
    # Killed with work on disk that a resume can keep, and work still to do.
    assert seen["markers"] + seen["index"] > 0 and sum(p["markers"] for p in left.values()) < total_partitions
    # What a kill at another instant leaves: a token file renamed but its marker not yet written, and
    # temporary files. Neither may be taken for finished output.
    work = run_dir / "shards" / "noisy_tldr" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "part-00003.train.bin").write_bytes(b"\x07\x00" * 100)
    (work / ".part-00004.train.bin.tmp-99999").write_bytes(b"\x07\x00" * 100)
    (run_dir / "shards" / "noisy_tldr" / ".shard-00000.npy.tmp-99999").write_bytes(b"not a shard")

    resume(run_dir, base, f"executor.workers={workers}")
    assert_resumed_like(run_dir, base / "fresh")
    shard = stats(run_dir)["stages"]["shard"]
    assert shard["resumed"] is True
    # Done work was kept, not redone: finished components, or partitions inside the checkpoint / with a marker.
    if seen["index"]:
        assert shard["components_resumed"] >= 1 and shard["components"]["foldoc"]["resumed"] is True
    else:
        assert shard["partitions_resumed"] >= (2 if workers == 1 else 1)
    assert shard["partitions_resumed"] < total_partitions
    assert "resume:" in (run_dir / "stage2.log").read_text()
    # The resumed run's stats count every document, like the uninterrupted run's.
    fresh = stats(base / "fresh")["stages"]["shard"]["components"]
    for name, n in COMPONENTS:
        assert shard["components"][name]["records"] == fresh[name]["records"] == n
        assert shard["components"][name]["sequences"] == fresh[name]["sequences"]


def a_shard_task_done(run_dir: Path) -> Any:
    """With workers: every partition tokenized, and a write task (a shard) finished, the run not."""
    markers = list((run_dir / "shards").glob("*/.work/shard.*.json"))
    return len(markers) if markers and not (run_dir / "shards" / "manifest.json").exists() else None


def test_shard_killed_while_workers_write_shards_resumes_to_identical_shards(shard_base):
    base, recipe = shard_base
    run_dir = base / "killed-writing"
    kill_when([*recipe, "executor.workers=2"], base, run_dir, a_shard_task_done)
    assert_killed_mid_stage(run_dir, run_dir / "shards" / "manifest.json")
    # A shard written but its marker not yet: never taken for a finished task.
    (run_dir / "shards" / "noisy_tldr" / ".shard-00001.npy.tmp-99999").write_bytes(b"not a shard")
    resume(run_dir, base, "executor.workers=2")
    assert_resumed_like(run_dir, base / "fresh")
    shard = stats(run_dir)["stages"]["shard"]
    total_partitions = sum(-(-n // PARTITION) for _, n in COMPONENTS)
    assert shard["partitions_resumed"] == total_partitions  # every partition was tokenized before the kill
    assert shard["write_tasks_resumed"] >= 1


def test_shard_resume_of_a_finished_run_redoes_nothing(shard_base):
    base, recipe = shard_base
    run_dir = base / "finished"
    stage2([*recipe, "executor.workers=1", f"hydra.run.dir={run_dir}"], base)
    before = artifact_hashes(run_dir)
    mtimes = {rel: (run_dir / rel).stat().st_mtime_ns for rel in before}
    resume(run_dir, base)
    shard = stats(run_dir)["stages"]["shard"]
    assert shard["components_resumed"] == len(COMPONENTS) and shard["partitions_resumed"] == 0
    assert artifact_hashes(run_dir) == before == artifact_hashes(base / "fresh")
    # Shards and indexes were kept, not rewritten (the stage manifest is rewritten, same bytes).
    assert {rel: t for rel, t in mtimes.items() if "shard-" in rel or "index.json" in rel} == {
        rel: (run_dir / rel).stat().st_mtime_ns for rel in mtimes if "shard-" in rel or "index.json" in rel
    }


# --- tokenizer stage ----------------------------------------------------------------------------

TOKENIZER_RECIPE = [
    "stage=tokenizer",
    "dataset=files",
    f"dataset.paths=[{','.join(f'in/{name}.jsonl' for name, _ in COMPONENTS)}]",
    "tokenizer.vocab_size=1000",
    "tokenizer.samples_per_component=400",
    "tokenizer.num_threads=2",
    "progress=false",
]


def training_started(run_dir: Path) -> Any:
    log = run_dir / "stage2.log"
    return log.exists() and "tokenizer: training" in log.read_text()


def test_tokenizer_killed_while_training_resumes_to_identical_model(tmp_path):
    for name, n in COMPONENTS:
        write_jsonl(tmp_path / "in" / f"{name}.jsonl", sample_records(f"{name}.jsonl.gz", n))
    recipe = [*TOKENIZER_RECIPE, f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1"]
    run_dir = tmp_path / "killed"
    kill_when(recipe, tmp_path, run_dir, training_started)
    assert_killed_mid_stage(run_dir, run_dir / "tokenizer" / "spm_1000_bpe.model")

    resume(run_dir, tmp_path)
    stage2([*recipe, "hydra.run.dir=fresh"], tmp_path)
    hashes = assert_resumed_like(run_dir, tmp_path / "fresh")
    assert sorted(hashes) == sorted(["tokenizer/spm_1000_bpe.model", "tokenizer/spm_1000_bpe.vocab", *(f"tokenizer/{n}" for n in EXPORT_FILES)])
    tok = stats(run_dir)["stages"]["tokenizer"]
    assert tok["resumed"] is False  # no finished model was left: trained again, to the same bytes
    assert tok["overall"] == stats(tmp_path / "fresh")["stages"]["tokenizer"]["overall"]
    assert json.loads((run_dir / "provenance.json").read_text())["resumed"]  # the resume is on record

    # Resuming the now finished run keeps its model as it is.
    model = run_dir / "tokenizer" / "spm_1000_bpe.model"
    before = model.stat().st_mtime_ns
    resume(run_dir, tmp_path)
    assert stats(run_dir)["stages"]["tokenizer"]["resumed"] is True and model.stat().st_mtime_ns == before
    assert artifact_hashes(run_dir) == hashes


def test_tokenizer_killed_after_training_resumes_keeping_the_model(tmp_path):
    # The kill lands once the training task has written its marker and while the evaluation tasks run
    # (tokenizer/.work, their input, is removed only after them); a large eval slice keeps them busy.
    from stage2.stages.tokenizer import TRAIN_MARKER, TOKENIZER_DIR, WORK_DIR

    for name, n in COMPONENTS:
        write_jsonl(tmp_path / "in" / f"{name}.jsonl", sample_records(f"{name}.jsonl.gz", n))
    recipe = [
        *TOKENIZER_RECIPE, f"runs_index={tmp_path}/runs.jsonl", "executor.workers=2",
        "tokenizer.heldout_percent=50", "tokenizer.eval_docs_per_component=3000",
    ]
    run_dir = tmp_path / "killed"
    model = run_dir / TOKENIZER_DIR / "spm_1000_bpe.model"

    def evaluating(folder: Path) -> Any:
        return (folder / TRAIN_MARKER).exists() and (folder / TOKENIZER_DIR / WORK_DIR).exists()

    kill_when(recipe, tmp_path, run_dir, evaluating)
    assert stats(run_dir)["status"] == "running" and "components" not in stats(run_dir).get("stages", {}).get("tokenizer", {})
    trained = (model.read_bytes(), model.stat().st_mtime_ns)

    resume(run_dir, tmp_path)
    stage2([*recipe, "hydra.run.dir=fresh"], tmp_path)
    assert_resumed_like(run_dir, tmp_path / "fresh")
    tok, fresh = stats(run_dir)["stages"]["tokenizer"], stats(tmp_path / "fresh")["stages"]["tokenizer"]
    assert tok["resumed"] is True and (model.read_bytes(), model.stat().st_mtime_ns) == trained  # kept, not trained again
    assert tok["overall"]["eval_docs"] > 2000  # the slice that kept the evaluation busy
    for key in ("overall", "components", "sample", "vocab_size"):
        assert tok[key] == fresh[key], key
