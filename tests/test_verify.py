"""`stage=verify`: passes on a fresh run, fails naming the file after any tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stage2.errors import Stage2Error
from stage2.verify import verify_folder
from test_shard import corpus, shard_run, tiny_model  # noqa: F401  (tiny_model is a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sharded(tmp_path, tiny_model):  # noqa: F811
    return shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.seq_len=64", "shard.sequences_per_shard=16")


def test_verify_passes_then_fails_on_one_flipped_byte(sharded):
    report = verify_folder(sharded.dir)
    assert set(report["components"]) == {"web", "enc"}
    assert report["components"]["enc"]["shards"] > 1
    target = sharded.dir / "shards" / "enc" / "shard-00001.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one token: the shape and dtype are still fine
    target.write_bytes(bytes(data))
    with pytest.raises(Stage2Error, match="enc/shard-00001.npy"):
        verify_folder(sharded.dir)


def test_verify_catches_index_invariant_and_missing_file(sharded):
    index_path = sharded.dir / "shards" / "web" / "index.json"
    index = json.loads(index_path.read_text())
    index["tokens"] += 1
    index_path.write_text(json.dumps(index))
    with pytest.raises(Stage2Error, match="web/index.json: tokens \\+ separators"):
        verify_folder(sharded.dir)
    index["tokens"] -= 1
    index_path.write_text(json.dumps(index))
    verify_folder(sharded.dir)
    (sharded.dir / "shards" / "web" / "shard-00000.npy").unlink()
    with pytest.raises(Stage2Error, match="web/shard-00000.npy: listed in"):
        verify_folder(sharded.dir)


def test_verify_checks_filter_stats(sharded):
    stats = json.loads((sharded.dir / "stats.json").read_text())
    web = {"records_in": 130, "kept": 120, "dropped": {"short": 7, "language": 3}}  # 120 documents were sharded
    stats.setdefault("stages", {})["filter"] = {"components": {"web": web}}
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    assert verify_folder(sharded.dir)["filter_components"] == 1
    web["kept"] = 121
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match="stats.json: filter component web: records_in 130 != kept 121"):
        verify_folder(sharded.dir)
    web["records_in"] = 131  # consistent filter stats, but one kept document is not in the shards
    (sharded.dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(Stage2Error, match="web/index.json: 120 documents sharded but the filter kept 121"):
        verify_folder(sharded.dir)


def test_verify_stage_dispatch_and_command_exit_code(sharded, tmp_path):
    from conftest import compose_plain
    from stage2.pipeline import run_stage

    plain = compose_plain([f"runs_index={tmp_path}/runs.jsonl", "stage=verify", f"verify.dir={sharded.dir}"], tmp_path)
    run_stage(plain, tmp_path / "verify_ok")  # passes: no exception
    target = sharded.dir / "shards" / "web" / "shard-00000.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    # the real command: a non-zero exit and the file's name on stderr
    cmd = [sys.executable, "-m", "stage2.main", "stage=verify", f"verify.dir={sharded.dir}", f"hydra.run.dir={tmp_path}/verify_out", f"runs_index={tmp_path}/runs.jsonl"]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "web/shard-00000.npy" in bad.stderr, bad.stderr


def test_verify_checks_the_run_tokenizer(tmp_path, tiny_model):  # noqa: F811
    def place_model(run):
        (run.dir / "tokenizer").mkdir()
        (run.dir / "tokenizer" / "spm_500_unigram.model").write_bytes(tiny_model.read_bytes())

    run = shard_run(tmp_path, "run", corpus(tmp_path), "shard.seq_len=64", before=place_model)
    verify_folder(run.dir)
    with open(run.dir / "tokenizer" / "spm_500_unigram.model", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Stage2Error, match="spm_500_unigram.model: sha256 does not match"):
        verify_folder(run.dir)
