"""The shard stage and its packing core, with a real SentencePiece model trained from the sample."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import sentencepiece as spm

import oracles
from helpers import corpus, load_index, make_run, sample_records, shard_run
from stage2.io import parts
from stage2.stages import shard
from stage2.errors import Stage2Error
from stage2.runtime.run import file_sha256, Run
from stage2.shards import format as shard_format
from stage2.tokenizer import encoding
from stage2.io.sources import Document

def check_invariant(index: Dict[str, Any]) -> None:
    assert index["tokens"] + index["separators"] == index["rows"] * index["seq_len"] - index["padding"] + index["tail_dropped"]


# --- packing core -------------------------------------------------------------------------------


def test_token_dtype_switches_at_uint16_limit():
    assert shard_format.token_dtype(500) == np.uint16
    assert shard_format.token_dtype(65536) == np.uint16
    assert shard_format.token_dtype(65537) == np.uint32


def test_with_separators_places_bos_and_eos():
    out = encoding.with_separators([[5, 6], [], [7]], bos=1, eos=2, dtype=np.dtype(np.uint16))
    assert out.tolist() == [1, 5, 6, 2, 1, 2, 1, 7, 2]
    assert encoding.with_separators([[5, 6], [7]], None, 2, np.dtype(np.uint16)).tolist() == [5, 6, 2, 7, 2]
    assert encoding.with_separators([[5], [7]], None, None, np.dtype(np.uint16)).tolist() == [5, 7]


@pytest.mark.parametrize("bos,eos", [(None, 2), (1, 2), (None, None)])
def test_encode_batch_matches_python_separators(tiny_model, bos, eos):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    texts = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 40)] + ["", "x"]
    got = encoding.encode_batch(sp, texts, 2, bos, eos, np.dtype(np.uint16))
    want = encoding.with_separators(sp.encode(texts), bos, eos, np.dtype(np.uint16))
    assert got.dtype == np.uint16 and np.array_equal(got, want)


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_packer_rows_shards_and_tail(tmp_path, remainder):
    rng = np.random.default_rng(0)
    stream = rng.integers(4, 1000, size=1000).astype(np.uint16)
    chunks = np.split(stream, [3, 150, 151, 700])  # uneven chunks cross row and shard boundaries
    res = oracles.pack_stream(chunks, tmp_path, seq_len=16, rows_per_shard=10, dtype=np.dtype(np.uint16), remainder=remainder, pad_id=3)
    files = sorted(tmp_path.glob("shard-*.npy"))
    arrays = [np.load(f) for f in files]
    assert [a.shape for a in arrays] == [(10, 16)] * 6 + [(2 if remainder == "drop" else 3, 16)]
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    assert res.stream_tokens == 1000
    assert res.stream_tokens == res.rows * 16 - res.padding + res.tail_dropped
    if remainder == "drop":
        assert (res.tail_dropped, res.padding) == (1000 % 16, 0)
        assert np.array_equal(flat, stream[: 62 * 16])
    else:
        assert (res.tail_dropped, res.padding) == (0, 16 - 1000 % 16)
        assert np.array_equal(flat[:1000], stream) and (flat[1000:] == 3).all()
    assert [s["sha256"] for s in res.shards] == [file_sha256(f) for f in files]


def test_packer_uint32_for_large_vocab(tmp_path):
    ids = np.array([0, 65535, 65536, 99999, 70000, 1, 2, 3], dtype=np.uint32)
    dtype = shard_format.token_dtype(100000)
    res = oracles.pack_stream([ids], tmp_path, seq_len=4, rows_per_shard=8, dtype=dtype)
    back = np.load(tmp_path / "shard-00000.npy")
    assert back.dtype == np.uint32 and res.rows == 2
    assert back.reshape(-1).tolist() == ids.tolist()


def test_packer_rejects_short_rows_and_pad_without_id(tmp_path):
    with pytest.raises(Stage2Error, match="seq_len=1"):
        shard_format.Packer(tmp_path, 1, 4, np.dtype(np.uint16))
    packer = shard_format.Packer(tmp_path, 4, 4, np.dtype(np.uint16))
    packer.add(np.arange(6, dtype=np.uint16))
    with pytest.raises(Stage2Error, match="no pad id"):
        packer.finish("pad", -1)


# --- the stage ----------------------------------------------------------------------------------


def test_shard_stage_shapes_index_and_stats(tmp_path, tiny_model):
    paths = corpus(tmp_path)
    run = shard_run(tmp_path, "run", paths, f"shard.tokenizer={tiny_model}", "shard.seq_len=64", "shard.sequences_per_shard=32")
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    stats = run.stats["stages"]["shard"]["components"]
    assert list(stats) == ["web", "enc"]  # manifest order
    for comp, n_docs in (("web", 120), ("enc", 200)):
        index = load_index(run, comp)
        check_invariant(index)
        assert index["documents"] == n_docs == stats[comp]["records"]
        assert index["separators"] == n_docs and index["eos_id"] == 2 and index["pad_id"] == 3
        assert index["dtype"] == "uint16" and index["vocab_size"] == 500
        assert index["tokenizer"]["sha256"] == file_sha256(tiny_model)
        assert index["padding"] == 0 and 0 <= index["tail_dropped"] < 64
        shards = [np.load(run.dir / "shards" / comp / s["file"]) for s in index["shards"]]
        assert len(shards) > 1 and all(a.dtype == np.uint16 and a.shape[1] == 64 for a in shards)
        assert all(a.shape[0] == 32 for a in shards[:-1]) and sum(a.shape[0] for a in shards) == index["rows"]
        assert stats[comp]["sequences"] == index["rows"] and stats[comp]["shards"] == len(shards)
        assert stats[comp]["tokens"] == index["tokens"] + index["separators"] and stats[comp]["tokens_per_s"] > 0
        # the document tokens are exactly what SentencePiece gives for the input texts
        texts = [json.loads(l)["text"] for l in open(paths[0 if comp == "web" else 1], encoding="utf-8")]
        assert index["tokens"] == sum(len(ids) for ids in sp.encode(texts))
        assert f"shards/{comp}/index.json" in run.artifacts
        assert not (run.dir / "shards" / comp / ".work").exists()
    assert run.stats["headline"]["sequences"] == sum(c["sequences"] for c in stats.values())
    manifest = json.loads((run.dir / "shards" / "manifest.json").read_text())
    assert [c["name"] for c in manifest["components"]] == ["web", "enc"]


def test_a_split_shorter_than_one_row_is_said(tmp_path, tiny_model, caplog):
    """A component whose validation split holds fewer tokens than one row gets no validation row (its
    tokens are the dropped tail): a warning says so, rather than a plan that counts tokens no row holds."""
    with caplog.at_level(logging.WARNING, logger="stage2.stages.shard"):
        run = shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.seq_len=2048", "shard.validation_percent=1")
    stats = run.stats["stages"]["shard"]["components"]
    short = [c for c in stats if stats[c]["validation_tokens"] and not stats[c]["validation_sequences"]]
    assert short, stats
    said = [r.getMessage() for r in caplog.records if "fewer than one row" in r.getMessage()]
    assert [m.split()[2] for m in said if " validation tokens" in m] == short, said
    assert all("shard.seq_len=2048" in m for m in said)


def test_a_component_without_validation_documents_is_said(tmp_path, tiny_model, caplog):
    # Too few documents for the validation share: the validation sampler then draws from the other
    # components only, which a warning says rather than a plan that lists the component as usual.
    with caplog.at_level(logging.WARNING, logger="stage2.stages.shard"):
        run = shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.validation_percent=0.01")
    stats = run.stats["stages"]["shard"]["components"]
    none = sorted(c for c in stats if not stats[c]["validation_records"])
    assert none, stats
    said = [r.getMessage() for r in caplog.records if "has no validation documents" in r.getMessage()]
    assert sorted(m.split()[2] for m in said) == none and all("shard.validation_percent=0.01" in m for m in said), said


@pytest.mark.parametrize("percent", [1, 0])  # at 1% one of the two components has validation documents
def test_megatron_is_given_no_empty_validation_dataset(tmp_path, tiny_model, caplog, percent):
    # Megatron cannot open a dataset of no document (mmap of an empty .bin): the printed --valid-data-path
    # names only the components with validation documents, and none at all when no component has one.
    with caplog.at_level(logging.WARNING, logger="stage2.stages.shard"):
        run = shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", f"shard.validation_percent={percent}",
                        "shard.formats=[npy,megatron,nanogpt]")
    stats = run.stats["stages"]["shard"]
    has_validation = sorted(c for c, v in stats["components"].items() if v["validation_records"])
    listed = stats["megatron_data_path"]["validation"].split()
    assert sorted(prefix.split("/")[1] for prefix in listed[1::2]) == has_validation
    for prefix in listed[1::2]:
        assert (run.dir / f"{prefix}.bin").stat().st_size > 0
    assert len(stats["megatron_data_path"]["train"].split()) == 2 * len(stats["components"])
    table = shard.plan_table(stats, run.dir)
    assert any(line.strip().startswith("--valid-data-path ") for line in table.splitlines()) == bool(has_validation), table
    said = [r.getMessage() for r in caplog.records if "shard.validation_percent=0:" in r.getMessage()]
    if percent:
        assert has_validation and len(has_validation) < len(stats["components"]), stats["components"]
        assert not said
    else:
        assert not has_validation and "no component has a validation document" in table
        assert len(said) == 1 and "megatron, nanogpt" in said[0] and "val.bin" in said[0], said


def test_pad_remainder_and_bos(tmp_path, tiny_model):
    paths = corpus(tmp_path)
    run = shard_run(tmp_path, "run", paths, f"shard.tokenizer={tiny_model}", "shard.seq_len=128", "shard.remainder=pad", "shard.add_bos=true")
    for comp in ("web", "enc"):
        index = load_index(run, comp)
        check_invariant(index)
        assert index["tail_dropped"] == 0 and 0 < index["padding"] < 128
        assert index["separators"] == 2 * index["documents"]
        last = np.load(run.dir / "shards" / comp / index["shards"][-1]["file"])[-1]
        assert (last[128 - index["padding"] :] == 3).all() and last[128 - index["padding"] - 1] == 2
        first = np.load(run.dir / "shards" / comp / index["shards"][0]["file"])[0]
        assert first[0] == 1  # BOS opens the stream


@pytest.mark.slow  # over half a second
def test_pad_without_pad_id_fails_before_work(tmp_path, nopad_model):
    with pytest.raises(Stage2Error, match="no pad id"):
        shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={nopad_model}", "shard.remainder=pad")
    assert not (tmp_path / "run" / "shards").exists()


def test_seq_len_below_two_is_an_error(tmp_path, tiny_model):
    with pytest.raises(Stage2Error, match="seq_len=1"):
        shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.seq_len=1")


def test_round_trip_gives_back_documents(tmp_path, tiny_model):
    paths = corpus(tmp_path)
    run = shard_run(tmp_path, "run", paths, f"shard.tokenizer={tiny_model}", "shard.seq_len=100", "shard.remainder=pad")
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    from stage2.reader import ComponentShards

    for comp, path in zip(("web", "enc"), paths):
        flat = np.concatenate(list(ComponentShards(run.dir / "shards" / comp).rows())).astype(np.int64)
        flat = flat[: len(flat) - load_index(run, comp)["padding"]]
        ends = np.flatnonzero(flat == sp.eos_id())
        assert ends[-1] == len(flat) - 1
        docs = [sp.decode(part.tolist()) for part in np.split(flat, ends + 1)[:-1]]
        texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
        assert docs == texts  # byte for byte: newlines, indentation and double spaces included
        assert sum("\n" in t for t in texts) > len(texts) / 2  # and there were newlines to keep


def write_filtered(folder: Path, comp: str, texts: List[str], per_part: int) -> None:
    rels = []
    for i in range(0, len(texts), per_part):
        docs = [Document(id=f"{comp}-{j}", text=t, component=comp, source="x", record=j + 1) for j, t in enumerate(texts[i : i + per_part], i)]
        path = parts.part_path(folder, comp, 0, i // per_part)
        parts.write_table(path, parts.docs_to_table(docs))
        rels.append(str(path.relative_to(folder)))
    manifest = folder / parts.FILTERED_DIR / parts.MANIFEST
    old = json.loads(manifest.read_text()) if manifest.exists() else {"components": {}}
    old["components"][comp] = {"parts": rels}
    manifest.write_text(json.dumps(old))
    # The record a filter stage leaves: a later stage checks the parts against it before reading them.
    listed = [rel for entry in old["components"].values() for rel in entry["parts"]] + [str(manifest.relative_to(folder))]
    (folder / parts.FILTERED_DIR / parts.FILTER_FINISHED).write_text(json.dumps({"artifacts": {rel: file_sha256(folder / rel) for rel in listed}}))


@pytest.mark.slow  # over half a second
def test_filtered_parts_of_a_past_run_and_tokenizer_folder(tmp_path, tiny_model):
    paths = corpus(tmp_path)
    raw = shard_run(tmp_path, "raw", paths, f"shard.tokenizer={tiny_model}", "shard.seq_len=64")
    # a "past run" holding filtered parts (same texts, split in parts) and a tokenizer/ folder
    past = tmp_path / "past"
    for comp, path in zip(("web", "enc"), paths):
        write_filtered(past, comp, [json.loads(l)["text"] for l in open(path, encoding="utf-8")], per_part=70)
    (past / "tokenizer").mkdir()
    (past / "tokenizer" / "spm_500_unigram.model").write_bytes(tiny_model.read_bytes())
    (past / "stats.json").write_text(json.dumps({"config_digest": "abc"}))
    run = shard_run(tmp_path, "fromparts", paths, f"shard.tokenizer={past}", f"shard.input_run={past}", "shard.seq_len=64")
    for comp in ("web", "enc"):
        a, b = load_index(raw, comp), load_index(run, comp)
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
        assert a["rows"] == b["rows"] and b["tokenizer"]["path"] == "tokenizer/spm_500_unigram.model"
    # The model is copied into the shard run (so it trains without `past`), with a tokenizer.json made from it.
    copied = run.dir / "tokenizer" / "spm_500_unigram.model"
    assert copied.read_bytes() == tiny_model.read_bytes()
    stats = json.loads((run.dir / "stats.json").read_text())
    assert stats["stages"]["shard"]["tokenizer_copy"]["source"] == str(past / "tokenizer" / "spm_500_unigram.model")
    assert set(stats["stages"]["shard"]["tokenizer_copy"]["made_here"]) == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert {"tokenizer/spm_500_unigram.model", "tokenizer/tokenizer.json"} <= set(stats["artifacts"])
    lineage = json.loads((run.dir / "provenance.json").read_text())["lineage"]
    assert lineage["shard.documents"]["folder"] == str(past) and lineage["shard.tokenizer"]["config_digest"] == "abc"


@pytest.mark.slow  # over half a second
def test_tokenizer_from_this_run(tmp_path, tiny_model):
    def place_model(run: Run) -> None:
        (run.dir / "tokenizer").mkdir()
        (run.dir / "tokenizer" / "spm_500_unigram.model").write_bytes(tiny_model.read_bytes())

    run = shard_run(tmp_path, "run", corpus(tmp_path), "shard.seq_len=64", before=place_model)
    assert load_index(run, "web")["tokenizer"]["path"] == "tokenizer/spm_500_unigram.model"
    with pytest.raises(Stage2Error, match="stage=tokenizer first"):
        shard_run(tmp_path, "nomodel", corpus(tmp_path))


# --- in-process pipeline (one worker: reader, encoder and packer threads) ------------------------


class _PublicOnly:
    """A processor seen without its private C++ handle: encode_batch must take the public numpy call."""

    def __init__(self, sp: Any, processor: Any = None):
        self._sp, self._fake = sp, processor

    def __getattr__(self, name: str) -> Any:
        if name == "_processor":
            if self._fake is None:
                raise AttributeError(name)
            return self._fake
        return getattr(self._sp, name)


class _ChangedSignature:
    def _EncodeAsBufferBatch(self, *args: Any) -> Any:
        raise TypeError("incompatible function arguments")  # what pybind says to a changed signature


@pytest.mark.parametrize("processor", [None, _ChangedSignature()], ids=["no-private-method", "changed-signature"])
def test_encode_batch_falls_back_to_the_public_call(tiny_model, processor):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    texts = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 20)] + [""]
    got = encoding.encode_batch(_PublicOnly(sp, processor), texts, 2, None, 2, np.dtype(np.uint16))
    assert np.array_equal(got, encoding.encode_batch(sp, texts, 2, None, 2, np.dtype(np.uint16)))
    assert np.array_equal(got, encoding.with_separators(sp.encode(texts), None, 2, np.dtype(np.uint16)))


def test_in_process_threads_stop_when_packing_fails(tmp_path, tiny_model, monkeypatch):
    """An error on the packing side stops the reader and encoder threads; nothing is saved after it."""
    calls = []
    add = shard.ComponentPacker.add

    def failing_add(self, result):
        calls.append(result["index"])
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        add(self, result)

    monkeypatch.setattr(shard.ComponentPacker, "add", failing_add)
    run = make_run(tmp_path, "fails", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "dataset.partition_size=10", "shard.seq_len=64")
    try:
        # Kept: a live traceback keeps run()'s frame, so the threads must stop before the error leaves it.
        with pytest.raises(RuntimeError, match="disk gone") as failure:
            shard.run(run)
    finally:
        run.executor.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("shard-read", "shard-encode"))], failure
    work = run.dir / "shards" / "web" / ".work"
    # Partitions 0 and 1 were saved before they were packed; later ones, encoded ahead, were dropped.
    assert sorted(p.name for p in work.glob("part-*.done.json")) == ["part-00000.done.json", "part-00001.done.json"]
    assert not list(run.dir.rglob("*.tmp-*"))
