"""Language ID across processes: the same verdicts whatever the order and the process."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import random
from typing import List, Tuple
import pytest
from stage2.lid import langdetect_fast as langid_fast
from unit.test_langid import texts  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow




def _detect_all(texts: List[str]) -> List[List[Tuple[str, float]]]:
    return langid_fast.detect_batch(texts)


def test_deterministic_across_order_and_processes(texts):
    subset = texts[:40]
    first = _detect_all(subset)
    shuffled = list(range(len(subset)))
    random.Random(1).shuffle(shuffled)
    again = _detect_all([subset[i] for i in shuffled])
    assert [again[shuffled.index(i)] for i in range(len(subset))] == first
    assert [langid_fast.detect(t) for t in subset] == first
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_detect_all, subset).result() == first
