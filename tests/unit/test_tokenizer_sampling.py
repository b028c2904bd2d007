"""The tokenizer's sample taken in partitions and merged (stage2/tokenizer/sample.py `sample_passes`, merged as `sample_partitions` below)
against the plain version that sorts every document at once (tests/oracles.py)."""

from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import tokenizer_sample_plain
from stage2.documents import Document
from stage2.io.sources import iter_documents
from stage2.tokenizer import sample as tok_sample

from test_tokenizer import make_spec

SEED = 7


def as_dict(sample: tok_sample.ComponentSample) -> dict:
    return {k: v for k, v in dataclasses.asdict(sample).items() if k != "component"}


def partitioned(docs: List[Document], cuts: List[int]) -> List[List[Document]]:
    """`docs` cut at the sorted positions `cuts` (empty partitions included)."""
    edges = [0, *sorted(cuts), len(docs)]
    return [docs[a:b] for a, b in zip(edges, edges[1:])]


def sample_partitions(expected_docs, shares, heldout_percent, eval_docs, run_pass) -> Dict[str, tok_sample.ComponentSample]:
    """Every component's sample from its partitions' candidates held in memory (`sample_passes`, then the
    merge): the stage's path without its candidate files."""

    def counted(bounds):
        for name, part in run_pass(bounds):
            yield name, tok_sample.PartitionCounts.of(part), part

    plans = tok_sample.sample_passes(expected_docs, shares, heldout_percent, eval_docs, counted)
    return {name: tok_sample.component_sample(plan, lambda part: part) for name, plan in plans.items()}


def sample_in(parts: Dict[str, List[List[Document]]], expected: Dict[str, Optional[int]], shares: Dict[str, int],
              heldout_percent: int, eval_docs: int, passes: Optional[list] = None) -> Dict[str, tok_sample.ComponentSample]:
    """`sample_partitions` with an in-process pass over in-memory partitions (the stage maps the same tasks
    over its executor); `passes` collects each pass's bounds and the entries it returned to the driver."""

    def run_pass(bounds):
        returned = 0
        for name, b in bounds.items():
            for docs in parts[name]:
                part = tok_sample.sample_partition(docs, b, shares[name], heldout_percent, eval_docs, SEED)
                returned += len(part.train) + len(part.held)
                yield name, part
        if passes is not None:
            passes.append((dict(bounds), returned))

    return sample_partitions(expected, shares, heldout_percent, eval_docs, run_pass)


def real_docs(n: int = 600) -> List[Document]:
    return list(iter_documents(dataclasses.replace(make_spec(), max_records=n)))


def test_partitioned_sample_equals_the_plain_sort_for_any_cut():
    docs = real_docs()
    want = tokenizer_sample_plain(docs, 120, 10, 15, SEED)
    assert 120 < want["docs_seen"] - want["heldout_docs"] and 15 < want["heldout_docs"]  # both samples are capped
    rng = random.Random(0)
    for count in (1, 2, 7, 60, len(docs)):
        cuts = rng.sample(range(len(docs) + 1), count - 1)
        got = sample_in({"web": partitioned(docs, cuts)}, {"web": len(docs)}, {"web": 120}, 10, 15)
        assert as_dict(got["web"]) == want, count
    # and the single-pass sample of the whole component
    assert as_dict(tok_sample.sample_documents("web", docs, 120, 10, 15, SEED)) == want


def test_a_wrong_document_count_costs_a_pass_not_the_sample():
    docs = real_docs()
    want = tokenizer_sample_plain(docs, 120, 10, 15, SEED)
    parts = {"web": partitioned(docs, list(range(50, len(docs), 50)))}
    for expected in (len(docs) * 40, len(docs) // 3, None, 0):
        passes: list = []
        got = sample_in(parts, {"web": expected}, {"web": 120}, 10, 15, passes)
        assert as_dict(got["web"]) == want, expected
        if expected == len(docs) * 40:  # far too many expected: the bounds catch too few, and are raised
            assert len(passes) >= 2 and passes[1][0]["web"].train > passes[0][0]["web"].train
        else:
            assert len(passes) == 1


def test_only_about_k_texts_reach_the_driver():
    # Many documents, a small sample: the partitions return a little more than the sample, not their documents.
    docs = [Document(id=f"d{i}", text=f"text {i}", component="c", source="s", record=i + 1) for i in range(20_000)]
    passes: list = []
    got = sample_in({"c": partitioned(docs, list(range(500, 20_000, 500)))}, {"c": 20_000}, {"c": 200}, 5, 20, passes)
    assert len(got["c"].train_ids) == 200 and len(got["c"].eval_ids) == 20
    assert len(passes) == 1
    assert 220 <= passes[0][1] <= 2 * (200 + 20 + 4 * 15 + 64), passes[0][1]
    assert as_dict(got["c"]) == tokenizer_sample_plain(docs, 200, 5, 20, SEED)


words = st.sampled_from(["a", "b", "tie", "", "héllo", "\ud800x"])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 30), words), max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    quota=st.integers(0, 20),
    eval_docs=st.integers(0, 6),
    heldout=st.sampled_from([0, 5, 30, 100]),
    expected=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_merge_of_partitions_equals_the_oracle(rows, cuts, quota, eval_docs, heldout, expected):
    # Repeated ids, identical documents, empty texts, lone surrogates; any cut; any document count guess.
    docs = [Document(id=f"id{i}", text=t, component="c", source="s", record=n + 1) for n, (i, t) in enumerate(rows)]
    cuts = [min(c, len(docs)) for c in cuts]
    got = sample_in({"c": partitioned(docs, cuts)}, {"c": expected}, {"c": quota}, heldout, eval_docs)
    assert as_dict(got["c"]) == tokenizer_sample_plain(docs, quota, heldout, eval_docs, SEED)


def test_components_are_sampled_independently_in_one_pass():
    docs = real_docs(300)
    other = [dataclasses.replace(d, id=d.id + "/b", component="b") for d in docs[:100]]
    parts = {"web": partitioned(docs, [100, 200]), "b": partitioned(other, [50])}
    got = sample_in(parts, {"web": 300, "b": 100}, {"web": 40, "b": 500}, 5, 8)
    assert as_dict(got["web"]) == tokenizer_sample_plain(docs, 40, 5, 8, SEED)
    assert as_dict(got["b"]) == tokenizer_sample_plain(other, 500, 5, 8, SEED)


def test_filtered_parts_are_sampled_in_groups_of_consecutive_parts_by_bytes(tmp_path):
    from stage2.stages import tokenizer as tokenizer_stage

    mb = 1 << 20
    limit = tokenizer_stage.SAMPLE_TASK_BYTES
    sizes = [limit // 2, limit // 3, limit // 2, 2 * limit, mb, mb, 0]  # one part larger than a group: alone
    spec = make_spec()
    found = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"part-{i:05d}.parquet"
        with open(path, "wb") as f:
            f.truncate(size)  # (only its size counts for grouping)
        found.append((spec, "part", path))
    groups = tokenizer_stage._grouped(found)
    assert [p for g in groups for p in g] == found  # every part once, in order
    assert [len(g) for g in groups] == [2, 1, 1, 3]
    assert all(sum(p.stat().st_size for _, _, p in g) <= limit for g in groups if len(g) > 1)
    # Planned units of raw files stay one task each (their size is the filter's partition_size).
    units = [(spec, "unit", object()) for _ in range(3)]
    assert [len(g) for g in tokenizer_stage._grouped(units)] == [1, 1, 1]
