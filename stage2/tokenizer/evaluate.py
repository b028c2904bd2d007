"""A trained model measured on the held-out documents of each component."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

log = logging.getLogger(__name__)

METRICS = ("bytes_per_token", "chars_per_token", "tokens_per_word", "unk_rate", "byte_fallback_rate", "vocab_used_share", "roundtrip_share")




@dataclass
class EvalCounts:
    docs: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    tokens: int = 0
    unk: int = 0
    byte_pieces: int = 0
    roundtrip: int = 0  # documents that decode back to exactly their text
    used: set = field(default_factory=set)

    def add(self, other: "EvalCounts") -> None:
        for name in ("docs", "bytes", "chars", "words", "tokens", "unk", "byte_pieces", "roundtrip"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.used |= other.used

    def metrics(self, vocab_size: int) -> Dict[str, Any]:
        counts = {"eval_docs": self.docs, "eval_bytes": self.bytes, "eval_tokens": self.tokens}
        if self.docs == 0 or self.tokens == 0:
            # Nothing evaluated: a 0.0 would read (and plot) as a measurement; null says "no data".
            return {**counts, **{name: None for name in METRICS}}
        tokens = self.tokens
        return {
            **counts,
            "bytes_per_token": round(self.bytes / tokens, 4),
            "chars_per_token": round(self.chars / tokens, 4),
            "tokens_per_word": round(self.tokens / max(self.words, 1), 4),
            "unk_rate": round(self.unk / tokens, 6),
            "byte_fallback_rate": round(self.byte_pieces / tokens, 6),
            "vocab_used_share": round(len(self.used) / max(vocab_size, 1), 4),
            "roundtrip_share": round(self.roundtrip / self.docs, 6),
        }


def evaluate(sp: Any, texts: List[str], batch: int = 256) -> EvalCounts:
    """Token counts of `texts` under the processor `sp` (whole documents, as the shard stage encodes them)."""
    from stage2.tokenizer import encoding  # (with numpy: here, in the evaluation tasks, not in the driver)

    counts = EvalCounts()
    unk_id = sp.unk_id()
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        encoded = encoding.encode(sp, chunk)  # as the shard stage encodes: a literal U+2581 in byte pieces
        for text, ids, back in zip(chunk, encoded, sp.decode(encoded)):
            counts.roundtrip += back == text
            counts.docs += 1
            counts.bytes += len(text.encode("utf-8"))
            counts.chars += len(text)
            counts.words += len(text.split())
            counts.tokens += len(ids)
            counts.unk += sum(1 for i in ids if i == unk_id)
            counts.byte_pieces += sum(1 for i in ids if i in byte_ids)
            counts.used.update(ids)
    return counts


def component_metrics(
    vocab_size: int, counted: List[Tuple[str, EvalCounts, int, int, int]]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(metrics per component, metrics over all eval slices pooled) from each component's counts,
    given as (component, counts, docs seen, held out, training documents) in manifest order."""
    overall = EvalCounts()
    components: Dict[str, Any] = {}
    for component, counts, docs_seen, heldout_docs, train_docs in counted:
        if counts.docs == 0:
            log.warning(
                "tokenizer: %s has no held-out documents to evaluate on (%d seen, %d held out); its metrics are null",
                component, docs_seen, heldout_docs,
            )
        overall.add(counts)  # an empty slice adds nothing, so the pooled figures ignore it
        components[component] = {
            **counts.metrics(vocab_size),
            "docs_seen": docs_seen,
            "heldout_docs": heldout_docs,
            "train_docs": train_docs,
        }
    return components, overall.metrics(vocab_size)
