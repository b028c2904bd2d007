"""Helpers both test tiers import (`from helpers import ...`; pyproject puts tests/ on sys.path).

tests/unit/ drives the stages in this process; tests/cli/ runs the real `stage2` commands. Fixtures are in
tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from oracles import window_hashes
from stage2.dedup import exact_key

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
BIN = Path(sys.executable).parent  # the venv's `stage2` and `stage2-rerun`


# The sample mixture cut small, so that a whole pipeline takes seconds.
SMALL_SAMPLE = [
    "dataset.components.web.max_records=150",
    "dataset.components.encyclopedia.max_records=250",
    "dataset.components.code.max_records=60",
    "dataset.components.noisy.max_records=300",
    "dataset.partition_size=100",
    "tokenizer.vocab_size=800",
    "shard.sequences_per_shard=64",
]


# --- inputs and configs -------------------------------------------------------------------------


def compose_plain(overrides: List[str], launch_dir: Path):
    """The resolved config a run of `stage2 <overrides>` launched from `launch_dir` would get."""
    import stage2.main as stage2_main

    return stage2_main.compose_recipe(overrides, str(launch_dir))


def sample_records(name: str, n: int) -> List[Dict[str, Any]]:
    """The first n records of one of the embedded sample's jsonl.gz files."""
    out = []
    with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def data_records(name: str) -> List[Dict[str, Any]]:
    """Every record of a JSON-lines fixture in tests/data/ (e.g. hygiene_foldoc.jsonl.gz)."""
    with gzip.open(REPO / "tests" / "data" / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_jsonl(path: Path, records: List[Dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# --- run folders --------------------------------------------------------------------------------


def artifact_hashes(run_dir: Path) -> Dict[str, str]:
    """sha256 of every artifact a finished run lists in its stats.json."""
    stats = json.loads((run_dir / "stats.json").read_text())
    return {rel: hashlib.sha256((run_dir / rel).read_bytes()).hexdigest() for rel in stats["artifacts"]}


def tree(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def stats(run_dir: Path) -> Dict[str, Any]:
    return json.loads((run_dir / "stats.json").read_text())


def done_tasks(run_dir: Path, component: str = "*") -> List[Path]:
    """The markers of a filter run's finished tasks: screens and decides of a component's units (or every task)."""
    work = run_dir / "filtered" / ".work"
    return sorted(work.glob(f"{component}/*/done-*.json")) + (sorted(work.glob("dedup/*/*/done-*.json")) if component == "*" else [])


# --- dedup --------------------------------------------------------------------------------------


def dedup_reference(texts, k, threshold):
    """Dedup's rule (stage2/dedup.py__init__.py) applied one document at a time in canonical order: every
    document's hashes count for the later ones, whatever its own verdict."""
    seen_text, seen_windows, out = set(), set(), []
    for text in texts:
        key, windows = exact_key(text), set(window_hashes(text, k).tolist())
        if key in seen_text:
            out.append("duplicate")
        elif windows and len(windows & seen_windows) >= threshold * len(windows):
            out.append("near_duplicate")
        else:
            out.append("kept")
        seen_text.add(key)
        seen_windows |= windows
    return out


# --- stages run in this process -----------------------------------------------------------------


def run_filter(plain_config, run_dir: Path, *overrides: str):
    """The filter stage of a run of `plain_config(overrides)`: the run and its headline."""
    from stage2.stages import filter as filter_stage
    from stage2.runtime.run import start_run

    cfg = plain_config("stage=filter", "progress=false", *overrides)
    run = start_run(run_dir, cfg)
    try:
        headline = filter_stage.run(run)
    finally:
        run.executor.close()
    return run, headline


_MODELS: Dict[str, Path] = {}


def train_model(base: Path, name: str, vocab: int, pad_id: int) -> Path:
    """A tiny real SentencePiece model from the sample's text (cached for the session)."""
    from stage2.tokenizer import train as tok_train

    if name not in _MODELS:
        texts = [r["text"] for r in sample_records("foldoc.jsonl.gz", 600)]
        texts += [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 150)]
        # The stage's own default recipe (lossless), made small.
        t = compose_plain([f"tokenizer.vocab_size={vocab}", "tokenizer.num_threads=2", f"tokenizer.pad_id={pad_id}"], base).tokenizer
        sentences = tok_train.sentence_stream(texts, t.max_sentence_length, tok_train.SentenceCounter())
        path = base / f"{name}.model"
        path.write_bytes(tok_train.train_model(sentences, t.trainer_options(), seed=0))
        _MODELS[name] = path
    return _MODELS[name]


def corpus(tmp_path: Path) -> List[Path]:
    """Two small components as jsonl: real sample text."""
    web = sample_records("web_stackexchange.jsonl.gz", 120)
    enc = sample_records("foldoc.jsonl.gz", 200)
    return [write_jsonl(tmp_path / "in" / "web.jsonl", web), write_jsonl(tmp_path / "in" / "enc.jsonl", enc)]


def make_run(tmp_path: Path, name: str, paths: List[Path], *overrides: str):
    """A started shard run over `paths` (one worker unless the overrides say otherwise)."""
    from stage2.runtime.run import start_run

    plain = compose_plain(
        [
            f"runs_index={tmp_path}/runs.jsonl",
            "stage=shard",
            "dataset=files",
            f"dataset.paths=[{','.join(str(p) for p in paths)}]",
            "executor.workers=1",
            *overrides,
        ],
        tmp_path,
    )
    return start_run(tmp_path / name, plain)


def shard_run(tmp_path: Path, name: str, paths: List[Path], *overrides: str, before=None):
    """A shard run over `paths`, run to its end in this process (`before(run)` first, if given)."""
    from stage2.stages import shard

    run = make_run(tmp_path, name, paths, *overrides)
    try:
        if before is not None:
            before(run)
        run.stats["headline"] = shard.run(run)
    finally:
        run.executor.close()
    run.save_stats()
    return run


def load_index(run, comp: str) -> Dict[str, Any]:
    return json.loads((run.dir / "shards" / comp / "index.json").read_text())


# --- the real CLI -------------------------------------------------------------------------------


def cli(cwd: Path, *args: str, command: str = "stage2") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def filter_run(cwd: Path, *args: str, command: str = "stage2") -> subprocess.CompletedProcess:
    return cli(cwd, "stage=filter", "dataset=files", f"runs_index={cwd}/runs.jsonl", "executor.workers=1", *args, command=command)


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr + out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("stage2: error: "), last
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# Kill -9 and resume: give `kill_when` a predicate over the run folder that is true once the stage is
# demonstrably mid-way; `resume` continues the run; `assert_resumed_like` compares it with a fresh one.

POLL_S = 0.002  # the stages are fast on small inputs: poll often so the kill lands mid-way


def stage2(args: List[str], cwd: Path, command: str = "stage2") -> subprocess.CompletedProcess:
    """`stage2 <args>` (or another command) run to its end; fails the test if it fails."""
    out = subprocess.run([str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"{command} {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def kill_when(args: List[str], cwd: Path, run_dir: Path, ready: Callable[[Path], Any], timeout: float = 300) -> Any:
    """Start `stage2 <args> hydra.run.dir=<run_dir>`, SIGKILL its whole process group once `ready(run_dir)`
    is truthy, and return that value. Fails if the run ends first (the kill point was never reached)."""
    log = run_dir.parent / f"{run_dir.name}.killed.log"
    with open(log, "w") as out:
        # Own session: os.killpg then also kills the executor's worker processes.
        proc = subprocess.Popen(
            [str(BIN / "stage2"), *args, f"hydra.run.dir={run_dir}"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen = ready(run_dir) if run_dir.exists() else None
                if seen:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return seen
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    raise AssertionError(f"stage2 ended (rc={proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")


def resume(run_dir: Path, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return stage2([str(run_dir), "resume=true", *overrides], cwd, command="stage2-rerun")


def assert_killed_mid_stage(run_dir: Path, stage_done: Path) -> None:
    """The kill came after the run started and before the stage's last output: a real interruption."""
    assert stats(run_dir)["status"] == "running"
    assert not stage_done.exists(), f"{stage_done} exists: the stage had finished before the kill"


def assert_resumed_like(resumed: Path, fresh: Path) -> Dict[str, str]:
    """Same artifact list, same bytes, and no temporary file left anywhere in the run folder."""
    assert stats(resumed)["status"] == "finished"
    got, want = artifact_hashes(resumed), artifact_hashes(fresh)
    assert sorted(got) == sorted(want)
    assert [rel for rel in want if got[rel] != want[rel]] == []
    leftovers = [p for p in resumed.rglob("*") if ".tmp-" in p.name or p.name == ".work"]
    assert leftovers == [], leftovers
    return got


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs) at `folder`, so that writing really runs out of space; skips
    the test where mounting is not allowed (it needs root)."""
    folder.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


CORPORA = REPO / "tests" / "data" / "corpora"


def corpora() -> Dict[str, List[str]]:
    """Every document of the development corpora's samples (tests/data/corpora/), by corpus."""
    return {
        path.name.split(".")[0]: [json.loads(line)["text"] for line in gzip.open(path, "rt", encoding="utf-8")]
        for path in sorted(CORPORA.glob("*.jsonl.gz"))
    }


def corpora_slice(texts: Dict[str, List[str]], max_bytes: int) -> List[str]:
    """The first documents of each corpus, up to `max_bytes` of UTF-8 each: a training text with every script."""
    out = []
    for docs in texts.values():
        size = 0
        for doc in docs:
            size += len(doc.encode("utf-8"))
            if size > max_bytes:
                break
            out.append(doc)
    return out

