"""Eval sets named as hub datasets (`hub:<path>[:<subset>[:<split>]][@<revision>]` in filter.decontaminate.paths),
resolved by the hub components' code (stage2/io/sources.py): here through local dataset folders and a local HF cache,
as the hub components' tests do, without network (the CLI: tests/cli/test_hub_eval_cli.py)."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, compose_plain, write_jsonl
from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.io.sources import hub_entry, hub_file_local, step_input_files
from stage2.stages.filter import RunInputs
from stage2.steps.decontaminate import Decontaminate, DecontaminateSettings, set_name

DATA = REPO / "tests" / "data"
KEY = "filter.decontaminate.paths"


def qa_items() -> List[Dict[str, Any]]:
    """Real question/answer pairs: stackexchange posts cut at their first blank line."""
    with gzip.open(DATA / "hygiene_stackexchange.jsonl.gz", "rt", encoding="utf-8") as f:
        posts = [json.loads(line) for line in f][:40]
    return [dict(zip(("id", "question", "answer"), (r["id"], *r["text"].partition("\n\n")[::2]))) for r in posts]


def hub_folder(root: Path, splits: Dict[str, List[Dict[str, Any]]], shards: int = 2) -> Path:
    """A dataset folder as the hub lays one out (`data/<split>-0000i-of-0000n.parquet`)."""
    for split, rows in splits.items():
        step = -(-len(rows) // shards)
        for i in range(shards):
            (root / "data").mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows[i * step : (i + 1) * step]), root / "data" / f"{split}-{i:05d}-of-{shards:05d}.parquet")
    return root


def decontaminator(tmp_path: Path, paths: List[str], **settings: Any) -> Decontaminate:
    plain = asdict(DecontaminateSettings(paths=paths, **settings))
    return Decontaminate.from_plain(Decontaminate.prepare(plain, tmp_path / "work", RunInputs(str(tmp_path))))


def doc(text: str, i: int) -> Document:
    return Document(id=f"d{i}", text=text, component="c", source="s", record=i)


def test_hub_entries_take_what_load_dataset_takes():
    spec = hub_entry("hub:cais/mmlu:all:test+validation@c30699e", KEY)
    assert (spec.hub_path, spec.subset, spec.split, spec.revision, spec.name) == ("cais/mmlu", "all", "test+validation", "c30699e", "mmlu/all")
    spec = hub_entry("hub:openai/openai_humaneval", KEY)
    assert (spec.hub_path, spec.subset, spec.split, spec.revision, spec.name) == ("openai/openai_humaneval", None, "test", None, "openai_humaneval")
    spec = hub_entry("hub:/data/evals/arc/::validation", KEY)
    assert (spec.hub_path, spec.subset, spec.split, spec.name) == ("/data/evals/arc/", None, "validation", "arc")
    assert set_name("hub:cais/mmlu:abstract_algebra") == "mmlu/abstract_algebra"
    for bad in ("hub:", "hub:a:b:c:d", "hub:a@", "hub:a::test+", "hub::all"):
        with pytest.raises(Stage2Error, match=rf"^filter.decontaminate.paths: '{re.escape(bad)}' is no hub dataset entry: write hub:<path>"):
            hub_entry(bad, KEY)


@pytest.mark.slow  # over half a second (datasets resolves three splits)
def test_a_hub_eval_set_is_its_splits_files_and_its_planted_contamination_is_found(tmp_path):
    items = qa_items()
    folder = hub_folder(tmp_path / "qa_hub", {"test": items[:30], "validation": items[30:]})
    train = [f"Filler document {i} about nothing in particular, long enough to hold a few words." for i in range(20)]
    for at, item in ((3, items[7]), (11, items[35])):  # one test item, one validation item, re-cased
        train[at] += " " + " ".join((item["question"] + " " + item["answer"]).split()[:20]).upper()
    docs = [doc(t, i) for i, t in enumerate(train)]
    columns = ["question", "answer"]

    test_only = decontaminator(tmp_path, [f"hub:{folder}"], columns=columns)
    (entry,) = Decontaminate.describe({"index": test_only.index})["sets"]
    assert entry["name"] == "qa_hub" and entry["hub"] == f"hub:{folder}" and entry["items"] == 30
    assert entry["files"] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    verdicts = test_only.judge(docs)
    assert [i for i, v in enumerate(verdicts) if v is not None] == [3]
    assert verdicts[3].values == {**verdicts[3].values, "eval_set": "qa_hub", "eval_item": items[7]["id"]}
    assert dict(test_only.tally) == {"matched:qa_hub": 1}

    both = decontaminator(tmp_path, [f"hub:{folder}::test+validation"], columns=columns)
    assert Decontaminate.describe({"index": both.index})["sets"][0]["items"] == 40
    assert [i for i, v in enumerate(both.judge(docs)) if v is not None] == [3, 11]
    # the same index as the split's files given as files
    files = decontaminator(tmp_path, [f"{folder}/data/test-*.parquet"], columns=columns)
    assert np.array_equal(np.load(Path(files.index) / "hashes.npy"), np.load(Path(test_only.index) / "hashes.npy"))


def test_a_hub_eval_sets_files_are_inputs_scanned_at_start_up(tmp_path):
    folder = hub_folder(tmp_path / "evals" / "qa", {"test": qa_items()})
    (tmp_path / "x.txt").write_text("an item\n")
    files = step_input_files([(KEY, "hub:evals/qa"), (KEY, str(tmp_path / "x.txt"))], str(tmp_path))  # (a relative folder: from the launch dir)
    assert files == [str(folder / "data" / "test-00000-of-00002.parquet"), str(folder / "data" / "test-00001-of-00002.parquet"), str(tmp_path / "x.txt")]


def test_an_eval_set_the_hub_cannot_give_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    # The real hub code path, offline: HF_HUB_OFFLINE makes huggingface_hub fail at once instead of retrying.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(Stage2Error) as info:
        step_input_files([(KEY, "hub:someone/evals:all")], str(tmp_path))
    message = str(info.value)
    assert message.startswith("filter.decontaminate.paths: eval set evals/all (hub:someone/evals:all): cannot open hub dataset 'someone/evals' (all): ")
    assert "use local files" in message and "\n" not in message
    hub_folder(tmp_path / "qa", {"test": qa_items()})
    with pytest.raises(Stage2Error, match=rf"^filter.decontaminate.paths: eval set qa \(hub:qa::validation\): hub dataset '{tmp_path}/qa' has no data files for split 'validation'$"):
        step_input_files([(KEY, "hub:qa::validation")], str(tmp_path))


def test_a_remote_data_file_is_read_from_the_hf_cache_at_the_commit_it_resolved_to(tmp_path, monkeypatch):
    """huggingface_hub's own download, offline, from a cache laid out as it lays one out."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = write_jsonl(tmp_path / "cache" / "datasets--someone--evals" / "snapshots" / commit / "all" / "test.jsonl", qa_items()[:3])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    spec = hub_entry("hub:someone/evals:all", KEY)
    assert hub_file_local(spec, f"hf://datasets/someone/evals@{commit}/all/test.jsonl") == str(cached)
    assert hub_file_local(spec, str(cached)) == str(cached)  # a local folder's file is itself
    with pytest.raises(Stage2Error, match=r"^filter.decontaminate.paths: eval set evals/all \(hub:someone/evals:all\): cannot open hub dataset 'someone/evals' \(all\): LocalEntryNotFoundError"):
        hub_file_local(spec, f"hf://datasets/someone/evals@{commit}/all/validation.jsonl")


@pytest.mark.slow  # over half a second (composes the recipe)
def test_hub_entries_are_kept_as_written_and_checked_at_start_up(tmp_path):
    cfg = compose_plain(["filter.decontaminate.paths=[hub:cais/mmlu:all,evals/qa.jsonl]"], tmp_path)  # (checked as it is composed)
    assert cfg.filter.decontaminate.paths == ["hub:cais/mmlu:all", str(tmp_path / "evals" / "qa.jsonl")]
    assert cfg.filter.input_patterns() == [(KEY, "hub:cais/mmlu:all"), (KEY, str(tmp_path / "evals" / "qa.jsonl"))]
    with pytest.raises(Stage2Error, match=r"^filter.decontaminate.paths: 'hub:cais/mmlu:all:test:x' is no hub dataset entry"):
        compose_plain(["filter.decontaminate.paths=[hub:cais/mmlu:all:test:x]"], tmp_path).check()
    with pytest.raises(Stage2Error, match=r"two eval sets are named 'mmlu/all'.*test\+validation"):
        compose_plain(["filter.decontaminate.paths=[hub:cais/mmlu:all:test,hub:cais/mmlu:all:validation]"], tmp_path).check()
    # a blocklist is no hub dataset: its `hub:` entry is a file name
    write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "a", "url": "https://example.com/"}])
    cfg = compose_plain(["dataset=files", f"dataset.paths=[{tmp_path}/a.jsonl]", "dataset.url_column=url", "filter.url.blocklist=[hub:x]"], tmp_path)
    assert cfg.filter.url.blocklist == [str(tmp_path / "hub:x")]
