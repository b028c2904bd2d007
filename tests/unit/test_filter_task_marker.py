"""One filter task and its marker: a resume reuses a task's outputs only when its marker matches them and
its settings (the killed-and-resumed runs are in tests/cli/test_resume_filter.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from helpers import sample_records, write_jsonl
from stage2.config import FilterConfig
from stage2.stages.filter import component_steps
from stage2.stages.filter_tasks import screen
from stage2.io.sources import ComponentSpec, plan_component, scan_file


def _screen_task(tmp_path: Path) -> Dict[str, Any]:
    records = sample_records("web_stackexchange.jsonl.gz", 60) + sample_records("noisy_fortunes.jsonl.gz", 80)
    path = write_jsonl(tmp_path / "in.jsonl", records)
    spec = ComponentSpec(name="c", files=[str(path)], format="json")
    [unit] = plan_component(spec, 0, spec.files, {str(path): scan_file(str(path), "json", stride=1000)}, 1000, None)
    f = FilterConfig(min_chars=100, max_chars=8000, on_bad_record="skip", quality=[], languages=["en"], lang_backend="langdetect_fast",
                     lang_threshold=0.85, lang_max_chars=2000, lang_check="fasttext", lang_check_threshold=0.3, function_words=0.03)
    dedup = {"exact": True, "near": True, "window_words": 13}
    return {"spec": spec, "unit": unit, "steps": component_steps(spec, f), "dedup": dedup, "keep_rejected": 3, "dir": str(tmp_path / "task")}


def test_a_task_marker_is_reused_only_when_it_matches(tmp_path):
    task = _screen_task(tmp_path)
    marker = Path(task["dir"]) / "done-screen.json"
    first = screen(task)
    assert not first["resumed"] and first["dropped"]["language"] > 0  # the languages matter here
    outputs = {p.name: p.read_bytes() for p in Path(task["dir"]).iterdir() if p != marker}
    assert any(name.startswith("near-") for name in outputs) and "rejected-screen.parquet" in outputs

    again = screen(task)
    assert again["resumed"] and {k: v for k, v in again.items() if k not in ("resumed",)} == {k: v for k, v in first.items() if k not in ("resumed",)}

    # A damaged marker, or one of other settings, is never trusted: the task is done again, to the same bytes.
    marker.write_bytes(marker.read_bytes()[:40])
    assert not screen(task)["resumed"]
    other = {**task, "keep_rejected": 1}
    assert not screen(other)["resumed"] and screen(other)["resumed"]
    assert not screen(task)["resumed"]
    assert {p.name: p.read_bytes() for p in Path(task["dir"]).iterdir() if p != marker} == outputs
