"""The tokenizer's sample of a component: a training sample (bottom-k of a seeded hash of the ids) and
the held-out evaluation documents (a fixed hash of the id alone).

* Held-out documents are chosen by a hash of the document id alone (fixed salt, not the seed), so a
  sweep over seeds or vocabulary sizes always evaluates on the same documents, and the same documents
  are held out whether the text comes from raw sources or from filtered parts.
* The training sample of a component is the bottom-k of the remaining documents by a seeded xxhash of
  their id: streaming, memory bounded by k, and independent of the order documents arrive in.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

import xxhash

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import ComponentSpec

log = logging.getLogger(__name__)

# A fixed seed for the held-out split: independent of `tokenizer.seed` (see the module docstring).
HELDOUT_HASH_SEED = 0x5EED_4E1D




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


