"""Property tests (hypothesis) of pure cores: packing documents into rows and shards.

Any document lengths (empty ones, ones longer than a row), any seq_len >= 2, any shard size, drop or
pad: no token is lost or duplicated, and the index invariant holds. The packer's checkpoint (what a
resumed shard stage continues from) gives the same shard bytes as one uninterrupted pass.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracles
from stage2.runtime.run import file_sha256
from stage2.shards import format as shard_format
from stage2.tokenizer import encoding

PAD, BOS, EOS = 3, 1, 2
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Document ids avoid the special ids, so a stray separator or pad would show up as a difference.
docs_strategy = st.lists(st.lists(st.integers(4, 999), max_size=40), max_size=25)
big_docs_strategy = st.lists(st.lists(st.integers(4, 99_999), max_size=40), max_size=12)


def expected_stream(docs: List[List[int]], bos: Optional[int], eos: Optional[int]) -> List[int]:
    """The token stream written out by hand: [BOS] doc [EOS] for every document."""
    out: List[int] = []
    for doc in docs:
        out += ([bos] if bos is not None else []) + doc + ([eos] if eos is not None else [])
    return out


def chunked(stream: np.ndarray, cuts: List[int]) -> List[np.ndarray]:
    """The stream cut at arbitrary points (as partitions arrive), empty chunks included."""
    return np.split(stream, sorted(c % (len(stream) + 1) for c in cuts))


def shard_rows(folder: Path, result: shard_format.PackResult, seq_len: int) -> np.ndarray:
    files = sorted(folder.glob("shard-*.npy"))
    assert [f.name for f in files] == [s["file"] for s in result.shards]
    arrays = [np.load(f, allow_pickle=False) for f in files]
    for a, entry, f in zip(arrays, result.shards, files):
        assert a.ndim == 2 and a.shape[1] == seq_len and a.shape[0] == entry["rows"]
        assert entry["sha256"] == file_sha256(f)
    return np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.empty(0, dtype=np.int64)


@pytest.mark.slow  # over half a second
@SETTINGS
@given(
    docs=st.one_of(docs_strategy, big_docs_strategy),
    seq_len=st.integers(2, 50),
    per_shard=st.integers(1, 6),
    remainder=st.sampled_from(["drop", "pad"]),
    bos=st.sampled_from([None, BOS]),
    eos=st.sampled_from([None, EOS]),
    cuts=st.lists(st.integers(0, 10_000), max_size=5),
)
def test_packing_loses_and_duplicates_no_token(docs, seq_len, per_shard, remainder, bos, eos, cuts):
    vocab = 1 + max((t for d in docs for t in d), default=999)
    dtype = shard_format.token_dtype(vocab)
    want = expected_stream(docs, bos, eos)
    stream = encoding.with_separators(docs, bos, eos, dtype)
    assert stream.dtype == dtype and stream.tolist() == want

    with tempfile.TemporaryDirectory() as tmp:
        result = oracles.pack_stream(chunked(stream, cuts), Path(tmp), seq_len, per_shard, dtype, remainder, PAD)
        flat = shard_rows(Path(tmp), result, seq_len)

    n = len(want)
    n_sep = len(docs) * ((bos is not None) + (eos is not None))
    tokens = n - n_sep  # document tokens
    # The index invariant (what stage=verify checks).
    assert tokens + n_sep == result.rows * seq_len - result.padding + result.tail_dropped
    assert result.stream_tokens == n and len(flat) == result.rows * seq_len
    # Full shards, then at most one partial one.
    assert all(s["rows"] == per_shard for s in result.shards[:-1])
    assert 0 < (result.shards[-1]["rows"] if result.shards else per_shard) <= per_shard
    if remainder == "drop":
        assert result.padding == 0 and result.tail_dropped == n % seq_len
        assert flat.tolist() == want[: n - n % seq_len]
    else:
        assert result.tail_dropped == 0 and result.padding == (-n) % seq_len
        body, pad = flat[: len(flat) - result.padding], flat[len(flat) - result.padding :]
        assert body.tolist() == want and (pad == PAD).all()
    assert result.padding < seq_len and result.tail_dropped < seq_len


@pytest.mark.slow  # over half a second
@SETTINGS
@given(
    docs=docs_strategy,
    seq_len=st.integers(2, 20),
    per_shard=st.integers(1, 4),
    remainder=st.sampled_from(["drop", "pad"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=5),
    which=st.integers(0, 1_000),
)
def test_packer_checkpoint_resumes_to_identical_shards(docs, seq_len, per_shard, remainder, cuts, which):
    """Stop after any full shard, restore a fresh packer from its checkpoint, feed the rest: same bytes."""
    dtype = np.dtype(np.uint16)
    stream = encoding.with_separators(docs, None, EOS, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        whole_dir, resumed_dir = Path(tmp) / "whole", Path(tmp) / "resumed"
        whole = oracles.pack_stream(chunked(stream, cuts), whole_dir, seq_len, per_shard, dtype, remainder, PAD)

        checkpoints = []  # (state, stream position) after every full shard, as the shard stage saves it
        first = shard_format.Packer(resumed_dir, seq_len, per_shard, dtype)
        first.on_shard = lambda path: checkpoints.append((first.state(), first.result.rows * seq_len))
        for chunk in chunked(stream, cuts):
            first.add(chunk)
        if not checkpoints:
            return  # fewer tokens than one shard: nothing to resume from
        state, position = checkpoints[which % len(checkpoints)]
        # The run dies here: shards after the checkpoint may or may not exist; they are written again.
        for late in sorted(resumed_dir.glob("shard-*.npy"))[len(state["shards"]) :]:
            late.unlink()
        again = shard_format.Packer(resumed_dir, seq_len, per_shard, dtype)
        again.restore(state)
        assert again.position == position
        for chunk in chunked(stream[position:], cuts):
            again.add(chunk)
        resumed = again.finish(remainder, PAD)

        assert resumed == whole
        assert (resumed.tail is None) == (whole.tail is None) and (whole.tail is None or np.array_equal(resumed.tail, whole.tail))
        names = sorted(p.name for p in whole_dir.glob("shard-*.npy"))
        assert names == sorted(p.name for p in resumed_dir.glob("shard-*.npy"))
        for name in names:
            assert (whole_dir / name).read_bytes() == (resumed_dir / name).read_bytes(), name


# Lines of a JSON-lines file, blank ones (whitespace only) among them, cut into blocks anywhere.
line_kinds = st.one_of(st.just('{"text": "x"}'), st.just('{"text": "a b c d e f"}'), st.sampled_from(["", " ", "\t", " \r", "\f\v "]))


@pytest.mark.slow  # over half a second
@given(st.lists(line_kinds, max_size=60), st.booleans(), st.integers(1, 7), st.lists(st.integers(1, 40), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_record_counter_offsets_are_every_strideth_record(lines, final_newline, stride, cuts):
    """The start-up scan's offsets (where each stride-th record begins) and count, against a plain line split."""
    from stage2.io.sources import _RecordCounter

    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    starts, at = [], 0
    for line in data.split(b"\n")[: data.count(b"\n") + (not data.endswith(b"\n"))]:
        if line.strip():
            starts.append(at)
        at += len(line) + 1
    counter = _RecordCounter(skip_blank=True, stride=stride)
    at, k = 0, 0
    while at < len(data):  # blocks of the sizes drawn, in turn: a record may straddle any of them
        counter.feed(data[at : at + cuts[k % len(cuts)]])
        at += cuts[k % len(cuts)]
        k += 1
    assert counter.total() == len(starts)
    assert counter.offsets == starts[::stride]
