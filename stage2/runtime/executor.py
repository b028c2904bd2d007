"""Run a function over partitions, in parallel, returning results in partition order.

Partitions are fixed by the config, never by the machine, and results are consumed in partition
order, so every artifact is the same whatever the number of workers or the executor.
Workers receive plain picklable objects only (never a DictConfig: `${hydra:...}` cannot resolve there).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

import multiprocessing

from stage2.errors import Stage2Error

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_interrupted = threading.Event()  # set by the driver's signal handler: executors then stop their workers at once
_signal: list = []


def note_interrupt(signum: int) -> None:
    """The run is being interrupted (Ctrl-C, SIGTERM): `close()` kills the workers instead of letting tasks end."""
    _signal.append(signum)
    _interrupted.set()


def interrupted_by() -> Optional[int]:
    """The signal that interrupted this process, if one did (an error raised meanwhile is its consequence:
    a library that turned the interrupt into its own error, a pool broken by its stopped workers)."""
    return _signal[0] if _signal else None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them to the handlers they had.

    Python runs a signal's handler between two bytecodes of the main thread: one that raises inside the
    pool's bookkeeping (a worker half spawned, a task half submitted) leaves the pool in a state whose
    shutdown can wait forever. Outside the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # (None: a handler set outside Python)
        if held:
            signal.raise_signal(held[0])


def resolve_workers(workers: int) -> int:
    return workers if workers and workers > 0 else (os.cpu_count() or 1)


class LocalExecutor:
    """A process pool on this machine (in-process when workers == 1)."""

    def __init__(self, workers: int = 0, max_in_flight: int = 0):
        self.workers = resolve_workers(workers)
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._pool: Optional[ProcessPoolExecutor] = None
        self.tasks_cpu_s = 0.0  # CPU seconds its tasks used so far, wherever they ran (stats: driver_cpu)
        self.in_process = self.workers == 1

    def start(self, warm: Optional[Callable[[], Any]] = None) -> None:
        """Start the workers now, each running `warm()` (imports, a model) before its first task.

        A stage calls it before its own start-up (checks, opening sources, the first partition), which
        then overlaps the workers' own; without it they start at the first task. No-op
        when the workers run already (they keep what an earlier stage warmed). In-process (one worker)
        `warm()` runs here: its temporaries (langdetect's profiles load through large Python
        dicts) are freed before the stage holds partitions, which keeps them out of its peak RSS.
        """
        if self.workers == 1:
            if warm is not None:
                warm()
            return
        if self._pool is not None:
            return
        self._start_pool(warm)

    def _start_pool(self, warm: Optional[Callable[[], Any]] = None) -> None:
        # spawn: forking a process that holds threads (tqdm, datasets, sentencepiece) can deadlock.
        # Workers ignore Ctrl-C (the terminal sends it to the whole process group): the driver stops
        # them. SIG_IGN is inherited through spawn, so a worker ignores it from its first instruction.
        with signals_deferred(), _sigint_ignored():
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(warm,)
            )
            # A pool of spawned processes starts one per task submitted: start them all now, with one BLAS
            # thread each (numpy's OpenBLAS otherwise starts a thread per core in every worker; the workers do
            # no linear algebra). Children copy the environment at spawn.
            with _environment(OPENBLAS_NUM_THREADS="1"):
                for _ in range(self.workers):
                    self._pool.submit(_noop)

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        if self.workers == 1:
            for task in tasks:
                yield self._counted(_timed(fn, task))
            return
        if self._pool is None:
            self._start_pool()
        pending: deque = deque()
        for task in tasks:
            with signals_deferred():
                pending.append(self._pool.submit(_timed, fn, task))
            if len(pending) >= self.max_in_flight:
                yield self._counted(pending.popleft().result())
        while pending:
            yield self._counted(pending.popleft().result())

    def _counted(self, timed: Tuple[Any, float]) -> Any:
        value, cpu = timed
        self.tasks_cpu_s += cpu
        return value

    def close(self) -> None:
        """Stop the pool: queued tasks are cancelled; running ones end, or, when the run is being
        interrupted, their workers are killed (a resume removes what they were writing)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with signals_deferred():
            if _interrupted.is_set():
                for process in list((pool._processes or {}).values()):
                    process.kill()  # (not SIGTERM: a task may run long; nothing of its output is kept)
            pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored by this process (and so by the processes it spawns) inside the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _init_worker(warm: Optional[Callable[[], Any]]) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (also when the pool was started off the main thread)
    if warm is not None:
        try:
            warm()
        except Exception:  # an initializer that raises breaks the pool: let the first task meet the error instead
            pass
    # What the worker holds by now (its imports, a model) lasts as long as it does: out of the cyclic
    # collector's full passes, which would otherwise walk all of it again every so many tasks' objects.
    gc.collect()
    gc.freeze()


def _noop() -> None:
    pass


@contextlib.contextmanager
def _environment(**defaults: str) -> Iterator[None]:
    """Set these environment variables (unless set already) for processes started inside the block."""
    added = [name for name in defaults if name not in os.environ]
    os.environ.update({name: defaults[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _die_with_parent() -> None:
    """Linux: a pool worker gets SIGKILL when its driver dies (after kill -9 it would idle forever)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown handling applies
        pass


class RayExecutor:
    """The same partitions as Ray tasks; joins `address` or starts a local Ray instance."""

    def __init__(self, workers: int = 0, max_in_flight: int = 0, address: Optional[str] = None):
        try:
            import ray
        except ImportError:
            raise Stage2Error("executor=ray needs Ray: install it with `uv sync --extra ray`") from None
        self._ray = ray
        self._own_instance = False  # a local instance this executor started (shut down when a run is interrupted)
        self._pending: deque = deque()
        if not ray.is_initialized():
            # No address: under `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start an
            # instance of our own with `workers` CPUs, even when a `ray start` cluster runs on this node
            # (ray.init() would join it and refuse num_cpus): `executor.address=auto` joins that one.
            if address is None and os.environ.get("RAY_ADDRESS"):
                address = os.environ["RAY_ADDRESS"]
                log.info("executor=ray: joining the Ray cluster at %s (RAY_ADDRESS)", address)
            kwargs: Dict[str, Any] = {"address": address or "local", "include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = resolve_workers(workers)
            ray.init(**kwargs)
            self._own_instance = address is None
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._apply = ray.remote(num_cpus=1)(_apply)
        self.tasks_cpu_s = 0.0
        self.in_process = False
        self.nodes: set = set()  # the Ray nodes that ran a task (stats: executor_nodes)

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        pending = self._pending = deque()

        def result() -> Any:
            value, cpu, node = self._ray.get(pending.popleft())
            self.nodes.add(node)
            self.tasks_cpu_s += cpu
            return value

        for task in tasks:
            pending.append(self._apply.remote(fn, task))
            if len(pending) >= self.max_in_flight:
                yield result()
        while pending:
            yield result()

    def start(self, warm: Optional[Callable[[], Any]] = None) -> None:
        pass  # Ray starts its workers itself

    def close(self) -> None:
        """A Ray instance is shut down at process exit and a joined cluster keeps running; when the run is
        being interrupted, its tasks in flight are cancelled (on a cluster too) and a local instance stops now."""
        pending, self._pending = self._pending, deque()
        if not _interrupted.is_set():
            return
        with signals_deferred():
            for ref in pending:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - a task that ended meanwhile; stopping the rest matters more
                    pass
            if self._own_instance:
                self._ray.shutdown()


def _timed(fn: Callable[[Any], Any], task: Any) -> Tuple[Any, float]:
    """`fn(task)` and the CPU seconds of this process it took."""
    started = time.process_time()
    value = fn(task)
    return value, time.process_time() - started


def _apply(fn: Callable[[Any], Any], task: Any) -> Any:
    # One remote function for every stage: `fn` travels by reference (module + name), like in a process pool.
    import ray

    return (*_timed(fn, task), ray.get_runtime_context().get_node_id())
