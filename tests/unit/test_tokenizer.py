"""The tokenizer stage on real text (the repo's data/sample/), with real SentencePiece training.

Vocabularies and samples are small so that every training takes a second or two.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import random
import re
from pathlib import Path
from typing import Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import sentencepiece as spm

import stage2.main
from stage2.tokenizer import sample as tok_sample, train as tok_train, evaluate as tok_eval
from stage2.stages import tokenizer as tokenizer_stage
from stage2.tokenizer import encoding, export
from stage2.errors import Stage2Error
from stage2.runtime.run import Run, start_run
from stage2.io.sources import iter_documents

SAMPLE = Path(stage2.main.DATA_DIR) / "sample"
PATHS = [SAMPLE / "web_stackexchange.jsonl.gz", SAMPLE / "foldoc.jsonl.gz"]


BASE = [
    "dataset.max_records=700",
    "tokenizer.samples_per_component=500",
    "tokenizer.eval_docs_per_component=40",
    "tokenizer.num_threads=2",
    "tokenizer.vocab_size=1000",
]


def make_run(folder: Path, *overrides: str, workers: int = 1, paths=PATHS) -> Run:
    recipe = stage2.main.compose_recipe(
        [
            "stage=tokenizer",
            "dataset=files",
            f"dataset.paths=[{','.join(str(p) for p in paths)}]",
            f"executor.workers={workers}",
            f"runs_index={folder.parent / 'runs.jsonl'}",
            *BASE,
            *overrides,
        ],
        str(folder.parent),
    )
    return start_run(folder, recipe)


def train_run(folder: Path, *overrides: str, workers: int = 1, paths=PATHS) -> Run:
    run = make_run(folder, *overrides, workers=workers, paths=paths)
    try:
        tokenizer_stage.run(run)
    finally:
        run.executor.close()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[int, Run]:
    """One trained run per vocabulary size, shared by the tests below."""
    root = tmp_path_factory.mktemp("tok")
    return {v: train_run(root / f"v{v}", f"tokenizer.vocab_size={v}") for v in (500, 1000, 2000)}


def model_file(run: Run) -> Path:
    return run.dir / run.stage_stats("tokenizer")["model"]


def test_a_larger_vocabulary_packs_more_bytes_into_each_token(runs):
    overall = [runs[v].stage_stats("tokenizer")["overall"] for v in (500, 1000, 2000)]
    bpt = [o["bytes_per_token"] for o in overall]
    tpw = [o["tokens_per_word"] for o in overall]
    assert bpt[0] < bpt[1] < bpt[2]  # i.e. tokens per byte fall as the vocabulary grows
    assert tpw[0] > tpw[1] > tpw[2]
    for v, run in runs.items():
        stats = run.stage_stats("tokenizer")
        assert stats["vocab_size"] == v
        assert set(tok_eval.METRICS) <= set(stats["overall"])
        for comp in ("web_stackexchange", "foldoc"):
            entry = stats["components"][comp]
            assert set(tok_eval.METRICS) <= set(entry)
            assert 0 < entry["eval_docs"] <= 40
            assert entry["train_docs"] == 500
        assert stats["sample"]["docs"] == 1000 and stats["sample"]["sentences"] > 1000
        assert 0 < stats["overall"]["vocab_used_share"] <= 1


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_training_on_filtered_parts_of_a_past_run_matches_training_on_the_raw_source(runs, tmp_path):
    """`tokenizer.input_run` reads filtered parts (parts.py layout); the same documents give the same model."""
    import json

    from stage2.io import parts
    from stage2.io.files import file_sha256

    past = tmp_path / "past"
    manifest = {"components": {}}
    for spec in runs[1000].components:
        docs = [d for d in iter_documents(spec) if d.problem is None and d.text]
        half = len(docs) // 2  # two parts per component: the reader must chain them in order
        rels = []
        for index, chunk in enumerate((docs[:half], docs[half:])):
            path = parts.part_path(past, spec.name, 0, index)
            parts.write_table(path, parts.docs_to_table(chunk))
            rels.append(str(path.relative_to(past)))
        manifest["components"][spec.name] = {"parts": rels}
    (past / "filtered" / "manifest.json").write_text(json.dumps(manifest))
    # The record a filter stage leaves: the tokenizer checks the parts against it before reading them.
    listed = [rel for entry in manifest["components"].values() for rel in entry["parts"]] + ["filtered/manifest.json"]
    (past / "filtered" / parts.FILTER_FINISHED).write_text(json.dumps({"artifacts": {rel: file_sha256(past / rel) for rel in listed}}))

    run = train_run(tmp_path / "from_parts", f"tokenizer.input_run={past}")
    assert model_file(run).read_bytes() == model_file(runs[1000]).read_bytes()
    assert run.provenance["lineage"]["tokenizer.documents"]["folder"] == str(past.resolve())


def test_resume_keeps_the_finished_model_and_evaluates_again(runs):
    first = runs[500]
    model = model_file(first)
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    again = train_run(first.dir, "tokenizer.vocab_size=500", "resume=true")
    stats = again.stage_stats("tokenizer")
    assert stats["resumed"] is True
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before  # not retrained, not rewritten
    assert stats["overall"] == first.stage_stats("tokenizer")["overall"]
    assert stats["sample"] == first.stage_stats("tokenizer")["sample"]


def test_vocab_file_lists_every_piece_with_its_score(runs):
    run = runs[500]
    sp = spm.SentencePieceProcessor(model_file=str(model_file(run)))
    lines = model_file(run).with_suffix(".vocab").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == sp.get_piece_size()
    unescape = {"\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t"}
    for i, line in enumerate(lines):
        piece, score = line.split("\t")
        assert re.sub(r"\\[\\nrt]", lambda m: unescape[m.group(0)], piece) == sp.id_to_piece(i)
        assert float(score) == pytest.approx(sp.get_score(i), rel=1e-5, abs=1e-6)


def test_model_loads_in_plain_sentencepiece_and_round_trips_the_eval_texts(runs):
    run = runs[1000]
    sp = spm.SentencePieceProcessor(model_file=str(model_file(run)))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, 3)
    samples = tokenizer_stage.collect_samples(run, run.cfg.tokenizer)
    texts = [t for s in samples for t in s.eval_texts]
    assert len(texts) == run.stage_stats("tokenizer")["overall"]["eval_docs"]
    assert sum("\n" in t for t in texts) > len(texts) / 2  # there are newlines to lose
    for text in texts:
        assert sp.decode(sp.encode(text)) == text  # lossless: every newline, indent and double space
    for comp in run.stage_stats("tokenizer")["components"].values():
        assert comp["roundtrip_share"] == 1.0 and comp["hf_exact_share"] == 1.0


AWKWARD = [
    "def f(x):\n    return x  # two  spaces\n",
    "\tindented with a tab\r\n\n\n   trailing   ",
    "  leading spaces, then 中文 and emoji 🙂 that the vocabulary has never seen",
    "literal specials </s> <s> <unk> <pad> and a literal byte piece <0x41>",
    "",
    " ",
    "\n",
]


def test_tokenizer_json_gives_sentencepiece_ids_and_text(runs):
    from tokenizers import Tokenizer

    run = runs[1000]
    model = model_file(run)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    hf = Tokenizer.from_file(str(model.parent / export.TOKENIZER_JSON))
    samples = tokenizer_stage.collect_samples(run, run.cfg.tokenizer)
    texts = [t for s in samples for t in s.eval_texts + s.train_texts[:100]] + AWKWARD
    for text in texts:
        ids = sp.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids, text[:80]
        assert hf.decode(ids, skip_special_tokens=False) == sp.decode(ids) == text
    assert any(sp.is_byte(i) for i in sp.encode(AWKWARD[2]))  # the byte-fallback case is exercised
    config = json.loads((model.parent / export.TOKENIZER_CONFIG).read_text())
    assert config["eos_token"] == "</s>" and config["split_special_tokens"] is True
    assert config["model_max_length"] == run.cfg.shard.seq_len  # what transformers truncates at: the rows' length
    # Deterministic: exporting the same model again gives the same bytes.
    again = export.files(model.read_bytes(), run.cfg.shard.seq_len)
    assert again[export.TOKENIZER_JSON] == (model.parent / export.TOKENIZER_JSON).read_text()
    assert again[export.TOKENIZER_CONFIG] == (model.parent / export.TOKENIZER_CONFIG).read_text()
    assert json.loads(export.files(model.read_bytes(), 2048)[export.TOKENIZER_CONFIG])["model_max_length"] == 2048


@pytest.mark.slow  # over half a second
def test_unigram_export_gives_sentencepiece_ids_and_text(tmp_path):
    from tokenizers import Tokenizer

    run = train_run(tmp_path / "uni", "tokenizer=unigram", "tokenizer.vocab_size=800")
    model = model_file(run)
    assert model.name == "spm_800_unigram.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    hf = Tokenizer.from_file(str(model.parent / export.TOKENIZER_JSON))
    stats = run.stage_stats("tokenizer")["components"]
    samples = tokenizer_stage.collect_samples(run, run.cfg.tokenizer)
    for s in samples:
        for t in s.eval_texts + s.train_texts[:100] + AWKWARD:
            ids = encoding.encode(sp, [t])[0]
            assert hf.encode(t, add_special_tokens=False).ids == ids, t[:80]
            assert hf.decode(ids, skip_special_tokens=False) == t
        assert stats[s.component]["hf_exact_share"] == 1.0
    # The stage's model is the one on the score grid that makes the export exact.
    assert tok_train.quantized_unigram(model.read_bytes()) == model.read_bytes()


@pytest.mark.slow  # over half a second
def test_lossy_recipe_is_reachable_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    run = train_run(tmp_path / "lossy", "tokenizer=lossy")
    stats = run.stage_stats("tokenizer")
    assert stats["tokenizer_json"] is None  # no exact export of an NFKC, whitespace-squeezing model
    assert stats["overall"]["roundtrip_share"] < 0.5
    assert "tokenizer=lossy" in caplog.text and "no tokenizer.json written" in caplog.text


@pytest.mark.slow  # over half a second
def test_training_logs_its_phase_and_elapsed_time(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    texts = [r["text"] for r in iter_documents_texts(PATHS[1], 3000)]
    options = dataclasses.replace(make_run(tmp_path / "p").cfg.tokenizer, vocab_size=4000, num_threads=1).trainer_options()
    tok_train.train_model(tok_train.sentence_stream(texts, 4192, tok_train.SentenceCounter()), options, seed=0, progress_seconds=0.05)
    lines = [r.getMessage() for r in caplog.records if "SentencePiece bpe 4000" in r.getMessage()]
    assert any("training on" in l and "s elapsed" in l for l in lines), lines
    assert lines[-1].endswith(" s") and "done in" in lines[-1]


def failure(run: Run) -> str:
    try:
        with pytest.raises(Stage2Error) as err:
            tokenizer_stage.run(run)
    finally:
        run.executor.close()
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.slow  # over half a second
def test_too_large_vocabulary_is_one_line_naming_the_maximum(tmp_path, caplog):
    # 150 records per component, a quota of 500: every document is already in the sample.
    message = failure(make_run(tmp_path / "big", "tokenizer.vocab_size=200000", "dataset.max_records=150"))
    assert "tokenizer.hard_vocab_limit=false" in message
    assert "sample more documents" not in message
    largest = int(message.split("tokenizer.vocab_size<=")[1].split(",")[0])
    assert 100 < largest < 200000
    # A quota that left documents out: then sampling more is worth suggesting.
    capped = failure(make_run(tmp_path / "capped", "tokenizer.vocab_size=200000", "dataset.max_records=150", "tokenizer.samples_per_component=60"))
    assert "sample more documents (tokenizer.samples_per_component)" in capped

    # The named maximum trains; with the limit soft the oversized request trains too (to fewer pieces).
    at_max = train_run(tmp_path / "max", f"tokenizer.vocab_size={largest}", "dataset.max_records=150")
    assert at_max.stage_stats("tokenizer")["vocab_size"] == largest
    caplog.set_level(logging.WARNING, logger="stage2.tokenizer")
    soft = train_run(tmp_path / "soft", "tokenizer.vocab_size=200000", "dataset.max_records=150", "tokenizer.hard_vocab_limit=false")
    stats = soft.stage_stats("tokenizer")
    actual = stats["vocab_size"]
    assert 100 < actual < 200000 and stats["vocab_size_requested"] == 200000
    # Files are named after the vocabulary trained, and hold exactly that many pieces.
    name = f"spm_{actual}_bpe"
    assert sorted(p.name for p in (soft.dir / "tokenizer").iterdir()) == sorted([f"{name}.model", f"{name}.vocab", *export.EXPORT_FILES])
    assert stats["model"] == f"tokenizer/{name}.model"
    assert spm.SentencePieceProcessor(model_file=str(model_file(soft))).get_piece_size() == actual
    assert any(r.levelno == logging.WARNING and str(actual) in r.getMessage() and "200000" in r.getMessage() for r in caplog.records)
    # The shard stage finds it, in this run and from another run pointing at this folder.
    from stage2.stages.shard import resolve_tokenizer

    assert resolve_tokenizer(soft, None) == model_file(soft)
    copied = resolve_tokenizer(at_max, str(soft.dir))  # copied in, so at_max's shards need no other folder
    assert copied == at_max.dir / "tokenizer" / model_file(soft).name and copied.read_bytes() == model_file(soft).read_bytes()
    # Resuming finds the model under its actual-size name and keeps it.
    again = train_run(soft.dir, "tokenizer.vocab_size=200000", "dataset.max_records=150", "tokenizer.hard_vocab_limit=false", "resume=true")
    assert again.stage_stats("tokenizer")["resumed"] is True and again.stage_stats("tokenizer")["model"] == stats["model"]


@pytest.mark.slow  # over half a second
def test_too_few_pieces_for_the_characters_is_one_line_in_stage2_terms(tmp_path):
    """Multilingual raw text (UDHR in many scripts) needs more distinct characters than a small vocabulary."""
    paths = [SAMPLE / "noisy_udhr.jsonl.zst", SAMPLE / "noisy_tldr.jsonl.gz"]
    message = failure(make_run(tmp_path / "chars", "tokenizer.vocab_size=340", "dataset.max_records=300", paths=paths))
    assert message.startswith("tokenizer.vocab_size=340 is smaller than the ")
    needed = int(message.split("smaller than the ")[1].split()[0])
    chars = int(message.split("needed: ")[1].split()[0])
    meta = int(message.split(" plus ")[1].split()[0])
    assert needed > 340 and chars + meta == needed and meta == 4 + 256  # unk/bos/eos/pad and the byte pieces
    assert "tokenizer.character_coverage=0.999 " in message and "byte_fallback covers the rest" in message
    assert "tokenizer.input_run=" in message and "SentencePiece" not in message
    # The advice holds: the requested size trains once the coverage is lowered.
    low = train_run(tmp_path / "low", "tokenizer.vocab_size=340", "dataset.max_records=300", "tokenizer.character_coverage=0.98", paths=paths)
    assert low.stage_stats("tokenizer")["vocab_size"] == 340


def test_component_without_heldout_documents_reports_null_metrics(tmp_path, caplog):
    # A tiny component whose ids all fall outside the held-out split: nothing to evaluate it on.
    ids = [f"tiny-{i}" for i in range(200) if not tok_sample.is_heldout(f"tiny-{i}", 5)][:8]
    tiny = tmp_path / "tiny.jsonl.gz"
    with gzip.open(tiny, "wt", encoding="utf-8") as f:
        for i, doc_id in enumerate(ids):
            f.write(json.dumps({"id": doc_id, "text": f"Document number {i} of the tiny component.\nIt has two lines."}) + "\n")
    caplog.set_level(logging.WARNING, logger="stage2.tokenizer")
    run = train_run(tmp_path / "run", "tokenizer.vocab_size=500", "dataset.max_records=300", paths=[*PATHS, tiny])
    stats = run.stage_stats("tokenizer")
    empty = stats["components"]["tiny"]
    assert empty["eval_docs"] == 0 and empty["train_docs"] == len(ids)
    assert all(empty[m] is None for m in tok_eval.METRICS)
    assert any("tiny" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # The pooled figures are those of the components that had held-out documents.
    others = [stats["components"][c] for c in ("web_stackexchange", "foldoc")]
    assert all(o["eval_docs"] > 0 and o["bytes_per_token"] > 0 for o in others)
    overall = stats["overall"]
    assert overall["eval_docs"] == sum(o["eval_docs"] for o in others)
    assert overall["bytes_per_token"] == round(sum(o["eval_bytes"] for o in others) / sum(o["eval_tokens"] for o in others), 4)
    # stats.json carries null, not 0.0.
    run.save_stats()
    saved = json.loads((run.dir / "stats.json").read_text())["stages"]["tokenizer"]["components"]["tiny"]
    assert saved["bytes_per_token"] is None


def test_heldout_documents_are_never_in_the_training_sample():
    spec = make_spec()
    docs = list(iter_documents(spec))
    sample = tok_sample.sample_documents("web", docs, quota=10_000, heldout_percent=20, eval_docs=50, seed=3)
    heldout = {d.id for d in docs if tok_sample.is_heldout(d.id, 20)}
    assert 0.1 < len(heldout) / len(docs) < 0.3
    assert not heldout & set(sample.train_ids)
    # Quota above the available documents: every other document is trained on.
    assert len(sample.train_ids) == len(docs) - len(heldout) == sample.docs_seen - sample.heldout_docs
    assert set(sample.eval_ids) <= heldout and len(sample.eval_ids) == 50


def test_sample_is_bounded_seeded_and_independent_of_document_order():
    docs = list(iter_documents(make_spec()))
    a = tok_sample.sample_documents("web", docs, quota=100, heldout_percent=5, eval_docs=10, seed=0)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    b = tok_sample.sample_documents("web", shuffled, quota=100, heldout_percent=5, eval_docs=10, seed=0)
    c = tok_sample.sample_documents("web", docs, quota=100, heldout_percent=5, eval_docs=10, seed=1)
    assert len(a.train_ids) == 100 and len(a.eval_ids) == 10
    assert a.train_ids == b.train_ids and a.train_texts == b.train_texts and a.eval_ids == b.eval_ids
    assert a.train_ids != c.train_ids  # another seed, another sample
    # The held-out set does not depend on the seed (sweeps compare on the same documents).
    heldout = {d.id for d in docs if tok_sample.is_heldout(d.id, 5)}
    assert set(a.eval_ids) <= heldout and set(c.eval_ids) <= heldout


def make_spec():
    from stage2.io.sources import ComponentSpec

    return ComponentSpec(name="web", files=[str(PATHS[0])], format="json", max_records=600)


def iter_documents_texts(path: Path, n: int):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line, _ in zip(f, range(n)):
            yield json.loads(line)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list("ab \t\n\r数🙂\u2028")), max_size=300), st.integers(1, 40))
def test_document_pieces_join_back_to_the_document(text, max_bytes):
    pieces = list(tok_train.document_pieces(text, max_bytes))
    assert "".join(pieces) == text
    assert all(p and len(p.encode("utf-8")) <= max(max_bytes, 4) for p in pieces)


def test_document_pieces_keep_lines_whole_where_they_fit():
    text = "first line\n  second, indented\n\n" + "word " * 30 + "\nlast"
    pieces = list(tok_train.document_pieces(text, 40))
    assert pieces[0] == "first line\n  second, indented\n\n"
    assert all(p.startswith(" word") or p.startswith("word") for p in pieces[1:-1])  # cut before a space
    assert pieces[-2].endswith("word \n") and pieces[-1] == "last"


def test_long_lines_are_cut_at_whitespace_and_nothing_is_dropped():
    words = ["naïve", "tokenizer", "ümlaut", "x" * 7, "数据"] * 200
    line = " ".join(words)
    pieces = list(tok_train.split_sentences(f"short line\n\n{line}\n", 64))
    assert pieces[0] == "short line"
    assert all(len(p.encode("utf-8")) <= 64 for p in pieces)
    assert " ".join(pieces[1:]) == line  # cut only at spaces: every word kept whole
    # No whitespace at all: cut between characters, never inside a UTF-8 sequence.
    solid = "数" * 100
    parts = list(tok_train.cut_line(solid, 64))
    assert "".join(parts) == solid and all(len(p.encode("utf-8")) <= 64 for p in parts)
    # A limit below one character's size keeps the character whole (and terminates).
    assert list(tok_train.cut_line("数数 ab", 2)) == ["数", "数", "ab"]


def test_quotas_share_the_total_by_weight():
    from stage2.io.sources import ComponentSpec

    specs = [ComponentSpec(name=n, weight=w) for n, w in (("a", 0.35), ("b", 0.35), ("c", 0.15), ("d", 0.15))]
    shares = tok_sample.quotas(specs, 1001, by_weight=True)
    assert sum(shares.values()) == 4004
    assert shares["a"] == shares["b"] and shares["c"] == shares["d"] and shares["a"] > 2 * shares["c"]
    assert tok_sample.quotas(specs, 7, by_weight=False) == {"a": 7, "b": 7, "c": 7, "d": 7}


# ---------------------------------------------------------------- U+2581, SentencePiece's space marker

U2581 = [
    "\u2581 at the start",
    "in the\u2581middle",
    "at the end\u2581",
    "\u2581",
    "\u2581\u2581\u2581 repeated \u2581\u2581",
    " \u2581 beside spaces \u2581  \u2581",
    "\u2581\nnext to newlines\n\u2581\n\n\u2581\r\n",
    "\t\u2581\ttabs",
    "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588 a spinner's frames",
    "literal pieces <0xE2><0x96><0x81> and \u2581\u2581 and </s>",
]


def marker_spellings(sp, ids):
    spell = [sp.piece_to_id(p) for p in ("<0xE2>", "<0x96>", "<0x81>")]
    return sum(ids[i : i + 3] == spell for i in range(len(ids)))


def test_literal_u2581_is_spelled_in_byte_pieces_and_decodes_exactly(runs):
    from tokenizers import Tokenizer

    model = model_file(runs[1000])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    hf = Tokenizer.from_file(str(model.parent / export.TOKENIZER_JSON))
    assert sp.decode(sp.encode(U2581[1])) == "in the middle"  # SentencePiece alone: a space
    texts = U2581 + AWKWARD
    encoded = encoding.encode(sp, texts)
    for text, ids in zip(texts, encoded):
        assert sp.decode(ids) == text
        assert marker_spellings(sp, ids) == text.count("\u2581")
        # tokenizer.json: the same ids, and the same text back.
        assert hf.encode(text, add_special_tokens=False).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == text
    assert encoded[len(U2581) :] == sp.encode(AWKWARD)  # text without it: SentencePiece's own ids
    # What a tokenizers user sees: pieces spelt with a space where SentencePiece writes "\u2581".
    assert not any("\u2581" in piece for piece in hf.get_vocab())
    assert hf.encode("a b", add_special_tokens=False).tokens == ["a", " b"]
    assert sp.encode("a b", out_type=str) == ["a", "\u2581b"]


@pytest.mark.parametrize("bos,eos", [(None, 2), (1, 2), (1, None), (None, None), (None, 7)])
def test_shard_encode_spells_u2581_and_leaves_other_batches_to_the_fast_path(runs, bos, eos):
    import numpy as np

    from stage2.stages import shard

    model = model_file(runs[1000])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    plain = [t for s in tokenizer_stage.collect_samples(runs[1000], runs[1000].cfg.tokenizer) for t in s.eval_texts[:12]] + AWKWARD
    texts = plain[:5] + U2581[:3] + plain[5:20] + U2581[3:] + plain[20:]
    dtype = np.dtype(np.uint16)
    task = {"model": str(model), "dtype": dtype.str, "batch_size": 4, "num_threads": 2, "bos": bos, "eos": eos}
    got = shard.encode_partition(task, texts)
    assert np.array_equal(got, encoding.with_separators(encoding.encode(sp, texts), bos, eos, dtype))
    if eos == sp.eos_id() and bos is None:
        ends = np.flatnonzero(got == eos)
        assert [sp.decode(seg.tolist()) for seg in np.split(got, ends + 1)[:-1]] == texts
    # Batches without it: the stream packing's fast path gives.
    fast = np.concatenate([encoding.encode_batch(sp, plain[i : i + 4], 2, bos, eos, dtype) for i in range(0, len(plain), 4)])
    assert np.array_equal(shard.encode_partition(task, plain), fast)


@pytest.mark.slow  # (over half a second: the full suite runs it)
def test_evaluation_counts_documents_with_u2581_as_round_tripping(tmp_path):
    from helpers import sample_records, write_jsonl

    records = sample_records("web_cc.jsonl.gz", 60)
    for i, r in enumerate(records):
        r["text"] = r["text"].replace(" ", " \u2581 ", 1 + i % 3) + "\u2581" * (i % 2)
    path = write_jsonl(tmp_path / "data" / "spinners.jsonl", records)
    run = train_run(tmp_path / "run", "tokenizer.heldout_percent=50", paths=[PATHS[1], path])
    stats = run.stage_stats("tokenizer")["components"]["spinners"]
    assert stats["eval_docs"] >= 15
    assert stats["roundtrip_share"] == 1.0 and stats["hf_exact_share"] == 1.0


def test_user_defined_symbols_match_as_in_sentencepiece_and_a_spaced_one_is_refused(tmp_path):
    from tokenizers import Tokenizer

    texts = [r["text"] for r in iter_documents_texts(PATHS[1], 400)]
    options = dataclasses.replace(make_run(tmp_path / "u").cfg.tokenizer, vocab_size=700, num_threads=1).trainer_options()
    model = tok_train.train_model(
        tok_train.sentence_stream(texts, 4192, tok_train.SentenceCounter()),
        {**options, "user_defined_symbols": ["<|im|>", "x\u2581y", "\u2581\u2581"]}, seed=0,
    )
    sp = spm.SentencePieceProcessor(model_proto=model)
    (tmp_path / "tok.json").write_text(export.files(model, 512)[export.TOKENIZER_JSON])
    hf = Tokenizer.from_file(str(tmp_path / "tok.json"))
    probes = ["a<|im|>b <|im|><|im|>", "zx yz", "x\u2581y", "a  b   c", "\u2581\u2581 and  ", "<|im"] + texts[:50]
    for text in probes:
        ids = encoding.encode(sp, [text])[0]
        assert hf.encode(text, add_special_tokens=False).ids == ids, text[:80]
        assert hf.decode(ids, skip_special_tokens=False) == sp.decode(ids) == text
    assert sp.encode("a<|im|>b", out_type=str) == ["a", "<|im|>", "b"]  # one piece, as asked
    assert sp.piece_to_id("x\u2581y") in sp.encode("zx yz")  # "\u2581" in a symbol stands for a space

    spaced = tok_train.train_model(
        tok_train.sentence_stream(texts, 4192, tok_train.SentenceCounter()),
        {**options, "user_defined_symbols": ["p q"]}, seed=0,
    )
    with pytest.raises(Stage2Error, match=r"user_defined_symbols \['p q'\] hold a space, which SentencePiece never matches"):
        export.files(spaced, 512)


def test_without_byte_fallback_u2581_reads_as_a_space_and_the_stage_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    run = train_run(tmp_path / "nobytes", "tokenizer.byte_fallback=false")
    sp = spm.SentencePieceProcessor(model_file=str(model_file(run)))
    assert encoding.marker_ids(sp) is None
    assert encoding.encode(sp, ["a\u2581b"]) == sp.encode(["a\u2581b"]) and sp.decode(sp.encode("a\u2581b")) == "a b"
    assert "tokenizer.byte_fallback=false" in caplog.text and "U+2581" in caplog.text and "decode as a space" in caplog.text
    assert run.stage_stats("tokenizer")["tokenizer_json"] is None


@pytest.mark.slow  # a few seconds
def test_a_vocabulary_too_large_for_its_sample_is_said(tmp_path, caplog, runs):
    # BPE trains every merge asked for (it stops only when no pair is left), also of pairs the sample holds
    # once: a sample of a few KB a hundred pieces trains, and the stage says how little text each piece had.
    caplog.set_level(logging.WARNING)
    sparse = train_run(tmp_path / "sparse", "tokenizer.vocab_size=4000", "dataset.max_records=60")
    stats = sparse.stage_stats("tokenizer")
    said = [r.getMessage() for r in caplog.records if "per piece of tokenizer.vocab_size" in r.getMessage()]
    assert stats["sample"]["bytes"] < tokenizer_stage.MIN_SAMPLE_BYTES_PER_PIECE * 4000 and len(said) == 1, said
    assert said[0].startswith(f"tokenizer: the training sample has {stats['sample']['bytes']:,} bytes, ") and "BPE trains every merge" in said[0]
    assert f"({100 * stats['overall']['vocab_used_share']:.1f}% of them occur in the held-out documents)" in said[0]
    # The module's runs (up to 2,000 pieces on 700 documents a component) have enough text a piece.
    for size, run in runs.items():
        assert run.stage_stats("tokenizer")["sample"]["bytes"] >= tokenizer_stage.MIN_SAMPLE_BYTES_PER_PIECE * size, size
