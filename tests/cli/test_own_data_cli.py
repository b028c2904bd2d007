"""Own data from the command line, as the docs show it: `--help` for humans, a manifest component's keys and a
dataset=files path's settings set on the command line, a shipped manifest copied into --config-dir, and a
text file read by line that empties its component naming the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO, SMALL_SAMPLE, cli, filter_run, one_line_error

pytestmark = pytest.mark.slow


def test_help_lists_groups_and_common_keys_without_the_config_dump(tmp_path):
    out = cli(tmp_path, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "dataset: files, refinedweb_mix, sample" in text and "== The keys most often changed ==" in text
    assert "docs/configuration.md" in text and "data_files" not in text and len(text.splitlines()) < 70
    job = cli(tmp_path, "--cfg", "job", "dataset.components.code.lang_filter=false")
    assert job.returncode == 0 and "data_files" in job.stdout and "lang_filter: false" in job.stdout


def test_a_path_of_dataset_files_takes_its_settings_on_the_command_line(tmp_path):
    shutil.copy(REPO / "examples" / "my_mixture" / "data" / "code.jsonl.gz", tmp_path / "code.jsonl.gz")
    out = filter_run(tmp_path, "dataset.paths=[code.jsonl.gz]", "dataset.text_column=content", "dataset.id_column=path",
                     "dataset.components.code.lang_filter=false", "dataset.components.code.max_chars=0", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr[-2000:]
    comp = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["code"]
    assert comp["lang_filter"] is False and "language" not in comp["dropped"] and comp["dropped"]["too_long"] == 0 and comp["kept"] > 0


def test_a_text_file_read_by_line_that_empties_its_component_names_sample_by(tmp_path):
    shutil.copy(REPO / "examples" / "my_mixture" / "data" / "glossary.txt", tmp_path / "glossary.txt")
    out = cli(tmp_path, "dataset=files", "dataset.paths=[glossary.txt]", "executor.workers=1", "tokenizer.vocab_size=500")
    one_line_error(out, "component glossary: no document left after filtering", "dataset.components.glossary.sample_by=paragraph")
    fixed = cli(tmp_path, "stage=filter", "dataset=files", "dataset.paths=[glossary.txt]", "dataset.components.glossary.sample_by=paragraph",
                "executor.workers=1", "hydra.run.dir=run")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    comp = json.loads((tmp_path / "run" / "stats.json").read_text())["stages"]["filter"]["components"]["glossary"]
    assert comp["records_in"] == 200 and comp["kept"] > 100  # one document per entry
    # A rerun reads the saved config, whose path entry start-up completes again.
    again = cli(tmp_path, str(tmp_path / "run"), "hydra.run.dir=again", command="stage2-rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "stats.json").read_text())["stages"]["filter"]["components"]["glossary"]["kept"] == comp["kept"]


def test_the_shipped_sample_copied_into_a_config_dir_runs_like_the_original(tmp_path):
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "dataset" / "sample.yaml", tmp_path / "conf" / "dataset" / "mine.yaml")
    small = [o for o in SMALL_SAMPLE if not o.startswith(("tokenizer.", "shard."))]
    runs = {}
    for name, extra in (("copy", ["--config-dir", str(tmp_path / "conf"), "dataset=mine"]), ("shipped", [])):
        out = cli(tmp_path, *extra, "stage=filter", *small, "executor.workers=1", f"hydra.run.dir={name}")
        assert out.returncode == 0, out.stderr[-2000:]
        runs[name] = json.loads((tmp_path / name / "stats.json").read_text())["stages"]["filter"]["components"]
    assert {c: v["kept"] for c, v in runs["copy"].items()} == {c: v["kept"] for c, v in runs["shipped"].items()}
