"""Reads a shard run's trainer formats with the trainers' own libraries (megatron-core, datatrove) and
compares them, document by document, with the expected streams the calling test wrote.

Run by tests/cli/test_outputs_cli.py with the trainers' interpreter (`STAGE2_TRAINERS_PYTHON`):
    python tests/trainers_check.py <run folder> <expected folder>
Prints a JSON summary of what it checked; any difference raises.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datatrove.utils.dataset import DatatroveFolderDataset  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: E402


class MegatronTokenizer:
    """The attributes GPTDataset reads from a tokenizer: stage2's EOS is Megatron's eod."""

    def __init__(self, vocab: int, eos: int, pad: int):
        self.vocab_size, self.eod, self.eos, self.pad = vocab, eos, eos, pad
        self.unique_identifiers = {"class": "stage2", "vocab_size": vocab}


def check_blend(run: str, data_path: str, seq_len: int, tok: dict) -> dict:
    """`--train-data-path` as the shard stage printed it, built as Megatron builds it."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list

    words = data_path.split()
    words = [w if i % 2 == 0 else f"{run}/{w}" for i, w in enumerate(words)]
    cfg = GPTDatasetConfig(
        random_seed=1234, sequence_length=seq_len, blend=get_blend_from_list(words), split="100,0,0", path_to_cache=None,
        tokenizer=MegatronTokenizer(tok["vocab_size"], tok["eos_id"], tok["pad_id"]), reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, mid_level_dataset_surplus=0.005,
    )
    samples = 400
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, cfg).build()
    counts = np.bincount(np.asarray(train.dataset_index[:samples]), minlength=len(words) // 2)
    for k in range(samples):
        item = train[k]
        assert len(item["tokens"]) == seq_len
    weights = np.array([float(w) for w in words[0::2]])
    shares = counts / counts.sum()
    assert np.abs(shares - weights / weights.sum()).max() < 0.02, (shares, weights)
    return {"samples": samples, "shares": shares.round(4).tolist()}


def main(run: str, expected: str) -> None:
    manifest = json.load(open(f"{run}/shards/manifest.json"))
    stats = json.load(open(f"{run}/stats.json"))
    seq_len, tok = int(manifest["seq_len"]), manifest["tokenizer"]
    token_size = 2 if tok["vocab_size"] <= 65536 else 4
    out = {"documents": 0, "datatrove_windows": 0}
    for comp in manifest["components"]:
        name = comp["name"]
        for split in ("train", "validation"):
            lengths = np.load(f"{expected}/{name}.{split}.lengths.npy")
            stream = np.load(f"{expected}/{name}.{split}.stream.npy")
            ends = np.cumsum(lengths)
            starts = ends - lengths
            ds = IndexedDataset(f"{run}/shards/{name}/megatron/{split}")
            assert len(ds) == len(lengths), (name, split, len(ds), len(lengths))
            assert np.array_equal(ds.sequence_lengths, lengths)
            for i in range(len(ds)):
                assert np.array_equal(ds[i], stream[starts[i] : ends[i]]), (name, split, i)
            out["documents"] += len(ds)
            if len(stream) >= seq_len:
                dt = DatatroveFolderDataset(f"{run}/shards/{name}/datatrove/{split}", seq_len=seq_len - 1, token_size=token_size, shuffle=False)
                assert len(dt) == len(stream) // seq_len
                for k in range(len(dt)):
                    assert np.array_equal(dt[k]["input_ids"].numpy(), stream[k * seq_len : (k + 1) * seq_len]), (name, split, k)
                out["datatrove_windows"] += len(dt)
                positions = DatatroveFolderDataset(f"{run}/shards/{name}/datatrove/{split}", seq_len=seq_len - 1, token_size=token_size, shuffle=False, return_positions=True)
                first = positions[0]["positions"].numpy()  # restarts at 0 after each document end (.ds.index)
                restarts = np.flatnonzero(first == 0)[1:]
                assert np.array_equal(restarts, ends[ends < seq_len]), (name, split)
            nano = np.memmap(f"{run}/shards/{name}/nanogpt/{'train' if split == 'train' else 'val'}.bin", dtype=np.uint16, mode="r") if len(stream) else np.empty(0)
            assert np.array_equal(nano, stream)
    out["blend"] = check_blend(run, stats["stages"]["shard"]["megatron_data_path"]["train"], seq_len, tok)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
