"""Issue #15: nothing accepted that is broken, nothing overwritten that is finished.

Each case runs the real CLI on tiny real files and checks the exit code, the one-line message (file and
record named, no traceback) and that nothing already written changed (or that no folder was written).
The cases that need no CLI are in tests/unit/test_reliability_core.py.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
from pathlib import Path

import pytest
import zstandard

from helpers import BIN, cli, filter_run, one_line_error, sample_records, tree, write_jsonl

pytestmark = pytest.mark.slow

RECORDS = sample_records("web_stackexchange.jsonl.gz", 50)


def jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished filter run (12 documents): the folder, its launch directory and its files' hashes."""
    base = tmp_path_factory.mktemp("finished")
    write_jsonl(base / "docs.jsonl", RECORDS[:12])
    out = filter_run(base, "dataset.paths=[docs.jsonl]", "hydra.run.dir=fin")
    assert out.returncode == 0, out.stderr[-2000:]
    return base, base / "fin", tree(base / "fin"), out


# ---- 1. compressed input read to its end-of-stream marker -------------------------------------


def zst_cut_on_a_block_boundary(path: Path) -> None:
    """50 records written as zstd blocks of 10, the file cut after the third block (record 30)."""
    buf, cuts = io.BytesIO(), []
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as writer:
        for start in range(0, 50, 10):
            writer.write(jsonl_bytes(RECORDS[start : start + 10]))
            writer.flush(zstandard.FLUSH_BLOCK)
            cuts.append(buf.tell())
    path.write_bytes(buf.getvalue()[: cuts[2]])


def gz_cut_short(path: Path) -> None:
    data = gzip.compress(jsonl_bytes(RECORDS))
    path.write_bytes(data[: len(data) * 6 // 10])


def gz_corrupt(path: Path) -> None:
    data = bytearray(gzip.compress(jsonl_bytes(RECORDS)))
    data[len(data) // 2 : len(data) // 2 + 64] = b"x" * 64
    path.write_bytes(bytes(data))


def gz_not_compressed(path: Path) -> None:
    path.write_bytes(jsonl_bytes(RECORDS))


@pytest.mark.parametrize(
    "name,make,needles",
    [
        ("docs.jsonl.zst", zst_cut_on_a_block_boundary, ["record 31:", "truncated zstd stream", "records 1-30 are complete"]),
        ("docs.jsonl.gz", gz_cut_short, ["truncated gzip stream", "are complete"]),
        # The damaged bytes still inflate, to wrong text, until the library notices (here at the checksum at
        # the stream's end): no record before that point can be called complete.
        ("docs.jsonl.gz", gz_corrupt, ["corrupt gzip data, found by byte", "no record of it can be trusted"]),
        ("docs.jsonl.gz", gz_not_compressed, ["record 1:", "not gzip-compressed"]),
    ],
    ids=["zst-cut-on-block", "gz-cut", "gz-corrupt", "plain-named-gz"],
)
def test_damaged_compressed_input_fails_at_start_up(tmp_path, name, make, needles):
    make(tmp_path / name)
    out = filter_run(tmp_path, f"dataset.paths=[{name}]")  # the default, timestamped run folder
    one_line_error(out, str(tmp_path / name), *needles)
    assert not (tmp_path / "outputs").exists()  # refused before the run owned a folder: none is left
    assert not (tmp_path / "runs.jsonl").exists()


# ---- 2, 8, 9, 10. a refused resume changes nothing; bookkeeping of resumes -------------------


def test_a_refused_resume_leaves_the_finished_run_as_it_was(tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", RECORDS[:12])
    first = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", "hydra.run.dir=fin")
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "fin"
    # 10: the end of a run is a table per component besides the folder.
    table = first.stdout.splitlines()
    assert table[-1] == f"stage2: filter finished; run folder: {run}"
    assert table[-3].split() == ["component", "in", "kept", "dropped"] and table[-2].split()[:2] == ["docs", "12"]
    before = tree(run)

    original = data.read_bytes()
    data.write_bytes(original + jsonl_bytes([{"id": "new", "text": "x" * 300}]))
    for extra in ([], ["allow_changed_inputs=true"]):  # the message and the behaviour agree: no way round it
        out = cli(tmp_path, str(run), "resume=true", *extra, command="stage2-rerun")
        last = one_line_error(out, "inputs differ", "docs.jsonl (content changed)", "a resume cannot mix", f"stage2-rerun {run} allow_changed_inputs=true")
        assert "runs it anyway" not in last
        assert tree(run) == before  # stats.json still finished, no log line, no lock file
    from stage2.stages.verify import verify_folder

    verify_folder(run)  # still a good run

    data.write_bytes(original)
    # Another recipe: refused, naming the keys that differ.
    out = cli(tmp_path, str(run), "resume=true", "filter.min_chars=7", command="stage2-rerun")
    one_line_error(out, "cannot resume: the recipe differs", "filter.min_chars: 200 -> 7", "rerun into a new folder")
    assert tree(run) == before
    stale = run / f".stats.json.tmp-{dead_pid()}"  # 8: what a run killed while writing stats.json leaves
    stale.write_text("{")
    again = cli(tmp_path, str(run), "resume=true", command="stage2-rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not stale.exists() and not (run / ".stage2.lock").exists()
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 1  # indexed once
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["steps"] == ["filter"] and len(provenance["resumed"]) == 1
    assert provenance["python_pin"]["matches"] is True  # 9


# ---- 3. one process per run folder ------------------------------------------------------------


def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    from stage2.runtime import folder

    # Two folders of one glob holding files of the same stem, records without ids (6: unique ids).
    write_jsonl(tmp_path / "in" / "a" / "noid.jsonl", [{"text": r["text"]} for r in RECORDS[:3]])
    write_jsonl(tmp_path / "in" / "b" / "noid.jsonl", [{"text": r["text"]} for r in RECORDS[3:6]])
    # A JSON array's records are not counted at start-up: the bar has no total then (10).
    (tmp_path / "arr.json").write_text(json.dumps([{"text": r["text"]} for r in RECORDS[6:9]]))
    args = ["dataset.paths=[in/*/noid.jsonl,arr.json]", "hydra.run.dir=run", "filter.min_chars=10", "filter.dedup.near=false",
            "filter.lang_check=null", "filter.function_words=0", "filter.lang_threshold=0"]

    folder.lock(tmp_path / "run")  # this test's process holds the folder, as a running stage2 would
    try:
        out = filter_run(tmp_path, *args)
        one_line_error(out, str(tmp_path / "run"), f"another stage2 process (pid {os.getpid()})")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".stage2.lock"]  # nothing written
    finally:
        folder.release(tmp_path / "run")

    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / ".stage2.lock").write_text(f"{dead_pid()}\n")  # the lock file of a killed run
    out = run_on_a_terminal(tmp_path, "stage=filter", "dataset=files", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", *args)
    assert out["returncode"] == 0, out["terminal"][-2000:]
    assert "which is no longer running" in (tmp_path / "run" / "stage2.log").read_text()
    assert not (tmp_path / "run" / ".stage2.lock").exists()
    # 10: on a terminal the bar counts the documents read; with every count known at start-up it has a total.
    bars = [line for line in out["terminal"].replace("\r", "\n").splitlines() if line.startswith("filter:")]
    assert bars and "9doc" in bars[-1].replace(" ", "").replace(".00", "") and "%|" not in bars[-1]
    out = run_on_a_terminal(tmp_path, "stage=filter", "dataset=files", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1",
                            "dataset.paths=[in/*/noid.jsonl]", "hydra.run.dir=counted", *args[2:])
    bars = [line for line in out["terminal"].replace("\r", "\n").splitlines() if line.startswith("filter:")]
    assert "100%" in bars[-1] and "6/6" in bars[-1].replace(".00", ""), bars

    import pyarrow.parquet as pq

    parts = json.loads((tmp_path / "run" / "filtered" / "manifest.json").read_text())["components"]["noid"]["parts"]
    ids = [i for rel in parts for i in pq.ParquetFile(tmp_path / "run" / rel).read(columns=["id"]).column("id").to_pylist()]
    assert ids == [f"noid/a/noid/{i}" for i in (1, 2, 3)] + [f"noid/b/noid/{i}" for i in (1, 2, 3)]


def run_on_a_terminal(cwd: Path, *args: str) -> dict:
    """The CLI with its stderr on a pseudo-terminal (120 columns), as a user sees it: tqdm draws its bars."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([str(BIN / "stage2"), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.communicate(timeout=300)[0]
    return {"returncode": proc.returncode, "terminal": b"".join(chunks).decode("utf-8", "replace"), "stdout": stdout.decode()}


# ---- 4. Unicode and I/O errors in one line -----------------------------------------------------


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_lone_surrogate_is_an_invalid_record(tmp_path, policy):
    lines = [json.dumps(r) for r in RECORDS[:4]]
    lines.insert(2, json.dumps({"id": "s", "text": "caf\ud800 " * 60}))  # json.dumps spells it "\ud800"
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="ascii")
    out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]", "hydra.run.dir=run", f"filter.on_bad_record={policy}")
    if policy == "fail":
        one_line_error(out, str(tmp_path / "docs.jsonl"), "record 3:", "lone surrogate \\ud800 at character 4")
        assert not (tmp_path / "run").exists()  # failed on its input: nothing to resume, no run folder left
        return
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["docs"]
    assert counts["records_in"] == 5 and counts["dropped"]["invalid"] == 1


def test_an_io_error_names_the_file(tmp_path):
    # A real I/O error: reading offset 0 of a process's own memory fails with EIO.
    os.symlink("/proc/self/mem", tmp_path / "mem.jsonl")
    out = filter_run(tmp_path, "dataset.paths=[mem.jsonl]")
    one_line_error(out, f"{tmp_path / 'mem.jsonl'}: cannot be read: Input/output error")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_names_the_file(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:3]).chmod(0)
    out = filter_run(tmp_path, "dataset.paths=[docs.jsonl]")
    one_line_error(out, f"{tmp_path / 'docs.jsonl'}: cannot be read: Permission denied")


def test_verify_of_a_corrupt_stats_json_names_it(finished, tmp_path):
    _, run, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "stats.json").write_text('{"status": "finished", "artifacts": [')  # cut short
    out = cli(tmp_path, "stage=verify", f"verify.dir={copy}")
    one_line_error(out, f"{copy / 'stats.json'}: not valid JSON", "damaged")
    assert not (tmp_path / "outputs").exists()


# ---- 5. range checks at start-up ---------------------------------------------------------------


@pytest.mark.parametrize(
    "override,needle",
    [
        ("dataset.max_records=-1", "dataset.max_records=-1 must be 1 or more"),
        ("executor.workers=-1", "executor.workers=-1 must be 0 (one per core) or more"),
        ("executor.max_in_flight=-2", "executor.max_in_flight=-2 must be 0"),
        ("filter.lang_max_chars=0", "filter.lang_max_chars=0 must be at least 1"),
        ("tokenizer.vocab_size=100", "tokenizer.vocab_size=100 is below the"),  # (4 special + 256 byte pieces + characters)
    ],
)
def test_out_of_range_values_fail_before_any_work(tmp_path, override, needle):
    write_jsonl(tmp_path / "docs.jsonl", RECORDS[:3])
    # A pipeline: the vocabulary check must come before its filter stage, not after it.
    out = cli(tmp_path, "dataset=files", "dataset.paths=[docs.jsonl]", f"runs_index={tmp_path}/runs.jsonl", override)
    one_line_error(out, needle)
    assert not (tmp_path / "outputs").exists()


# ---- 7. read-only commands write no folder ----------------------------------------------------


def test_verify_and_report_write_no_run_folder(finished):
    base, run, hashes, _ = finished
    for args in (["stage=verify", f"verify.dir={run}"], ["stage=report", f"runs_index={base}/runs.jsonl"], ["stage=report", f"report.dir={run}"]):
        out = cli(base, *args)
        assert out.returncode == 0, out.stderr[-2000:]
        assert not (base / "outputs").exists(), args
    assert tree(run) == hashes
    # A wrong path is refused at start-up: no folder either.
    one_line_error(cli(base, "stage=filter", "dataset=files", "dataset.paths=[nowhere.jsonl]"), "no file matches")
    assert not (base / "outputs").exists()


# ---- 8, 9. versions, help, the pinned interpreter ---------------------------------------------


def test_version_and_rerun_help():
    import stage2

    out = subprocess.run([str(BIN / "stage2"), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(f"stage2 {stage2.__version__} ")
    out = subprocess.run([str(BIN / "stage2-rerun"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "resume=true" in out.stdout and "allow_changed_inputs=true" in out.stdout
    assert len(out.stdout.splitlines()) > 5
