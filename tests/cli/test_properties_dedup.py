"""Property: the filter's verdicts are the dedup rule applied one document at a time, whatever the
partition size, the number of hash buckets (the memory budget) or the executor."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

import stage2.stages.filter as filter_stage
from helpers import dedup_reference, sample_records, write_jsonl
from stage2.runtime.executor import LocalExecutor
from stage2.config import DedupConfig, FilterConfig
from stage2.stages.filter import execute
from stage2.stages.filter_tasks import merge_rejected
from stage2.io.parts import read_documents
from stage2.io.sources import ComponentSpec, plan_component, scan_file

pytestmark = pytest.mark.slow  # a process pool

VOCAB = sorted({w for r in sample_records("web_stackexchange.jsonl.gz", 60) for w in r["text"].split()})

# One planted document: a new text, an exact copy or a near copy of an earlier one, or a short one.
new_doc = st.tuples(st.just("new"), st.integers(1, 80), st.integers(0, 2**32 - 1))
copy_doc = st.tuples(st.just("copy"), st.integers(0, 10**6))
near_doc = st.tuples(st.just("near"), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 2**32 - 1))
short_doc = st.tuples(st.just("short"), st.integers(0, 2**32 - 1))
recipes = st.lists(st.one_of(new_doc, new_doc, copy_doc, near_doc, short_doc), min_size=1, max_size=30)
MIN_CHARS = 20


def build(recipe: List[tuple]) -> Tuple[List[str], Dict[int, Tuple[str, int]]]:
    """Texts in canonical order and, for planted copies, (kind, index of the original)."""
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
    # Exact copies differ in whitespace only: the normalised text is the same.
    return [(" \n\t " if planted.get(i, ("",))[0] == "copy" else " ").join(w) for i, w in enumerate(texts)], planted


def reference(texts: List[str], k: int, threshold: float) -> List[str]:
    screened = [i for i, t in enumerate(texts) if len(t) >= MIN_CHARS]
    out = ["too_short"] * len(texts)
    for i, verdict in zip(screened, dedup_reference([texts[i] for i in screened], k, threshold)):
        out[i] = verdict
    return out


def verdicts(texts: List[str], folder: Path, partition: int, k: int, threshold: float, mapper=map) -> List[str]:
    path = write_jsonl(folder / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    spec = ComponentSpec(name="c", files=[str(path)], format="json", lang_filter=False)
    units = plan_component(spec, 0, spec.files, {str(path): scan_file(str(path), "json", stride=partition)}, partition, None)
    f = FilterConfig(min_chars=MIN_CHARS, max_chars=10**6, on_bad_record="fail", quality=[],
                     dedup=DedupConfig(exact=True, near=True, window_words=k, threshold=threshold, scope="component", memory_mb=1))
    done = execute([(spec, units)], f, 10**6, folder / "work", folder, mapper)
    by_id = {d.id: "kept" for r in done.decided for rel in r["parts"] for d in read_documents(folder / rel)}
    files = [Path(t["dir"]) / n for t in done.screen_tasks for n in ("rejected-screen.parquet", "rejected-decide.parquet")]
    rejected = merge_rejected(files, ["too_short", "duplicate", "near_duplicate"], 10**6)
    if rejected is not None:
        by_id.update(zip(rejected.column("id").to_pylist(), rejected.column("reason").to_pylist()))
    return [by_id[f"d{i}"] for i in range(len(texts))]


@pytest.fixture(scope="module")
def pool():
    executor = LocalExecutor(workers=2, max_in_flight=3)
    yield executor
    executor.close()


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    recipe=recipes,
    sizes=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    k=st.sampled_from([3, 5, 13]),
    threshold=st.sampled_from([0.3, 0.5, 0.8]),
    tiny_buckets=st.booleans(),
)
def test_verdicts_do_not_depend_on_partitions_buckets_or_workers(pool, tmp_path_factory, monkeypatch, recipe, sizes, k, threshold, tiny_buckets):
    texts, planted = build(recipe)
    want = reference(texts, k, threshold)
    if tiny_buckets:  # about 8 pairs a bucket: dozens of hash ranges, resolved one by one (in this process)
        monkeypatch.setattr(filter_stage, "BYTES_PER_PAIR", (1 << 20) // 8)
    one = verdicts(texts, tmp_path_factory.mktemp("one"), sizes[0], k, threshold)
    monkeypatch.undo()
    other = verdicts(texts, tmp_path_factory.mktemp("other"), sizes[1], k, threshold, pool.map)
    assert one == want
    assert other == want
    # The planted copies were caught (so the property is about real duplicates, not all-kept sets).
    for i, (kind, j) in planted.items():
        if want[j] == "kept":
            if kind == "copy":
                assert want[i] == "duplicate"
            elif threshold <= 0.5 and len(set(texts[j].split())) >= 4 * k:  # at most k of >= 3k+1 windows changed
                assert want[i] in ("duplicate", "near_duplicate")
