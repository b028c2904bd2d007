"""Progress: a tqdm bar on a terminal, periodic log lines with rate and ETA elsewhere."""

from __future__ import annotations

import logging

import stage2.runtime.progress as progress
from stage2.runtime.progress import Progress, track


def test_off_a_terminal_progress_is_logged_with_rate_and_eta(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # log at every update
    caplog.set_level(logging.INFO, logger="stage2.runtime.progress")
    with Progress("filter web", total=4, unit="doc") as bar:  # pytest's stderr is not a terminal
        assert bar._bar is None
        bar.update(1)
        bar.update(3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("filter web: 1 docs") and "docs/s" in lines[0] and "25%" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("filter web: 4 docs") and "100%" in lines[-1]


def test_track_counts_items_and_passes_them_through(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="stage2.runtime.progress")
    assert list(track(iter("abc"), "sampling", unit="component")) == ["a", "b", "c"]
    assert caplog.records[-1].getMessage().startswith("sampling: 3 components")


def test_disabled_progress_draws_no_bar(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert Progress("x", enabled=False)._bar is None
