"""Issue #22 (points 2, 9, 11, part of 10 and 12), through the real CLI: whose a folder is, Ctrl-C and
SIGTERM, Hydra's own errors in one line, failed runs that leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, SMALL_SAMPLE, artifact_hashes, cli, filter_run, one_line_error, sample_records, tmpfs, tree, write_jsonl

pytestmark = pytest.mark.slow

RECORDS = sample_records("web_stackexchange.jsonl.gz", 50)


def only_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1 and one line on stderr, `stage2: error: ...`, naming every needle; no traceback."""
    last = one_line_error(out, *needles)
    assert out.stderr.strip().splitlines() == [last], out.stderr[-3000:]
    return last


# ---- 11. Hydra's own errors --------------------------------------------------------------------


def test_hydra_errors_are_one_line(tmp_path):
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "mine.yaml").write_text("components:\n  a: [1, 2\n  b: }\n")
    broken = ["--config-dir", "conf", "dataset=mine", "stage=filter"]
    only_line(cli(tmp_path, *broken), f"{tmp_path / 'conf' / 'dataset' / 'mine.yaml'}: line 3, column 4", "not valid YAML")
    only_line(cli(tmp_path, "dataset=nope"), "dataset/nope", "available: files, refinedweb_mix, sample")
    only_line(cli(tmp_path, "stage=["), "stage=[")
    only_line(cli(tmp_path, "filter.min_chars=abc"), "filter.min_chars=abc", "could not be converted to Integer")
    # A mistake in a group option of one's own: the file, the key and what is wrong (not only Hydra's
    # "ValidationError raised while composing config").
    (tmp_path / "conf" / "filter").mkdir()
    (tmp_path / "conf" / "filter" / "wrongtype.yaml").write_text("defaults:\n  - default\n  - _self_\nmin_chars: abc\n")
    (tmp_path / "conf" / "filter" / "typo.yaml").write_text("defaults:\n  - default\n  - _self_\nmin_charz: 5\n")
    (tmp_path / "conf" / "dataset" / "norwegian.yaml").write_text("defaults:\n  - sample\n  - _self_\ncomponents:\n  no:\n    data_files: [a.jsonl]\n")
    only_line(cli(tmp_path, "--config-dir", "conf", "filter=wrongtype"), "In 'filter/wrongtype': filter.min_chars: Value 'abc'", "could not be converted to Integer")
    only_line(cli(tmp_path, "--config-dir", "conf", "filter=typo"), "In 'filter/typo': filter.min_charz: no such key", "did you mean filter.min_chars?")
    only_line(cli(tmp_path, "--config-dir", "conf", "dataset=norwegian"), "In 'dataset/norwegian'", "Key False (bool)", "quote the name")
    # A fault the schema check finds after composition (a component's key): the file too, unless the
    # command line set that key.
    (tmp_path / "conf" / "dataset" / "ctypo.yaml").write_text("defaults:\n  - sample\n  - _self_\ncomponents:\n  web:\n    lang_fliter: false\n    weight: -2\n")
    only_line(cli(tmp_path, "--config-dir", "conf", "dataset=ctypo"),
              f"In 'dataset/ctypo' ({tmp_path / 'conf' / 'dataset' / 'ctypo.yaml'}): dataset.components.web.lang_fliter: no such key")
    said = only_line(cli(tmp_path, "dataset.components.web.lang_fliter=false"), "dataset.components.web.lang_fliter: no such key")
    assert "In '" not in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]
    verbose = cli(tmp_path, *broken, "verbose=true")  # the traceback stays one override away
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "ParserError" in verbose.stderr


def test_verbose_shows_the_traceback_and_still_leaves_no_folder_for_a_bad_record(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", [*RECORDS[:3], {"id": "x", "text": None}])
    for verbose in ("false", "true"):
        out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", f"verbose={verbose}", f"hydra.run.dir=run-{verbose}")
        assert out.returncode == 1 and "record 4: text column 'text' is null" in out.stderr, out.stderr[-2000:]
        assert ("Traceback" in out.stderr) == (verbose == "true")
        assert not (tmp_path / f"run-{verbose}").exists()  # the same folder handling either way


def test_a_sweep_that_cannot_make_its_folder_says_so_in_one_line(tmp_path):
    (tmp_path / "multirun").write_text("mine\n")
    only_line(cli(tmp_path, "--multirun", "stage=report", "report.stage=filter,shard"), f"{tmp_path / 'multirun'} is a file, not a folder")
    assert (tmp_path / "multirun").read_text() == "mine\n"
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        only_line(cli(ro, "--multirun", "stage=report", "report.stage=filter,shard"), f"{ro / 'multirun'}", "cannot create the sweep folder")
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_a_sweep_whose_jobs_would_share_a_folder_is_refused(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:3])
    out = cli(tmp_path, "--multirun", "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "filter.min_chars=5,6", "hydra.sweep.subdir=same")
    only_line(out, "hydra.sweep.subdir=same", "the same folder")
    assert not (tmp_path / "multirun").exists()
    ok = cli(tmp_path, "--multirun", "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "filter.min_chars=5,6",
             "hydra.sweep.subdir=${hydra.job.override_dirname}", "hydra.sweep.dir=named")
    assert ok.returncode == 0, ok.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "named").iterdir() if p.is_dir())
    assert len(jobs) == 2 and jobs[0].endswith("filter.min_chars=5,stage=filter") and jobs[1].endswith("filter.min_chars=6,stage=filter")
    summary = (tmp_path / "named" / "summary.md").read_text()  # the jobs found by their .hydra/, not a number
    assert "2 jobs; swept: filter.min_chars" in summary, summary


def test_a_sweep_whose_jobs_do_not_compose_leaves_no_folder(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:3])
    out = cli(tmp_path, "--multirun", "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "filter.min_chars=abc,5")
    only_line(out, "filter.min_chars=abc")
    assert not (tmp_path / "multirun").exists()  # no sweep folder holding only multirun.yaml


# ---- 2, 12. a folder is a run's or nobody's ----------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:12])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    (tmp_path / "mine" / "stats.json").write_text('{"mine": true}\n')  # a name stage2 uses, but not its run
    (tmp_path / "mine" / ".env").write_text("SECRET=1\n")
    before = tree(tmp_path / "mine")
    for args in ([], ["resume=true"]):
        out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", "hydra.run.dir=mine", *args)
        only_line(out, f"{tmp_path / 'mine'} is not empty and holds no stage2 run", "choose an empty or new folder")
        assert tree(tmp_path / "mine") == before
    (tmp_path / "afile").write_text("a file\n")
    for target in ("afile", "afile/run"):
        only_line(filter_run(tmp_path, "dataset.paths=[docs.jsonl]", f"hydra.run.dir={target}"), f"{tmp_path / 'afile'} is a file, not a folder")
        assert (tmp_path / "afile").read_text() == "a file\n"
    out = cli(tmp_path, "--multirun", "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", "hydra.sweep.dir=mine", "filter.min_chars=1,2")
    only_line(out, f"{tmp_path / 'mine'} is not empty and holds no stage2 sweep")
    assert tree(tmp_path / "mine") == before
    assert not (tmp_path / "runs.jsonl").exists()

    (tmp_path / "empty").mkdir()  # an empty folder is fine, and so is one a killed start left
    assert filter_run(tmp_path, "dataset.paths=[docs.jsonl]", "hydra.run.dir=empty").returncode == 0
    started = tmp_path / "killed_start"
    shutil_copy_hydra(tmp_path / "empty", started)
    out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", "hydra.run.dir=killed_start")
    assert out.returncode == 0, out.stderr[-2000:]
    assert artifact_hashes(started) == artifact_hashes(tmp_path / "empty")


def shutil_copy_hydra(run: Path, to: Path) -> None:
    """What a stage2 start killed before its first stats.json leaves: Hydra's record, the log, the lock file,
    the recipe and provenance."""
    import shutil

    to.mkdir()
    shutil.copytree(run / ".hydra", to / ".hydra")
    for name in ("stage2.log", "config.resolved.yaml", "provenance.json"):
        shutil.copy(run / name, to / name)
    (to / ".stage2.lock").write_text("999999\n")


def test_runs_that_fail_on_their_input_leave_no_folder(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:12])
    (tmp_path / "bad.jsonl").write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    only_line(filter_run(tmp_path, "dataset.paths=[bad.jsonl]"), "bad.jsonl: record 2")
    only_line(filter_run(tmp_path, "dataset.paths=[bad.jsonl]", "hydra.run.dir=run"), "bad.jsonl: record 2")
    (tmp_path / "given").mkdir()  # an empty folder given as hydra.run.dir: empty again
    only_line(filter_run(tmp_path, "dataset.paths=[bad.jsonl]", "hydra.run.dir=given"), "bad.jsonl: record 2")
    assert list((tmp_path / "given").iterdir()) == []
    write_jsonl(tmp_path / "tiny.jsonl", [{"id": f"t{i}", "text": f"short text {i}"} for i in range(5)])
    out = cli(tmp_path, "dataset=files", "dataset.paths=[docs.jsonl,tiny.jsonl]", "tokenizer.vocab_size=400", "executor.workers=1",
              f"runs_index={tmp_path}/runs.jsonl")
    only_line(out, "component tiny: no document left after filtering")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "run").exists()
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_wrong_input_run_or_runs_index_is_refused_at_start_up(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:12])
    (tmp_path / "notarun").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "stats.json").write_text('{"status": "running"}')
    tok = ["stage=tokenizer", "dataset=files", "dataset.paths=[docs.jsonl]", "executor.workers=1", f"runs_index={tmp_path}/runs.jsonl"]
    cases = [("nowhere", "no such folder"), ("notarun", "not a stage2 run folder"), ("unfinished", "did not finish (status running)"),
             ("docs.jsonl", "not a folder")]
    for given, needle in cases:
        out = cli(tmp_path, *tok, f"tokenizer.input_run={given}")
        only_line(out, f"tokenizer.input_run={tmp_path / given}", needle)
    (tmp_path / "index_dir").mkdir()
    for index, needle in ((tmp_path / "index_dir", "it is a folder"), (tmp_path / "docs.jsonl" / "runs.jsonl", "is a file, not a folder")):
        out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", f"runs_index={index}")  # (the last runs_index wins)
        only_line(out, f"runs_index={index}: cannot be written", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "index_dir", "notarun", "unfinished"]


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        yield disk


@pytest.mark.parametrize("workers", [1, 2])  # 2: the write fails in a worker process, whose error arrives without its OSError
def test_a_run_the_disk_stopped_is_kept_and_resumes(tmp_path, small_disk, workers):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:50])
    args = ["dataset.paths=[docs.jsonl]", "filter.min_chars=10", "filter.lang_check=null", "filter.function_words=0", "filter.lang_threshold=0",
            f"executor.workers={workers}", "dataset.partition_size=10"]
    assert filter_run(tmp_path, *args, "hydra.run.dir=fresh").returncode == 0
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (1024 * 1024 - 120 * 1024))  # room for the run's records, not for its parts
    out = filter_run(tmp_path, *args, f"hydra.run.dir={small_disk}/run")
    only_line(out, "No space left on device")
    # Kept: a resume needs it. ("running" when the full disk left no room to mark it failed either.)
    assert json.loads((small_disk / "run" / "stats.json").read_text())["status"] in (("failed", "running") if workers > 1 else ("failed",))
    filler.unlink()
    again = cli(tmp_path, str(small_disk / "run"), "resume=true", command="stage2-rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    assert artifact_hashes(small_disk / "run") == artifact_hashes(tmp_path / "fresh")


# ---- 9. Ctrl-C and SIGTERM ---------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def interrupt(cwd: Path, args: list[str], run_dir: Path, sig: int, ready, extra_delay: float = 0.0) -> subprocess.CompletedProcess:
    """Start `stage2 <args>`, wait until `ready(run_dir, pid)`, then send `sig` as a terminal (Ctrl-C: to
    the process group) or `kill` (SIGTERM: to the driver alone) would; the finished process."""
    proc = subprocess.Popen([str(BIN / "stage2"), *args, f"hydra.run.dir={run_dir}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not ready(run_dir, proc.pid):
            assert proc.poll() is None, f"stage2 ended before the signal point: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(extra_delay)
        workers = children(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)  # a hang fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10  # the workers (and multiprocessing's resource tracker) are gone with their driver
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in workers if alive(pid)] == []
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def status(run_dir: Path):
    try:
        return json.loads((run_dir / "stats.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def working(stage: str):
    """Ready once the run is under way in `stage` with its pool of workers up."""
    def ready(run_dir: Path, pid: int) -> bool:
        if status(run_dir) != "running" or len(children(pid)) < 2:
            return False
        return stage != "filter" or (run_dir / "filtered" / ".work").exists()
    return ready


def assert_interrupted(out: subprocess.CompletedProcess, run_dir: Path, sig: int) -> None:
    assert out.returncode == 128 + sig, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert lines == [lines[-1]] and lines[-1].startswith(f"stage2: interrupted ({name}); "), out.stderr[-3000:]
    assert f"stage2-rerun {run_dir} resume=true" in lines[-1]
    assert status(run_dir) == "interrupted"
    assert not (run_dir / ".stage2.lock").exists()
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def sample_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("signals")
    recipe = ["stage=pipeline", *SMALL_SAMPLE, "executor.workers=2", "progress=false", f"runs_index={base}/runs.jsonl"]
    out = cli(base, *recipe, "hydra.run.dir=fresh")
    assert out.returncode == 0, out.stderr[-2000:]
    return base, recipe


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_cleanly_and_resumes(sample_base, sig):
    base, recipe = sample_base
    for attempt, (stage, delay) in enumerate([("filter", 0.0), ("tokenizer", 0.0), ("tokenizer", 0.3), ("filter", 0.2)]):
        run_dir = base / f"run-{sig}-{attempt}"
        args = recipe if stage == "filter" else [*recipe, "stage=tokenizer"]
        out = interrupt(base, args, run_dir, sig, working(stage), delay)
        assert_interrupted(out, run_dir, sig)
    again = cli(base, str(base / f"run-{sig}-0"), "resume=true", command="stage2-rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    assert artifact_hashes(base / f"run-{sig}-0") == artifact_hashes(base / "fresh")


def test_a_killed_worker_says_how_to_resume_and_the_resume_completes(sample_base):
    # What the kernel's out-of-memory killer does: one worker gone mid-stage. Not "an error stage2 did not
    # expect": the folder is kept, the line says how to go on, and the resume gives the fresh run's bytes.
    base, recipe = sample_base
    run_dir = base / "worker-killed"
    proc = subprocess.Popen([str(BIN / "stage2"), *recipe, f"hydra.run.dir={run_dir}"], cwd=base, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not working("filter")(run_dir, proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.005)
        os.kill(children(proc.pid)[-1], signal.SIGKILL)  # the newest child: a pool worker (the first is the resource tracker)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("stage2: error: a worker process ended abruptly") and f"stage2-rerun {run_dir} resume=true" in lines[-1], stderr[-3000:]
    assert status(run_dir) == "failed"
    again = cli(base, str(run_dir), "resume=true", command="stage2-rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    assert artifact_hashes(run_dir) == artifact_hashes(base / "fresh")


def test_a_failing_start_with_workers_exits_without_a_traceback(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:12])
    args = ["dataset.paths=[docs.jsonl]", "executor.workers=2"]
    assert filter_run(tmp_path, *args, "hydra.run.dir=fin").returncode == 0
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:13])
    for _ in range(8):  # refused after the workers scanned the inputs: the pool is closed on the way out (1 in 6 printed an OSError)
        out = cli(tmp_path, str(tmp_path / "fin"), "resume=true", "executor.workers=2", command="stage2-rerun")
        only_line(out, "inputs differ")
