"""Issue #22, the run's own boundaries, on the stage functions alone: shard clean-up deletes only the files
the stage writes, a changed shard is not kept by a resume, ids and JSON values are read as written (the
cases through the real CLI: tests/cli/test_boundaries_core_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers import write_jsonl


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_shard_cleanup_deletes_only_files_the_stage_writes(tmp_path):
    from stage2.stages.shard import _clean_split

    folder = tmp_path / "shards" / "web"
    folder.mkdir(parents=True)
    for name in ("shard-00000.npy", "shard-00001.npy", ".shard-00002.npy.tmp-123", "my_embeddings.npy", ".env", "notes.txt"):
        (folder / name).write_bytes(b"x")
    _clean_split(folder, [{"file": "shard-00000.npy"}])
    assert sorted(p.name for p in folder.iterdir()) == [".env", "my_embeddings.npy", "notes.txt", "shard-00000.npy"]


def test_a_changed_shard_is_not_kept_by_a_resume(tmp_path):
    from stage2.shards.format import DOCUMENTS, document_rows, write_documents, write_shard
    from stage2.stages.shard import find_resume, partition_key

    folder = tmp_path / "web"
    rows = np.arange(64, dtype=np.uint16).reshape(2, 32)
    (folder / ".work").mkdir(parents=True)
    (folder / "validation").mkdir()
    key = partition_key("t", np.dtype(np.uint16), 0.5)
    indexes = []
    for split, sub, shards in (("train", folder, [write_shard(folder / "shard-00000.npy", rows)]), ("validation", folder / "validation", [])):
        table = write_documents(sub / DOCUMENTS, [document_rows(["a"], ["s"], [1], np.array([64]))], 1, 1, 1)
        index = {"split": split, "validation_percent": 0.5, "tokenizer": {"sha256": "t"}, "shards": shards, "documents_table": table, "formats": []}
        (sub / "index.json").write_text(json.dumps(index))
        indexes.append(index)
    assert find_resume(folder, key, 32, 8).index == indexes[0]
    flip_a_byte(folder / "shard-00000.npy")
    assert find_resume(folder, key, 32, 8).index is None


def test_non_string_ids_are_spelt_as_json(tmp_path):
    from stage2.io.sources import ComponentSpec, read_records

    rows = [{"id": True, "text": "a"}, {"id": {"b": 1, "a": [1, 2]}, "text": "b"}, {"id": 7, "text": "c"}, {"id": 1.5, "text": "d"}]
    write_jsonl(tmp_path / "ids.jsonl", rows)
    spec = ComponentSpec(name="x", files=[str(tmp_path / "ids.jsonl")], format="json")
    assert [d.id for d in read_records(spec, str(tmp_path / "ids.jsonl"))] == ["true", '{"a": [1, 2], "b": 1}', "7", "1.5"]


def test_a_json_file_keeps_its_values_as_written(tmp_path):
    from stage2.io.sources import ComponentSpec, read_records

    def read(path: Path):
        spec = ComponentSpec(name="x", files=[str(path)], format="json")
        return [(d.id, d.text, d.metadata, d.problem) for d in read_records(spec, str(path))]

    rows = [{"id": "2021-01-01", "text": "2021-01-01T00:00:25", "date": "2021-01-01"}, {"id": "b", "text": "plain", "date": "x"}]
    (tmp_path / "dates.json").write_text(json.dumps(rows))
    assert read(tmp_path / "dates.json") == [(r["id"], r["text"], {"date": r["date"]}, None) for r in rows]
    write_jsonl(tmp_path / "lines.json", rows)  # JSON lines named .json read alike
    assert read(tmp_path / "lines.json") == read(tmp_path / "dates.json")
    (tmp_path / "strings.json").write_text('["one", "two"]')
    assert [t for _, t, _, _ in read(tmp_path / "strings.json")] == ["one", "two"]
    (tmp_path / "mixed.json").write_text('[{"text": "a"}, 3]')
    assert read(tmp_path / "mixed.json")[1][3] == "is a JSON int, not an object"


def test_a_json_array_cut_short_is_said_so(tmp_path):
    # The whole array is one JSON value: a cut anywhere makes it unreadable, and the error says where
    # and that the file ends there, not "record 1" of a file none of whose records was read.
    import pytest

    from stage2.errors import Stage2Error
    from stage2.io.sources import ComponentSpec, read_records

    whole = json.dumps([{"id": str(i), "text": f"record {i} \u00e9 text"} for i in range(50)], ensure_ascii=True)
    for cut_at in (len(whole) // 2, whole.index("\\u00e9", len(whole) // 3) + 3, len(whole) - 1):
        path = tmp_path / f"cut{cut_at}.json"
        path.write_text(whole[:cut_at])
        with pytest.raises(Stage2Error) as err:
            list(read_records(ComponentSpec(name="x", files=[str(path)], format="json"), str(path)))
        message = str(err.value)
        assert message.startswith(f"{path}: not a complete JSON array: ") and "at line 1, column" in message, message
        assert message.endswith("where the file ends: it is cut short; no record of it was read"), message
    broken = tmp_path / "broken.json"
    broken.write_text(whole.replace('"text"', '"text" 1', 1))  # malformed inside, not at the end
    with pytest.raises(Stage2Error, match="not a complete JSON array: Expecting ':' delimiter at line 1, column [0-9]+; no record"):
        list(read_records(ComponentSpec(name="x", files=[str(broken)], format="json"), str(broken)))
