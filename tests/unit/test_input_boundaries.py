"""Issue #22 (points 3, 4, 14, part of 12): where inputs meet the pipeline.

Inputs that change after the start-up scan fail the run naming the file; globs behave as HF `data_files`;
artifacts do not depend on where the data lives; a UTF-8 BOM is dropped in every format; an unreachable
hub fails at once. Real files, real `datasets`, the real filter stage (the CLI: tests/cli/test_input_boundaries_cli.py).
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest

import stage2.stages.filter as filter_stage
from stage2.config import ComponentConfig, DatasetConfig
from stage2.errors import Stage2Error
from stage2.runtime.run import start_run
from stage2.io.sources import ComponentSpec, expand_paths, hub_data_files, input_fingerprints, iter_documents, plan_component, read_records, read_unit, resolve_components, usable

from helpers import sample_records, write_jsonl

RECORDS = sample_records("web_stackexchange.jsonl.gz", 40)


def scanned(path: Path, stride: int = 10, **dataset) -> ComponentSpec:
    """The component of one file as a run sees it after its start-up scan."""
    [spec] = resolve_components(DatasetConfig(paths=[str(path)], **dataset), str(path.parent))
    return spec.with_scans(input_fingerprints([spec], stride))


def units(spec: ComponentSpec, stride: int = 10):
    return plan_component(spec, 0, list(spec.files), input_fingerprints([spec], stride), stride, None)


def jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


# ---- 3. inputs that change during a run ----------------------------------------------------------


def truncate_at_line(path: Path) -> None:
    path.write_bytes(jsonl_bytes(RECORDS[:25]))  # in place, at a line boundary


def rewrite_same_size(path: Path) -> None:
    data = path.read_bytes()
    st = path.stat()
    path.write_bytes(data.replace(b"the", b"THE"))  # in place, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # (a clock coarser than two writes apart would hide it)


def replace_by_rename(path: Path) -> None:
    st = path.stat()
    other = path.with_name("new.tmp")
    other.write_bytes(path.read_bytes().replace(b"the", b"THE"))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: only the inode tells
    os.replace(other, path)


CHANGES = {"truncated": truncate_at_line, "same-size": rewrite_same_size, "renamed": replace_by_rename}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_byte_range_unit_fails_when_its_file_changed_after_the_scan(tmp_path, change):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS))
    spec = scanned(path)
    plan = units(spec)
    assert len(plan) == 4 and all(u.byte_range for u in plan)
    assert [d.text for u in plan for d in read_unit(spec, u)] == [r["text"] for r in RECORDS]  # unchanged: read as planned
    CHANGES[change](path)
    for unit in (plan[0], plan[-1]):
        with pytest.raises(Stage2Error, match=f"^{path}: changed during the run"):
            list(read_unit(spec, unit))


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_sequential_read_fails_when_its_file_changed_after_the_scan(tmp_path, change):
    """The tokenizer and shard stages read raw sources this way (iter_documents)."""
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS))
    spec = scanned(path)
    CHANGES[change](path)
    with pytest.raises(Stage2Error, match=f"^{path}: changed during the run"):
        list(iter_documents(spec))


def test_a_whole_file_read_checks_the_content_hash(tmp_path):
    """A compressed file rewritten with its size and modification time as they were: its hash tells."""
    path = tmp_path / "docs.jsonl.gz"
    write_jsonl(path, RECORDS)
    spec = scanned(path)
    st = path.stat()
    changed = gzip.compress(jsonl_bytes(RECORDS).replace(b"the", b"THE"), mtime=0)
    with open(path, "r+b") as f:  # in place: same inode
        f.write(changed[: st.st_size].ljust(st.st_size, b"\0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    [unit] = units(spec)
    with pytest.raises(Stage2Error, match=f"^{path}: changed during the run: it has other content"):
        list(read_unit(spec, unit))


def test_an_unchanged_touched_file_still_reads_without_scans(tmp_path):
    """A spec without scans (direct API use) reads as before; a touched input fails a run's read."""
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS))
    [plain] = resolve_components(DatasetConfig(paths=[str(path)]), str(tmp_path))
    spec = plain.with_scans(input_fingerprints([plain]))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert len(list(iter_documents(plain))) == len(RECORDS)
    with pytest.raises(Stage2Error, match="another modification time"):
        list(iter_documents(spec))


def test_the_filter_stage_fails_when_an_input_changes_after_start_up(tmp_path, plain_config):
    """The real run: start-up scan, then the file is cut at a line boundary, then the filter stage reads it."""
    path = tmp_path / "in" / "docs.jsonl"
    write_jsonl(path, RECORDS)
    cfg = plain_config("stage=filter", "progress=false", "dataset=files", f"dataset.paths=[{path}]",
                       "executor.workers=1", "dataset.partition_size=10")
    run = start_run(tmp_path / "run", cfg)
    recorded = json.loads((run.dir / "provenance.json").read_text())["inputs"][str(path)]
    assert recorded["mtime_ns"] == path.stat().st_mtime_ns and recorded["bytes"] == path.stat().st_size
    try:
        path.write_bytes(jsonl_bytes(RECORDS[:15]))  # before: 6,104 of 18,314 records and exit 0
        with pytest.raises(Stage2Error, match=f"^{path}: changed during the run: it has {path.stat().st_size} bytes"):
            filter_stage.run(run)
    finally:
        run.executor.close()
    assert not (run.dir / "filtered" / "manifest.json").exists()


def test_a_touched_input_does_not_block_a_rerun(tmp_path):
    """Reruns compare inputs by content: the scan's modification time is only for reads within one run."""
    from stage2.runtime.run import check_inputs_unchanged

    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS))
    [spec] = resolve_components(DatasetConfig(paths=[str(path)]), str(tmp_path))
    before = input_fingerprints([spec])
    (tmp_path / "past").mkdir()
    (tmp_path / "past" / "provenance.json").write_text(json.dumps({"inputs": before}))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = input_fingerprints([spec])
    assert after[str(path)]["mtime_ns"] != before[str(path)]["mtime_ns"]
    check_inputs_unchanged(tmp_path / "past", after, allowed=False)  # no error


def test_the_same_inputs_at_other_paths_do_not_block_a_rerun(tmp_path):
    """Another checkout of stage2 (its embedded sample) or a moved data folder: the same files in the same
    order are the same inputs for a rerun; swapped contents, or a resume, are refused as before."""
    from stage2.runtime.run import check_inputs_unchanged

    def scanned(folder: Path, first: list, second: list) -> dict:
        write_jsonl(folder / "a.jsonl", first)
        write_jsonl(folder / "b.jsonl", second)
        specs = resolve_components(DatasetConfig(paths=[str(folder / "a.jsonl"), str(folder / "b.jsonl")]), str(tmp_path))
        return input_fingerprints(specs)

    (tmp_path / "past").mkdir()
    (tmp_path / "past" / "provenance.json").write_text(json.dumps({"inputs": scanned(tmp_path / "one", RECORDS[:3], RECORDS[3:6])}))
    check_inputs_unchanged(tmp_path / "past", scanned(tmp_path / "two", RECORDS[:3], RECORDS[3:6]), allowed=False)  # no error
    with pytest.raises(Stage2Error, match="inputs differ"):
        check_inputs_unchanged(tmp_path / "past", scanned(tmp_path / "three", RECORDS[3:6], RECORDS[:3]), allowed=False)
    with pytest.raises(Stage2Error, match="a resume cannot mix"):
        check_inputs_unchanged(tmp_path / "past", scanned(tmp_path / "four", RECORDS[:3], RECORDS[3:6]), allowed=False, resume=True)


# ---- 4. globs as HF data_files ---------------------------------------------------------------------


def test_double_star_is_recursive_and_skips_hidden_and_dunder_folders(tmp_path):
    data = tmp_path / "data"
    for rel in ["part.jsonl", "a/part.jsonl", "a/b/c/part.jsonl", ".hidden/part.jsonl", "a/.part.jsonl", "__pycache__/part.jsonl"]:
        write_jsonl(data / rel, RECORDS[:2])
    found = expand_paths(["data/**/part.jsonl"], str(tmp_path), "dataset.paths")
    assert [os.path.relpath(p, data) for p in found] == ["a/b/c/part.jsonl", "a/part.jsonl", "part.jsonl"]
    assert [os.path.relpath(p, data) for p in expand_paths(["data/**/*.jsonl"], str(tmp_path), "x")] == ["a/b/c/part.jsonl", "a/part.jsonl", "part.jsonl"]
    # A hidden name or a `__` folder that the pattern spells is taken.
    assert expand_paths(["data/.hidden/*.jsonl"], str(tmp_path), "x") == [str(data / ".hidden/part.jsonl")]
    assert expand_paths(["data/__*/*.jsonl"], str(tmp_path), "x") == [str(data / "__pycache__/part.jsonl")]
    [spec] = resolve_components(DatasetConfig(paths=["data/**/part.jsonl"]), str(tmp_path))
    assert spec.name == "part" and spec.root == str(data)
    assert sorted(spec.id_names.values()) == ["a/b/c/part", "a/part", "part"]
    assert {d.source for d in iter_documents(spec)} == {"part.jsonl", "a/part.jsonl", "a/b/c/part.jsonl"}


def test_a_file_name_with_glob_characters_is_taken_literally(tmp_path):
    write_jsonl(tmp_path / "data" / "web[1].jsonl", RECORDS[:3])
    write_jsonl(tmp_path / "data" / "web1.jsonl", RECORDS[3:5])  # what `web[1]` matches as a glob
    [spec] = resolve_components(DatasetConfig(paths=["data/web[1].jsonl"]), str(tmp_path))
    assert spec.files == [str(tmp_path / "data" / "web[1].jsonl")] and spec.root == str(tmp_path / "data")
    assert [d.text for d in iter_documents(spec)] == [r["text"] for r in RECORDS[:3]]
    assert expand_paths(["data/web[0-9].jsonl"], str(tmp_path), "x") == [str(tmp_path / "data" / "web1.jsonl")]  # a glob still globs


# ---- 14. artifacts do not depend on where the data lives ------------------------------------------


def test_messages_name_the_real_path_while_parts_name_it_below_the_root(tmp_path):
    path = tmp_path / "data" / "sub" / "docs.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(jsonl_bytes(RECORDS[:2]) + b'{"text": null}\n')
    [spec] = resolve_components(DatasetConfig(paths=["data/*/docs.jsonl"]), str(tmp_path))
    docs = list(iter_documents(spec))
    assert {d.source for d in docs} == {"sub/docs.jsonl"} and {d.location for d in docs} == {str(path)}
    assert docs[-1].problem and docs[-1].id == "docs/docs/3"  # fallback ids as they were


# ---- 12. a BOM: one rule for .jsonl and .txt ------------------------------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.txt", "docs.txt.gz"])
def test_a_leading_bom_is_dropped_in_every_line_format(tmp_path, name):
    lines = [r["text"].replace("\n", " ") for r in RECORDS[:23]]
    body = jsonl_bytes({"text": t} for t in lines) if ".jsonl" in name else "\n".join(lines).encode() + b"\n"
    with_bom, without = tmp_path / "bom" / name, tmp_path / "plain" / name
    for path, data in ((with_bom, BOM + body), (without, body)):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    specs = {p: scanned(p, stride=5) for p in (with_bom, without)}
    docs = {p: [(d.text, d.record) for d in iter_documents(s)] for p, s in specs.items()}
    assert docs[with_bom] == docs[without] and docs[with_bom][0][0] == lines[0]  # before: refused (.jsonl) or U+FEFF kept (.txt)
    # the partitions cut at the scan's offsets hold the same records (the BOM belongs to no record but the file)
    by_unit = [(d.text, d.record) for u in units(specs[with_bom], 5) for d in read_unit(specs[with_bom], u)]
    assert by_unit == docs[without]


def test_a_bom_then_a_blank_line_counts_as_the_reader_reads(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(BOM + b"\n" + jsonl_bytes(RECORDS[:12]))
    spec = scanned(path, stride=5)
    scan = input_fingerprints([spec], 5)[str(path)]
    assert scan["records"] == 12
    assert [d.text for u in units(spec, 5) for d in read_unit(spec, u)] == [r["text"] for r in RECORDS[:12]]


@pytest.mark.parametrize("sample_by", ["paragraph", "document"])
def test_a_bom_is_dropped_from_text_read_whole(tmp_path, sample_by):
    path = tmp_path / "notes.txt"
    path.write_bytes(BOM + b"first paragraph\nstill first\n\nsecond \xef\xbb\xbf inside\n")
    [spec] = resolve_components(DatasetConfig(components={"notes": ComponentConfig(data_files=[str(path)], sample_by=sample_by)}), str(tmp_path))
    texts = [d.text for d in iter_documents(spec)]
    assert texts[0].startswith("first paragraph") and "\ufeff inside" in texts[-1]  # only the file's own mark goes


def corpus_text(name: str, docs: int) -> bytes:
    """Real documents joined as a text file would hold them: blank lines between, CRLF in every third."""
    with gzip.open(Path(__file__).parents[1] / "data" / "corpora" / name, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(docs), f)]
    joined = "".join(t + "\n" * (1 + i % 4) for i, t in enumerate(texts))
    return "\n".join(line + "\r" if i % 3 == 0 else line for i, line in enumerate(joined.split("\n"))).encode("utf-8")


@pytest.mark.parametrize("sample_by", ["paragraph", "document"])
@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_text_by_paragraph_or_document_reads_as_datasets_does_across_read_blocks(tmp_path, monkeypatch, sample_by, suffix):
    import datasets

    raw = corpus_text("en_web_stackexchange.jsonl.gz", 40) + corpus_text("multiling_udhr.jsonl.gz", 20)
    assert b"\r" not in raw.replace(b"\r\n", b"")  # no lone CR: there the two readers differ on purpose
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    theirs = [r["text"] for r in datasets.load_dataset("text", data_files=str(path), sample_by=sample_by, split="train", streaming=True)]
    [spec] = resolve_components(DatasetConfig(components={"notes": ComponentConfig(data_files=[str(path)], sample_by=sample_by)}), str(tmp_path))
    for block in (1 << 20, 7, 2):  # block edges inside "\r\n" and "\n\n" too
        monkeypatch.setattr("stage2.io.sources.READ_BLOCK", block)
        assert [d.text for d in iter_documents(spec)] == theirs
    assert len(theirs) > (40 if sample_by == "paragraph" else 0)


def test_a_lone_carriage_return_is_text_in_every_text_reading(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"one\rline\r\nsame paragraph\r\n\r\nnext\r\r\n")
    read = lambda sample_by: [d.text for d in iter_documents(resolve_components(  # noqa: E731
        DatasetConfig(components={"notes": ComponentConfig(data_files=[str(path)], sample_by=sample_by)}), str(tmp_path))[0])]
    assert read("line") == ["one\rline", "same paragraph", "", "next\r"]
    assert read("paragraph") == ["one\rline\nsame paragraph", "next\r\n"]
    assert read("document") == ["one\rline\nsame paragraph\n\nnext\r\n"]


def test_invalid_utf8_in_a_paragraph_names_its_record(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"fine\n\nbroken \xff here\n\nfine again\n")
    [spec] = resolve_components(DatasetConfig(components={"notes": ComponentConfig(data_files=[str(path)], sample_by="paragraph")}), str(tmp_path))
    docs = list(read_records(spec, str(path)))
    assert [(d.record, d.problem) for d in docs] == [(1, None), (2, "invalid UTF-8 (byte 7 of the paragraph)"), (3, None)]


def test_invalid_utf8_in_parquet_names_its_record_not_its_batch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"document {i}".encode() for i in range(2500)]
    texts[1700] = b"broken \xff here"  # record 1701, inside the second batch of the reader
    values = pa.array(texts, pa.binary())
    unchecked = pa.Array.from_buffers(pa.string(), len(texts), values.buffers())  # as a foreign writer may leave it
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": unchecked, "id": [str(i) for i in range(2500)]}), path, row_group_size=1000)
    [spec] = resolve_components(DatasetConfig(components={"docs": ComponentConfig(data_files=[str(path)])}), str(tmp_path))
    docs = list(read_records(spec, str(path)))
    assert [d.record for d in docs] == list(range(1, 2501))
    assert [(d.record, d.problem) for d in docs if d.problem] == [(1701, "invalid UTF-8 in column 'text' (byte 7)")]
    assert [d.text for d in docs if not d.problem] == [f"document {i}" for i in range(2500) if i != 1700]
    with pytest.raises(Stage2Error, match=r"docs.parquet: record 1701: invalid UTF-8 in column 'text' \(byte 7\)"):
        list(usable(iter_documents(spec), skip_bad=False))


# ---- 12. an unreachable hub fails at once --------------------------------------------------------


def test_an_unreachable_hub_fails_fast_with_its_message():
    spec = ComponentSpec(name="remote", hub_path="someone/nonexistent")
    started = time.monotonic()
    with pytest.raises(Stage2Error, match="component remote: cannot open hub dataset 'someone/nonexistent'.*use local files"):
        hub_data_files(spec)
    assert time.monotonic() - started < 10  # before: ~25 s of retries
