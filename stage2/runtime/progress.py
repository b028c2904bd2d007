"""Progress of long steps: a tqdm bar on a terminal, periodic log lines elsewhere (CI, nohup, Slurm)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("stage2.runtime.progress")

LOG_EVERY_S = 10.0


class Progress:
    """Count work done (documents, tokens...) and report rate and ETA."""

    def __init__(self, desc: str, total: Optional[int] = None, unit: str = "doc", enabled: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self.started = self._last_log = time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm  # here: importing it costs a driver without a terminal ~0.03 CPU s

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.info("%s", self.line(now))

    def line(self, now: Optional[float] = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        units = self.unit if self.unit == "B" else f"{self.unit}s"  # bytes: "B", not "Bs"
        text = f"{self.desc}: {self.done:,} {units}, {rate:,.0f} {units}/s"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f", {100 * self.done / self.total:.0f}% , ETA {eta:,.0f} s"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "doc", enabled: bool = True) -> Iterator[T]:
    """Iterate `items`, counting one unit per item."""
    with Progress(desc, total, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
