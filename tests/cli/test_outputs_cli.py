"""The default pipeline with every trainer format, end to end: docs/outputs.md's commands and code blocks,
verify, the formats and document tables against the filtered parts + the tokenizer, 1 vs 2 workers,
and the trainers' own readers (megatron-core, datatrove) in their venv.

The trainers' venv is found from STAGE2_TRAINERS_PYTHON (default /tmp/trainers/bin/python); the tests that
need it skip when it is missing or cannot import megatron-core, datatrove and torch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm

from helpers import REPO, artifact_hashes, stage2
from stage2.reader import MixtureSampler, row_documents
from stage2.shards import format as fmt
from stage2.tokenizer import encoding

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "outputs.md"
TRAINERS = os.environ.get("STAGE2_TRAINERS_PYTHON", "/tmp/trainers/bin/python")


def doc_blocks(lang: str) -> List[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def block(lang: str, needle: str) -> str:
    found = [b for b in doc_blocks(lang) if needle in b]
    assert len(found) == 1, f"docs/outputs.md: {len(found)} {lang} blocks with {needle!r}"
    return found[0]


def with_run(code: str, run_dir: Path) -> str:
    return re.sub(r'^RUN = ".*?"', f"RUN = {str(run_dir)!r}", code, flags=re.M)


def doc_commands() -> List[List[str]]:
    """The first bash block's `uv run stage2 ...` lines, as argument lists (quotes as the shell reads them)."""
    import shlex

    lines = [line.split("#")[0].strip() for line in doc_blocks("bash")[0].splitlines()]
    return [shlex.split(line)[3:] for line in lines if line.startswith("uv run stage2")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """docs/outputs.md's pipeline command, with one worker and with two."""
    base = tmp_path_factory.mktemp("outputs")
    pipeline = doc_commands()[0]
    assert "shard.formats=[npy,megatron,datatrove,nanogpt]" in pipeline
    out = {}
    for workers in (1, 2):
        done = stage2([*pipeline, f"executor.workers={workers}", f"hydra.run.dir=w{workers}", f"runs_index={base}/runs.jsonl"], base)
        out[workers] = (base / f"w{workers}", done.stdout)
    return base, out


def expected_documents(run_dir: Path) -> Dict[Tuple[str, str], List[Tuple[str, List[int]]]]:
    """Per (component, split): (id, encode(text) + [EOS]) of every filtered document, in part order."""
    from stage2.tokenizer.sample import is_heldout

    sp = spm.SentencePieceProcessor(model_file=str(next((run_dir / "tokenizer").glob("*.model"))))
    percent = json.loads((run_dir / "stats.json").read_text())["stages"]["shard"]["validation_percent"]
    manifest = json.loads((run_dir / "filtered" / "manifest.json").read_text())
    out: Dict[Tuple[str, str], List[Tuple[str, List[int]]]] = {}
    for name, entry in manifest["components"].items():
        out[(name, "train")], out[(name, "validation")] = [], []
        for rel in entry["parts"]:
            table = pq.ParquetFile(run_dir / rel).read(columns=["id", "text"])
            ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
            for doc_id, tokens in zip(ids, encoding.encode(sp, texts)):
                out[(name, "validation" if is_heldout(doc_id, percent) else "train")].append((doc_id, list(tokens) + [sp.eos_id()]))
    return out


def test_one_and_two_workers_write_the_same_bytes(runs):
    _, out = runs
    one, two = artifact_hashes(out[1][0]), artifact_hashes(out[2][0])
    assert sorted(one) == sorted(two) and [rel for rel in one if one[rel] != two[rel]] == []
    assert any(rel.endswith("megatron/train.idx") for rel in one) and any(rel.endswith("validation/documents.npy") for rel in one)


def test_verify_passes_and_the_table_prints_the_plan(runs):
    base, out = runs
    run_dir, stdout = out[1]
    assert "mixture plan for" in stdout and "--train-data-path" in stdout and f"{run_dir}/shards/web/megatron/train" in stdout
    done = stage2(["stage=verify", f"verify.dir={run_dir}"], base)
    assert "verify OK" in done.stdout
    report = doc_commands()[1]
    assert report[:2] == ["stage=report", "report.dir=outputs/2026-11-25/21-04-07.123456"]
    printed = stage2([report[0], f"report.dir={run_dir}", *report[2:], f"runs_index={base}/runs.jsonl"], base).stdout
    assert "mixture plan for 2,000,000,000 training tokens" in printed


def test_formats_hold_the_filtered_documents_in_order(runs):
    _, out = runs
    run_dir = out[1][0]
    for (name, split), docs in expected_documents(run_dir).items():
        comp = run_dir / "shards" / name
        stream = np.array([t for _, ids in docs for t in ids], dtype=np.int64)
        lengths = [len(ids) for _, ids in docs]
        for rel in (f"megatron/{split}.bin", f"datatrove/{split}/00000.ds", f"nanogpt/{'train' if split == 'train' else 'val'}.bin"):
            assert np.array_equal(np.fromfile(comp / rel, dtype="<u2"), stream), (name, rel)
        assert fmt.read_megatron_idx(comp / f"megatron/{split}.idx")[1].tolist() == lengths
        table = fmt.read_documents(fmt.split_dir(comp, split))
        assert [bytes(i).decode() for i in table["id"]] == [doc_id for doc_id, _ in docs]


def test_row_documents_rebuild_every_row_of_the_run(runs):
    _, out = runs
    run_dir = out[1][0]
    rows_checked = 0
    for (name, split), docs in expected_documents(run_dir).items():
        by_id = dict(docs)
        folder = fmt.split_dir(run_dir / "shards" / name, split)
        index = json.loads((folder / "index.json").read_text())
        rows = np.concatenate([np.load(folder / s["file"]) for s in index["shards"]]) if index["shards"] else np.empty((0, 0))
        for row in range(len(rows)):
            spans = row_documents(run_dir, name, row, split)
            assert [t for doc_id, a, b in spans for t in by_id[doc_id][a:b]] == rows[row].tolist(), (name, split, row)
            rows_checked += 1
    assert rows_checked == sum(MixtureSampler(run_dir).sizes) + sum(MixtureSampler(run_dir, split="validation").sizes)


def test_docs_numpy_block_runs(runs, capsys):
    _, out = runs
    run_dir = out[1][0]
    namespace: dict = {}
    exec(with_run(block("python", "row_documents(RUN"), run_dir), namespace)
    printed = capsys.readouterr().out
    first_id = row_documents(run_dir, "web", 0)[0][0]
    assert printed.startswith(f"{first_id} 0 ") and namespace["x"].shape == (4, namespace["val"].seq_len - 1)


def test_reader_imports_numpy_alone(tmp_path):
    """stage2.reader and what it imports load nothing outside the standard library but numpy (torch hidden)."""
    probe = (
        "import sys; sys.modules['torch'] = None; before = set(sys.modules)\n"
        "import stage2.reader\n"
        "third = {m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names) - {'stage2', 'numpy'}\n"
        "print(sorted(third))\n"
    )
    for python in [sys.executable] + ([TRAINERS] if Path(TRAINERS).exists() else []):
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "[]", (python, done.stdout)


# --- the trainers' own readers -------------------------------------------------------------------


def trainers_python() -> str:
    if not Path(TRAINERS).exists():
        pytest.skip(f"no trainers venv at {TRAINERS} (STAGE2_TRAINERS_PYTHON)")
    probe = subprocess.run([TRAINERS, "-c", "import torch, megatron.core.datasets.indexed_dataset, datatrove.utils.dataset"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{TRAINERS} cannot import torch, megatron-core and datatrove: {probe.stderr.strip().splitlines()[-1:]}")
    return TRAINERS


def test_trainers_read_every_format(runs, tmp_path):
    python = trainers_python()
    _, out = runs
    run_dir = out[1][0]
    for (name, split), docs in expected_documents(run_dir).items():
        np.save(tmp_path / f"{name}.{split}.lengths.npy", np.array([len(ids) for _, ids in docs], dtype=np.int64))
        np.save(tmp_path / f"{name}.{split}.stream.npy", np.array([t for _, ids in docs for t in ids], dtype=np.int64))
    done = subprocess.run([python, str(REPO / "tests" / "trainers_check.py"), str(run_dir), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["documents"] == sum(len(d) for d in expected_documents(run_dir).values())
    assert summary["datatrove_windows"] >= sum(MixtureSampler(run_dir).sizes)


@pytest.mark.parametrize("needle", ["IndexedDataset", "DatatroveFolderDataset", "np.memmap"])
def test_docs_trainer_blocks_run(runs, tmp_path, needle):
    python = trainers_python()
    _, out = runs
    run_dir = out[1][0]
    code = with_run(block("python", needle), run_dir)
    checks = {
        "IndexedDataset": "assert len(ds) > 0 and int(ds[0][-1]) == 2\n",
        "DatatroveFolderDataset": f"import numpy as np\nassert np.array_equal(item.numpy(), np.load({str(run_dir / 'shards/web/shard-00000.npy')!r})[0])\n",
        "np.memmap": "assert x.shape == (4, 64) and (y[:, :-1] == x[:, 1:]).all()\n",
    }
    script = tmp_path / "block.py"
    script.write_text(code + checks[needle])
    done = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
