"""Issue #22, points 6-8: past runs are checked before they are used or vouched for.

6. `tokenizer.input_run` / `shard.input_run`: the parts of the input run must be the ones it recorded
   (sha256 of each, and the same set), else a one-line error naming the part and the input run, before
   the new run claims a folder.
7. `stage=verify` fails, saying what is missing, when the evidence it needs is missing or damaged.
8. The reader: a weights mapping must name exactly the run's components; a shard cut short or with a
   rewritten header fails naming the file.

Everything runs on real runs of the small sample made by the real CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import SMALL_SAMPLE, cli, filter_run, one_line_error, sample_records, tree, write_jsonl
from stage2.io import parts
from stage2 import reader
from stage2.errors import Stage2Error

pytestmark = pytest.mark.slow


def small(base: Path) -> list:
    return [*SMALL_SAMPLE, "executor.workers=1", "progress=false", f"runs_index={base}/runs.jsonl"]


def ok(out) -> None:
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A filter run, a tokenizer run on its parts, and a pipeline run, all finished, made once."""
    base = tmp_path_factory.mktemp("past_runs")
    ok(cli(base, *small(base), "stage=filter", "hydra.run.dir=filt"))
    ok(cli(base, *small(base), "stage=tokenizer", f"tokenizer.input_run={base / 'filt'}", "hydra.run.dir=tok"))
    ok(cli(base, *small(base), "hydra.run.dir=pipe"))
    (model,) = (base / "tok" / "tokenizer").glob("*.model")
    return {"base": base, "filter": base / "filt", "tokenizer": base / "tok", "model": model, "pipeline": base / "pipe"}


def copy(run: Path, where: Path) -> Path:
    return Path(shutil.copytree(run, where))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# ---- 6. past runs used as inputs are checked -------------------------------------------------------

WEB = Path("filtered/web/part-00000-00000.parquet")
OTHER = Path("filtered/web/part-00000-00001.parquet")


def flipped(run: Path) -> Path:
    flip_byte(run / WEB)
    return WEB


def rewritten(run: Path) -> Path:
    """Other real documents, a valid parquet file: only the hash tells."""
    shutil.copyfile(run / OTHER, run / WEB)
    return WEB


def deleted(run: Path) -> Path:
    (run / WEB).unlink()
    return WEB


def removed(run: Path) -> Path:
    """The part and its line in the parts manifest gone: the reader would simply read one part less."""
    (run / WEB).unlink()
    edit_json(run / "filtered/manifest.json", lambda m: m["components"]["web"]["parts"].remove(str(WEB)))
    return WEB


def added(run: Path) -> Path:
    extra = Path("filtered/web/part-00000-00009.parquet")
    shutil.copyfile(run / OTHER, run / extra)
    edit_json(run / "filtered/manifest.json", lambda m: m["components"]["web"]["parts"].append(str(extra)))
    return extra


def dropped_in(run: Path) -> Path:
    """A part file put next to the others, not listed anywhere."""
    extra = Path("filtered/web/part-00000-00009.parquet")
    shutil.copyfile(run / OTHER, run / extra)
    return extra


def consumer_args(consumer: str, past: Path, runs) -> list:
    if consumer == "tokenizer":
        return ["stage=tokenizer", f"tokenizer.input_run={past}"]
    return ["stage=shard", f"shard.input_run={past}", f"shard.tokenizer={runs['model']}"]


@pytest.mark.parametrize(
    "tamper,consumer",
    [
        (flipped, "tokenizer"),
        (flipped, "shard"),
        (rewritten, "tokenizer"),
        (rewritten, "shard"),
        (deleted, "shard"),
        (removed, "tokenizer"),
        (added, "shard"),
        (dropped_in, "tokenizer"),
    ],
)
def test_a_tampered_input_run_is_refused_naming_the_part(runs, tmp_path, tamper, consumer):
    past = copy(runs["filter"], tmp_path / "past")
    part = tamper(past)
    before = tree(past)
    out = cli(tmp_path, *small(tmp_path), *consumer_args(consumer, past, runs), "hydra.run.dir=new")
    one_line_error(out, str(past / part), f"input run {past}")
    assert not (tmp_path / "new").exists()  # refused before the run claimed a folder
    assert tree(past) == before


@pytest.mark.parametrize("tamper", [flipped, rewritten])
def test_with_workers_a_tampered_part_fails_in_its_task_before_any_shard(runs, tmp_path, tamper):
    """With worker processes the parts' bytes are hashed by the tasks that read them, not up front: the run
    fails all the same, naming the part, before a shard is written."""
    past = copy(runs["filter"], tmp_path / "past")
    part = tamper(past)
    out = cli(tmp_path, *small(tmp_path), *consumer_args("shard", past, runs), "executor.workers=2", "hydra.run.dir=new")
    one_line_error(out, str(past / part), f"input run {past}", "the file changed after that run wrote it")
    assert not [p for p in (tmp_path / "new").rglob("*.npy") if ".work" not in p.parts]


@pytest.mark.parametrize("tamper,executor", [(flipped, "local"), (dropped_in, "local"), (flipped, "ray")])
def test_a_tampered_input_run_is_refused_by_a_workers_check_too(runs, tmp_path, tamper, executor):
    """With worker processes (or Ray) a worker hashes the parts: the same one-line error, before the run claims a folder."""
    if executor == "ray":
        pytest.importorskip("ray")
    past = copy(runs["filter"], tmp_path / "past")
    part = tamper(past)
    args = [a for a in small(tmp_path) if not a.startswith("executor.workers=")]
    out = cli(tmp_path, *args, f"executor={executor}", "executor.workers=2", *consumer_args("tokenizer", past, runs), "hydra.run.dir=new")
    one_line_error(out, str(past / part), f"input run {past}")
    assert not (tmp_path / "new").exists()


def test_the_start_up_check_of_an_input_run_runs_in_a_worker(runs, tmp_path):
    """The driver gets the worker's record of the parts it hashed: its own check of the same files then
    hashes nothing, and a part changed since is hashed again and refused."""
    from stage2.main import compose_recipe
    from stage2.runtime.executor import LocalExecutor
    from stage2.runtime.run import check_input_parts

    past = copy(runs["filter"], tmp_path / "past").resolve()
    cfg = compose_recipe([*SMALL_SAMPLE, "stage=tokenizer", f"tokenizer.input_run={past}"], str(tmp_path))
    names = list(json.loads((past / "filtered/manifest.json").read_text())["components"])
    assert past not in parts._CHECKED
    pool = LocalExecutor(2)
    try:
        check_input_parts(cfg, names, pool.map)
    finally:
        pool.close()
    components, stats, digest = parts._CHECKED[past]  # (checked by a worker: this process hashed nothing)
    assert components == frozenset(names) and str(WEB) in stats
    lineage = json.loads((runs["tokenizer"] / "provenance.json").read_text())["lineage"]["tokenizer.documents"]
    assert digest == lineage["parts_sha256"] == parts.check_parts(past, names, "this run")
    flip_byte(past / WEB)
    with pytest.raises(Stage2Error, match="does not match"):
        parts.check_parts(past, names, "this run")


def test_with_workers_the_tokenizers_sampling_tasks_hash_the_parts_they_read(runs, tmp_path):
    """A part the start-up check did not cover (changed since, or a pipeline's own parts) is hashed by the
    sampling task that reads it, not by the driver: the driver leaves a check per part, and a changed part
    fails its task, naming it."""
    from stage2.main import compose_recipe
    from stage2.runtime.run import start_run
    from stage2.stages import tokenizer as tokenizer_stage

    past = copy(runs["filter"], tmp_path / "past").resolve()
    cfg = compose_recipe([*small(tmp_path), "executor.workers=2", "stage=tokenizer", f"tokenizer.input_run={past}"], str(tmp_path))
    run = start_run(tmp_path / "new", cfg)
    try:
        flip_byte(past / WEB)  # after the start-up check
        with pytest.raises(Stage2Error, match=f"{past / WEB}: sha256 .* does not match .* the file changed after that run wrote it"):
            tokenizer_stage.sample_to_files(run, cfg.tokenizer, tmp_path / "work")
        assert parts.part_check(past / WEB)["sha256"] != parts.file_sha256(past / WEB)  # (left to the task: the driver did not hash it)
    finally:
        run.executor.close()


def test_an_untampered_input_run_is_used_and_its_parts_digest_recorded(runs, tmp_path):
    tok = json.loads((runs["tokenizer"] / "provenance.json").read_text())["lineage"]["tokenizer.documents"]
    assert tok["folder"] == str(runs["filter"]) and len(tok["parts_sha256"]) == 64
    ok(cli(tmp_path, *small(tmp_path), *consumer_args("shard", runs["filter"], runs), "hydra.run.dir=sh"))
    shard = json.loads((tmp_path / "sh" / "provenance.json").read_text())["lineage"]["shard.documents"]
    assert shard["parts_sha256"] == tok["parts_sha256"]  # the same parts, the same bytes
    ok(cli(tmp_path, "stage=verify", f"verify.dir={tmp_path / 'sh'}"))


def test_stages_given_an_input_run_need_no_raw_file_at_all(tmp_path):
    """The raw text deleted after the filter ran (45 GB one would not keep): a tokenizer or shard stage
    given that run still runs, takes its components from the recipe's paths, and trains the same model.
    A filter run, which reads the files, still stops on a path that matches nothing."""
    write_jsonl(tmp_path / "raw" / "web.jsonl", sample_records("web_cc.jsonl.gz", 300))
    recipe = ["dataset=files", "dataset.paths=[raw/web.jsonl]", "tokenizer.vocab_size=800", "progress=false",
              "executor.workers=2", f"runs_index={tmp_path}/runs.jsonl"]
    ok(filter_run(tmp_path, *recipe, "hydra.run.dir=filt"))
    tokenizer = [*recipe, "stage=tokenizer", f"tokenizer.input_run={tmp_path / 'filt'}"]
    ok(cli(tmp_path, *tokenizer, "hydra.run.dir=tok_with_raw"))

    shutil.rmtree(tmp_path / "raw")
    one_line_error(filter_run(tmp_path, *recipe, "hydra.run.dir=refiltered"), "no file matches")
    ok(cli(tmp_path, *tokenizer, "hydra.run.dir=tok"))
    model = "tokenizer/spm_800_bpe.model"
    assert (tmp_path / "tok" / model).read_bytes() == (tmp_path / "tok_with_raw" / model).read_bytes()
    ok(cli(tmp_path, *recipe, "stage=shard", f"shard.input_run={tmp_path / 'filt'}", f"shard.tokenizer={tmp_path / 'tok'}", "hydra.run.dir=sh"))
    assert json.loads((tmp_path / "sh" / "stats.json").read_text())["status"] == "finished"
    ok(cli(tmp_path, "stage=verify", f"verify.dir={tmp_path / 'sh'}"))
    # A component the input run does not hold is still refused, before any work.
    err = one_line_error(cli(tmp_path, *tokenizer, "dataset.paths=[raw/books.jsonl]", "hydra.run.dir=tok_other"), "no component 'books'", "give the dataset that run filtered")
    assert not (tmp_path / "tok_other" / "stats.json").exists(), err


def test_an_input_run_without_a_record_of_its_parts_is_refused(runs, tmp_path):
    past = copy(runs["filter"], tmp_path / "past")
    edit_json(past / "stats.json", lambda s: s.pop("artifact_sha256"))
    (past / "filtered" / parts.FILTER_FINISHED).unlink()
    out = cli(tmp_path, *small(tmp_path), *consumer_args("tokenizer", past, runs), "hydra.run.dir=new")
    one_line_error(out, str(past), "no record of its filtered parts' sha256")
    assert not (tmp_path / "new").exists()


def test_the_filter_stages_own_record_is_checked_too(runs, tmp_path):
    """stats.json and filtered/.finished.json both record the parts: a part must match both."""
    past = copy(runs["filter"], tmp_path / "past")
    names = list(json.loads((past / "filtered/manifest.json").read_text())["components"])
    parts.check_parts(past, names, "this run")
    edit_json(past / "filtered" / parts.FILTER_FINISHED, lambda f: f["result"]["artifacts"].update({str(WEB): "0" * 64}))
    with pytest.raises(Stage2Error, match=f"{past / WEB}: sha256 .* does not match .*\\.finished\\.json .* of this run"):
        parts.check_parts(past, names, "this run")


# ---- 7. verify never passes on missing evidence ------------------------------------------------------


def stats_edit(change):
    return lambda run: edit_json(run / "stats.json", change)


def forget(*prefixes: str):
    """Files removed from the run and from stats.json's lists: only the deeper checks can notice."""

    def go(run: Path) -> None:
        def drop(stats):
            stats["artifacts"] = [r for r in stats["artifacts"] if not r.startswith(prefixes)]
            stats["artifact_sha256"] = {r: h for r, h in stats["artifact_sha256"].items() if not r.startswith(prefixes)}

        for prefix in prefixes:
            target = run / prefix
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        edit_json(run / "stats.json", drop)

    return go


def cut_in_half(name: str):
    def go(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return go


EVIDENCE = {
    "stats.json missing": (lambda run: (run / "stats.json").unlink(), ["stats.json: missing"]),
    "no artifact_sha256": (stats_edit(lambda s: s.pop("artifact_sha256")), ["stats.json: no artifact_sha256"]),
    "empty artifact_sha256": (stats_edit(lambda s: s.update(artifact_sha256={}, artifacts=[])), ["stats.json: an empty artifact_sha256"]),
    "an artifact without its sha256": (
        stats_edit(lambda s: s["artifact_sha256"].pop("shards/web/shard-00000.npy")),
        ["stats.json: shards/web/shard-00000.npy is listed in artifacts but has no sha256"],
    ),
    "no status": (stats_edit(lambda s: s.pop("status")), ["stats.json: no status"]),
    "no steps": (stats_edit(lambda s: s.pop("steps")), ["stats.json: no steps"]),
    "provenance.json missing": (lambda run: (run / "provenance.json").unlink(), ["provenance.json: missing"]),
    "provenance.json cut short": (cut_in_half("provenance.json"), ["provenance.json: not valid JSON", "damaged"]),
    "provenance.json of another run": (
        lambda run: edit_json(run / "provenance.json", lambda p: p.update(config_digest="0123456789abcdef")),
        ["provenance.json: config digest 0123456789abcdef"],
    ),
    "config.resolved.yaml missing": (lambda run: (run / "config.resolved.yaml").unlink(), ["config.resolved.yaml: missing"]),
    "config.resolved.yaml edited": (
        lambda run: (run / "config.resolved.yaml").write_text((run / "config.resolved.yaml").read_text().replace("min_chars: 200", "min_chars: 20", 1)),
        ["config.resolved.yaml: its config digest", "the recipe was changed"],
    ),
    "shards gone": (forget("shards"), ["shards/manifest.json: missing, but the run's shard step ran"]),
    "parts manifest gone": (forget("filtered/manifest.json"), ["filtered/manifest.json: missing, but the run's filter step ran"]),
    "tokenizer gone": (forget("tokenizer"), ["tokenizer: no tokenizer model among the artifacts", "the run's tokenizer step ran"]),
}


@pytest.mark.parametrize("case", list(EVIDENCE))
def test_verify_fails_on_missing_evidence_and_says_what(runs, tmp_path, case):
    damage, needles = EVIDENCE[case]
    run = copy(runs["pipeline"], tmp_path / "run")
    ok(cli(tmp_path, "stage=verify", f"verify.dir={run}"))
    damage(run)
    one_line_error(cli(tmp_path, "stage=verify", f"verify.dir={run}"), *needles)


# ---- 8. the reader --------------------------------------------------------------------------------

NAMES = ["web", "encyclopedia", "code", "noisy"]


@pytest.fixture
def shard_run(runs, tmp_path):
    return copy(runs["pipeline"], tmp_path / "run")


def test_weights_that_name_an_unknown_component_fail(shard_run):
    typo = {"web": 0.4, "encyclopedia": 0.3, "code": 0.2, "noisyy": 0.1}
    with pytest.raises(Stage2Error, match="weights: no component 'noisyy' in this run \\(its components: web, encyclopedia, code, noisy\\)"):
        reader.MixtureSampler(shard_run, weights=typo)
    with pytest.raises(Stage2Error, match="no component 'extra'"):
        reader.MixtureSampler(shard_run, weights={**dict.fromkeys(NAMES, 1.0), "extra": 1.0})


def test_weights_must_name_every_component_and_0_leaves_one_out(shard_run):
    with pytest.raises(Stage2Error, match="weights: no weight for 'encyclopedia', 'code', 'noisy': name every component"):
        reader.MixtureSampler(shard_run, weights={"web": 1.0})
    with pytest.raises(Stage2Error, match="weights: no weight for"):
        reader.MixtureSampler(shard_run, weights={})
    s = reader.MixtureSampler(shard_run, weights={"web": 1.0, "encyclopedia": 0, "code": 3.0, "noisy": 0.0})
    comp, _ = s.components_of(np.arange(10_000, dtype=np.int64))
    assert set(np.unique(comp).tolist()) == {NAMES.index("web"), NAMES.index("code")}
    assert s.weights.tolist() == [0.25, 0.0, 0.75, 0.0]


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf"), "a lot", None])
def test_weights_must_be_finite_and_not_negative(shard_run, bad):
    with pytest.raises(Stage2Error, match="weights: code=.*: a weight must be a finite number >= 0"):
        reader.MixtureSampler(shard_run, weights={"web": 1.0, "encyclopedia": 1.0, "code": bad, "noisy": 1.0})


def test_manifest_weights_are_checked_too(shard_run):
    edit_json(shard_run / "shards" / "manifest.json", lambda m: m["components"][1].update(weight=float("nan")))
    with pytest.raises(Stage2Error, match="shards/manifest.json: weights: encyclopedia=nan"):
        reader.MixtureSampler(shard_run)


SHARD = Path("shards/code/shard-00000.npy")  # 64 rows of 512 uint16 tokens, one of six shards of `code`


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1000])


def fewer_rows(path: Path) -> None:
    """A valid .npy with 40 of the 64 rows: every later row of the component would shift."""
    np.save(path, np.load(path)[:40])


def header_damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[12:40] = b"#" * 28  # inside the header's dict
    path.write_bytes(bytes(data))


def magic_damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:6] = b"NOTNPY"
    path.write_bytes(bytes(data))


def longer(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 1024)


@pytest.mark.parametrize(
    "damage,needle",
    [
        (cut_short, "\\d+ bytes, its header and index.json say \\d+: the file is cut short"),
        (fewer_rows, "the .npy header says \\(40, 512\\) uint16, index.json says \\(64, 512\\) uint16"),
        (header_damaged, "not a readable .npy shard .*: the header is damaged"),
        (magic_damaged, "not a readable .npy shard .*: the header is damaged"),
        (longer, "\\d+ bytes, its header and index.json say \\d+: the file is longer"),
    ],
)
def test_a_damaged_shard_fails_naming_the_file(shard_run, damage, needle):
    reader.MixtureSampler(shard_run, seed=1).batch(0, 160)
    damage(shard_run / SHARD)
    for make in (lambda: reader.MixtureSampler(shard_run, seed=1), lambda: reader.ComponentShards(shard_run / "shards" / "code")):
        with pytest.raises(Stage2Error, match=f"{shard_run / SHARD}: {needle}"):
            make()


@pytest.mark.parametrize("damage", [cut_short, fewer_rows, header_damaged])
def test_verify_names_a_damaged_shard(shard_run, tmp_path, damage):
    damage(shard_run / SHARD)
    one_line_error(cli(tmp_path, "stage=verify", f"verify.dir={shard_run}"), str(shard_run / SHARD))


def test_the_reader_needs_numpy_alone():
    """The reader and the shard format it is built on import nothing heavier than numpy (a blocked
    module fails its import)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('pyarrow', 'pandas', 'datasets', 'yaml', 'sentencepiece', 'hydra', 'omegaconf', 'torch'):\n"
        "    sys.modules[name] = None\n"
        "import stage2.reader\n"
        "import stage2.shards.format\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_verify_checks_shards_without_the_shard_stage():
    """verify reads shard runs through `stage2.shards.format`, as the reader does, not the shard stage."""
    import subprocess
    import sys

    code = "import sys\nimport stage2.stages.verify\nprint(sorted(m for m in sys.modules if m in ('stage2.stages.shard', 'sentencepiece')))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_stages_given_an_input_run_read_its_parts_and_no_input_file(tmp_path):
    """A tokenizer or shard stage given `input_run` reads that run's parts, never the dataset's files: it
    neither scans them (at full scale a read of all the raw text) nor records them as its inputs. So a
    raw file damaged after the filter ran stops the filter, not them."""
    paths = [write_jsonl(tmp_path / "in" / f"{name}.jsonl.gz", sample_records(f"{name}.jsonl.gz", 200)) for name in ("web_cc", "foldoc")]
    recipe = ["dataset.paths=[in/*.jsonl.gz]", "tokenizer.vocab_size=800", "progress=false"]
    ok(filter_run(tmp_path, *recipe, "hydra.run.dir=filt"))
    paths[0].write_bytes(paths[0].read_bytes()[:-40])  # cut short: a gzip stream without its end
    one_line_error(filter_run(tmp_path, *recipe, "hydra.run.dir=refiltered"), str(paths[0]))

    given = [*recipe, "dataset=files", "executor.workers=2", f"runs_index={tmp_path}/runs.jsonl"]
    ok(cli(tmp_path, *given, "stage=tokenizer", f"tokenizer.input_run={tmp_path / 'filt'}", "hydra.run.dir=tok"))
    ok(cli(tmp_path, *given, "stage=shard", f"shard.input_run={tmp_path / 'filt'}", f"shard.tokenizer={tmp_path / 'tok'}", "hydra.run.dir=sh"))
    for run in ("tok", "sh"):
        provenance = json.loads((tmp_path / run / "provenance.json").read_text())
        assert provenance["inputs"] == {}, run
        assert any(entry["folder"] == str(tmp_path / "filt") for entry in provenance["lineage"].values()), run
    ok(cli(tmp_path, "stage=verify", f"verify.dir={tmp_path / 'sh'}"))
