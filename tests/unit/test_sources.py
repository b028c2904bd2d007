"""Components -> documents through real `datasets` streaming of local files in every supported format."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from stage2.config import ComponentConfig, DatasetConfig
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec, check_columns, hub_revisions, input_fingerprints, iter_documents, resolve_components

from helpers import sample_records, write_jsonl

RECORDS = sample_records("web_stackexchange.jsonl.gz", 30)


def texts(spec):
    return [d.text for d in iter_documents(spec)]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_yields_the_same_documents_in_order(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    elif suffix == ".jsonl.zst":
        raw = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
        path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        write_jsonl(path, RECORDS)
    [spec] = resolve_components(DatasetConfig(paths=[str(path)], text_column="text", id_column="id"), str(tmp_path))
    docs = list(iter_documents(spec))
    assert [d.text for d in docs] == [r["text"] for r in RECORDS]
    assert [d.id for d in docs] == [r["id"] for r in RECORDS]
    assert [d.record for d in docs] == list(range(1, len(RECORDS) + 1))
    assert spec.name == "docs"
    # Other columns travel along as sorted JSON.
    assert docs[0].metadata["source"] == RECORDS[0]["source"]


def test_text_files_by_line_and_by_document(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line\n\nthird\n", encoding="utf-8")
    [spec] = resolve_components(DatasetConfig(paths=[str(path)]), str(tmp_path))
    assert spec.format == "text"
    assert texts(spec) == ["first line", "second line", "", "third"]
    whole = ComponentSpec(name="notes", files=[str(path)], format="text", sample_by="document")
    assert texts(whole) == ["first line\nsecond line\n\nthird\n"]
    # Records without an id column get a stable id from component, file and record number.
    assert [d.id for d in iter_documents(spec)][:2] == ["notes/notes/1", "notes/notes/2"]


def test_relative_paths_and_globs_resolve_against_launch_dir(tmp_path):
    write_jsonl(tmp_path / "in" / "b.jsonl", RECORDS[10:12])
    write_jsonl(tmp_path / "in" / "a.jsonl", RECORDS[:2])
    dataset = DatasetConfig(components={"mix": ComponentConfig(data_files=["in/*.jsonl"], text_column="text")})
    [spec] = resolve_components(dataset, str(tmp_path))
    assert spec.files == [str(tmp_path / "in" / "a.jsonl"), str(tmp_path / "in" / "b.jsonl")]
    assert texts(spec) == [r["text"] for r in RECORDS[:2] + RECORDS[10:12]]


def test_max_records_bounds_the_component_across_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", RECORDS[:3])
    write_jsonl(tmp_path / "b.jsonl", RECORDS[3:6])
    spec = ComponentSpec(name="c", files=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], format="json", max_records=4)
    assert texts(spec) == [r["text"] for r in RECORDS[:4]]


def test_a_pattern_matching_nothing_is_a_one_line_error(tmp_path):
    with pytest.raises(Stage2Error) as info:
        resolve_components(DatasetConfig(paths=["nothing/*.jsonl"]), str(tmp_path))
    assert "nothing/*.jsonl" in str(info.value) and "\n" not in str(info.value)


def test_unusable_records_are_marked_with_their_problem(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "fine"}, {"id": "b", "text": None}, {"id": "c", "body": "x"}])
    docs = list(iter_documents(ComponentSpec(name="bad", files=[str(path)], format="json")))
    assert [d.problem is None for d in docs] == [True, False, False]
    assert "null" in docs[1].problem and docs[1].record == 2
    assert "no text column 'text'" in docs[2].problem and docs[2].record == 3
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "a", "body": "x"}])
    [doc] = iter_documents(ComponentSpec(name="other", files=[str(other)], format="json"))
    assert "no text column 'text'" in doc.problem and "body" in doc.problem


def test_two_files_with_the_same_stem_are_refused(tmp_path):
    write_jsonl(tmp_path / "x" / "part.jsonl", RECORDS[:1])
    write_jsonl(tmp_path / "y" / "part.jsonl", RECORDS[:1])
    with pytest.raises(Stage2Error, match="part"):
        resolve_components(DatasetConfig(paths=["x/part.jsonl", "y/part.jsonl"]), str(tmp_path))


def test_unreachable_hub_dataset_says_to_use_local_files(monkeypatch):
    # The real hub code path, offline: HF_HUB_OFFLINE makes huggingface_hub fail at once instead of retrying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    spec = ComponentSpec(name="fineweb", hub_path="HuggingFaceFW/fineweb", subset="sample-10BT")
    with pytest.raises(Stage2Error) as info:
        next(iter_documents(spec))
    message = str(info.value)
    assert "HuggingFaceFW/fineweb" in message and "local files" in message and "\n" not in message


def test_a_glob_is_one_component_named_after_its_stem(tmp_path):
    write_jsonl(tmp_path / "shards" / "web-0001.jsonl", RECORDS[:3])
    write_jsonl(tmp_path / "shards" / "web-0002.jsonl", RECORDS[3:5])
    write_jsonl(tmp_path / "code.jsonl", RECORDS[5:6])
    specs = resolve_components(DatasetConfig(paths=["shards/web-*.jsonl", "code.jsonl"]), str(tmp_path))
    assert [s.name for s in specs] == ["web", "code"]
    assert [len(s.files) for s in specs] == [2, 1]
    assert texts(specs[0]) == [r["text"] for r in RECORDS[:5]]


def test_a_path_named_like_a_component_with_files_of_its_own_is_refused(tmp_path):
    # Two sources under one name: the filter mixed them up (one's parts held the other's documents, or a
    # crash at the end). A components entry without files is that path's own settings, as before.
    write_jsonl(tmp_path / "a.jsonl", RECORDS[:3])
    write_jsonl(tmp_path / "other" / "b.jsonl", RECORDS[3:6])
    taken = DatasetConfig(paths=["a.jsonl"], components={"a": ComponentConfig(data_files=["other/b.jsonl"])})
    with pytest.raises(Stage2Error, match=r"dataset.paths: 'a.jsonl' gives the component name 'a', which dataset.components.a already has"):
        resolve_components(taken, str(tmp_path))
    settings = DatasetConfig(paths=["a.jsonl"], components={"a": ComponentConfig(weight=2.0)})
    [spec] = resolve_components(settings, str(tmp_path))
    assert spec.weight == 2.0 and texts(spec) == [r["text"] for r in RECORDS[:3]]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_columns_are_checked_at_start_up_from_the_first_record(tmp_path, suffix, caplog):
    # A text column the files lack fails before any work (not after the other components were filtered);
    # an id column they lack is said, as every document would get a numbered id.
    rows = [{"post_id": r["id"], "body": r["text"]} for r in RECORDS[:5]]
    path = tmp_path / f"posts{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        write_jsonl(path, rows)

    def checked(**columns):
        specs = resolve_components(DatasetConfig(paths=[str(path)], **columns), str(tmp_path))
        check_columns(specs, input_fingerprints(specs, 1000, map))

    with pytest.raises(Stage2Error, match=r"posts.*: record 1: has no text column 'text' \(columns: body, post_id\); name it with dataset.components.posts.text_column"):
        checked()
    with caplog.at_level("WARNING", logger="stage2.io.sources"):
        checked(text_column="body")
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "component posts: record 1 of" in said[0] and "has no id column 'id' (columns: body, post_id)" in said[0], said
        caplog.clear()
        checked(text_column="body", id_column="post_id")
        checked(text_column="body", id_column=None)
        assert not caplog.records


def test_a_relative_local_hub_path_is_the_launch_folders_and_has_no_revision(tmp_path):
    # Read from the launch folder whatever the process's working directory (hydra.job.chdir, a Ray worker),
    # and recorded as a local folder in provenance, not as a failed hub lookup.
    folder = tmp_path / "hubset" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(RECORDS[:10]), folder / "train-00000-of-00001.parquet")
    [spec] = resolve_components(DatasetConfig(components={"web": ComponentConfig(hub_path="hubset")}), str(tmp_path))
    assert spec.hub_path == str(tmp_path / "hubset")
    assert texts(spec) == [r["text"] for r in RECORDS[:10]]
    assert hub_revisions([spec]) == {"web": {"path": str(tmp_path / "hubset"), "subset": None, "requested": None, "local": True}}
    [remote] = resolve_components(DatasetConfig(components={"fw": ComponentConfig(hub_path="HuggingFaceFW/fineweb")}), str(tmp_path))
    assert remote.hub_path == "HuggingFaceFW/fineweb"


def test_a_folder_given_as_a_path_is_said_to_be_one(tmp_path):
    write_jsonl(tmp_path / "data" / "a.jsonl", RECORDS[:2])
    with pytest.raises(Stage2Error, match=r"dataset.paths: 'data' is a folder, not a file: give a glob of its files \('data/\*.jsonl'"):
        resolve_components(DatasetConfig(paths=["data"]), str(tmp_path))


class _FailingStream:
    """A `datasets` stream whose rows fail after `good` rows, read one at a time or in batches."""

    def __init__(self, rows, good):
        self.rows, self.good = rows, good

    def __iter__(self):
        for i, row in enumerate(self.rows):
            if i == self.good:
                raise ValueError(f"bad row {i + 1}")
            yield row

    def iter(self, batch_size):
        for start in range(0, len(self.rows), batch_size):
            if start + batch_size > self.good:
                raise ValueError(f"bad row {self.good + 1}")
            batch = self.rows[start : start + batch_size]
            yield {key: [row[key] for row in batch] for key in batch[0]}


def test_rows_read_in_batches_come_out_as_one_at_a_time_also_before_an_error(monkeypatch):
    """A failing batch: the rows before the bad one come out (read again row by row), then the same error."""
    import stage2.io.sources as sources

    rows = [{"id": f"r{i}", "text": f"text {i}", "n": i} for i in range(1, 13)]
    monkeypatch.setattr(sources, "ROW_BATCH", 5)
    spec = ComponentSpec(name="c", hub_path="someone/c")  # a hub dataset streamed whole: read through `datasets`
    monkeypatch.setattr(sources, "_load_stream", lambda spec, path: _FailingStream(rows, good=12))
    docs = list(iter_documents(spec))
    assert [(d.id, d.text, d.metadata, d.record) for d in docs] == [(r["id"], r["text"], {"n": r["n"]}, r["n"]) for r in rows]

    monkeypatch.setattr(sources, "_load_stream", lambda spec, path: _FailingStream(rows, good=7))
    seen = []
    with pytest.raises(Stage2Error, match="record 8: cannot be read: ValueError: bad row 8"):
        for doc in iter_documents(spec):
            seen.append(doc.id)
    assert seen == [f"r{i}" for i in range(1, 8)]
