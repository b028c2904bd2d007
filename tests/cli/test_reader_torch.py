"""The reader under torch's DataLoader: worker processes, resume at an odd step with ranks, next-token pairs, and the docs' torch example."""

from __future__ import annotations

import numpy as np
import pytest
from stage2 import reader
from unit.test_reader import run_examples, sharded  # noqa: F401  (sharded: the fixture)

pytestmark = pytest.mark.slow




def test_readme_torch_example_runs(sharded):
    pytest.importorskip("torch")
    ns = run_examples(sharded.dir, with_torch=True)
    assert ns["step"] == 19
    assert np.array_equal(ns["x"].numpy(), ns["sampler"].pairs(19, 8)[0])


def loader_batches(run_dir, workers: int, **kw) -> list:
    from torch.utils.data import DataLoader

    data = reader.TorchMixtureDataset(run_dir, **kw)
    return [b.numpy() if not isinstance(b, (tuple, list)) else tuple(t.numpy() for t in b) for b in DataLoader(data, batch_size=None, num_workers=workers)]


def test_torch_batches_are_the_same_for_any_num_workers(sharded):
    pytest.importorskip("torch")
    s = reader.MixtureSampler(sharded.dir, seed=9)
    expected = [s.batch(step, 4).astype(np.int64) for step in range(7)]  # 7 steps: workers get unequal shares
    for workers in (0, 1, 2):
        got = loader_batches(sharded.dir, workers, batch_size=4, seed=9, steps=7)
        assert len(got) == 7 and all(g.dtype == np.int64 for g in got)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected)), f"num_workers={workers}"


def test_torch_resume_from_an_odd_step_with_ranks(sharded):
    pytest.importorskip("torch")
    for rank in (0, 1):
        s = reader.MixtureSampler(sharded.dir, seed=9, rank=rank, world_size=2)
        uninterrupted = loader_batches(sharded.dir, 2, batch_size=4, seed=9, rank=rank, world_size=2, steps=12)
        resumed = loader_batches(sharded.dir, 2, batch_size=4, seed=9, rank=rank, world_size=2, start_step=5, steps=7)
        assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted[5:])) and len(resumed) == 7
        assert all(np.array_equal(a, s.batch(step, 4)) for step, a in enumerate(uninterrupted))
    rank0 = loader_batches(sharded.dir, 2, batch_size=4, seed=9, rank=0, world_size=2, steps=3)
    rank1 = loader_batches(sharded.dir, 2, batch_size=4, seed=9, rank=1, world_size=2, steps=3)
    assert not any(np.array_equal(a, b) for a, b in zip(rank0, rank1))


def test_torch_next_token_pairs(sharded):
    pytest.importorskip("torch")
    pairs = loader_batches(sharded.dir, 2, batch_size=3, seed=1, steps=4, next_token=True)
    s = reader.MixtureSampler(sharded.dir, seed=1)
    for step, (x, y) in enumerate(pairs):
        assert x.shape == y.shape == (3, 31)
        assert np.array_equal(x, s.pairs(step, 3)[0]) and np.array_equal(y, s.pairs(step, 3)[1])
