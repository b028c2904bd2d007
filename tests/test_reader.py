"""The training-side reader: memory-mapped rows and a deterministic, resumable mixture sampler."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stage2 import reader
from stage2.errors import Stage2Error
from test_shard import corpus, load_index, shard_run, tiny_model  # noqa: F401  (tiny_model is a fixture)


@pytest.fixture
def sharded(tmp_path, tiny_model):  # noqa: F811
    return shard_run(tmp_path, "run", corpus(tmp_path), f"shard.tokenizer={tiny_model}", "shard.seq_len=32", "shard.sequences_per_shard=50")


def test_component_rows_are_memory_mapped_and_in_order(sharded):
    comp = reader.ComponentShards(sharded.dir / "shards" / "enc")
    index = load_index(sharded, "enc")
    assert len(comp) == index["rows"] and len(comp.arrays) == len(index["shards"]) > 1
    assert all(isinstance(a, np.memmap) for a in comp.arrays)
    stacked = np.concatenate([np.load(sharded.dir / "shards" / "enc" / s["file"]) for s in index["shards"]])
    for row in (0, 49, 50, len(comp) - 1):  # either side of a shard boundary
        assert np.array_equal(comp[row], stacked[row])
    assert np.array_equal(np.stack(list(comp.rows())), stacked)
    with pytest.raises(IndexError):
        comp[len(comp)]


def test_sampler_is_a_pure_function_of_seed_and_step(sharded):
    a = reader.MixtureSampler(sharded.dir, seed=7)
    first = [(s, name, row.tolist()) for s, name, row in itertools.islice(a.iterate(), 200)]
    # a fresh sampler resumed at step 120 continues exactly where the first left off
    resumed = reader.MixtureSampler(sharded.dir / "shards", seed=7)
    assert [(s, n, r.tolist()) for s, n, r in itertools.islice(resumed.iterate(120), 80)] == first[120:]
    other = reader.MixtureSampler(sharded.dir, seed=8)
    assert [other.locate(s) for s in range(200)] != [a.locate(s) for s in range(200)]
    # two ranks striding over the steps see the same rows as one reader
    rank1 = [n for _, n, _ in itertools.islice(a.iterate(1, 2), 50)]
    assert rank1 == [first[s][1] for s in range(1, 100, 2)]
    assert a.batch(3, 4).shape == (4, 32)
    assert np.array_equal(a.batch(3, 4)[0], a[12][1])


def test_sampler_follows_manifest_weights(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=0)
    assert s.weights.tolist() == [0.5, 0.5]  # dataset=files: every component weighs 1
    counts = {"web": 0, "enc": 0}
    for step in range(4000):
        counts[s[step][0]] += 1
    assert abs(counts["web"] / 4000 - 0.5) < 0.04
    skewed = reader.MixtureSampler(sharded.dir, seed=0, weights={"web": 0.9, "enc": 0.1})
    share = sum(skewed[step][0] == "web" for step in range(4000)) / 4000
    assert abs(share - 0.9) < 0.03
    only = reader.MixtureSampler(sharded.dir, seed=0, weights={"enc": 1.0})
    assert {only[step][0] for step in range(300)} == {"enc"}
    with pytest.raises(Stage2Error, match="positive weight"):
        reader.MixtureSampler(sharded.dir, weights={"nope": 1.0})


def test_torch_wrapper_only_with_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        assert reader.TorchMixtureDataset is None
    else:
        assert reader.TorchMixtureDataset is not None
