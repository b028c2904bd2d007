"""The report stage and the sweep summary, on run/sweep folders written here to the run-folder contract."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stage2.stages import report
from stage2.config import Config, ReportConfig
from stage2.errors import Stage2Error
from stage2.main import CONF_DIR, resolve_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPONENTS = ("web", "encyclopedia", "code", "noisy")


# ---------------------------------------------------------------- fixture folders


def composed_config(overrides: List[str], launch_dir: Path) -> Dict[str, Any]:
    """The resolved config a real run with these overrides would save (config.resolved.yaml)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return resolve_config(cfg, str(launch_dir)).to_plain()


def filter_stats(min_chars: int) -> Dict[str, Any]:
    comps = {}
    for i, name in enumerate(COMPONENTS):
        records_in = 1000 + 100 * i
        kept = records_in - min_chars - 37 * i  # more dropped as the minimum grows
        comps[name] = {
            "records_in": records_in,
            "kept": kept,
            "dropped": {"too_short": min_chars, "lang": 37 * i},
            "bytes_kept": kept * 900,
        }
    return {"components": comps}


def tokenizer_stats(vocab_size: int) -> Dict[str, Any]:
    comps = {
        name: {"bytes_per_token": 2.0 + i * 0.5 + vocab_size / 10000, "chars_per_token": 1.9 + i * 0.5, "tokens_per_word": 1.3 + i * 0.1}
        for i, name in enumerate(COMPONENTS)
    }
    return {"components": comps, "overall": {"bytes_per_token": 3.1 + vocab_size / 10000, "chars_per_token": 3.0}, "vocab_size": vocab_size}


def shard_stats(vocab_size: int) -> Dict[str, Any]:
    return {"components": {name: {"tokens": 10000 * (i + 1) + vocab_size, "sequences": 20 * (i + 1)} for i, name in enumerate(COMPONENTS)}}


def make_run(folder: Path, overrides: List[str], stages: Dict[str, Any], launch_dir: Path, config: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".hydra").mkdir(exist_ok=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    stage = next((o.split("=", 1)[1] for o in overrides if o.startswith("stage=")), "pipeline")
    stats = {
        "stage": stage,
        "dataset": "sample",
        "config_digest": f"{abs(hash(tuple(overrides))) % 16**16:016x}",
        "status": "finished",
        "started": "2026-11-25T20:00:00",
        "seconds": 12.5,
        "workers": 2,
        "artifacts": [f"shards/shard-{i:05d}.bin" for i in range(3)],
        "stages": stages,
    }
    (folder / "stats.json").write_text(json.dumps(stats, indent=2))
    (folder / "provenance.json").write_text(json.dumps({"stage2_version": "0.1.0", "config_digest": stats["config_digest"]}))
    if config:
        cfg = composed_config(overrides, launch_dir)
        (folder / "config.resolved.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def make_sweep(root: Path, jobs: List[List[str]], stages_of) -> Path:
    sweep = root / "multirun" / "2026-11-25" / "20-00-00.000000"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN", "job": {"name": "stage2"}}}))
    for num, overrides in enumerate(jobs):
        make_run(sweep / str(num), overrides, stages_of(overrides), root)
    return sweep


def override_value(overrides: List[str], key: str) -> int:
    return int(next(o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")))


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report_cfg(launch_dir: Path, **report_keys: Any) -> Config:
    return Config(stage="report", launch_dir=str(launch_dir), runs_index="outputs/runs.jsonl", report=ReportConfig(**report_keys))


# ---------------------------------------------------------------- swept key


def test_swept_keys_are_the_overrides_that_differ_between_jobs():
    jobs = [
        ["stage=filter", "filter.min_chars=100", "dataset.max_records=50"],
        ["stage=filter", "filter.min_chars=200", "dataset.max_records=50", "+filter.extra=1"],
        ["stage=filter", "filter.min_chars=400", "dataset.max_records=50"],
    ]
    maps = [report.override_map(j) for j in jobs]
    assert report.swept_keys(maps) == ["filter.min_chars", "filter.extra"]
    assert report.swept_keys(maps[:1]) == []
    assert report.swept_keys([report.override_map(["a=1", "b=2"]), report.override_map(["b=3", "a=1"])]) == ["b"]


# ---------------------------------------------------------------- sweep summary


@pytest.mark.slow  # over half a second
def test_tokenizer_sweep_summary_table_and_plot(tmp_path, monkeypatch):
    vocabs = [1000, 2000, 4000]
    jobs = [["stage=pipeline", f"tokenizer.vocab_size={v}", "dataset.max_records=200"] for v in vocabs]
    stages_of = lambda o: {  # noqa: E731
        "filter": filter_stats(200),
        "tokenizer": tokenizer_stats(override_value(o, "tokenizer.vocab_size")),
        "shard": shard_stats(override_value(o, "tokenizer.vocab_size")),
    }
    sweep = make_sweep(tmp_path, jobs, stages_of)
    text = report.write_summary(sweep)

    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert [r["folder"] for r in rows] == ["0", "1", "2"]
    for row, overrides in zip(rows, jobs):
        assert row["overrides"] == " ".join(overrides)
        assert row["stage"] == "pipeline" and row["status"] == "finished"
        stages = stages_of(overrides)
        for name, comp in stages["tokenizer"]["components"].items():
            assert float(row[f"bytes_per_token.{name}"]) == pytest.approx(comp["bytes_per_token"])
            kept = stages["filter"]["components"][name]
            assert float(row[f"kept_share.{name}"]) == pytest.approx(kept["kept"] / kept["records_in"])
        assert float(row["bytes_per_token.overall"]) == pytest.approx(stages["tokenizer"]["overall"]["bytes_per_token"])
        assert int(row["vocab_size"]) == stages["tokenizer"]["vocab_size"]
        assert int(row["shard_tokens"]) == sum(c["tokens"] for c in stages["shard"]["components"].values())

    md = (sweep / "summary.md").read_text()
    assert md == text
    assert "swept: tokenizer.vocab_size" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(jobs)  # header + one row per job
    assert f"{tokenizer_stats(4000)['overall']['bytes_per_token']:.4f}" in table[3]

    assert report.plot_spec([dict(r) for r in rows], [report.override_map(j) for j in jobs])[:2] == ("bytes_per_token", "vocab size")
    png = (sweep / "summary.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    # Deterministic: regenerating gives the same bytes, also when the folder is named another way.
    report.write_summary(sweep)
    assert (sweep / "summary.png").read_bytes() == png
    md_bytes = (sweep / "summary.md").read_bytes()
    monkeypatch.chdir(sweep.parent)
    report.write_summary(Path(sweep.name))
    assert (sweep / "summary.md").read_bytes() == md_bytes and (sweep / "summary.png").read_bytes() == png


def test_null_metrics_of_an_empty_eval_slice_are_blank_cells_and_no_plot_points(tmp_path):
    """A component with no held-out documents has null metrics (tokenizer stage): never shown or plotted as 0."""
    vocabs = [1000, 2000, 4000]
    jobs = [["stage=tokenizer", f"tokenizer.vocab_size={v}"] for v in vocabs]

    def stages_of(overrides: List[str]) -> Dict[str, Any]:
        tok = tokenizer_stats(override_value(overrides, "tokenizer.vocab_size"))
        if override_value(overrides, "tokenizer.vocab_size") == 2000:
            tok["components"]["code"] = {"eval_docs": 0, "bytes_per_token": None, "chars_per_token": None, "tokens_per_word": None}
        return {"tokenizer": tok}

    sweep = make_sweep(tmp_path, jobs, stages_of)
    report.write_summary(sweep)
    rows = read_csv(sweep / "summary.csv")
    assert rows[1]["bytes_per_token.code"] == "" and float(rows[0]["bytes_per_token.code"]) > 0
    header, *lines = [line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| ")]
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    column = cells(header).index("bytes_per_token.code")
    assert cells(lines[1])[column] == "" and cells(lines[0])[column] != ""
    assert (sweep / "summary.png").read_bytes().startswith(PNG_MAGIC)

    summary_rows, _, overrides = report.summary_rows(sweep)
    metric, _, xs = report.plot_spec(summary_rows, overrides)
    _, series = report.plot_series(metric, summary_rows, xs)
    assert [x for x, _ in series[("bytes_per_token.code", "")]] == [1000.0, 4000.0]  # the null job is skipped
    assert len(series[("bytes_per_token.web", "")]) == len(series[("bytes_per_token.overall", "")]) == 3
    assert all(y > 0 for points in series.values() for _, y in points)
    # One run's report shows the null as a blank cell, not 0.
    text = report.run_report(sweep / "1")
    code_row = next(line for line in text.splitlines() if line.startswith("| code |"))
    assert "0.0000" not in code_row and "| 0 |" in code_row  # eval_docs 0 is a count; the rates are blank


def test_a_failed_runs_report_says_what_stopped_it(tmp_path):
    run = make_run(tmp_path / "outputs" / "f", ["stage=filter"], {}, tmp_path)
    stats = json.loads((run / "stats.json").read_text())
    stats.update(status="failed", error="docs.jsonl: record 4: text column 'text' is null")
    (run / "stats.json").write_text(json.dumps(stats))
    text = report.run_report(run)
    assert "- status: failed" in text and "- error: docs.jsonl: record 4: text column 'text' is null" in text


def test_filter_sweep_plots_kept_share_against_the_swept_value(tmp_path):
    mins = [100, 300, 500]
    jobs = [["stage=filter", f"filter.min_chars={m}"] for m in mins]
    sweep = make_sweep(tmp_path, jobs, lambda o: {"filter": filter_stats(override_value(o, "filter.min_chars"))})
    report.write_summary(sweep)

    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == len(mins)
    assert "bytes_per_token.overall" not in rows[0] and "vocab_size" not in rows[0]
    for row, m in zip(rows, mins):
        for name, comp in filter_stats(m)["components"].items():
            assert float(row[f"kept_share.{name}"]) == pytest.approx(comp["kept"] / comp["records_in"])
    metric, key, xs = report.plot_spec(rows, [report.override_map(j) for j in jobs])
    assert (metric, key, xs) == ("kept_share", "filter.min_chars", [str(m) for m in mins])
    png = (sweep / "summary.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_two_key_sweep_draws_a_line_per_value_of_the_other_key(tmp_path):
    mins, thresholds = [100, 300], ["0.5", "0.9"]
    jobs = [["stage=filter", f"filter.min_chars={m}", f"filter.lang_threshold={t}"] for m in mins for t in thresholds]

    def stages_of(overrides: List[str]) -> Dict[str, Any]:
        stats = filter_stats(override_value(overrides, "filter.min_chars"))
        strict = "filter.lang_threshold=0.9" in overrides
        stats.update({"lang_backend": "langdetect_fast", "lang_check": "fasttext", "function_words": 0.03})
        for comp in stats["components"].values():
            # (stats.json leaves out checks that dropped nothing: the summary shows them as 0)
            comp["language_dropped_by"] = {"langdetect_fast": 40} if strict else {"function_words": 5, "langdetect_fast": 10}
        return {"filter": stats}

    sweep = make_sweep(tmp_path, jobs, stages_of)
    report.write_summary(sweep)
    rows, _, overrides = report.summary_rows(sweep)
    n = len(COMPONENTS)
    # The summary carries the language drops per check over the mixture, 0 where a check dropped nothing.
    assert [r["dropped_by_langdetect_fast.overall"] for r in rows] == [10 * n, 40 * n] * 2
    assert [r["dropped_by_function_words.overall"] for r in rows] == [5 * n, 0] * 2
    assert [r["dropped_by_fasttext.overall"] for r in rows] == [0] * 4
    metric, key, xs = report.plot_spec(rows, overrides)
    assert key == "filter.min_chars"
    others, groups = report.other_swept(overrides, xs)
    assert others == ["filter.lang_threshold"]
    _, series = report.plot_series(metric, rows, xs, groups)
    # Two lines per component (one per threshold), each over both minimums; not one zigzag of four points.
    name = COMPONENTS[0]
    assert sorted(g for c, g in series if c == f"kept_share.{name}") == ["filter.lang_threshold=0.5", "filter.lang_threshold=0.9"]
    assert all([x for x, _ in points] == [100.0, 300.0] for points in series.values())
    assert (sweep / "summary.png").read_bytes().startswith(PNG_MAGIC)


def test_vocab_sweep_is_one_line_per_component(tmp_path):
    """x is the vocabulary size from the stats, swept by its own key: that key is the axis, not a group."""
    vocabs = [1000, 2000, 4000]
    jobs = [["stage=tokenizer", f"tokenizer.vocab_size={v}"] for v in vocabs]
    sweep = make_sweep(tmp_path, jobs, lambda o: {"tokenizer": tokenizer_stats(override_value(o, "tokenizer.vocab_size"))})
    report.write_summary(sweep)
    rows, _, overrides = report.summary_rows(sweep)
    metric, _, xs = report.plot_spec(rows, overrides)
    others, groups = report.other_swept(overrides, xs)
    assert others == [] and set(groups) == {""}
    _, series = report.plot_series(metric, rows, xs, groups)
    assert {c for c, _ in series} == {f"bytes_per_token.{name}" for name in COMPONENTS} | {"bytes_per_token.overall"}
    assert all(len(points) == 3 for points in series.values())


def test_categorical_sweep_value_still_plots(tmp_path):
    backends = ["langdetect", "fasttext"]
    jobs = [["stage=filter", f"filter.lang_backend={b}", "filter.min_chars=100"] for b in backends]
    sweep = make_sweep(tmp_path, jobs, lambda o: {"filter": filter_stats(100 + 50 * ("fasttext" in o[1]))})
    text = report.write_summary(sweep)
    assert "swept: filter.lang_backend" in text and "no plot" not in text
    assert report.plot_spec(read_csv(sweep / "summary.csv"), [report.override_map(j) for j in jobs])[2] == backends
    assert (sweep / "summary.png").read_bytes().startswith(PNG_MAGIC)


def test_nothing_swept_means_no_plot_and_no_stale_one(tmp_path):
    sweep = make_sweep(tmp_path, [["stage=filter"], ["stage=filter"]], lambda o: {"filter": filter_stats(100)})
    (sweep / "summary.png").write_bytes(PNG_MAGIC + b"stale")
    text = report.write_summary(sweep)
    assert "swept: nothing" in text and "no plot" in text
    assert not (sweep / "summary.png").exists()
    assert len(read_csv(sweep / "summary.csv")) == 2


def test_callback_survives_broken_job_folders(tmp_path, caplog):
    jobs = [["stage=filter", f"filter.min_chars={m}"] for m in (100, 200, 300)]
    sweep = make_sweep(tmp_path, jobs, lambda o: {"filter": filter_stats(override_value(o, "filter.min_chars"))})
    (sweep / "1" / "stats.json").write_text("{not json")
    (sweep / "2" / "stats.json").unlink()
    stopped = json.loads((sweep / "0" / "stats.json").read_text())
    (sweep / "4" / ".hydra").mkdir(parents=True)
    (sweep / "4" / "stats.json").write_text(json.dumps({**stopped, "status": "running"}))  # a job that died mid-way
    (sweep / "3" / ".hydra").mkdir(parents=True)
    (sweep / "3" / ".hydra" / "overrides.yaml").write_text("[unclosed")

    report.SweepSummaryCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    rows = read_csv(sweep / "summary.csv")
    assert rows[0]["status"] == "finished"
    assert all(r["status"].startswith("unreadable") for r in rows[1:4])
    assert rows[4]["status"] == "running" and rows[4]["kept_share.web"] == rows[0]["kept_share.web"]
    assert "not valid JSON" in rows[1]["status"] and "not found" in rows[2]["status"]

    # A sweep folder that cannot be summarised at all only logs a warning.
    with caplog.at_level(logging.WARNING, logger="stage2.stages.report"):
        report.SweepSummaryCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nope")}}}))
        report.SweepSummaryCallback().on_multirun_end(OmegaConf.create({}))
    assert sum("could not write the sweep summary" in r.message for r in caplog.records) == 2


def test_report_dir_on_a_sweep_regenerates_the_summary(tmp_path, capsys):
    jobs = [["stage=filter", f"filter.min_chars={m}"] for m in (100, 200)]
    sweep = make_sweep(tmp_path, jobs, lambda o: {"filter": filter_stats(override_value(o, "filter.min_chars"))})
    out_dir = tmp_path / "outputs" / "report-run"
    text = report.run(report_cfg(tmp_path, dir=os.path.relpath(sweep, tmp_path)), out_dir)
    for name in report.SUMMARY_FILES:
        assert (sweep / name).stat().st_size > 0
    assert (out_dir / "report.md").read_text() == text == capsys.readouterr().out
    assert "filter.min_chars=200" in text


# ---------------------------------------------------------------- one run, index, compare


def test_report_dir_on_a_run_prints_its_stats(tmp_path):
    make_run(tmp_path / "outputs" / "r1", ["stage=pipeline"], {"filter": filter_stats(200), "tokenizer": tokenizer_stats(8000)}, tmp_path)
    text = report.run(report_cfg(tmp_path, dir="outputs/r1"), tmp_path / "rep")
    assert "## filter" in text and "## tokenizer" in text
    web = next(line for line in text.splitlines() if line.startswith("| web |") and "dropped.too_short" not in line and "1000" in line)
    assert "| 200 |" in web  # the dropped.too_short count of the fixture
    assert "- vocab_size: 8000" in text
    assert any(line.startswith("| (overall) |") for line in text.splitlines())


def write_index(path: Path, entries: List[Dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_runs_index_listing_and_filtering(tmp_path):
    entries = [
        {"folder": str(tmp_path / "outputs" / f"run{i}"), "time": f"2026-11-25T20:0{i}:00", "stage": stage, "dataset": ds,
         "config_digest": f"d{i}", "inputs_digest": "x", "git_commit": "c", "seconds": 1.5 + i, "kept": 100 * i}
        for i, (stage, ds) in enumerate([("filter", "sample"), ("tokenizer", "sample"), ("filter", "refinedweb_mix")])
    ]
    write_index(tmp_path / "outputs" / "runs.jsonl", entries)

    def listed(text: str) -> List[str]:
        return [line.split(" | ")[5] for line in text.splitlines()[5:] if line.startswith("| ")]

    everything = report.run(report_cfg(tmp_path), tmp_path / "rep")
    assert listed(everything) == ["outputs/run0", "outputs/run1", "outputs/run2"]
    assert "3 runs" in everything and "| kept |" in everything
    assert listed(report.run(report_cfg(tmp_path, stage="filter"), tmp_path / "rep")) == ["outputs/run0", "outputs/run2"]
    assert listed(report.run(report_cfg(tmp_path, stage="filter", dataset="sample"), tmp_path / "rep")) == ["outputs/run0"]
    assert "0 runs" in report.run(report_cfg(tmp_path, stage="shard"), tmp_path / "rep")


def test_clear_errors(tmp_path):
    with pytest.raises(Stage2Error, match="runs index not found"):
        report.run(report_cfg(tmp_path), tmp_path / "rep")
    write_index(tmp_path / "outputs" / "runs.jsonl", [{"folder": "a"}])
    with open(tmp_path / "outputs" / "runs.jsonl", "a") as f:
        f.write("{broken\n")
    with pytest.raises(Stage2Error, match="line 2 is not valid JSON"):
        report.run(report_cfg(tmp_path), tmp_path / "rep")
    (tmp_path / "plain").mkdir()
    with pytest.raises(Stage2Error, match="neither a run folder"):
        report.run(report_cfg(tmp_path, dir="plain"), tmp_path / "rep")
    with pytest.raises(Stage2Error, match="does not exist"):
        report.run(report_cfg(tmp_path, dir="missing"), tmp_path / "rep")
    with pytest.raises(Stage2Error, match="takes two run folders"):
        report.run(report_cfg(tmp_path, compare=["plain"]), tmp_path / "rep")
    with pytest.raises(Stage2Error, match="not a run folder"):
        report.run(report_cfg(tmp_path, compare=["plain", "plain"]), tmp_path / "rep")


def table_keys(text: str, section: str) -> List[str]:
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [line.split(" | ")[0][2:] for line in body.splitlines()[4:] if line.startswith("| ")]


@pytest.mark.slow  # over half a second
def test_compare_shows_exactly_the_changed_keys(tmp_path):
    a_over = ["stage=filter", "filter.min_chars=100"]
    b_over = ["stage=filter", "filter.min_chars=300", "filter.dedup.near=false", "tokenizer.vocab_size=4000"]
    a = make_run(tmp_path / "outputs" / "a", a_over, {"filter": filter_stats(100)}, tmp_path, config=True)
    b = make_run(tmp_path / "outputs" / "b", b_over, {"filter": filter_stats(300)}, tmp_path, config=True)
    # What two runs of one recipe differ in anyway (time), and their artifacts' hashes: apart from the results.
    hashes = {f"shards/shard-{i:05d}.bin": f"{i:064x}" for i in range(3)}
    for folder, seconds, changed_hash in ((a, 12.5, {}), (b, 99.0, {"shards/shard-00001.bin": "f" * 64})):
        stats = json.loads((folder / "stats.json").read_text())
        stats.update(seconds=seconds, artifact_sha256={**hashes, **changed_hash})
        (folder / "stats.json").write_text(json.dumps(stats))
    text = report.run(report_cfg(tmp_path, compare=["outputs/a", str(b)]), tmp_path / "rep")
    assert table_keys(text, "Timings and resources") == ["seconds"]
    assert "- artifacts: 1 of 3 artifacts differ (or are in one run only): shards/shard-00001.bin" in text

    assert sorted(table_keys(text, "Config")) == ["filter.dedup.near", "filter.min_chars", "tokenizer.vocab_size"]
    assert "| filter.min_chars | 100 | 300 |" in text
    changed = [k for k, v in report.flatten(json.loads((a / "stats.json").read_text())).items()
               if v != report.flatten(json.loads((b / "stats.json").read_text()))[k] and k != "seconds" and not k.startswith("artifact_sha256")]
    assert sorted(table_keys(text, "Stats")) == sorted(changed)
    assert "stages.filter.components.web.dropped.too_short" in changed  # the fixtures really differ in stats
    # A run compared with itself has no differences.
    same = report.run(report_cfg(tmp_path, compare=["outputs/a", "outputs/a"]), tmp_path / "rep")
    assert "## Config (0 keys differ)" in same and "## Stats (0 keys differ)" in same and "all 3 artifacts have the same sha256" in same


# ---------------------------------------------------------------- through the CLI


