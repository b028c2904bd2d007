"""A shard partition's way through a worker: documents read as Arrow columns, split by the held-out
hash, document rows built from the columns' bytes, one file per split and one marker. Each fast path is
checked against the plain version it replaces (`is_heldout`, `document_rows`, a boolean token mask)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from helpers import sample_records
from stage2.io import parts
from stage2.io.files import FingerprintingFile, file_fingerprint, write_array
from stage2.io.sources import Document
from stage2.runtime.tasks import read_marker, write_marker
from stage2.shards import format as shard_format
from stage2.stages import shard
from stage2.tokenizer.sample import heldout_mask, is_heldout

# Ids of every kind a source may give: ASCII, multi-byte UTF-8, empty, long, and the real sample's.
ODD_IDS = ["a", "", "ü/2", "日本語-id", "x" * 300, "tab\there", "emoji-\U0001f600", "0"]


def real_docs(n: int = 300):
    records = sample_records("web_stackexchange.jsonl.gz", n - len(ODD_IDS))
    ids = ODD_IDS + [str(r["id"]) for r in records]
    texts = ["odd id"] * len(ODD_IDS) + [r["text"] for r in records]
    sources = ["a.jsonl", "sub/dir/é.jsonl"] * (n // 2)
    return [Document(id=i, text=t, component="web", source=s, record=k + 1) for k, (i, t, s) in enumerate(zip(ids, texts, sources))]


def written_part(tmp_path, docs):
    path = parts.part_path(tmp_path, "web", 0, 0)
    parts.write_table(path, parts.docs_to_table(docs))
    return shard.read_partition({"part": str(path)})


@pytest.mark.parametrize("percent", [0, 0.01, 0.5, 5, 33.33, 50, 99.99])
def test_heldout_mask_is_the_tokenizers_rule(percent):
    ids = [d.id for d in real_docs()] + ["lone-\ud800-surrogate"]
    mask = heldout_mask([i.encode("utf-8", "surrogatepass") for i in ids], percent)
    assert mask.tolist() == [is_heldout(i, percent) for i in ids]
    if 5 <= percent <= 50:
        assert 0 < mask.sum() < len(ids)  # both splits get documents


def test_arrow_columns_give_the_plain_ids_and_rows(tmp_path):
    docs = real_docs()
    read = written_part(tmp_path, docs)
    assert isinstance(read.ids, pa.Array) and isinstance(read.records, np.ndarray)
    assert [bytes(b) for b in read.id_bytes()] == [d.id.encode() for d in docs]
    plain = shard.PartitionDocs([d.text for d in docs], [d.id for d in docs], [d.source for d in docs], [d.record for d in docs])
    lengths = np.arange(len(docs), dtype=np.int64) % 7 + 1
    rng = np.random.default_rng(0)
    for keep in [np.arange(len(docs)), np.empty(0, np.int64), np.array([1]), np.array([0, 4, 5]), np.flatnonzero(rng.random(len(docs)) < 0.3)]:
        want = shard_format.document_rows([docs[i].id for i in keep], [docs[i].source for i in keep], [docs[i].record for i in keep], lengths[keep])
        got = read.rows(keep, lengths[keep])
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), keep[:8]
        assert plain.rows(keep, lengths[keep]).tobytes() == want.tobytes()


def test_a_sliced_arrow_column_reads_from_its_offset():
    ids = pa.array(["skip", "ab", "", "ü"]).slice(1)
    got = shard_format.utf8_fixed_width(*shard._arrow_utf8(ids), np.arange(3))
    assert got.tolist() == [b"ab", b"", "ü".encode()] and got.dtype == np.dtype("S2")


def test_take_documents_is_the_boolean_mask():
    rng = np.random.default_rng(1)
    for _ in range(50):
        lengths = rng.integers(0, 6, size=rng.integers(0, 30))
        tokens = rng.integers(0, 500, size=int(lengths.sum())).astype(np.uint16)
        mask = rng.random(len(lengths)) < rng.random()
        got = shard.take_documents(tokens, lengths, np.flatnonzero(mask))
        assert np.array_equal(got, tokens[np.repeat(mask, lengths)])


def test_split_partition_sends_held_out_documents_to_validation(tmp_path):
    docs = real_docs()
    read = written_part(tmp_path, docs)
    eos = 2
    lengths = [3 + k % 5 for k in range(len(docs))]
    tokens = np.concatenate([np.r_[np.full(n - 1, 10 + k % 50), eos] for k, n in enumerate(lengths)]).astype(np.uint16)
    task = {"eos": eos, "bos": None, "validation_percent": 10, "component": "web"}
    splits = shard.split_partition(task, read, tokens)
    held = [is_heldout(d.id, 10) for d in docs]
    for split, want in (("train", [not h for h in held]), ("validation", held)):
        stream, rows = splits[split]
        keep = [i for i, w in enumerate(want) if w]
        assert [r.decode() for r in rows["id"]] == [docs[i].id for i in keep]
        assert rows["tokens"].tolist() == [lengths[i] for i in keep]
        assert rows["first"].tolist() == np.cumsum([0] + [lengths[i] for i in keep])[:-1].tolist()
        assert np.array_equal(stream, tokens[np.repeat(np.array(want), lengths)])


def test_partition_files_and_marker_vouch_per_split(tmp_path):
    rows = {s: shard_format.document_rows([f"{s}-{i}" for i in range(n)], ["src"] * n, list(range(n)), np.full(n, 2)) for s, n in (("train", 5), ("validation", 1))}
    splits = {"train": (np.arange(10, dtype=np.uint16), rows["train"]), "validation": (np.array([7, 2], dtype=np.uint16), rows["validation"])}
    work = tmp_path / ".work"
    task = {"out": str(work / "part-00003"), "index": 3, "component": "web", "partition_key": "key"}
    result = shard.save_partition(task, splits, 0.0)
    marker = work / shard.DONE.format(3)
    recorded = json.loads(marker.read_text())["outputs"]
    for split, (tokens, want_rows) in splits.items():
        entry = result["splits"][split]
        path = work / shard.PART.format(3, split)
        assert recorded[path.name] == file_fingerprint(path)  # taken as written, equal to reading it back
        got_tokens, got_rows = shard.read_partition_file(path, np.dtype(np.uint16), entry)
        assert np.array_equal(got_tokens, tokens) and got_rows.tobytes() == want_rows.tobytes()
        assert np.array_equal(np.load(path, allow_pickle=False), want_rows)  # the rows are a plain .npy up front
    # The packer deletes the train file once the train checkpoint is past it: validation stays done.
    (work / shard.PART.format(3, "train")).unlink()
    assert read_marker(marker, "key") is None
    assert read_marker(marker, "key", outputs=[shard.PART.format(3, "train")]) is None
    assert read_marker(marker, "key", outputs=[shard.PART.format(3, "validation")])["validation"]["docs"] == 1
    assert read_marker(marker, "other key", outputs=[shard.PART.format(3, "validation")]) is None
    assert read_marker(marker, "key", outputs=["not-listed.bin"]) is None


def test_fingerprinting_file_equals_reading_back(tmp_path):
    path = tmp_path / "f.bin"
    with open(path, "wb") as f:
        out = FingerprintingFile(f)
        write_array(out, np.arange(1000, dtype=np.uint32), npy_header=True)
        out.write(b"tail")
    assert out.fingerprint() == file_fingerprint(path)
    write_marker(tmp_path / "m.json", "k", {}, {path: out.fingerprint()})
    assert read_marker(tmp_path / "m.json", "k") == {}


def test_put_rows_widens_like_astype():
    narrow = shard_format.document_rows(["a", "bb"], ["s", "t"], [1, 2], np.array([3, 4]))
    wide = shard_format.documents_dtype(9, 4)
    assert shard_format.put_rows(np.empty(2, wide), narrow).tobytes() == narrow.astype(wide).tobytes()


def _synthetic_partitions(tmp_path, sizes, seed=0):
    """Partition files as workers write them (`save_partition`), with random tokens and document lengths."""
    rng = np.random.default_rng(seed)
    work = tmp_path / "comp" / shard.WORK_DIR
    work.mkdir(parents=True)
    results = []
    for i, n_docs in enumerate(sizes):
        splits = {}
        for split in shard_format.SPLITS:
            lengths = rng.integers(1, 40, size=n_docs if split == "train" else n_docs // 3)
            tokens = rng.integers(0, 30000, size=int(lengths.sum())).astype(np.uint16)
            ids = [f"{split}-{i}-{k}" + "x" * int(rng.integers(0, 5)) for k in range(len(lengths))]
            splits[split] = (tokens, shard_format.document_rows(ids, ["src"] * len(ids), list(range(len(ids))), lengths))
        results.append(shard.save_partition({"out": str(work / f"part-{i:05d}"), "index": i, "partition_key": "k", "component": "comp"}, splits, 0.0))
    return work.parent, results


@pytest.mark.parametrize("sizes,seq_len,per_shard,remainder", [
    ([7, 0, 12, 3, 9], 16, 4, "drop"),
    ([7, 0, 12, 3, 9], 16, 4, "pad"),
    ([20, 1, 1, 30], 8, 3, "drop"),
    ([5], 64, 2, "pad"),  # one partition, no full shard
    ([0, 0], 16, 2, "drop"),  # an empty stream
])
def test_write_tasks_make_the_packers_shards_table_and_formats(tmp_path, sizes, seq_len, per_shard, remainder):
    """Shards written by workers from slices of the partition files, planned from the counts alone, are
    the in-process packer's, byte for byte; so are the document table and the trainer formats."""
    comp_dir, results = _synthetic_partitions(tmp_path, sizes)
    formats = ["npy", "megatron", "datatrove", "nanogpt"]
    dtype = np.dtype(np.uint16)
    for split in shard_format.SPLITS:
        stream = np.concatenate([shard.read_partition_file(r["splits"][split]["file"], dtype, r["splits"][split])[0] for r in results])
        want = tmp_path / "want" / split
        packer = shard_format.Packer(want, seq_len, per_shard, dtype)
        for at in range(0, len(stream), 11):  # (any chunking: the packer's shards depend on the stream only)
            packer.add(stream[at : at + 11])
        packed = packer.finish(remainder, 0)
        plan = shard.SplitPlan([{**r["splits"][split], "index": r["index"]} for r in results])
        planned, shards = shard.plan_split(plan, seq_len, per_shard, remainder, 0)
        assert (planned.rows, planned.stream_tokens, planned.padding, planned.tail_dropped) == (packed.rows, packed.stream_tokens, packed.padding, packed.tail_dropped)
        assert len(shards) == len(packed.shards)
        got_dir = tmp_path / "got" / split
        for number, planned_shard in enumerate(shards):
            task = {
                "path": str(got_dir / shard_format.shard_name(number)), "rows": planned_shard["rows"], "seq_len": seq_len, "dtype": dtype.str,
                "pieces": [(plan.partitions[k], a, b) for k, a, b in planned_shard["pieces"]], "pad_id": 0,
                "padding": planned_shard["rows"] * seq_len - sum(b - a for _, a, b in planned_shard["pieces"]),
                "marker": str(tmp_path / f"shard.{split}.{number}.json"), "key": "k",
            }
            got = shard.write_shard_task(task)
            assert got["shard"] == packed.shards[number] and not got["resumed"]
            assert (got_dir / got["shard"]["file"]).read_bytes() == (want / packed.shards[number]["file"]).read_bytes()
            assert shard.write_shard_task(task) == {**got, "resumed": True}  # its marker vouches for it
        # The table and formats from the partitions, against the whole stream and rows put together.
        docs, total, widths = plan.counts()
        firsts = np.cumsum([0] + [int(p["tokens"]) for p in plan.partitions])[:-1].tolist()
        task = {"split": split, "folder": str(got_dir), "comp_dir": str(tmp_path / "got"), "partitions": plan.partitions, "firsts": firsts,
                "docs": docs, "stream_tokens": total, "widths": widths, "dtype": dtype.str, "formats": formats, "vocab_size": 32000,
                "tokenizer_name": "t.model", "marker": str(tmp_path / f"table.{split}.json"), "key": "k"}
        got = shard.write_table_task(task)
        rows = [shard.read_partition_file(r["splits"][split]["file"], dtype, r["splits"][split])[1] for r in results]
        all_rows = shard._concat_rows([np.array(r) for r in rows])
        all_rows["first"] = np.cumsum(all_rows["tokens"]) - all_rows["tokens"]
        want_table = shard_format.write_documents(want / shard_format.DOCUMENTS, [all_rows], len(all_rows), *widths)
        assert got["documents_table"] == want_table
        assert (got_dir / shard_format.DOCUMENTS).read_bytes() == (want / shard_format.DOCUMENTS).read_bytes()
        want_formats = shard_format.write_formats(tmp_path / "want", split, formats, [stream], all_rows["tokens"], 32000, "t.model")
        assert got["formats"] == want_formats
        for entry in want_formats:
            assert (tmp_path / "got" / entry["file"]).read_bytes() == (tmp_path / "want" / entry["file"]).read_bytes()


def test_a_shard_task_writes_again_when_its_shard_changed(tmp_path):
    comp_dir, results = _synthetic_partitions(tmp_path, [30, 30])
    plan = shard.SplitPlan([{**r["splits"]["train"], "index": r["index"]} for r in results])
    _, shards = shard.plan_split(plan, 8, 4, "drop", 0)
    task = {"path": str(tmp_path / "shard-00000.npy"), "rows": 4, "seq_len": 8, "dtype": "<u2", "pad_id": 0, "padding": 0,
            "pieces": [(plan.partitions[k], a, b) for k, a, b in shards[0]["pieces"]], "marker": str(tmp_path / "m.json"), "key": "k"}
    first = shard.write_shard_task(task)
    data = bytearray((tmp_path / "shard-00000.npy").read_bytes())
    data[-1] ^= 1
    (tmp_path / "shard-00000.npy").write_bytes(bytes(data))
    again = shard.write_shard_task(task)
    assert again == {**first, "resumed": False}
    assert shard.write_shard_task({**task, "key": "other"})["resumed"] is False  # another recipe: written again


def test_group_size_keeps_every_worker_busy():
    assert shard.group_size(7, 2) == 1  # few parts: one to a task
    assert shard.group_size(1000, 2) == shard.GROUP_MAX
    assert shard.group_size(40, 2) == 5
    assert [len(g) for g in shard._groups(iter(range(11)), 4)] == [4, 4, 3]
