"""The training-side reader: memory-mapped rows and the mixture stream as a pure function of
(shard run, seed, step, rank, world size, batch size); torch's DataLoader on top when torch is installed."""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import REPO, corpus, load_index, shard_run
from stage2 import reader
from stage2.errors import Stage2Error


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_model):
    """One shard run for the module: every test here only reads it."""
    base = tmp_path_factory.mktemp("reader")
    return shard_run(base, "run", corpus(base), f"shard.tokenizer={tiny_model}", "shard.seq_len=32", "shard.sequences_per_shard=50")


def rows_of_stream(sampler: reader.MixtureSampler, steps: range, batch_size: int) -> np.ndarray:
    """[steps * batch_size, 2]: (component, row) of every draw, in stream order."""
    return np.concatenate([np.stack(sampler.locate(s, batch_size), axis=1) for s in steps])


def window_shares(comp: np.ndarray, k: int, window: int) -> np.ndarray:
    """Share of component k in every window of `window` consecutive draws."""
    hits = np.concatenate([[0], np.cumsum(comp == k)])
    return (hits[window:] - hits[:-window]) / window


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


# --- the interleave ---------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.5, 0.3, 0.2], [0.9, 0.1], [1, 1, 1], [0.6, 0.25, 0.1, 0.04, 0.01], [1.0, 1e-7]])
def test_interleave_keeps_every_prefix_within_3_draws_of_the_weights(weights):
    schedule, numbers, quota = reader.interleave(weights)
    w = np.asarray(weights) / np.sum(weights)
    assert quota.sum() == reader.PERIOD == len(schedule) and (quota >= 1).all()  # a tiny weight still gets drawn
    assert np.abs(quota / reader.PERIOD - w).max() <= 1.5 / reader.PERIOD
    for c, q in enumerate(quota):  # each component's draws numbered 0, 1, ... in schedule order
        assert numbers[schedule == c].tolist() == list(range(q))
    two = np.concatenate([schedule, schedule])  # the schedule repeats: check across the seam too
    n = np.arange(1, len(two) + 1)
    for c, q in enumerate(quota):
        assert np.abs(np.cumsum(two == c) - n * q / reader.PERIOD).max() <= 3


def test_component_shares_within_one_point_over_any_10000_draws(sharded):
    for weights in (None, {"web": 0.7, "enc": 0.3}, {"web": 0.93, "enc": 0.07}):
        s = reader.MixtureSampler(sharded.dir, seed=3, weights=weights)
        for first in (0, 10**9 + 17):  # anywhere in the stream, not only at its start
            comp, _ = s.components_of(np.arange(first, first + 150_000, dtype=np.int64))
            for k, w in enumerate(s.weights):
                shares = window_shares(comp, k, 10_000)
                assert np.abs(shares - w).max() < 0.01
                assert np.abs(shares - w).max() < 0.0006  # what the README says
    assert reader.MixtureSampler(sharded.dir).weights.tolist() == [0.5, 0.5]  # dataset=files: each weighs 1


def test_weights_select_components(sharded):
    only = reader.MixtureSampler(sharded.dir, weights={"enc": 1.0, "web": 0})
    assert set(rows_of_stream(only, range(40), 8)[:, 0].tolist()) == {only.names.index("enc")}
    with pytest.raises(Stage2Error, match="positive weight"):
        reader.MixtureSampler(sharded.dir, weights={"enc": 0, "web": 0})


# --- epochs -----------------------------------------------------------------------------------


def test_no_row_repeats_within_a_pass_and_passes_reshuffle(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=5)
    steps = int(3.2 * (s.sizes / s.weights).max()) // 16 + 1  # three passes over each component
    draws = rows_of_stream(s, range(steps), 16)
    for c, n in enumerate(s.sizes.tolist()):
        rows = draws[draws[:, 0] == c, 1]
        passes = [rows[i : i + n] for i in range(0, len(rows) - n + 1, n)]
        assert len(passes) >= 3
        for p in passes:  # every row exactly once per pass
            assert sorted(p.tolist()) == list(range(n))
        assert not np.array_equal(passes[0], passes[1])  # a new order each pass
    # epochs() counts the passes: after the stream above, draws / rows per component
    counts = np.bincount(draws[:, 0], minlength=len(s.sizes))
    assert s.epochs(steps, 16) == pytest.approx({name: counts[c] / s.sizes[c] for c, name in enumerate(s.names)})


def test_sampling_with_replacement_is_an_option(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=5, replacement=True)
    draws = rows_of_stream(s, range(40), 16)
    enc = s.names.index("enc")
    rows = draws[draws[:, 0] == enc, 1][: s.sizes[enc]]  # one pass's worth of draws
    assert len(set(rows.tolist())) < len(rows)  # rows repeat within a pass
    assert np.array_equal(rows_of_stream(reader.MixtureSampler(sharded.dir, seed=5, replacement=True), range(40), 16), draws)


# --- the stream as a pure function ---------------------------------------------------------------


def test_batch_holds_the_located_rows(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=1)
    for step in (0, 1, 99):
        batch = s.batch(step, 6)
        assert batch.shape == (6, 32) and batch.dtype == np.uint16 and not batch.flags.writeable
        comp, rows = s.locate(step, 6)
        assert np.array_equal(batch, np.stack([s.components[c][r] for c, r in zip(comp, rows)]))


def test_same_batches_from_two_instances_any_access_order_and_other_seeds_differ(sharded):
    a = reader.MixtureSampler(sharded.dir, seed=7)
    b = reader.MixtureSampler(sharded.dir / "shards", seed=7)
    steps = [0, 1, 2, 1500, 3, 1499, 8000, 2]
    # b reads in another order: its read-ahead blocks start elsewhere, and the rows must not change
    first = {s: a.batch(s, 4).copy() for s in sorted(steps)}
    for s in steps:
        assert np.array_equal(b.batch(s, 4), first[s])
    other = reader.MixtureSampler(sharded.dir, seed=8)
    assert not np.array_equal(rows_of_stream(other, range(20), 4), rows_of_stream(a, range(20), 4))


def test_resume_from_an_odd_step_is_the_uninterrupted_run(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=2)
    block = s.block_steps(4)
    assert block < 3000  # the steps below cross read-ahead blocks
    uninterrupted = [b.copy() for _, b in s.iterate(4, 0, 3000)]
    for start in (1, 7, block - 1, block + 1):
        resumed = reader.MixtureSampler(sharded.dir, seed=2)
        for step, b in resumed.iterate(4, start, start + 40):
            assert np.array_equal(b, uninterrupted[step])
    # every K-th step, as a DataLoader worker reads them, is the same stream
    strided = reader.MixtureSampler(sharded.dir, seed=2)
    for step, b in strided.iterate(4, 1, 3000, every=3):
        assert np.array_equal(b, uninterrupted[step])


def test_ranks_are_disjoint_and_make_up_the_global_batch(sharded):
    world, bs = 3, 4
    ranks = [reader.MixtureSampler(sharded.dir, seed=4, rank=r, world_size=world) for r in range(world)]
    single = reader.MixtureSampler(sharded.dir, seed=4)
    for step in (0, 5, 31):
        glued = np.concatenate([r.batch(step, bs) for r in ranks])
        assert np.array_equal(glued, single.batch(step, bs * world))
    # no (component, row) is read by two ranks while the draws stay within the first pass
    per_rank = [{tuple(x) for x in rows_of_stream(r, range(8), bs).tolist()} for r in ranks]
    assert all(len(p) == 8 * bs for p in per_rank)
    assert not (per_rank[0] & per_rank[1]) and not (per_rank[0] & per_rank[2]) and not (per_rank[1] & per_rank[2])
    assert 3 * 8 * bs < min(single.sizes)


def test_next_token_pairs(sharded):
    s = reader.MixtureSampler(sharded.dir, seed=0)
    x, y = s.pairs(3, 5)
    batch = s.batch(3, 5)
    assert x.shape == y.shape == (5, 31)
    assert np.array_equal(x, batch[:, :-1]) and np.array_equal(y, batch[:, 1:])
    assert np.array_equal(y[:, :-1], x[:, 1:])


def test_bad_arguments(sharded):
    with pytest.raises(Stage2Error, match="rank=2, world_size=2"):
        reader.MixtureSampler(sharded.dir, rank=2, world_size=2)
    with pytest.raises(Stage2Error, match="seed=-1"):
        reader.MixtureSampler(sharded.dir, seed=-1)
    s = reader.MixtureSampler(sharded.dir)
    with pytest.raises(ValueError, match="step=-1"):
        s.batch(-1, 4)
    with pytest.raises(ValueError, match="batch_size=0"):
        s.batch(0, 0)


# --- the docs' example (docs/run-folder.md) ----------------------------------------------------------


def readme_examples():
    """The reader section's code blocks that set RUN: the training-loop examples (the torch one is marked
    `python no-run` for the docs test, which runs without torch; it runs here when torch is installed)."""
    text = (REPO / "docs" / "run-folder.md").read_text(encoding="utf-8")
    section = text[text.index("## Reading the shards") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    blocks = re.findall(r"```python[^\n]*\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if "MixtureSampler" in b or "TorchMixtureDataset" in b][-2:]


def run_examples(run_dir, with_torch: bool) -> dict:
    numpy_block, torch_block = readme_examples()
    assert re.search(r"^RUN = ", numpy_block, flags=re.M) and "DataLoader" in torch_block
    namespace: dict = {}
    exec(re.sub(r'^RUN = ".*?"', f"RUN = {str(run_dir)!r}", numpy_block, flags=re.M), namespace)
    if with_torch:
        exec(torch_block, namespace)
    return namespace


def test_readme_numpy_example_runs(sharded, capsys):
    ns = run_examples(sharded.dir, with_torch=False)
    assert ns["step"] == 19 and ns["x"].shape == (8, 31)
    assert "'web'" in capsys.readouterr().out  # it printed the passes per component


# --- torch -------------------------------------------------------------------------------------


def test_torch_wrapper_only_with_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        assert reader.TorchMixtureDataset is None
    else:
        assert reader.TorchMixtureDataset is not None




def test_a_run_whose_shard_stage_did_not_finish_is_said_to_be_one(tmp_path):
    # Killed mid-shard: no manifest yet. Not "point at a shard run folder": it is one, unfinished.
    run = tmp_path / "killed"
    (run / "shards" / "web").mkdir(parents=True)
    (run / "stats.json").write_text('{"status": "running", "stage": "pipeline"}')
    with pytest.raises(Stage2Error, match=r"shard stage did not finish \(status running\); `stage2-rerun .*killed resume=true` finishes it"):
        reader.MixtureSampler(run)
    with pytest.raises(Stage2Error, match="point at a shard or pipeline run folder"):
        reader.MixtureSampler(tmp_path / "nothing")
