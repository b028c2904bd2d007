"""Fixtures shared by both tiers: tests/unit/ (pure cores, in this process) and tests/cli/ (the real
commands, executors and process pools; every test there is marked `slow`). Helpers are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import compose_plain, train_model


@pytest.fixture
def plain_config(tmp_path):
    def make(*overrides: str):
        return compose_plain([f"runs_index={tmp_path}/runs.jsonl", *overrides], tmp_path)

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 500-piece SentencePiece model with a pad id, trained once a session."""
    return train_model(tmp_path_factory.getbasetemp(), "tiny_pad", 500, pad_id=3)


@pytest.fixture(scope="session")
def nopad_model(tmp_path_factory) -> Path:
    return train_model(tmp_path_factory.getbasetemp(), "tiny_nopad", 500, pad_id=-1)
