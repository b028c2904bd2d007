"""Training-side reader: memory-mapped shards and a deterministic, resumable mixture sampler.

`ComponentShards` maps one component's shards (`np.load(mmap_mode="r")`, nothing is read until a
row is touched). `MixtureSampler` draws step s's row from a component chosen by the mixture weights
recorded in `shards/manifest.json`; the draw depends only on (seed, s), so training resumes at any
step with the same data and several data-parallel ranks can take disjoint steps. Rows are drawn
with replacement (uniformly within a component), which is what makes each step independent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from stage2.errors import Stage2Error

SHARDS_DIR = "shards"


def shards_dir(path: Path) -> Path:
    """A run folder or its `shards/` folder -> the `shards/` folder."""
    path = Path(path)
    return path if (path / "manifest.json").exists() and path.name == SHARDS_DIR else path / SHARDS_DIR


class ComponentShards:
    """One component's rows across its shards, as one indexable sequence of `[seq_len]` arrays."""

    def __init__(self, comp_dir: Path):
        comp_dir = Path(comp_dir)
        self.index = json.loads((comp_dir / "index.json").read_text())
        self.name = self.index["component"]
        self.seq_len = int(self.index["seq_len"])
        self.arrays = [np.load(comp_dir / s["file"], mmap_mode="r", allow_pickle=False) for s in self.index["shards"]]
        # offsets[i] is the first global row of shard i
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, row: int) -> np.ndarray:
        if not 0 <= row < len(self):
            raise IndexError(f"{self.name}: row {row} of {len(self)}")
        shard = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.arrays[shard][row - self.offsets[shard]]

    def rows(self) -> Iterator[np.ndarray]:
        """All rows in stream order (for round trips and evaluation)."""
        for arr in self.arrays:
            yield from arr


class MixtureSampler:
    """Step -> (component, row index, row): a pure function of (seed, step)."""

    def __init__(self, path: Path, seed: int = 0, weights: Optional[Dict[str, float]] = None):
        folder = shards_dir(path)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise Stage2Error(f"{manifest_path}: missing; point at a shard or pipeline run folder")
        manifest = json.loads(manifest_path.read_text())
        self.components: List[ComponentShards] = [ComponentShards(folder / c["name"]) for c in manifest["components"]]
        given = weights or {c["name"]: float(c["weight"]) for c in manifest["components"]}
        # A component with no rows cannot be drawn from, whatever its weight.
        w = np.array([given.get(c.name, 0.0) if len(c) else 0.0 for c in self.components], dtype=np.float64)
        if not (w > 0).any():
            raise Stage2Error(f"{folder}: no component has both rows and a positive weight")
        self.weights = w / w.sum()
        self.cumulative = np.cumsum(self.weights)
        self.seed = int(seed)
        self.seq_len = self.components[0].seq_len

    def locate(self, step: int) -> Tuple[int, int]:
        """(component number, row number) for a step: seeded by (seed, step) alone, so resumable."""
        rng = np.random.default_rng([self.seed, int(step)])
        u, v = rng.random(2)
        comp = min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.components) - 1)
        return comp, int(v * len(self.components[comp]))

    def __getitem__(self, step: int) -> Tuple[str, np.ndarray]:
        comp, row = self.locate(step)
        return self.components[comp].name, self.components[comp][row]

    def iterate(self, start_step: int = 0, stride: int = 1) -> Iterator[Tuple[int, str, np.ndarray]]:
        """Endless (step, component, row) from `start_step`; `stride` > 1 with distinct starts splits steps between ranks."""
        step = start_step
        while True:
            name, row = self[step]
            yield step, name, row
            step += stride

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Rows of steps [step * batch_size, (step + 1) * batch_size) as one `[batch, seq_len]` array."""
        first = step * batch_size
        return np.stack([self[s][1] for s in range(first, first + batch_size)])


try:  # torch is optional: the wrapper exists only where it is installed
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class TorchMixtureDataset(IterableDataset):
        """Endless int64 rows from a MixtureSampler; DataLoader workers take interleaved steps."""

        def __init__(self, path: Path, seed: int = 0, start_step: int = 0, weights: Optional[Dict[str, float]] = None):
            self.path, self.seed, self.start_step, self.weights = path, seed, start_step, weights

        def __iter__(self):
            sampler = MixtureSampler(self.path, self.seed, self.weights)
            info = get_worker_info()
            wid, nw = (info.id, info.num_workers) if info else (0, 1)
            for _, _, row in sampler.iterate(self.start_step + wid, nw):
                yield torch.from_numpy(row.astype(np.int64))

except ImportError:
    TorchMixtureDataset = None  # type: ignore[assignment,misc]
