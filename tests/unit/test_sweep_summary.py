"""A sweep's summary shows where documents went and what a tokenizer figure rests on: every drop reason
over the mixture (near_duplicate included), what each tokenizer trained on, and its held-out counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import yaml

from stage2.stages import report


def job(folder: Path, overrides: List[str], stage: str, stages: Dict[str, Any], input_run: str | None = None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "stats.json").write_text(json.dumps({"stage": stage, "status": "finished", "stages": stages}))
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump({"tokenizer": {"input_run": input_run}}))


def sweep_folder(root: Path) -> Path:
    sweep = root / "multirun" / "2026-11-25" / "20-00-00.000000"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    return sweep


def test_a_dedup_sweep_lists_every_drop_reason_over_the_mixture(tmp_path):
    sweep = sweep_folder(tmp_path)
    for n, threshold in enumerate((0.3, 0.9)):
        near = 50 if threshold < 0.5 else 5
        comps = {
            "web": {"records_in": 100, "kept": 100 - 10 - near, "dropped": {"too_short": 10, "duplicate": 0, "near_duplicate": near}},
            "code": {"records_in": 40, "kept": 38, "dropped": {"too_short": 0, "duplicate": 1, "near_duplicate": 1}, "lang_filter": False},
        }
        job(sweep / str(n), ["stage=filter", f"filter.dedup.threshold={threshold}"], "filter", {"filter": {"components": comps}})
    rows, columns, _ = report.summary_rows(sweep)
    assert [r["dropped_near_duplicate.overall"] for r in rows] == [51, 6]
    assert [r["dropped_duplicate.overall"] for r in rows] == [1, 1]  # a reason that did not move is still listed
    assert [r["dropped_too_short.overall"] for r in rows] == [10, 10]
    assert "dropped_near_duplicate.overall" in report.write_summary(sweep)


def test_a_tokenizer_sweep_says_what_it_trained_on_and_on_how_many_held_out_documents(tmp_path):
    sweep = sweep_folder(tmp_path)
    for n, vocab in enumerate((500, 800)):
        comps = {"web": {"bytes_per_token": 3.0 + vocab / 1000, "eval_docs": 7}, "code": {"bytes_per_token": 2.5 + vocab / 1000, "eval_docs": 3}}
        stages = {"tokenizer": {"components": comps, "vocab_size": vocab, "overall": {"bytes_per_token": 2.9}}}
        job(sweep / str(n), ["stage=tokenizer", f"tokenizer.vocab_size={vocab}"], "tokenizer", stages, input_run=str(tmp_path / "outputs" / "2026-11-24" / "10-00-00.000000") if n else None)
    rows, _, _ = report.summary_rows(sweep)
    assert [r["trained_on"] for r in rows] == ["raw sources (unfiltered)", "filtered parts of 2026-11-24/10-00-00.000000"]
    assert [r["eval_docs.web"] for r in rows] == [7, 7] and [r["eval_docs.code"] for r in rows] == [3, 3]
    assert report.heldout_note(rows, "web") == " (n=7)" and report.heldout_note(rows, "overall") == " (n=10)"
    report.write_summary(sweep)
    assert (sweep / "summary.png").stat().st_size > 1000


def test_a_pipeline_job_trained_on_its_own_parts(tmp_path):
    sweep = sweep_folder(tmp_path)
    job(sweep / "0", ["tokenizer.vocab_size=500"], "pipeline", {"tokenizer": {"components": {}, "vocab_size": 500}})
    assert report.summary_rows(sweep)[0][0]["trained_on"] == "this run's filtered parts"
