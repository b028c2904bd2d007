"""The shard stage through a process pool: the same bytes with one or two workers, from raw text and from filtered parts."""

from __future__ import annotations

import json
from pathlib import Path
import pytest
from helpers import corpus, shard_run
from unit.test_shard import write_filtered

pytestmark = pytest.mark.slow


def assert_same_shards(a: Path, b: Path) -> None:
    """The same shard files, byte for byte, in two run folders (and enough of them to mean something)."""
    files = sorted(p.relative_to(a / "shards") for p in (a / "shards").rglob("*") if p.is_file())
    assert len(files) > 4
    assert files == sorted(p.relative_to(b / "shards") for p in (b / "shards").rglob("*") if p.is_file())
    for rel in files:
        assert (a / "shards" / rel).read_bytes() == (b / "shards" / rel).read_bytes(), rel


def test_worker_count_does_not_change_bytes(tmp_path, tiny_model):
    paths = corpus(tmp_path)
    common = (f"shard.tokenizer={tiny_model}", "shard.seq_len=64", "shard.sequences_per_shard=16", "dataset.partition_size=40", "shard.batch_size=16")
    one = shard_run(tmp_path, "w1", paths, *common, "executor.workers=1")
    two = shard_run(tmp_path, "w2", paths, *common, "executor.workers=2", "shard.num_threads=1")
    assert_same_shards(one.dir, two.dir)


@pytest.mark.parametrize("per_part", [30, 4], ids=["a-part-a-task", "parts-grouped"])
def test_filtered_parts_same_bytes_with_one_or_two_workers(tmp_path, tiny_model, per_part):
    """One worker reads parts on a thread and packs from memory; two workers go through token files and
    write tasks (80 small parts: 8 to a tokenize task, groups running across the components' ends)."""
    paths = corpus(tmp_path)
    past = tmp_path / "past"
    for comp, path in zip(("web", "enc"), paths):
        write_filtered(past, comp, [json.loads(l)["text"] for l in open(path, encoding="utf-8")], per_part=per_part)
    common = (f"shard.tokenizer={tiny_model}", f"shard.input_run={past}", "shard.seq_len=64", "shard.sequences_per_shard=16", "shard.batch_size=8")
    one = shard_run(tmp_path, "w1", paths, *common, "executor.workers=1")
    two = shard_run(tmp_path, "w2", paths, *common, "executor.workers=2", "shard.num_threads=1")
    assert_same_shards(one.dir, two.dir)
    for comp in ("web", "enc"):
        a, b = (json.loads((r.dir / "stats.json").read_text())["stages"]["shard"]["components"][comp] for r in (one, two))
        assert {k: v for k, v in a.items() if k not in ("seconds", "tokens_per_s")} == {k: v for k, v in b.items() if k not in ("seconds", "tokens_per_s")}
