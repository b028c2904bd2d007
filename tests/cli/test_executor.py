"""Executors return results in task order whatever the worker count; Ray is optional with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stage2.config import ExecutorConfig
from stage2.runtime.executor import LocalExecutor

pytestmark = pytest.mark.slow


def square_with_pid(x: int):
    return x * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_keeps_task_order(workers):
    ex = LocalExecutor(workers=workers, max_in_flight=3)
    try:
        results = list(ex.map(square_with_pid, range(20)))
    finally:
        ex.close()
    assert [r for r, _ in results] == [x * x for x in range(20)]
    pids = {pid for _, pid in results}
    # One worker runs in-process; two really use other processes.
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def worker_blas_threads(_: int):
    return os.environ.get("OPENBLAS_NUM_THREADS")


def test_workers_get_one_blas_thread_and_the_driver_keeps_its_environment(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    ex = LocalExecutor(workers=2)
    try:
        ex.start()
        assert set(ex.map(worker_blas_threads, range(4))) == {"1"}
    finally:
        ex.close()
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # a user's own setting wins
    ex = LocalExecutor(workers=2)
    try:
        assert set(ex.map(worker_blas_threads, range(4))) == {"3"}
    finally:
        ex.close()


def test_ray_missing_is_a_one_line_hint():
    code = "import sys; sys.modules['ray'] = None\nfrom stage2.config import ExecutorConfig\nExecutorConfig(kind='ray').make()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "uv sync --extra ray" in out.stderr.strip().splitlines()[-1]


def test_ray_executor_on_a_local_instance_keeps_task_order():
    pytest.importorskip("ray")
    import ray

    from stage2.io.sources import file_stem

    ex = ExecutorConfig(kind="ray", workers=2).make()
    paths = [f"/data/part{i}.jsonl.gz" for i in range(12)]
    try:
        # A stage2 function: Ray workers import it from the package (test modules are not importable there).
        results = list(ex.map(file_stem, paths))
    finally:
        ray.shutdown()
    assert results == [f"part{i}" for i in range(12)]
