"""Every `bash` and `python` block of README.md and docs/*.md runs as written (blocks marked `no-run` do not:
tests/unit/test_docs.py checks the markers). Commands run in a scratch folder holding a copy of examples/,
with `uv run` meaning the venv's commands; python blocks get `RUN` pointed at a finished pipeline run."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BIN, REPO, SMALL_SAMPLE

pytestmark = pytest.mark.slow

DOCS = REPO / "docs"
# In the order a reader meets them; later pages may use the runs earlier ones made.
PAGES = ["README.md", "docs/quickstart.md", "docs/your-data.md", "docs/filter.md", "docs/tokenizer.md",
         "docs/run-folder.md", "docs/reproducibility.md", "docs/troubleshooting.md", "docs/executors.md", "docs/benchmarks.md"]

# `uv run [--project X] [--with X] cmd ...` -> cmd from the venv this test runs in.
UV_SHIM = r"""
uv() {
  if [ "$1" != run ]; then echo "docs test: only 'uv run' is supported: uv $*" >&2; return 2; fi
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --project|--with) shift 2 ;;
      --project=*|--with=*) shift ;;
      *) break ;;
    esac
  done
  "$@"
}
"""


def blocks(page: Path, kind: str):
    return [body for info, body in re.findall(r"^```([^\n]*)\n(.*?)^```\s*$", page.read_text(encoding="utf-8"), flags=re.M | re.S) if info == kind]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch launch folder with examples/ and a finished small pipeline run; HOME inside it too."""
    root = tmp_path_factory.mktemp("docs")
    work = root / "work"
    shutil.copytree(REPO / "examples", work / "examples")
    home = root / "home"
    home.mkdir()
    cache = os.environ.get("STAGE2_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stage2")
    env = {**os.environ, "HOME": str(home), "STAGE2_CACHE_DIR": cache, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    run = work / "outputs" / "0-fixture" / "pipeline"  # sorts before dated runs: `ls -d outputs/*/* | tail -1` finds the docs' own
    done = subprocess.run([str(BIN / "stage2"), *SMALL_SAMPLE, f"hydra.run.dir={run}"], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return work, env, run


@pytest.mark.parametrize("name", PAGES)
def test_bash_blocks_run(name, workdir):
    work, env, _ = workdir
    page = REPO / name
    assert page.exists() or name in ("docs/troubleshooting.md",)
    for body in blocks(page, "bash"):
        script = f"{UV_SHIM}\nset -euo pipefail\n{body}"
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{name}: this block failed:\n{body}\n--- stderr:\n{done.stderr[-3000:]}"
    if name == "README.md":
        sweep = sorted((work / "multirun").glob("*/*"))[-1]  # README's sweep: the plot must move
        rows = list(csv.DictReader(open(sweep / "summary.csv")))
        assert [r["overrides"] for r in rows] == [f"stage=filter filter.min_chars={m}" for m in (50, 200, 800)]
        for component in ("web", "encyclopedia", "code", "noisy"):
            shares = [float(r[f"kept_share.{component}"]) for r in rows]
            assert shares == sorted(shares, reverse=True) and shares[0] > shares[-1]
        assert "dropped_near_duplicate.overall" in rows[0] and (sweep / "summary.png").stat().st_size > 1000
        # README's rerun repeated its own-files run (per-path settings and all).
        runs = sorted((work / "outputs").glob("2*/*"))
        assert len(runs) >= 3 and all("glossary" in (r / "config.resolved.yaml").read_text() for r in runs[-2:])


@pytest.mark.parametrize("name", PAGES)
def test_python_blocks_run(name, workdir):
    work, env, run = workdir
    code = blocks(REPO / name, "python")
    if not code:
        pytest.skip(f"{name} has no python block to run")
    source = "\n".join(re.sub(r'^RUN = ".*?"', f"RUN = {str(run)!r}", b, flags=re.M) for b in code)
    done = subprocess.run([sys.executable, "-c", source], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{name}: its python blocks failed:\n{done.stderr[-3000:]}"
