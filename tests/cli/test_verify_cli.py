"""stage=verify through the real command: dispatch and exit code."""

from __future__ import annotations

import subprocess
import sys
import pytest
from helpers import REPO
from unit.test_verify import sharded  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_verify_stage_dispatch_and_command_exit_code(sharded, tmp_path):
    from helpers import compose_plain
    from stage2.stages.pipeline import run_stage

    plain = compose_plain([f"runs_index={tmp_path}/runs.jsonl", "stage=verify", f"verify.dir={sharded.dir}"], tmp_path)
    run_stage(plain, tmp_path / "verify_ok")  # passes: no exception
    target = sharded.dir / "shards" / "web" / "shard-00000.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    # the real command: a non-zero exit and the file's name on stderr
    cmd = [sys.executable, "-m", "stage2.main", "stage=verify", f"verify.dir={sharded.dir}", f"hydra.run.dir={tmp_path}/verify_out", f"runs_index={tmp_path}/runs.jsonl"]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "web/shard-00000.npy" in bad.stderr, bad.stderr
