"""Exact and near dedup as partitioned, out-of-core passes.

The rule (it parallelises exactly): for every hash, the earliest canonical position at which it
occurs is its first occurrence. A document is an exact duplicate when an earlier document has its
text hash; a near duplicate when at least `dedup.threshold` of its distinct word windows first occur
in earlier documents. Only documents every step kept take part, each whatever its own verdict (a
near duplicate's windows still count for the documents after it), so a verdict depends on the hashes
and their positions alone: not on the order work finishes, the number of workers or buckets, or the
memory budget.

  hashing.py   the hashes (normalised text, word windows)
  passes.py    spill: each filter task writes its (hash, position) pairs sorted by hash;
               resolve: one task per hash range (bucket) reads that range of every spill file and
               finds, per document, its exact-duplicate flag and how many windows occurred earlier;
               lookup: a task reads its documents' results back by position range.
"""
