"""The hygiene steps through the real `stage2` command: stats, rejected samples, parts, worker counts,
changed eval sets, start-up errors and a sweep (docs/hygiene.md)."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shlex
from pathlib import Path
from typing import List

import pyarrow.parquet as pq
import pytest

from helpers import (
    REPO, artifact_hashes, assert_killed_mid_stage, data_records, assert_resumed_like, cli, done_tasks, filter_run, kill_when, one_line_error, resume,
    stage2, stats, write_jsonl,
)

pytestmark = pytest.mark.slow


def corpus(tmp_path: Path) -> List[str]:
    """Real documents with planted eval text (verbatim, re-cased, punctuation changed), an eval set of
    real question/answer pairs, a blocklist; returns the overrides that switch every step on."""
    items = []
    for r in data_records("hygiene_stackexchange.jsonl.gz")[:40]:
        question, _, answer = r["text"].partition("\n\n")
        items.append({"id": r["id"], "question": question, "answer": answer})
    write_jsonl(tmp_path / "evals" / "qa.jsonl.gz", items)
    train = data_records("hygiene_foldoc.jsonl.gz")
    for at, item, change in ((20, items[3], str), (60, items[9], str.upper), (100, items[15], lambda t: re.sub(r"[.,?!]", " ; ", t))):
        train[at]["text"] += "\n\n" + change(" ".join((item["question"] + " " + item["answer"]).split()[:25]))
    web = data_records("hygiene_web_cc.jsonl.gz")
    for r in web:
        r["url"] = r["meta"]["url"]
    write_jsonl(tmp_path / "foldoc.jsonl.gz", train)
    write_jsonl(tmp_path / "web.jsonl", web)
    hosts = sorted({re.sub(r"^https?://([^/]+).*", r"\1", r["url"]) for r in web})
    (tmp_path / "block.txt").write_text(f"# test list\n{hosts[0]}\nnot{hosts[1]}\n")
    return [
        "dataset.paths=[foldoc.jsonl.gz,web.jsonl]", "dataset.url_column=url", "filter.keep_rejected=3",
        "filter.decontaminate.paths=[evals/qa.jsonl.gz]", "filter.decontaminate.columns=[question,answer]",
        "filter.pii.kinds=[email,ip]", "filter.url.blocklist=[block.txt]", "filter.url.banned_words=[nobanned]",
    ]


def test_every_step_on_gives_the_same_bytes_with_1_and_2_workers_and_reports_each(tmp_path):
    overrides = corpus(tmp_path)
    for workers in (1, 2):
        out = filter_run(tmp_path, *overrides, f"executor.workers={workers}", f"hydra.run.dir=w{workers}")
        assert out.returncode == 0, out.stderr[-2000:]
    one, two = tmp_path / "w1", tmp_path / "w2"
    assert artifact_hashes(one) == artifact_hashes(two)
    s = stats(one)["stages"]["filter"]
    foldoc, web = s["components"]["foldoc"], s["components"]["web"]
    assert foldoc["dropped"]["decontaminate"] == 3 and web["dropped"]["decontaminate"] == 0
    assert s["decontamination"]["eval_sets"]["qa"]["matched_documents"] == {"foldoc": 3, "web": 0}
    assert s["decontamination"]["eval_sets"]["qa"]["items"] == 40 and s["decontamination"]["ngram"] == 13
    assert web["dropped"]["url"] >= 1 and web["step_tally"]["url.blocklist"] == web["dropped"]["url"]
    assert foldoc["step_tally"]["url.no_url"] == foldoc["records_in"]
    assert foldoc["redacted"]["email"] >= 100 and foldoc["redacted"]["documents"] >= 90
    assert s["redacted"]["email"] == foldoc["redacted"]["email"] + web["redacted"]["email"]
    # rejected samples: each step's reason with its detail, redactions shown with their context
    rejected = pq.read_table(one / foldoc["rejected_file"]).to_pylist()
    by_reason = {r["reason"]: r for r in rejected}
    assert "of eval item se:" in by_reason["decontaminate"]["detail"]
    assert re.search(r"email: .*\[[^\]]+@[^\]]+\]", by_reason["pii"]["detail"])
    assert "block.txt:2" in pq.read_table(one / web["rejected_file"]).to_pylist()[0]["detail"]
    # the parts: no address left; a redacted document differs from its source only at the spans
    sources = {r["id"]: r["text"] for r in data_records("hygiene_foldoc.jsonl.gz")}
    parts = [row for p in sorted((one / "filtered" / "foldoc").glob("part-*.parquet")) for row in pq.read_table(p).to_pylist()]
    changed = [row for row in parts if row["text"] != sources[row["id"]]]
    assert len(changed) >= 90
    for row in changed:
        pattern = "".join(re.escape(piece) + "(.+?)" for piece in row["text"].split("email@example.com"))[: -len("(.+?)")]
        assert re.fullmatch(pattern.replace(re.escape("22.214.171.124"), "(.+?)"), sources[row["id"]], re.S), row["id"]


def test_pii_on_text_without_pii_leaves_every_part_byte_identical(tmp_path):
    write_jsonl(tmp_path / "se.jsonl", data_records("hygiene_stackexchange.jsonl.gz"))
    for name, extra in (("off", []), ("on", ["filter.pii.kinds=[email,ip]"])):
        out = filter_run(tmp_path, "dataset.paths=[se.jsonl]", "filter.min_chars=20", f"hydra.run.dir={name}", *extra)
        assert out.returncode == 0, out.stderr[-2000:]
    parts = lambda run: {k: v for k, v in artifact_hashes(tmp_path / run).items() if "/part-" in k}  # noqa: E731
    assert parts("off") == parts("on") and parts("off")
    assert stats(tmp_path / "on")["stages"]["filter"]["components"]["se"]["redacted"] == {"documents": 0, "email": 0, "ip": 0}


def test_a_changed_eval_set_is_refused_on_resume_and_on_rerun(tmp_path):
    overrides = corpus(tmp_path)
    out = filter_run(tmp_path, *overrides, "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr[-2000:]
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert str(tmp_path / "evals" / "qa.jsonl.gz") in provenance["inputs"] and str(tmp_path / "block.txt") in provenance["inputs"]
    write_jsonl(tmp_path / "evals" / "qa.jsonl.gz", [{"id": "new", "question": "another question", "answer": "another answer"}])
    one_line_error(filter_run(tmp_path, *overrides, "hydra.run.dir=run", "resume=true"), "inputs differ", "qa.jsonl.gz (content changed)")
    one_line_error(cli(tmp_path, str(tmp_path / "run"), command="stage2-rerun"), "inputs differ", "qa.jsonl.gz (content changed)")


def test_url_rules_without_a_url_column_fail_at_start_up_unless_the_component_opts_out(tmp_path):
    write_jsonl(tmp_path / "se.jsonl", data_records("hygiene_stackexchange.jsonl.gz")[:20])
    (tmp_path / "block.txt").write_text("example.com\n")
    one_line_error(filter_run(tmp_path, "dataset.paths=[se.jsonl]", "filter.url.blocklist=[block.txt]", "hydra.run.dir=a"), "dataset.url_column is null")
    assert not (tmp_path / "a").exists()
    one_line_error(filter_run(tmp_path, "dataset.paths=[se.jsonl]", "dataset.url_column=url", "filter.url.blocklist=[missing.txt]", "hydra.run.dir=b"),
                   "filter.url.blocklist: no file matches", "missing.txt")
    out = cli(tmp_path, "stage=filter", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "hydra.run.dir=c", "filter.url.blocklist=[block.txt]",
              *(f"dataset.components.{c}.url_filter=false" for c in ("web", "encyclopedia", "code", "noisy")),
              *(f"dataset.components.{c}.max_records=20" for c in ("web", "encyclopedia", "code", "noisy")))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "url" not in stats(tmp_path / "c")["stages"]["filter"]["components"]["web"]["dropped"]


def test_a_sweep_over_the_ngram_size_summarises_drops_per_component(tmp_path):
    overrides = corpus(tmp_path)
    out = cli(tmp_path, "--multirun", "stage=filter", "dataset=files", f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1",
              *overrides, "filter.decontaminate.ngram=8,13")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = next((tmp_path / "multirun").glob("*/*/summary.csv"))
    rows = list(csv.DictReader(summary.open()))
    assert [r["overrides"].split("filter.decontaminate.ngram=")[1].split()[0] for r in rows] == ["8", "13"]
    for row, job in zip(rows, sorted(summary.parent.glob("[0-9]*"))):
        comps = stats(job)["stages"]["filter"]["components"]
        assert int(row["dropped_decontaminate.foldoc"]) == comps["foldoc"]["dropped"]["decontaminate"] >= 3
        assert int(row["dropped_url.web"]) == comps["web"]["dropped"]["url"]
    assert int(rows[0]["dropped_decontaminate.foldoc"]) >= int(rows[1]["dropped_decontaminate.foldoc"])


def test_the_commands_of_docs_hygiene_run_and_do_what_it_says(tmp_path):
    """Every bash block of docs/hygiene.md, run as written (plus a runs index and one worker) in a folder
    holding the files it names."""
    corpus(tmp_path)
    text = (REPO / "docs" / "hygiene.md").read_text(encoding="utf-8")
    commands = [shlex.split(block.replace("\\\n", " ")) for block in re.findall(r"```bash\n(.*?)```", text, re.S)]
    assert len(commands) == 2 and all(c[0] == "stage2" for c in commands)
    for args in commands:
        out = cli(tmp_path, *args[1:], f"runs_index={tmp_path}/runs.jsonl", "executor.workers=1", "progress=false")
        assert out.returncode == 0, out.stderr[-2000:]
    (run,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/stats.json")]
    s = stats(run)["stages"]["filter"]
    assert s["components"]["foldoc"]["dropped"]["decontaminate"] == 3 and s["redacted"]["email"] >= 100
    assert s["components"]["web"]["dropped"]["url"] >= 1
    summary = next((tmp_path / "multirun").glob("*/*/summary.md")).read_text()
    assert "dropped_decontaminate.foldoc" in summary and "dropped_url.web" in summary


def test_killed_mid_stage_with_every_step_on_resumes_to_the_same_bytes(tmp_path):
    overrides = [*corpus(tmp_path), "stage=filter", "dataset=files", f"runs_index={tmp_path}/runs.jsonl", "progress=false",
                 "dataset.partition_size=25", "filter.lang_backend=langdetect"]  # (slow enough for the kill to land mid-way)
    # uncompressed: a compressed file is one unit of work, and the kill must come between units
    (tmp_path / "foldoc.jsonl").write_bytes(gzip.decompress((tmp_path / "foldoc.jsonl.gz").read_bytes()))
    overrides = [o.replace("foldoc.jsonl.gz", "foldoc.jsonl") for o in overrides]
    stage2([*overrides, "executor.workers=2", "hydra.run.dir=fresh"], tmp_path)
    run_dir = tmp_path / "killed"
    kill_when([*overrides, "executor.workers=2"], tmp_path, run_dir, lambda d: len(done_tasks(d, "foldoc")) >= 3)
    assert_killed_mid_stage(run_dir, run_dir / "filtered" / "manifest.json")
    assert list((run_dir / "filtered" / ".work" / "decontaminate").glob("*/meta.json"))  # the index, built before the tasks
    resume(run_dir, tmp_path, "executor.workers=1")
    assert_resumed_like(run_dir, tmp_path / "fresh")
    for key in ("decontamination", "redacted", "dropped"):
        assert stats(run_dir)["stages"]["filter"][key] == stats(tmp_path / "fresh")["stages"]["filter"][key]
