"""Bad input: a one-line error naming the file, the record and the problem, exit 1, nothing half-written."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, sample_records, tmpfs, write_jsonl

pytestmark = pytest.mark.slow

GOOD = sample_records("web_stackexchange.jsonl.gz", 12)


def run_filter(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stage2"), "stage=filter", "dataset=files", "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def assert_clean_failure(tmp_path: Path, out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("stage2: error: ")
    for needle in needles:
        assert needle in last, last
    assert "Traceback" not in out.stderr
    message = last.removeprefix("stage2: error: ")
    assert (out.stdout + out.stderr).count(message) == 1  # said once on the terminal (not also as a log line)
    run_dir = tmp_path / "run"
    if (run_dir / "stage2.log").exists():
        assert message in (run_dir / "stage2.log").read_text()  # and kept in the run's log
    leftovers = [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
    if (run_dir / "stats.json").exists():
        assert json.loads((run_dir / "stats.json").read_text())["status"] != "finished"
    assert not (tmp_path / "runs.jsonl").exists()  # a failed run is not indexed as a run
    return last


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(l + b"\n" for l in lines))
    return path


def good_lines(n: int) -> list[bytes]:
    return [json.dumps(r).encode() for r in GOOD[:n]]


def test_malformed_json_line_names_file_and_record(tmp_path):
    write_lines(tmp_path / "docs.jsonl", good_lines(5) + [b'{"id": "x", "text": "unterminated'] + good_lines(3))
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]")
    assert_clean_failure(tmp_path, out, "docs.jsonl", "record 6", "malformed JSON on line 6")


def test_malformed_json_line_is_skipped_and_counted_when_asked(tmp_path):
    write_lines(tmp_path / "docs.jsonl", good_lines(5) + [b'{"id": "x", "text": "unterminated'] + good_lines(3))
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]", "filter.on_bad_record=skip")
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["docs"]
    assert stats["records_in"] == 9 and stats["dropped"]["invalid"] == 1
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["records_in"]


@pytest.mark.parametrize(
    "record,needle",
    [({"id": "n", "text": None}, "is null"), ({"id": "i", "text": 42}, "is int, not a string")],
)
def test_null_or_non_string_text(tmp_path, record, needle):
    write_jsonl(tmp_path / "docs.jsonl", GOOD[:3] + [record] + GOOD[3:5])
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]")
    assert_clean_failure(tmp_path, out, "docs.jsonl", "record 4", needle)


def test_missing_text_column(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", [{"id": r["id"], "body": r["text"]} for r in GOOD[:4]])
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]")
    assert_clean_failure(tmp_path, out, "docs.jsonl", "record 1", "no text column 'text'")
    # The same files read with the right column name work.
    ok = run_filter(tmp_path, "dataset.paths=[docs.jsonl]", "dataset.text_column=body", "hydra.run.dir=run2")
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_invalid_utf8(tmp_path):
    write_lines(tmp_path / "docs.jsonl", good_lines(2) + [b'{"id": "u", "text": "caf\xe9 au lait"}'] + good_lines(1))
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]")
    assert_clean_failure(tmp_path, out, "docs.jsonl", "record 3", "invalid UTF-8")


def test_invalid_utf8_inside_gzip(tmp_path):
    with gzip.open(tmp_path / "docs.jsonl.gz", "wb") as f:
        f.write(b"".join(l + b"\n" for l in good_lines(4) + [b'{"id": "u", "text": "\xff\xfe"}']))
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl.gz]")
    assert_clean_failure(tmp_path, out, "docs.jsonl.gz", "record 5", "invalid UTF-8")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = run_filter(tmp_path, "dataset.paths=[empty.jsonl]")
    assert_clean_failure(tmp_path, out, "empty.jsonl", "empty")


def test_glob_matching_nothing(tmp_path):
    out = run_filter(tmp_path, "dataset.paths=[nowhere/*.jsonl.gz]")
    assert_clean_failure(tmp_path, out, "nowhere/*.jsonl.gz", "no file matches")


def test_a_language_the_detector_never_reports_fails_at_start(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", GOOD[:5])
    out = run_filter(tmp_path, "dataset.paths=[docs.jsonl]", "filter.languages=[en,zh]")
    assert_clean_failure(tmp_path, out, "filter.languages", "'zh'")
    assert not (tmp_path / "run" / "filtered").exists()


def test_verbose_shows_the_traceback(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = run_filter(tmp_path, "dataset.paths=[empty.jsonl]", "verbose=true")
    assert out.returncode != 0 and "Traceback" in out.stderr and "Stage2Error" in out.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs), so that writing really runs out of space."""
    with tmpfs(tmp_path / "disk", "256k") as disk:
        yield disk


def test_disk_full_while_writing(tmp_path, small_disk):
    records = sample_records("foldoc.jsonl.gz", 3000)
    write_jsonl(tmp_path / "docs.jsonl", records)
    out = subprocess.run(
        [str(BIN / "stage2"), "stage=filter", "dataset=files", "dataset.paths=[docs.jsonl]", f"hydra.run.dir={small_disk}/run",
         f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "filter.lang_backend=fasttext", "dataset.partition_size=500"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("stage2: error: ") and "No space left on device" in last and str(small_disk) in last
    assert "Traceback" not in out.stderr
    assert not [p for p in small_disk.rglob("*") if ".tmp-" in p.name]
    assert not (tmp_path / "runs.jsonl").exists()


def run_stage2(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stage2"), "hydra.run.dir=run", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )


def test_unreachable_hub_dataset_exits_with_a_hint(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # fail at once instead of retrying the network
    out = run_stage2(tmp_path, "stage=filter", "dataset=refinedweb_mix", env=env)
    assert_clean_failure(tmp_path, out, "HuggingFaceFW/fineweb", "local files")


def test_vocab_too_large_for_the_sample_names_the_largest_size(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", GOOD)
    out = run_stage2(tmp_path, "stage=tokenizer", "dataset=files", "dataset.paths=[docs.jsonl]", "tokenizer.vocab_size=50000")
    last = assert_clean_failure(tmp_path, out, "tokenizer.vocab_size=50000", "at most", "hard_vocab_limit=false")
    assert not list((tmp_path / "run").rglob("*.model"))
    largest = int(last.split("at most ")[1].split()[0])
    ok = run_stage2(tmp_path, "stage=tokenizer", "dataset=files", "dataset.paths=[docs.jsonl]", f"tokenizer.vocab_size={largest}", "hydra.run.dir=run2")
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_seq_len_below_two(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", GOOD)
    out = run_stage2(tmp_path, "dataset=files", "dataset.paths=[docs.jsonl]", "shard.seq_len=1")
    assert_clean_failure(tmp_path, out, "shard.seq_len=1", "at least 2 tokens")
    assert not (tmp_path / "run" / "stats.json").exists()  # refused at start-up, before any stage ran


def test_a_component_left_empty_by_the_filter(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", GOOD)
    write_jsonl(tmp_path / "tiny.jsonl", [{"id": f"t{i}", "text": f"short text {i}"} for i in range(5)])
    out = run_stage2(tmp_path, "dataset=files", "dataset.paths=[docs.jsonl,tiny.jsonl]", "tokenizer.vocab_size=400")
    assert_clean_failure(tmp_path, out, "tiny", "no document")
