"""Training-side reader: memory-mapped shards and one pure, resumable definition of the mixture stream.

`ComponentShards` maps one component's shards (read-only memory maps: nothing is read until a row is
touched; each shard's .npy header and length are checked against index.json when it is opened, by
`stage2.shards.format`, the module that owns the shard layout). `MixtureSampler` defines the stream.
Row i of data-parallel rank r's batch at step s is global draw g = (s * world_size + r) *
batch_size + i, and draw g is mapped, with no state, to

1. a component, by a fixed weighted interleave of the weights (`interleave`): a schedule of `PERIOD`
   draws that repeats, in which every prefix holds each component within 3 draws of share * n;
2. that component's k-th draw, k counting the draws of the stream before g that went to it;
3. a row: pass e = k // rows over the component, position k % rows of a permutation seeded by
   (seed, component number, e). No row repeats within a pass; `replacement=True` draws each pass's
   rows uniformly instead (seeded the same way).

`split="validation"` reads the validation split the same way. `row_documents` names the documents (and
their token spans) of any row, from the split's document table.

So a batch depends only on (shard run, split, seed, step, rank, world size, batch size): ranks get
disjoint draws, and the batches are the same in any process, for any number of DataLoader workers,
and after a resume at any step (with the same numpy: its Generator streams are not promised to stay
the same across numpy releases, and uv.lock pins it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from stage2.errors import Stage2Error
from stage2.shards.format import DOCUMENTS, INDEX, MANIFEST, SPLITS, open_shard, read_documents, read_index, read_manifest, shards_dir, split_dir

# Draws per repeat of the interleave; weights are realised to 1/PERIOD (quota / PERIOD is the share).
PERIOD = 1 << 16
# `batch` works out and reads the rows of a block of consecutive steps at once (up to BLOCK_ROWS rows
# and BLOCK_BYTES bytes): numpy's per-call cost is paid once for many steps, and the rows are read in
# file order, a shard at a time.
BLOCK_ROWS = 8192
BLOCK_BYTES = 8 << 20
# A shard holding at least this many rows of a block is read with one fancy index, else row by row.
FANCY_MIN = 6


class ComponentShards:
    """One component's rows across its shards, as one indexable sequence of `[seq_len]` arrays.

    Each shard's header and length are checked against index.json when it is opened (`open_shard`).
    """

    def __init__(self, comp_dir: Path, split: str = "train"):
        comp_dir = split_dir(Path(comp_dir), split)
        index_path = comp_dir / INDEX
        self.index = read_index(comp_dir)
        self.name = self.index["component"]
        self.seq_len = int(self.index["seq_len"])
        self.arrays = [open_shard(comp_dir / s["file"], int(s["rows"]), self.seq_len, self.index["dtype"]) for s in self.index["shards"]]
        # Plain ndarrays over the same maps: indexing an np.memmap wraps every result in the subclass.
        self.views = [a.view(np.ndarray) for a in self.arrays]
        # offsets[i] is the first global row of shard i
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])
        if int(self.offsets[-1]) != int(self.index["rows"]):
            raise Stage2Error(f"{index_path}: its shards hold {int(self.offsets[-1])} rows, it says {self.index['rows']}")

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


def interleave(weights: Sequence[float], period: int = PERIOD) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One period of the component schedule: (component of each draw, its number among that
    component's draws in the period, draws per component per period).

    Quotas are the weights rounded to 1/period (largest remainders; a positive weight gets at least one
    draw). Component c's j-th draw of the period is placed at time (j + 0.5) / quota[c] and the draws
    are sorted by time (ties by component order), so each component is spread evenly: every prefix of
    the repeating schedule holds each component within 3 draws of quota / period * n.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    quota = np.floor(w * period).astype(np.int64)
    order = np.argsort(-(w * period - quota), kind="stable")
    quota[order[: period - int(quota.sum())]] += 1
    for c in np.flatnonzero((w > 0) & (quota == 0)):  # a weight below 1/(2 period) still gets drawn
        quota[c] += 1
        quota[np.argmax(quota)] -= 1
    comp = np.repeat(np.arange(len(w)), quota)
    number = np.concatenate([np.arange(q) for q in quota])
    times = (number + 0.5) / quota[comp]
    by_time = np.argsort(times, kind="stable")
    return comp[by_time], number[by_time], quota


def check_weights(weights: Mapping[str, Any], names: Sequence[str], what: str) -> Dict[str, float]:
    """A weight for each component named in `names`, each finite and >= 0, and no other names."""
    if not isinstance(weights, Mapping):
        raise Stage2Error(f"{what}: a mapping of component name to weight is needed, not {type(weights).__name__}")
    unknown = [k for k in weights if k not in names]
    if unknown:
        raise Stage2Error(f"{what}: no component {', '.join(map(repr, unknown))} in this run (its components: {', '.join(names)})")
    unnamed = [n for n in names if n not in weights]
    if unnamed:
        raise Stage2Error(f"{what}: no weight for {', '.join(map(repr, unnamed))}: name every component ({', '.join(names)}); 0 leaves one out")
    out: Dict[str, float] = {}
    for name in names:
        try:
            value = float(weights[name])
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise Stage2Error(f"{what}: {name}={weights[name]!r}: a weight must be a finite number >= 0")
        out[name] = value
    return out


def _status(run_dir: Path) -> Optional[str]:
    """A run folder's status from its stats.json; None when it has none to read."""
    try:
        return json.loads((run_dir / "stats.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


class MixtureSampler:
    """The mixture stream of a shard run for one data-parallel rank (see the module docstring).

    `batch(step, batch_size)` is this rank's `[batch_size, seq_len]` rows at a step (the global batch
    is batch_size * world_size rows); `pairs` gives next-token (x, y) pairs. Components with no rows
    are never drawn.

    Weights default to the manifest's. A `weights` mapping replaces them and must name every component
    of the run, each with a finite weight >= 0 (0 leaves a component out): a name the run does not have
    (a typo) or a component left unnamed is an error, so no component silently gets weight 0.
    """

    def __init__(
        self,
        path: Path,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Optional[Dict[str, float]] = None,
        replacement: bool = False,
        split: str = "train",
    ):
        if split not in SPLITS:
            raise Stage2Error(f"split={split!r}: use one of {', '.join(SPLITS)}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise Stage2Error(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        if seed < 0:
            raise Stage2Error(f"seed={seed}: must be >= 0")
        folder = shards_dir(path)
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            run_dir = folder.parent
            if (folder.is_dir() or (run_dir / "stats.json").is_file()) and _status(run_dir) not in (None, "finished"):
                raise Stage2Error(f"{manifest_path}: missing: the run's shard stage did not finish (status {_status(run_dir)});"
                                  f" `stage2-rerun {run_dir} resume=true` finishes it")
            raise Stage2Error(f"{manifest_path}: missing; point at a shard or pipeline run folder")
        manifest = read_manifest(folder)
        self.folder, self.split = folder, split
        self.components: List[ComponentShards] = [ComponentShards(folder / c["name"], split) for c in manifest["components"]]
        self.names = [c.name for c in self.components]
        for entry, comp in zip(manifest["components"], self.components):
            if comp.name != entry["name"]:
                raise Stage2Error(f"{folder / entry['name'] / INDEX}: is the index of component {comp.name!r}, {manifest_path} says {entry['name']!r}")
        if weights is None:
            given = check_weights({c["name"]: c["weight"] for c in manifest["components"]}, self.names, f"{manifest_path}: weights")
        else:
            given = check_weights(weights, self.names, "weights")
        w = np.array([given[c.name] if len(c) else 0.0 for c in self.components], dtype=np.float64)
        if not (w > 0).any():
            raise Stage2Error(f"{folder}: no component has both rows and a positive weight")
        self.weights = w / w.sum()
        self.schedule, self.numbers, self.quota = interleave(self.weights)
        self.shares = self.quota / PERIOD  # the weights as realised by the schedule
        self.sizes = np.array([len(c) for c in self.components], dtype=np.int64)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.replacement = bool(replacement)
        self.seq_len = int(manifest["seq_len"])
        self.dtype = np.dtype(manifest["dtype"])
        self._orders: Dict[Tuple[int, int], np.ndarray] = {}
        # Every shard of every component in one list; row g of the concatenated components is in
        # shard i when starts[i] <= g < starts[i + 1].
        self._views = [v for c in self.components for v in c.views]
        self._first_row = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self._starts = np.concatenate([[0], np.cumsum([v.shape[0] for v in self._views])]).astype(np.int64)
        self._block: Optional[tuple] = None

    # --- the stream as a function ----------------------------------------------------------------

    def draws(self, step: int, batch_size: int) -> np.ndarray:
        """Global draw numbers of this rank's batch at a step."""
        if step < 0 or batch_size < 1:
            raise ValueError(f"step={step}, batch_size={batch_size}: need step >= 0 and batch_size >= 1")
        first = (int(step) * self.world_size + self.rank) * int(batch_size)
        return np.arange(first, first + int(batch_size), dtype=np.int64)

    def components_of(self, draws: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(component number, k: that component's draw number) for global draw numbers."""
        periods, pos = np.divmod(draws, PERIOD)
        comp = self.schedule[pos]
        return comp, periods * self.quota[comp] + self.numbers[pos]

    def order(self, comp: int, epoch: int) -> np.ndarray:
        """Row of each draw of pass `epoch` over a component: a seeded permutation (or uniform rows)."""
        key = (int(comp), int(epoch))
        table = self._orders.get(key)
        if table is None:
            n = int(self.sizes[comp])
            rng = np.random.default_rng([self.seed, key[0], key[1], int(self.replacement)])
            table = rng.integers(0, n, size=n) if self.replacement else rng.permutation(n)
            table = table.astype(np.int32 if n < 2**31 else np.int64)  # 4 bytes a row
            # Keep only neighbouring passes of a component: a block of steps can straddle a pass boundary.
            stale = [k for k in self._orders if k[0] == key[0] and abs(k[1] - key[1]) > 1]
            for k in stale:
                del self._orders[k]
            self._orders[key] = table
        return table

    def rows_of(self, draws: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(component number, row number within the component) of global draw numbers."""
        comp, k = self.components_of(draws)
        epoch, pos = np.divmod(k, self.sizes[comp])
        rows = np.empty_like(k)
        for c in np.flatnonzero(np.bincount(comp, minlength=len(self.sizes))).tolist():
            sel = np.flatnonzero(comp == c)
            ep = epoch[sel]
            first, last = int(ep.min()), int(ep.max())
            if first == last:
                rows[sel] = self.order(c, first)[pos[sel]]
                continue
            for e in range(first, last + 1):
                here = sel[ep == e]
                rows[here] = self.order(c, e)[pos[here]]
        return comp, rows

    def locate(self, step: int, batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """(component number, row number within the component) of each row of this rank's batch."""
        return self.rows_of(self.draws(step, batch_size))

    # --- reading ----------------------------------------------------------------------------------

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """This rank's rows at a step, `[batch_size, seq_len]` in the shards' dtype (uint16 or uint32).

        Read-only: a view of the block of steps read ahead (`np.array(batch)` for a writable copy).
        """
        return self._read(step, batch_size, 1)

    def _read(self, step: int, batch_size: int, every: int) -> np.ndarray:
        b = self._block
        if not (b is not None and b[1:3] == (batch_size, every) and step >= b[0] and (step - b[0]) % every == 0 and (step - b[0]) // every < b[3]):
            b = self._block = self._read_ahead(step, batch_size, every)
        first = (step - b[0]) // every * batch_size
        return b[4][first : first + batch_size]

    def block_steps(self, batch_size: int) -> int:
        """Steps read at once by `batch`."""
        rows = min(BLOCK_ROWS, BLOCK_BYTES // (self.seq_len * self.dtype.itemsize))
        return max(1, rows // batch_size)

    def _read_ahead(self, step: int, batch_size: int, every: int) -> tuple:
        """(first step, batch size, every, steps, rows) for the steps step, step + every, ... of one block:
        a cache of the pure function, nothing more."""
        if step < 0 or batch_size < 1 or every < 1:
            raise ValueError(f"step={step}, batch_size={batch_size}, every={every}: need step >= 0, batch_size >= 1, every >= 1")
        n = self.block_steps(batch_size)
        steps = step + every * np.arange(n, dtype=np.int64)
        draws = ((steps * self.world_size + self.rank) * batch_size)[:, None] + np.arange(batch_size, dtype=np.int64)
        comp, rows = self.rows_of(draws.ravel())
        return (step, batch_size, every, n, self._read_rows(self._first_row[comp] + rows))

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows numbered over all shards in order -> a read-only `[len(rows), seq_len]` array."""
        out = np.empty((len(rows), self.seq_len), dtype=self.dtype)
        order = np.argsort(rows)  # equal numbers are the same row, so any order of ties reads the same
        ordered = rows[order]  # file order: shard by shard, rows ascending within each
        bounds = np.searchsorted(ordered, self._starts).tolist()
        listed = None
        for s, (a, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            if e - a >= FANCY_MIN:
                out[order[a:e]] = self._views[s][ordered[a:e] - self._starts[s]]
            elif e > a:  # few rows of this shard (many shards): a copy each is cheaper than a fancy index
                if listed is None:
                    listed = order.tolist(), ordered.tolist()
                view, first = self._views[s], int(self._starts[s])
                for j in range(a, e):
                    out[listed[0][j]] = view[listed[1][j] - first]
        out.flags.writeable = False
        return out

    def pairs(self, step: int, batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """Next-token pairs of a batch: x = tokens [0, seq_len - 1), y = tokens [1, seq_len) (views)."""
        rows = self.batch(step, batch_size)
        return rows[:, :-1], rows[:, 1:]

    def iterate(self, batch_size: int, start_step: int = 0, stop_step: Optional[int] = None, every: int = 1) -> Iterator[Tuple[int, np.ndarray]]:
        """(step, batch) for steps start_step, start_step + every, ... before stop_step (None: endless)."""
        step = int(start_step)
        while stop_step is None or step < stop_step:
            yield step, self._read(step, batch_size, every)
            step += every

    def epochs(self, step: int, batch_size: int) -> Dict[str, float]:
        """Passes over each component made by the whole stream (all ranks) before a step, for logs (the
        numbers of the shard stage's mixture plan for a budget of step * world_size * batch_size rows)."""
        epochs = _epochs(self.schedule, self.quota, self.sizes, int(step) * self.world_size * int(batch_size))
        return {c.name: float(e) for c, e in zip(self.components, epochs)}

    def documents(self, step: int, batch_size: int) -> List[List[Tuple[str, int, int]]]:
        """For each row of this rank's batch at a step: the documents it holds, as `row_documents` gives them."""
        comp, rows = self.locate(step, batch_size)
        return [row_documents(self.folder, self.names[c], int(r), self.split) for c, r in zip(comp.tolist(), rows.tolist())]


def _epochs(schedule: np.ndarray, quota: np.ndarray, rows: np.ndarray, draws: int) -> np.ndarray:
    periods, pos = divmod(int(draws), PERIOD)
    drawn = periods * quota + np.bincount(schedule[:pos], minlength=len(quota))
    rows = np.asarray(rows, dtype=np.int64)
    return np.where(rows > 0, drawn / np.maximum(rows, 1), 0.0)


def plan_epochs(weights: Sequence[float], rows: Sequence[int], draws: int) -> Tuple[np.ndarray, np.ndarray]:
    """(passes over each component after `draws` rows of the mixture stream, each component's share of the
    draws): what `MixtureSampler.epochs` gives, from the weights (components without rows weigh 0)."""
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(np.asarray(rows) > 0, w, 0.0)
    schedule, _, quota = interleave(w / w.sum())
    return _epochs(schedule, quota, np.asarray(rows), draws), quota / PERIOD


_TABLES: Dict[Tuple[str, int, int], Tuple[np.ndarray, int, int]] = {}


def row_documents(run_dir: Path, component: str, row: int, split: str = "train") -> List[Tuple[str, int, int]]:
    """The documents row `row` of a component's split holds: (doc_id, first, last) for each, in order, so
    that the row is the concatenation over them of the document's tokens (`encode(text) + [eos]`, with
    BOS first under shard.add_bos) sliced `[first:last]` (then padding, in the last row of a padded split).

    Reads the split's document table (`documents.npy`), memory-mapped, once per process (again if it changed)."""
    folder = split_dir(shards_dir(run_dir) / component, split)
    try:
        st = (folder / DOCUMENTS).stat()
    except OSError:
        st = None  # read_documents names what is missing
    key = (str(folder), st.st_mtime_ns if st else 0, st.st_size if st else 0)  # a table rewritten since is read again
    cached = _TABLES.get(key)
    if cached is None:
        index = read_index(folder)
        cached = _TABLES[key] = (read_documents(folder), int(index["seq_len"]), int(index["rows"]))
    table, seq_len, rows = cached
    if not 0 <= int(row) < rows:
        raise IndexError(f"{component} ({split}): row {row} of {rows}")
    start, end = int(row) * seq_len, (int(row) + 1) * seq_len
    firsts = table["first"]
    lo = max(0, int(np.searchsorted(firsts, start, side="right")) - 1)
    hi = int(np.searchsorted(firsts, end, side="left"))
    out = []
    for i in range(lo, hi):
        first, n = int(firsts[i]), int(table["tokens"][i])
        a, b = max(start, first) - first, min(end, first + n) - first
        if b > a:
            out.append((bytes(table["id"][i]).decode("utf-8", "surrogatepass"), a, b))
    return out


try:  # torch is optional: the wrapper exists only where it is installed
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class TorchMixtureDataset(IterableDataset):
        """Whole batches of a MixtureSampler, for `DataLoader(dataset, batch_size=None, num_workers=K)`.

        Yields steps start_step, start_step + 1, ... (`steps` of them; None: endless), each an int64
        `[batch_size, seq_len]` tensor, or with `next_token=True` a pair (x, y) of `[batch_size,
        seq_len - 1]`. Pass `batch_size=None` to the DataLoader: items are batches already. Worker k of
        K computes steps start_step + k, + k + K, ...; the DataLoader takes one item from each worker
        in turn, so its output is in step order and the same for every K.
        """

        def __init__(
            self,
            path: Path,
            batch_size: int,
            seed: int = 0,
            rank: int = 0,
            world_size: int = 1,
            start_step: int = 0,
            steps: Optional[int] = None,
            next_token: bool = False,
            weights: Optional[Dict[str, float]] = None,
            replacement: bool = False,
            split: str = "train",
        ):
            if batch_size < 1:
                raise ValueError(f"batch_size={batch_size}: must be >= 1")
            self.path, self.batch_size, self.seed, self.rank, self.world_size = path, batch_size, seed, rank, world_size
            self.start_step, self.steps, self.next_token = start_step, steps, next_token
            self.weights, self.replacement, self.split = weights, replacement, split

        def __iter__(self):
            # Opened here, in each worker: memory maps are per process.
            sampler = MixtureSampler(self.path, self.seed, self.rank, self.world_size, self.weights, self.replacement, self.split)
            info = get_worker_info()
            wid, nw = (info.id, info.num_workers) if info else (0, 1)
            stop = None if self.steps is None else self.start_step + self.steps
            for _, rows in sampler.iterate(self.batch_size, self.start_step + wid, stop, nw):
                full = torch.from_numpy(rows.astype(np.int64))
                yield (full[:, :-1].contiguous(), full[:, 1:].contiguous()) if self.next_token else full

except ImportError:
    TorchMixtureDataset = None  # type: ignore[assignment,misc]
