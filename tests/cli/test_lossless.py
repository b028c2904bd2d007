"""The default pipeline, as a new user runs it: its shards decode to the filtered documents byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from stage2.io import parts
from stage2.tokenizer import encoding
from stage2.tokenizer.sample import is_heldout

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("default") / "run"
    done = subprocess.run(
        [str(BIN / "stage2"), f"hydra.run.dir={folder}", f"runs_index={folder.parent}/runs.jsonl"],
        cwd=folder.parent, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def shard_tokens(component_dir: Path) -> np.ndarray:
    index = json.loads((component_dir / "index.json").read_text())
    return np.concatenate([np.load(component_dir / s["file"]).reshape(-1) for s in index["shards"]]).astype(np.int64)


def test_shards_split_at_eos_decode_to_the_filtered_documents(default_run):
    model = next((default_run / "tokenizer").glob("*.model"))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    manifest = parts.read_manifest(default_run)
    assert {"web", "encyclopedia", "code", "noisy"} <= set(manifest["components"])
    percent = json.loads((default_run / "stats.json").read_text())["stages"]["shard"]["validation_percent"]
    for comp in manifest["components"]:
        # The train split: the filtered documents less the validation split's (by id hash)
        texts = [d.text for d in parts.iter_filtered(default_run, comp) if not is_heldout(d.id, percent)]
        index = json.loads((default_run / "shards" / comp / "index.json").read_text())
        flat = shard_tokens(default_run / "shards" / comp)
        ends = np.flatnonzero(flat == sp.eos_id())
        decoded = [sp.decode(seg.tolist()) for seg in np.split(flat, ends + 1)[:-1]]
        n = len(decoded)
        assert decoded == texts[:n], comp  # every kept byte: newlines, indentation, double spaces
        # Only a dropped tail is missing: the end of the last rows is the start of the next document.
        rest = flat[ends[-1] + 1 :].tolist()
        assert n == len(texts) or encoding.encode(sp, [texts[n]])[0][: len(rest)] == rest
        missing = sum(len(ids) + 1 for ids in encoding.encode(sp, texts[n:])) - len(rest)
        assert missing == index["tail_dropped"] and missing < index["seq_len"], comp
    code = [d.text for d in parts.iter_filtered(default_run, "code")]
    assert sum("\n    " in t for t in code) > 0.9 * len(code)  # indented Python, kept as it was
    # U+2581, SentencePiece's space marker, kept too: rich's spinners draw with it.
    assert any(d.id.endswith("rich/_spinners.py") and d.text.count("\u2581") > 1000 for d in parts.iter_filtered(default_run, "code"))


def test_tokenizer_json_gives_sentencepiece_ids_on_every_document(default_run):
    from tokenizers import Tokenizer

    model = next((default_run / "tokenizer").glob("*.model"))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    hf = Tokenizer.from_file(str(default_run / "tokenizer" / "tokenizer.json"))
    stats = json.loads((default_run / "stats.json").read_text())["stages"]["tokenizer"]
    for comp in parts.read_manifest(default_run)["components"]:
        texts = [d.text for d in parts.iter_filtered(default_run, comp)]
        ours = encoding.encode(sp, texts)  # as the shards hold them
        theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        assert sum(a != b for a, b in zip(ours, theirs)) == 0, comp
        assert [hf.decode(ids, skip_special_tokens=False) for ids in theirs] == texts, comp
        assert any(sp.is_byte(i) for ids in ours for i in ids) or comp != "noisy"  # byte fallback exercised
        assert stats["components"][comp]["hf_exact_share"] == 1.0
        assert stats["components"][comp]["roundtrip_share"] == 1.0
