"""Issue #15, the cases that need no CLI: complete compressed streams pass the start-up check, the
interpreter is pinned, fallback ids stay as they were (the CLI cases: tests/cli/test_reliability.py)."""

from __future__ import annotations

import gzip
import json
import sys

import pytest
import zstandard

from helpers import REPO, sample_records, write_jsonl

RECORDS = sample_records("web_stackexchange.jsonl.gz", 50)


def jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_good_compressed_streams_pass_the_check(tmp_path):
    """Concatenated gzip members and zstd frames (pigz, pzstd, cat) are complete files, and are counted."""
    from stage2.io.sources import scan_file

    first, second = jsonl_bytes(RECORDS[:20]), jsonl_bytes(RECORDS[20:])
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(first) + gzip.compress(second) + b"\0" * 8)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor().compress(second))
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        assert scan_file(str(tmp_path / name), "json")["records"] == 50
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(first) + b"garbage")
    from stage2.errors import Stage2Error

    with pytest.raises(Stage2Error, match="record 21: cannot be read: other bytes follow the end of the gzip stream"):
        scan_file(str(tmp_path / "b.jsonl.gz"), "json")


def test_the_interpreter_is_pinned_and_a_different_one_is_reported():
    from stage2.runtime.run import python_pin

    pinned = (REPO / ".python-version").read_text().strip()
    assert "{}.{}".format(*sys.version_info[:2]) == pinned  # `uv run` chose it
    assert python_pin()["matches"] is True
    other = python_pin((3, 12, 4))
    assert other["matches"] is False and "results may differ" in other["note"] and pinned in other["note"]


def test_fallback_ids_stay_as_they_were_unless_names_collide(tmp_path):
    from stage2.config import ComponentConfig, DatasetConfig
    from stage2.io.sources import iter_documents, resolve_components

    write_jsonl(tmp_path / "d" / "part.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "d" / "part.jsonl.gz", [{"text": "b"}])
    write_jsonl(tmp_path / "d" / "other.jsonl", [{"text": "c"}])
    [spec] = resolve_components(DatasetConfig(components={"mix": ComponentConfig(data_files=["d/*"])}), str(tmp_path))
    assert sorted(d.id for d in iter_documents(spec)) == ["mix/other/1", "mix/part.jsonl.gz/1", "mix/part.jsonl/1"]
