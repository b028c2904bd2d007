"""Property: dedup verdicts do not depend on partitioning or worker count.

Hypothesis builds document sequences from words of real sample text with planted exact copies
(whitespace changed) and near copies (one word replaced), and the pure filter core decides them with
two partition sizes, in-process and on a real 2-worker pool. Every run must give every document the
verdict of the plain one-document-at-a-time definition (exact key set, then `NearDeduper.is_duplicate`).
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from conftest import sample_records
from stage2.dedup import NearDeduper, exact_key, window_hashes
from stage2.executor import LocalExecutor
from stage2.filter import Counts, DedupState, Settings, filter_documents
from stage2.sources import Document

VOCAB = sorted({w for r in sample_records("web_stackexchange.jsonl.gz", 60) for w in r["text"].split()})

# One planted document: a new text, an exact copy or a near copy of an earlier one, or a short one.
new_doc = st.tuples(st.just("new"), st.integers(1, 80), st.integers(0, 2**32 - 1))
copy_doc = st.tuples(st.just("copy"), st.integers(0, 10**6))
near_doc = st.tuples(st.just("near"), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 2**32 - 1))
short_doc = st.tuples(st.just("short"), st.integers(0, 2**32 - 1))
recipes = st.lists(st.one_of(new_doc, new_doc, copy_doc, near_doc, short_doc), min_size=1, max_size=30)


def build(recipe: List[tuple]) -> Tuple[List[Document], Dict[int, Tuple[str, int]]]:
    """Documents in canonical order and, for planted copies, (kind, index of the original)."""
    texts: List[List[str]] = []
    planted: Dict[int, Tuple[str, int]] = {}
    for item in recipe:
        kind = item[0]
        if kind == "new" or not texts:
            n, seed = (item[1], item[2]) if kind == "new" else (20, 0)
            texts.append(random.Random(seed).choices(VOCAB, k=n))
        elif kind == "copy":
            j = item[1] % len(texts)
            texts.append(list(texts[j]))
            planted[len(texts) - 1] = ("copy", j)
        elif kind == "near":
            j = item[1] % len(texts)
            words = list(texts[j])
            words[item[2] % len(words)] = random.Random(item[3]).choice(VOCAB)
            texts.append(words)
            planted[len(texts) - 1] = ("near", j)
        else:
            texts.append(random.Random(item[1]).choices(["a", "to", "of"], k=2))
    docs = []
    for i, words in enumerate(texts):
        # Exact copies differ in whitespace only: the normalised text is the same.
        sep = " \n\t " if planted.get(i, ("",))[0] == "copy" else " "
        docs.append(Document(id=f"d{i}", text=sep.join(words), component="c", source="s", record=i + 1))
    return docs, planted


def reference(docs: List[Document], s: Settings) -> List[str]:
    """The definition, one document at a time in canonical order."""
    seen, near, out = set(), NearDeduper(s.near_threshold), []
    for doc in docs:
        if len(doc.text) < s.min_chars:
            out.append("too_short")
        elif exact_key(doc.text) in seen:
            out.append("duplicate")
        else:
            seen.add(exact_key(doc.text))
            out.append("near_duplicate" if near.is_duplicate(window_hashes(doc.text, s.window_words)) else "kept")
    return out


def verdicts(docs: List[Document], s: Settings, mapper=map) -> List[str]:
    by_id: Dict[str, str] = {}
    for result in filter_documents(docs, s, False, DedupState.new(s), Counts(), mapper):
        by_id.update({d.id: "kept" for d in result.kept})
        by_id.update({r.doc.id: r.reason for r in result.rejected})
    return [by_id[d.id] for d in docs]


@pytest.fixture(scope="module")
def pool():
    executor = LocalExecutor(workers=2, max_in_flight=3)
    yield executor
    executor.close()


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    recipe=recipes,
    sizes=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    k=st.sampled_from([3, 5, 13]),
    threshold=st.sampled_from([0.3, 0.5, 0.8]),
    on_pool=st.booleans(),
)
def test_verdicts_do_not_depend_on_partitions_or_workers(pool, recipe, sizes, k, threshold, on_pool):
    docs, planted = build(recipe)
    base = dict(min_chars=20, max_chars=10**6, window_words=k, near_threshold=threshold)
    want = reference(docs, Settings(**base, partition_size=1))
    one = verdicts(docs, Settings(**base, partition_size=sizes[0]))
    other = verdicts(docs, Settings(**base, partition_size=sizes[1]), pool.map if on_pool else map)
    assert one == want
    assert other == want
    # The planted copies were caught (so the property is about real duplicates, not all-kept sets).
    for i, (kind, j) in planted.items():
        if want[j] == "kept":
            if kind == "copy":
                assert want[i] == "duplicate"
            elif threshold <= 0.5 and len(set(docs[j].text.split())) >= 4 * k:  # at most k of >= 3k+1 windows changed
                assert want[i] in ("duplicate", "near_duplicate")
