"""The tokenizer's sample of a component: a training sample (bottom-k of a seeded hash of the ids) and
the held-out evaluation documents (a fixed hash of the id alone).

* Held-out documents are chosen by a hash of the document id alone (fixed salt, not the seed), so a
  sweep over seeds or vocabulary sizes always evaluates on the same documents, and the same documents
  are held out whether the text comes from raw sources or from filtered parts.
* The training sample of a component is the bottom-k of the remaining documents by a seeded xxhash of
  their id: streaming, memory bounded by k, and independent of the order documents arrive in.
* Bottom-k is mergeable, so partitions sample in parallel (`sample_passes`): each keeps only its
  documents whose id hash falls below a bound chosen from the expected document count to catch a
  little more than k of them, and the merge keeps the k smallest keys of the union. When fewer than
  k fell below the bound (and more documents exist), the bound is raised and the partitions read
  again: the result is the exact bottom-k, whatever the partitions or how they are grouped into
  tasks. Deciding on another pass needs only counts, so the candidates themselves can stay in files
  (`write_candidates`) that the training and evaluation read: no text passes through the driver.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import xxhash

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec

if TYPE_CHECKING:  # numpy only where the shard stage splits: the tokenizer stage's driver imports this module
    import numpy as np

log = logging.getLogger(__name__)

# A fixed seed for the held-out split: independent of `tokenizer.seed` (see the module docstring).
HELDOUT_HASH_SEED = 0x5EED_4E1D
# An id-hash bound that every document is below (xxh64 gives values below 2**64).
EVERY_DOC = 1 << 64


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # JSON may carry lone surrogates; hash them anyway


def heldout_key(doc_id: str) -> int:
    """A document's place in [0, 10000): 100 x (hash % 100) + (hash // 100) % 100. Its hundreds are
    `hash % 100`, so `key < 100 * p` is the integer-percent rule `hash % 100 < p` for an integer p,
    and finer percents (0.5) pick a subset of every larger percent's documents."""
    h = xxhash.xxh64_intdigest(_utf8(doc_id), seed=HELDOUT_HASH_SEED)
    return 100 * (h % 100) + (h // 100) % 100


def is_heldout(doc_id: str, percent: float) -> bool:
    """Whether a document is held out at `percent` (to 0.01): the tokenizer's evaluation documents and the
    shards' validation split, so validation documents are among the tokenizer's held-out ones whenever
    `shard.validation_percent <= tokenizer.heldout_percent`."""
    return percent > 0 and heldout_key(doc_id) < round(percent * 100)


def heldout_mask(id_bytes: List[bytes], percent: float) -> np.ndarray:
    """`is_heldout` of every id (given as UTF-8 bytes), `heldout_key`'s arithmetic on a numpy array: one
    hash call per id instead of a Python function call and its arithmetic (the shard stage's split)."""
    import numpy as np

    if percent <= 0:
        return np.zeros(len(id_bytes), dtype=bool)
    h = np.fromiter(map(xxhash.xxh64_intdigest, id_bytes, itertools.repeat(HELDOUT_HASH_SEED)), dtype=np.uint64, count=len(id_bytes))
    return 100 * (h % 100) + (h // 100) % 100 < round(percent * 100)


def sample_key(doc_id: str, text: str, seed: int) -> Tuple[int, int]:
    # The text's hash only breaks ties between equal ids (a component may repeat an id).
    return xxhash.xxh64_intdigest(_utf8(doc_id), seed=seed), xxhash.xxh64_intdigest(_utf8(text), seed=seed)


class BottomK:
    """The k items with the smallest keys: a max-heap of size k, so memory stays bounded by k."""

    def __init__(self, k: int):
        self.k = k
        self._heap: List[Tuple[Tuple[int, int], str, str]] = []  # (negated key, id, text)

    def push(self, key: Tuple[int, int], doc_id: str, text: str) -> None:
        if self.k <= 0:
            return
        entry = ((-key[0], -key[1]), doc_id, text)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:  # a smaller key than the largest kept one
            heapq.heapreplace(self._heap, entry)

    def items(self) -> List[Tuple[Tuple[int, int], str, str]]:
        """(key, id, text) in ascending key order: a canonical order, whatever the input order."""
        return sorted(((-k[0], -k[1]), i, t) for k, i, t in self._heap)


@dataclass
class ComponentSample:
    component: str
    train_ids: List[str] = field(default_factory=list)
    train_texts: List[str] = field(default_factory=list)
    eval_ids: List[str] = field(default_factory=list)
    eval_texts: List[str] = field(default_factory=list)
    docs_seen: int = 0
    heldout_docs: int = 0


def sample_documents(
    component: str, docs: Iterable[Document], quota: int, heldout_percent: int, eval_docs: int, seed: int
) -> ComponentSample:
    """One streaming pass: held-out docs -> eval slice (bottom-k), the rest -> training sample (bottom-k)."""
    train, held = BottomK(quota), BottomK(eval_docs)
    seen = heldout = 0
    for doc in docs:
        if not doc.text:
            continue
        seen += 1
        key = sample_key(doc.id, doc.text, seed)
        if is_heldout(doc.id, heldout_percent):
            heldout += 1
            held.push(key, doc.id, doc.text)
        else:
            train.push(key, doc.id, doc.text)
    out = ComponentSample(component=component, docs_seen=seen, heldout_docs=heldout)
    for _, doc_id, text in train.items():
        out.train_ids.append(doc_id)
        out.train_texts.append(text)
    for _, doc_id, text in held.items():
        out.eval_ids.append(doc_id)
        out.eval_texts.append(text)
    return out


def quotas(specs: List[ComponentSpec], per_component: int, by_weight: bool) -> Dict[str, int]:
    """Training docs per component: equal, or `per_component * n` shared by weight (largest remainder)."""
    if not by_weight:
        return {s.name: per_component for s in specs}
    total_weight = sum(max(s.weight, 0.0) for s in specs)
    if total_weight <= 0:
        raise Stage2Error("tokenizer.sample_by_weight=true but the components' weights add up to 0; set dataset weights")
    total = per_component * len(specs)
    exact = [total * max(s.weight, 0.0) / total_weight for s in specs]
    shares = [int(x) for x in exact]
    # Hand out what rounding down left over, largest remainder first (manifest order breaks ties).
    order = sorted(range(len(specs)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return {s.name: n for s, n in zip(specs, shares)}


# ---- sampling in partitions ---------------------------------------------------------------------

Entry = Tuple[Tuple[int, int], str, str]  # (key, id, text)


@dataclass(frozen=True)
class Bounds:
    """Id-hash bounds of one pass: a partition returns its training documents whose seeded id hash is
    below `train`, and its held-out ones below `held` (EVERY_DOC: all of them)."""

    train: int
    held: int


@dataclass
class PartitionSample:
    """One partition's candidates (at most `quota` / `eval_docs` of each, its smallest keys) and counts."""

    train: List[Entry] = field(default_factory=list)
    held: List[Entry] = field(default_factory=list)
    docs_seen: int = 0
    heldout_docs: int = 0


def bound_for(expected_docs: Optional[int], wanted: int) -> int:
    """An id-hash bound below which somewhat more than `wanted` of `expected_docs` documents fall.

    The margin (10% and four standard deviations) makes a second pass rare when the count is right;
    an unknown count, or too few documents, gives EVERY_DOC.
    """
    if wanted <= 0:
        return 0
    if expected_docs is None:
        return EVERY_DOC
    target = 1.1 * wanted + 4 * math.sqrt(wanted) + 32
    return EVERY_DOC if target >= expected_docs else int(EVERY_DOC * (target / expected_docs))


def first_bounds(expected_docs: Optional[int], quota: int, eval_docs: int, heldout_percent: int) -> Bounds:
    """The first pass's bounds for a component of about `expected_docs` documents (None: unknown)."""
    share = heldout_percent / 100 if heldout_percent > 0 else 0.0
    expected = lambda fraction: None if expected_docs is None else int(expected_docs * fraction)  # noqa: E731
    return Bounds(bound_for(expected(1 - share), quota), bound_for(expected(share), eval_docs) if share else 0)


def sample_partition(docs: Iterable[Document], bounds: Bounds, quota: int, heldout_percent: int, eval_docs: int, seed: int) -> PartitionSample:
    """One pass over a partition: its counts, and its documents below the bounds (bottom-k of those)."""
    train, held = BottomK(quota), BottomK(eval_docs)
    out = PartitionSample()
    for doc in docs:
        if not doc.text:
            continue
        out.docs_seen += 1
        id_hash = xxhash.xxh64_intdigest(_utf8(doc.id), seed=seed)
        if is_heldout(doc.id, heldout_percent):
            out.heldout_docs += 1
            if id_hash < bounds.held:
                held.push((id_hash, xxhash.xxh64_intdigest(_utf8(doc.text), seed=seed)), doc.id, doc.text)
        elif id_hash < bounds.train:
            train.push((id_hash, xxhash.xxh64_intdigest(_utf8(doc.text), seed=seed)), doc.id, doc.text)
    out.train, out.held = train.items(), held.items()
    return out


class _Smallest:
    """The k smallest entries of everything added (ties: id, then text): a sorted list trimmed to k
    whenever it grows past 2k, so the result does not depend on the order entries arrive in."""

    def __init__(self, k: int):
        self.k, self.entries, self.added = k, [], 0

    def add(self, entries: List[Entry]) -> None:
        self.added += len(entries)
        self.entries.extend(entries)
        if len(self.entries) > 2 * self.k:
            self.entries = sorted(self.entries)[: self.k]

    def result(self) -> List[Entry]:
        return sorted(self.entries)[: self.k]


@dataclass(frozen=True)
class PartitionCounts:
    """What the driver needs of one partition's pass: its document counts and how many candidates it kept."""

    docs_seen: int
    heldout_docs: int
    train_candidates: int
    held_candidates: int

    @staticmethod
    def of(part: PartitionSample) -> "PartitionCounts":
        return PartitionCounts(part.docs_seen, part.heldout_docs, len(part.train), len(part.held))


@dataclass
class ComponentPlan:
    """A component after its last sampling pass: counts, and where its candidates are (one entry per
    partition of that pass: a PartitionSample in memory, or the file a task wrote it to)."""

    component: str
    quota: int
    eval_docs: int
    docs_seen: int = 0
    heldout_docs: int = 0
    train_candidates: int = 0
    held_candidates: int = 0
    partitions: List[Any] = field(default_factory=list)

    @property
    def train_docs(self) -> int:
        """The size of the training sample the candidates give (the merge keeps at most `quota`)."""
        return min(self.quota, self.train_candidates)

    @property
    def eval_count(self) -> int:
        return min(self.eval_docs, self.held_candidates)


def sample_passes(
    expected_docs: Dict[str, Optional[int]],
    shares: Dict[str, int],
    heldout_percent: int,
    eval_docs: int,
    run_pass: Callable[[Dict[str, Bounds]], Iterable[Tuple[str, PartitionCounts, Any]]],
) -> Dict[str, ComponentPlan]:
    """Every component's final pass: the candidates of its partitions hold its exact sample.

    `run_pass(bounds)` samples every partition of the components in `bounds` (component -> Bounds) and
    yields (component, PartitionCounts, where its candidates are) per partition. A component whose
    candidates fell short of its quota while it has more documents is passed again with raised bounds
    (at least doubled, and recomputed from the counts the pass found). Only counts reach the caller's
    decisions, so the candidates' texts can stay wherever the partitions left them.
    """
    bounds = {name: first_bounds(n, shares[name], eval_docs, heldout_percent) for name, n in expected_docs.items()}
    plans: Dict[str, ComponentPlan] = {}
    while bounds:
        current = {name: ComponentPlan(name, shares[name], eval_docs) for name in bounds}
        for name, counts, where in run_pass(bounds):
            plan = current[name]
            plan.docs_seen += counts.docs_seen
            plan.heldout_docs += counts.heldout_docs
            plan.train_candidates += counts.train_candidates
            plan.held_candidates += counts.held_candidates
            plan.partitions.append(where)
        again: Dict[str, Bounds] = {}
        for name, b in bounds.items():
            plan = current[name]
            train_short = plan.train_candidates < shares[name] and plan.train_candidates < plan.docs_seen - plan.heldout_docs
            held_short = plan.held_candidates < eval_docs and plan.held_candidates < plan.heldout_docs
            if train_short or held_short:
                again[name] = Bounds(
                    max(min(2 * b.train, EVERY_DOC), bound_for(plan.docs_seen - plan.heldout_docs, shares[name])) if train_short else b.train,
                    max(min(2 * b.held, EVERY_DOC), bound_for(plan.heldout_docs, eval_docs)) if held_short else b.held,
                )
                log.info("tokenizer: sampling %s again: too few documents below the first bounds", name)
                continue
            plans[name] = plan
        bounds = again
    return plans


def merge_train(parts: Iterable[PartitionSample], quota: int) -> List[Entry]:
    """The training sample (bottom-`quota`, ascending key) of a final pass's partition candidates."""
    smallest = _Smallest(quota)
    for part in parts:
        smallest.add(part.train)
    return smallest.result()


def merge_held(parts: Iterable[PartitionSample], eval_docs: int) -> List[Entry]:
    """The evaluation slice (bottom-`eval_docs`, ascending key) of a final pass's partition candidates."""
    smallest = _Smallest(eval_docs)
    for part in parts:
        smallest.add(part.held)
    return smallest.result()


def component_sample(plan: ComponentPlan, read: Callable[[Any], PartitionSample]) -> ComponentSample:
    """A component's sample from its final pass; `read` gives a partition's candidates from where they are."""
    out = ComponentSample(component=plan.component, docs_seen=plan.docs_seen, heldout_docs=plan.heldout_docs)
    for _, doc_id, text in merge_train((read(p) for p in plan.partitions), plan.quota):
        out.train_ids.append(doc_id)
        out.train_texts.append(text)
    for _, doc_id, text in merge_held((read(p) for p in plan.partitions), plan.eval_docs):
        out.eval_ids.append(doc_id)
        out.eval_texts.append(text)
    return out


# ---- candidates on disk ---------------------------------------------------------------------------

_CANDIDATE_COLUMNS = ("id_hash", "text_hash", "id", "text")


def _entries_table(entries: List[Entry]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "id_hash": pa.array([k[0] for k, _, _ in entries], pa.uint64()),
            "text_hash": pa.array([k[1] for k, _, _ in entries], pa.uint64()),
            # bytes, not strings: ids and texts may carry lone surrogates, which Arrow strings cannot
            "id": pa.array([_utf8(i) for _, i, _ in entries], pa.binary()),
            "text": pa.array([_utf8(t) for _, _, t in entries], pa.binary()),
        }
    )


def _table_entries(table: Any) -> List[Entry]:
    columns = [table.column(name).to_pylist() for name in _CANDIDATE_COLUMNS]
    return [
        ((a, b), i.decode("utf-8", "surrogatepass"), t.decode("utf-8", "surrogatepass"))
        for a, b, i, t in zip(*columns)
    ]


def candidate_files(base: str) -> Tuple[str, str]:
    """The training and held-out candidate files of a sampling task whose output is named `base`."""
    return f"{base}.train.parquet", f"{base}.held.parquet"


def write_candidates(base: str, part: PartitionSample) -> None:
    """A partition's candidates as two parquet files (training, held out), each written atomically."""
    import pyarrow.parquet as pq

    from stage2.io.files import atomic_path

    for path, entries in zip(candidate_files(base), (part.train, part.held)):
        with atomic_path(Path(path)) as tmp:
            pq.write_table(_entries_table(entries), tmp, compression="zstd")


def read_candidates(base: str, train: bool = True, held: bool = True) -> PartitionSample:
    """The candidates `write_candidates` wrote (counts are not stored: zero here); `train`/`held`: which to read."""
    import pyarrow.parquet as pq

    train_path, held_path = candidate_files(base)
    out = PartitionSample()
    if train:
        out.train = _table_entries(pq.ParquetFile(train_path).read())
    if held:
        out.held = _table_entries(pq.ParquetFile(held_path).read())
    return out
