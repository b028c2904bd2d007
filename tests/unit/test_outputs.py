"""Trainer formats (megatron, datatrove, nanogpt) byte for byte against their readers' layouts, the
validation split, document tables, `row_documents` and the mixture plan, without the trainers' libraries.

The expected bytes are spelt out here from the readers' source (Megatron-LM
megatron/core/datasets/indexed_dataset.py, datatrove pipeline/tokens/tokenizer.py, nanoGPT
data/openwebtext/prepare.py; docs/outputs.md), not taken from stage2's writer.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Dict, List, Tuple

import numpy as np
import pytest
import sentencepiece as spm
import xxhash

from helpers import compose_plain, corpus, shard_run
from stage2.errors import Stage2Error
from stage2.io.sources import iter_documents
from stage2.reader import MixtureSampler, plan_epochs, row_documents
from stage2.shards import format as fmt
from stage2.stages import verify
from stage2.tokenizer import encoding
from stage2.tokenizer.sample import HELDOUT_HASH_SEED, is_heldout

ALL_FORMATS = "shard.formats=[npy,megatron,datatrove,nanogpt]"


# --- the byte layouts ---------------------------------------------------------------------------


def test_megatron_idx_is_the_indexed_dataset_layout():
    lengths = [3, 1, 5]
    got = fmt.megatron_idx_bytes(np.array(lengths), np.dtype(np.uint16))
    want = (
        b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8)  # magic, version 1, DType.uint16 = 8
        + struct.pack("<Q", 3) + struct.pack("<Q", 4)  # sequences, document indices (with the leading 0)
        + struct.pack("<3i", 3, 1, 5)  # sequence lengths, int32
        + struct.pack("<3q", 0, 6, 8)  # byte offsets of the sequences in .bin
        + struct.pack("<4q", 0, 1, 2, 3)  # one document per sequence
    )
    assert got == want and len(got) == 42 + 20 * 3
    int32 = fmt.megatron_idx_bytes(np.array(lengths), np.dtype(np.int32))
    assert int32[17] == 4 and struct.unpack("<3q", int32[34 + 12 : 34 + 36]) == (0, 12, 16)


@pytest.mark.parametrize(
    "vocab,megatron,datatrove,nanogpt",
    [(8000, "uint16", "uint16", "uint16"), (65499, "uint16", "uint16", "uint16"), (65500, "int32", "uint16", "uint16"),
     (65536, "int32", "uint16", "uint16"), (65537, "int32", "uint32", "uint32"), (200000, "int32", "uint32", "uint32")],
)
def test_each_format_takes_its_readers_dtype(vocab, megatron, datatrove, nanogpt):
    # Megatron's DType.optimal_dtype: uint16 below 65500; datatrove's token_size: 2 up to 65536.
    assert (fmt.megatron_dtype(vocab).name, fmt.datatrove_dtype(vocab).name, fmt.nanogpt_dtype(vocab).name) == (megatron, datatrove, nanogpt)


@pytest.mark.parametrize("value,text", [(9527, "9.53 kT"), (512, "512 T"), (999999, "1.00 MT"), (1234567, "1.23 MT"), (0, "0.00 T")])
def test_datatrove_metadata_lines(value, text):
    assert fmt.datatrove_metadata("tokenizer/spm.model", 2, value) == f"tokenizer/spm.model|2\n{value}\n{text}".encode()


@pytest.mark.parametrize("vocab", [500, 70000])
def test_write_formats_bytes(tmp_path, vocab):
    docs = [[5, 6, 2], [2], [vocab - 1, 0, 7, 2]]
    lengths = np.array([len(d) for d in docs])
    stream = np.concatenate(docs).astype(np.uint32)
    chunks = [stream[:2], stream[2:5], stream[5:]]  # chunks cut across documents
    entries = fmt.write_formats(tmp_path, "validation", ["npy", "megatron", "datatrove", "nanogpt"], chunks, lengths, vocab, "tok.model")
    files = {e["file"]: e for e in entries}
    assert sorted(files) == ["datatrove/validation/00000.ds", "datatrove/validation/00000.ds.index", "datatrove/validation/00000.ds.metadata",
                             "megatron/validation.bin", "megatron/validation.idx", "nanogpt/val.bin"]
    wide = vocab > 65536
    assert (tmp_path / "megatron/validation.bin").read_bytes() == stream.astype("<i4" if vocab >= 65500 else "<u2").tobytes()
    assert (tmp_path / "datatrove/validation/00000.ds").read_bytes() == stream.astype("<u4" if wide else "<u2").tobytes()
    assert (tmp_path / "nanogpt/val.bin").read_bytes() == stream.astype("<u4" if wide else "<u2").tobytes()
    assert (tmp_path / "datatrove/validation/00000.ds.index").read_bytes() == struct.pack("<3Q", 3, 4, 8)
    assert (tmp_path / "datatrove/validation/00000.ds.metadata").read_bytes() == f"tok.model|{4 if wide else 2}\n8\n8.00 T".encode()
    idx = (tmp_path / "megatron/validation.idx").read_bytes()
    assert struct.unpack("<3i", idx[34:46]) == (3, 1, 4)
    for rel, entry in files.items():
        data = (tmp_path / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_write_formats_refuses_a_stream_its_documents_do_not_cover(tmp_path):
    with pytest.raises(Stage2Error, match="the train stream has 3 tokens, its documents 4"):
        fmt.write_formats(tmp_path, "train", ["megatron"], [np.array([1, 2, 3])], np.array([4]), 500, "t")


def test_damaged_megatron_index_is_named(tmp_path):
    good = fmt.megatron_idx_bytes(np.array([2, 3]), np.dtype(np.uint16))
    path = tmp_path / "x.idx"
    path.write_bytes(good[:26] + struct.pack("<Q", 2) + good[34:])  # document count N instead of N + 1
    with pytest.raises(Stage2Error, match="x.idx: 2 sequences, 2 document indices"):
        fmt.read_megatron_idx(path)
    path.write_bytes(good)
    dtype, lengths = fmt.read_megatron_idx(path)
    assert dtype == np.uint16 and lengths.tolist() == [2, 3]


def test_document_table_round_trip(tmp_path):
    rows = [fmt.document_rows(["a/1", "ü/2"], ["x.jsonl", "x.jsonl"], [1, 2], np.array([3, 4])),
            fmt.document_rows(["longer-id/3"], ["sub/y.jsonl"], [7], np.array([5]), first=7)]
    entry = fmt.write_documents(tmp_path / fmt.DOCUMENTS, rows, 3, 12, 11)
    table = fmt.read_documents(tmp_path)
    assert [bytes(i).decode() for i in table["id"]] == ["a/1", "ü/2", "longer-id/3"]
    assert table["first"].tolist() == [0, 3, 7] and table["tokens"].tolist() == [3, 4, 5] and table["record"].tolist() == [1, 2, 7]
    assert entry["sha256"] == hashlib.sha256((tmp_path / fmt.DOCUMENTS).read_bytes()).hexdigest()
    assert np.load(tmp_path / fmt.DOCUMENTS, allow_pickle=False).shape == (3,)  # plain numpy reads it


# --- the held-out rule --------------------------------------------------------------------------


def test_heldout_rule_keeps_the_tokenizers_integer_percents():
    ids = [f"web/part/{i}" for i in range(3000)] + ["ü", "", "a" * 300]
    for doc_id in ids:
        h = xxhash.xxh64_intdigest(doc_id.encode("utf-8", "surrogatepass"), seed=HELDOUT_HASH_SEED)
        for percent in (0, 1, 5, 37, 99):
            assert is_heldout(doc_id, percent) == (percent > 0 and h % 100 < percent)
    half = {i for i in ids if is_heldout(i, 0.5)}
    five = {i for i in ids if is_heldout(i, 5)}
    assert half < five and 0.002 < len(half) / len(ids) < 0.009  # validation documents are held out of tokenizer training


@pytest.mark.slow  # over half a second
def test_shard_config_checks_formats_and_percents(tmp_path):
    for override, needle in [
        ("shard.formats=[npy,parquet]", "unknown format 'parquet'"),
        ("shard.formats=[megatron]", "npy is always written"),
        ("shard.validation_percent=0.001", "in steps of 0.01"),
        ("shard.validation_percent=100", "must be in [0, 100)"),
        ("shard.max_epochs=0", "shard.max_epochs=0.0 must be positive"),
    ]:
        with pytest.raises(Stage2Error, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            compose_plain([f"runs_index={tmp_path}/runs.jsonl", override], tmp_path).check()


# --- a shard run with every format ----------------------------------------------------------------


def expected_documents(run, sp) -> Dict[Tuple[str, str], List[Tuple[str, List[int]]]]:
    """Per (component, split): each document's id and `encode(text) + [eos]`, from the sources."""
    out: Dict[Tuple[str, str], List[Tuple[str, List[int]]]] = {}
    percent = run.cfg.shard.validation_percent
    for spec in run.components:
        for doc in iter_documents(spec):
            split = "validation" if is_heldout(doc.id, percent) else "train"
            out.setdefault((spec.name, split), []).append((doc.id, encoding.encode(sp, [doc.text])[0] + [sp.eos_id()]))
    return out


@pytest.fixture(scope="module")
def formats_run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("formats")
    run = shard_run(tmp, "all", corpus(tmp), f"shard.tokenizer={tiny_model}", ALL_FORMATS, "shard.validation_percent=10",
                    "dataset.partition_size=37", "shard.seq_len=64", "shard.sequences_per_shard=40")
    return run, spm.SentencePieceProcessor(model_file=str(tiny_model))


def test_every_format_holds_the_documents_in_order(formats_run):
    run, sp = formats_run
    expected = expected_documents(run, sp)
    assert {split for _, split in expected} == {"train", "validation"}
    for (name, split), docs in expected.items():
        comp = run.dir / "shards" / name
        stream = np.concatenate([np.array(ids) for _, ids in docs])
        lengths = [len(ids) for _, ids in docs]
        bins = {"megatron": f"megatron/{split}.bin", "datatrove": f"datatrove/{split}/00000.ds", "nanogpt": f"nanogpt/{'train' if split == 'train' else 'val'}.bin"}
        for rel in bins.values():
            assert np.array_equal(np.fromfile(comp / rel, dtype="<u2"), stream), rel
        _, idx_lengths = fmt.read_megatron_idx(comp / f"megatron/{split}.idx")
        assert idx_lengths.tolist() == lengths
        assert np.fromfile(comp / f"datatrove/{split}/00000.ds.index", dtype="<u8").tolist() == np.cumsum(lengths).tolist()
        table = fmt.read_documents(fmt.split_dir(comp, split))
        assert [bytes(i).decode() for i in table["id"]] == [doc_id for doc_id, _ in docs]
        assert table["tokens"].tolist() == lengths
        # The npy rows are the same stream, cut into rows (the tail dropped).
        index = json.loads((fmt.split_dir(comp, split) / "index.json").read_text())
        if index["rows"]:
            rows = np.concatenate([np.load(fmt.split_dir(comp, split) / s["file"]) for s in index["shards"]])
            assert np.array_equal(rows.reshape(-1), stream[: rows.size])


def test_row_documents_rebuild_every_row(formats_run):
    run, sp = formats_run
    expected = expected_documents(run, sp)
    checked = 0
    for (name, split), docs in expected.items():
        by_id = dict(docs)
        folder = fmt.split_dir(run.dir / "shards" / name, split)
        index = json.loads((folder / "index.json").read_text())
        rows = np.concatenate([np.load(folder / s["file"]) for s in index["shards"]]) if index["shards"] else np.empty((0, 64))
        for r in range(index["rows"]):
            spans = row_documents(run.dir, name, r, split)
            rebuilt = [t for doc_id, a, b in spans for t in by_id[doc_id][a:b]]
            assert rebuilt == rows[r].tolist(), (name, split, r)
            checked += 1
    assert checked > 50
    with pytest.raises(IndexError):
        row_documents(run.dir, "web", 10**6)


def test_sampler_reads_either_split_and_names_documents(formats_run):
    run, _ = formats_run
    val = MixtureSampler(run.dir, seed=1, split="validation")
    train = MixtureSampler(run.dir, seed=1)
    assert val.sizes.tolist() == [json.loads((run.dir / f"shards/{n}/validation/index.json").read_text())["rows"] for n in val.names]
    assert (val.sizes < train.sizes).all()
    batch = val.batch(0, 4)
    for row, spans in zip(batch, val.documents(0, 4)):
        assert sum(b - a for _, a, b in spans) == len(row)
    with pytest.raises(Stage2Error, match="split='test'"):
        MixtureSampler(run.dir, split="test")


def test_plan_matches_the_sampler(formats_run):
    run, _ = formats_run
    plan = run.stats["stages"]["shard"]["plan"]
    sampler = MixtureSampler(run.dir)
    steps, batch = plan["tokens"] // sampler.seq_len // 8, 8
    epochs = sampler.epochs(steps, batch)
    for name, entry in plan["components"].items():
        assert entry["epochs"] == round(epochs[name], 4)
        assert entry["train_tokens"] == len(sampler.components[sampler.names.index(name)]) * sampler.seq_len
    largest = max(plan["components"].values(), key=lambda c: c["train_tokens"])
    assert abs(largest["epochs"] - 1) < 0.01  # the default budget: one pass over the largest component
    e, shares = plan_epochs([1, 3], [10, 10], 4 * 65536)
    assert shares.tolist() == [0.25, 0.75] and e.tolist() == [65536 / 10, 3 * 65536 / 10]


def test_verify_checks_tables_and_formats(formats_run, tmp_path):
    import shutil

    run, _ = formats_run
    comp = run.dir / "shards" / "web"
    assert verify.check_component(comp)["format_files"] == 12
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    bad = copy / "shards" / "web" / "megatron" / "train.bin"
    data = bytearray(bad.read_bytes())
    data[10] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(Stage2Error, match="megatron/train.bin: sha256 does not match"):
        verify.check_component(copy / "shards" / "web")
    # A table that no longer says where the documents end: caught even with its hash recorded anew.
    folder = copy / "shards" / "enc"
    table = np.load(folder / fmt.DOCUMENTS)
    table["tokens"][0] += 1
    table["tokens"][1] -= 1
    table["first"][1] += 1
    np.save(folder / fmt.DOCUMENTS, table)
    index = json.loads((folder / "index.json").read_text())
    index["documents_table"]["sha256"] = hashlib.sha256((folder / fmt.DOCUMENTS).read_bytes()).hexdigest()
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(Stage2Error, match="separators do not lie where the document table says"):
        verify.check_component(folder)
    # A token of the dropped tail (in the trainer files, in no npy row) changed in one file, its hash
    # recorded anew: the other token files hold that tail too.
    shutil.copytree(run.dir, tmp_path / "copy2")
    folder = tmp_path / "copy2" / "shards" / "web"
    index = json.loads((folder / "index.json").read_text())
    assert index["tail_dropped"] > 1, index
    entry = next(e for e in index["formats"] if e["file"] == "nanogpt/train.bin")
    tokens = np.fromfile(folder / entry["file"], dtype=entry["dtype"])
    at = len(tokens) - index["tail_dropped"] + next(i for i in range(index["tail_dropped"]) if tokens[-index["tail_dropped"] + i] != 2)
    tokens[at] = 5 if tokens[at] != 5 else 6  # another ordinary piece, not a separator
    tokens.tofile(folder / entry["file"])
    entry["sha256"] = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(Stage2Error, match="nanogpt/train.bin: its last .* tokens .* differ from .*megatron/train.bin"):
        verify.check_component(folder)


@pytest.mark.slow  # (over half a second: the full suite runs it)
@pytest.mark.parametrize("bos,eos,remainder", [("true", "true", "pad"), ("false", "false", "drop"), ("true", "false", "drop")])
def test_document_tables_for_every_separator_choice(tmp_path, tiny_model, bos, eos, remainder):
    """Without EOS the document ends come from BOS, or from the documents' own token counts."""
    run = shard_run(tmp_path, "seps", corpus(tmp_path), f"shard.tokenizer={tiny_model}", ALL_FORMATS, "shard.validation_percent=10",
                    f"shard.add_bos={bos}", f"shard.add_eos={eos}", f"shard.remainder={remainder}", "dataset.partition_size=50", "shard.seq_len=64")
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    for (name, split), docs in expected_documents(run, sp).items():
        by_id = {doc_id: ([sp.bos_id()] if bos == "true" else []) + ids[:-1] + ([sp.eos_id()] if eos == "true" else []) for doc_id, ids in docs}
        folder = fmt.split_dir(run.dir / "shards" / name, split)
        table = fmt.read_documents(folder)
        assert table["tokens"].tolist() == [len(by_id[d]) for d, _ in docs]
        index = json.loads((folder / "index.json").read_text())
        rows = np.concatenate([np.load(folder / s["file"]) for s in index["shards"]]) if index["shards"] else np.empty((0, 64))
        for r in range(len(rows)):
            spans = row_documents(run.dir, name, r, split)
            rebuilt = [t for doc_id, a, b in spans for t in by_id[doc_id][a:b]]
            pad = index["padding"] if r == len(rows) - 1 else 0
            assert rebuilt + [3] * pad == rows[r].tolist(), (name, split, r)
        verify.check_component(run.dir / "shards" / name)
