"""An eval set named as a hub dataset (`hub:<path>...` in filter.decontaminate.paths) through the real `stage2`
command: read from a local dataset folder laid out as the hub lays one out (as `hub_path` components are
tested, without network), its planted contamination found and counted under its name, its files inputs of
the run (a changed one refused on resume and rerun), an unreachable one a one-line error (docs/hygiene.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import artifact_hashes, cli, data_records, filter_run, one_line_error, stats, write_jsonl

pytestmark = pytest.mark.slow


def corpus(tmp_path: Path) -> List[str]:
    """foldoc documents with two planted eval items (one re-cased), an eval set of real question/answer pairs
    as a hub dataset folder (`evals/qa/data/test-*.parquet`) and a local eval file; the overrides."""
    items = []
    for r in data_records("hygiene_stackexchange.jsonl.gz")[:40]:
        question, _, answer = r["text"].partition("\n\n")
        items.append({"id": r["id"], "question": question, "answer": answer})
    folder = tmp_path / "evals" / "qa" / "data"
    folder.mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(items[i * 20 : (i + 1) * 20]), folder / f"test-{i:05d}-of-00002.parquet")
    write_jsonl(tmp_path / "evals" / "local.jsonl", [{"id": "l1", "question": "What is a monad in functional programming languages such as",
                                                      "answer": "Haskell, a way to sequence computations that carry context"}])
    train = data_records("hygiene_foldoc.jsonl.gz")
    for at, item, change in ((20, items[3], str), (60, items[29], str.upper)):
        train[at]["text"] += "\n\n" + change(" ".join((item["question"] + " " + item["answer"]).split()[:25]))
    write_jsonl(tmp_path / "foldoc.jsonl", train)
    return ["dataset.paths=[foldoc.jsonl]", "filter.decontaminate.paths=[hub:evals/qa,evals/local.jsonl]",
            "filter.decontaminate.columns=[question,answer]", "filter.keep_rejected=3"]


def test_a_hub_eval_sets_planted_contamination_is_found_and_counted_under_its_name(tmp_path):
    overrides = corpus(tmp_path)
    for workers in (1, 2):
        out = filter_run(tmp_path, *overrides, f"hydra.run.dir=w{workers}", f"executor.workers={workers}")
        assert out.returncode == 0, out.stderr[-2000:]
    assert artifact_hashes(tmp_path / "w1") == artifact_hashes(tmp_path / "w2")
    s = stats(tmp_path / "w1")["stages"]["filter"]
    assert s["components"]["foldoc"]["dropped"]["decontaminate"] == 2
    qa = s["decontamination"]["eval_sets"]["qa"]
    assert qa["matched_documents"] == {"foldoc": 2} and qa["items"] == 40 and qa["hub"] == "hub:evals/qa"
    assert qa["files"] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    assert s["decontamination"]["eval_sets"]["local"]["matched_documents"] == {"foldoc": 0}
    rejected = pq.read_table(tmp_path / "w1" / s["components"]["foldoc"]["rejected_file"]).to_pylist()
    assert sorted(r["eval_set"] for r in rejected if r["reason"] == "decontaminate") == ["qa", "qa"]
    inputs = json.loads((tmp_path / "w1" / "provenance.json").read_text())["inputs"]
    assert {str(tmp_path / "evals" / "qa" / "data" / f"test-{i:05d}-of-00002.parquet") for i in range(2)} <= set(inputs)


def test_a_changed_hub_eval_set_is_refused_on_resume_and_on_rerun_naming_its_file(tmp_path):
    overrides = corpus(tmp_path)
    out = filter_run(tmp_path, *overrides, "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr[-2000:]
    shard = tmp_path / "evals" / "qa" / "data" / "test-00001-of-00002.parquet"
    rows = pq.read_table(shard).to_pylist()
    pq.write_table(pa.Table.from_pylist(rows + [{"id": "new", "question": "another question", "answer": "another answer"}]), shard)
    changed = f"{shard} (content changed)"
    one_line_error(filter_run(tmp_path, *overrides, "hydra.run.dir=run", "resume=true"), "inputs differ", changed)
    one_line_error(cli(tmp_path, str(tmp_path / "run"), command="stage2-rerun"), "inputs differ", changed)


def test_an_unreachable_hub_eval_set_is_a_one_line_error_naming_it_before_any_work(tmp_path):
    corpus(tmp_path)
    out = filter_run(tmp_path, "dataset.paths=[foldoc.jsonl]", "filter.decontaminate.paths=[hub:someone/no-such-eval-set:all]", "hydra.run.dir=run")
    one_line_error(out, "filter.decontaminate.paths: eval set no-such-eval-set/all (hub:someone/no-such-eval-set:all): cannot open hub dataset",
                   "use local files")
    assert not (tmp_path / "run").exists()
