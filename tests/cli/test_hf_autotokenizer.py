"""transformers' own AutoTokenizer on an exported tokenizer folder: SentencePiece's ids, an exact decode,
the context length of the shards' rows, and no EOS added by `tok(text)` (the shards add one per document).

transformers is not a stage2 dependency: the test runs it in the interpreter named by
$STAGE2_PEERS_PYTHON (default /tmp/peers/bin/python) and skips when transformers is not there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sentencepiece as spm

from helpers import sample_records
from stage2.tokenizer import encoding, export

PEERS_PYTHON = Path(os.environ.get("STAGE2_PEERS_PYTHON", "/tmp/peers/bin/python"))

CHECK = r"""
import json, sys
from transformers import AutoTokenizer
folder, texts = sys.argv[1], json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(folder)
out = {"ids": [tok(t)["input_ids"] for t in texts], "max": tok.model_max_length, "eos": tok.eos_token_id}
out["decoded"] = [tok.decode(ids) for ids in out["ids"]]
# As docs/tokenizer.md says to load it for a shard document's ids, BOS (shard.add_bos=true) and EOS included.
framed = AutoTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=True)
out["framed"] = [framed(t)["input_ids"] for t in texts]
json.dump(out, open(sys.argv[3], "w"))
"""


def _has_transformers() -> bool:
    if not PEERS_PYTHON.exists():
        return False
    return subprocess.run([str(PEERS_PYTHON), "-c", "import transformers"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _has_transformers(), reason="transformers not installed in $STAGE2_PEERS_PYTHON")
def test_autotokenizer_gives_the_shards_ids_and_context_length(tmp_path, tiny_model):
    folder = tmp_path / "tokenizer"
    export.write(tiny_model.read_bytes(), folder, 1024)
    texts = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 40)]
    texts += ["tabs\tand  spaces\n\nnewlines", "a literal \u2581 marker", "</s> in text", "émigré 東京 🙂"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    subprocess.run([str(PEERS_PYTHON), "-c", CHECK, str(folder), str(tmp_path / "texts.json"), str(tmp_path / "out.json")], check=True, capture_output=True)
    out = json.loads((tmp_path / "out.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model))
    assert out["ids"] == encoding.encode(sp, texts)  # the shards' ids, with no EOS appended
    assert out["decoded"] == texts
    assert out["max"] == 1024 and out["eos"] == sp.eos_id()
    assert out["framed"] == [[sp.bos_id(), *ids, sp.eos_id()] for ids in out["ids"]]
