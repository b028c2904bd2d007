"""The filter through process pools: the same bytes for any worker count and memory budget, warm-up, no text through the executor (the unit tier runs it in one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List
import pyarrow.parquet as pq
import pytest
from helpers import run_filter, sample_records, write_jsonl
from stage2.stages import filter as filter_stage
from stage2.io.parts import read_manifest
from stage2.runtime.run import start_run
from unit.test_filter import build_corpus, kept_ids, manifest

pytestmark = pytest.mark.slow


def filtered_bytes(run_dir: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "filtered").rglob("*")) if p.is_file()}


def test_same_bytes_across_reruns_and_worker_counts(tmp_path, plain_config):
    build_corpus(tmp_path / "in")
    base = ["dataset=files", f"dataset.paths=[{tmp_path / 'in' / 'mix.jsonl'}]", "filter.on_bad_record=skip", "dataset.partition_size=2"]
    runs = [
        run_filter(plain_config, tmp_path / name, *base, f"executor.workers={w}")[0]
        for name, w in (("one", 1), ("again", 1), ("two", 2))
    ]
    outputs = [filtered_bytes(r.dir) for r in runs]
    assert len(outputs[0]) > 3  # several parts
    assert outputs[0] == outputs[1] == outputs[2]


def test_executor_start_warms_workers_and_a_failing_warm_up_breaks_nothing():
    import functools

    from stage2.runtime.executor import LocalExecutor

    for warm in (functools.partial(filter_stage.warm_worker, ("fasttext",)), functools.partial(filter_stage.warm_worker, ("no-such-backend",))):
        executor = LocalExecutor(workers=2)
        try:
            executor.start(warm)
            assert list(executor.map(len, [[1], [1, 2], []])) == [1, 2, 0]
        finally:
            executor.close()


def artifact_bytes(run) -> Dict[str, bytes]:
    return {rel: (run.dir / rel).read_bytes() for rel in sorted(run.artifacts) if rel.startswith("filtered/")}


def test_artifacts_do_not_depend_on_workers_or_the_dedup_memory_budget(tmp_path, plain_config):
    # Plain and compressed JSON lines (byte-range units and a whole-file unit), with copies across files.
    web = sample_records("web_stackexchange.jsonl.gz", 700)
    write_jsonl(tmp_path / "in" / "web-a.jsonl", web[:400])
    write_jsonl(tmp_path / "in" / "web-b.jsonl.gz", web[300:] + web[:50])
    base = ["dataset=files", f"dataset.paths=[{tmp_path / 'in' / 'web-*'}]", "dataset.partition_size=90",
            "filter.lang_check=null", "filter.function_words=0"]
    one, _ = run_filter(plain_config, tmp_path / "one", *base, "executor.workers=1")
    tiny, _ = run_filter(plain_config, tmp_path / "tiny", *base, "executor.workers=2", "filter.dedup.memory_mb=1")
    stats_one, stats_tiny = (r.stats["stages"]["filter"] for r in (one, tiny))
    assert stats_one["dedup"]["buckets"] == 1 and stats_tiny["dedup"]["buckets"] >= 4  # the budget split the hashes
    assert stats_one["components"]["web"]["dropped"]["duplicate"] >= 100  # the copies across files were found
    assert artifact_bytes(one) == artifact_bytes(tiny) and len(artifact_bytes(one)) >= 5
    assert one.digest == tiny.digest  # the memory budget is not part of the recipe


def test_a_component_recipe_overrides_the_filter(tmp_path, plain_config):
    en = sample_records("web_stackexchange.jsonl.gz", 120)
    write_jsonl(tmp_path / "in" / "docs.jsonl", en)
    write_jsonl(tmp_path / "in" / "code.jsonl", en[:40] + en[:40])  # exact copies: kept, as its dedup is off
    components = {
        "docs": {"data_files": [str(tmp_path / "in" / "docs.jsonl")], "min_chars": 1000, "max_chars": 0, "languages": ["de"]},
        "code": {"data_files": [str(tmp_path / "in" / "code.jsonl")], "dedup": False, "lang_filter": False, "quality": []},
    }
    run, _ = run_filter(plain_config, tmp_path / "run", *manifest(tmp_path, components), "filter.quality=[gopher_repetition]")
    docs, code = (run.stats["stages"]["filter"]["components"][name] for name in ("docs", "code"))
    lengths = [len(r["text"]) for r in en]
    assert docs["dropped"]["too_short"] == sum(n < 1000 for n in lengths) and docs["dropped"]["too_long"] == 0
    assert docs["kept"] == 0 and docs["dropped"]["language"] == sum(n >= 1000 for n in lengths)  # no German here
    assert code["dropped"]["duplicate"] == code["dropped"]["near_duplicate"] == 0 and "language" not in code["dropped"]
    assert "gopher_repetition" in docs["dropped"] and "gopher_repetition" not in code["dropped"]  # its own (empty) quality list
    assert code["kept"] == sum(200 <= n <= 8000 for n in lengths[:40]) * 2


def test_a_hub_dataset_is_planned_over_its_data_files(tmp_path, plain_config):
    """The hub path (datasets resolves the split's data files; parquet footers give row ranges), read from a local
    dataset folder, as `hub_path` also accepts: the same documents as the same files given as data_files."""
    import pyarrow as pa

    rows = sample_records("web_stackexchange.jsonl.gz", 300)
    folder = tmp_path / "hubset" / "data"
    folder.mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(rows[i * 150 : (i + 1) * 150]), folder / f"train-0000{i}-of-00002.parquet", row_group_size=40)
    common = ["dataset.partition_size=50", "dataset.max_records=260", "filter.lang_check=null", "filter.function_words=0"]
    hub, _ = run_filter(plain_config, tmp_path / "hub", *common, *manifest(tmp_path / "a", {"web": {"hub_path": str(tmp_path / "hubset")}}))
    files, _ = run_filter(plain_config, tmp_path / "files", *common, *manifest(tmp_path / "b", {"web": {"data_files": [f"{folder}/*.parquet"]}}))
    entry = hub.stats["stages"]["filter"]["components"]["web"]
    assert entry["records_in"] == 260 and entry["units"] == 6  # 150 + 110 rows, in units of at most 50
    assert kept_ids(hub.dir, "web") == kept_ids(files.dir, "web") and len(kept_ids(hub.dir, "web")) > 150


def test_a_part_has_the_bytes_of_its_documents_written_plainly(tmp_path, plain_config):
    """Partitions without duplicates become their parts by a hard link of the candidates file, the others
    are rewritten without the dropped rows: either way a part is what write_table makes of its documents."""
    from stage2.io.parts import docs_to_table, read_documents, write_table

    build_corpus(tmp_path / "in")  # partitions of 3: some lose a duplicate, some keep everything
    path = tmp_path / "in" / "mix.jsonl"
    run, _ = run_filter(plain_config, tmp_path / "run", "dataset=files", f"dataset.paths=[{path}]", "executor.workers=2",
                        "filter.on_bad_record=skip", "dataset.partition_size=3")
    parts = [run.dir / rel for rel in read_manifest(run.dir)["components"]["mix"]["parts"]]
    dropped = run.stats["stages"]["filter"]["components"]["mix"]["dropped"]
    assert dropped["duplicate"] and dropped["near_duplicate"] and len(parts) >= 4
    for part in parts:
        plain = tmp_path / "plain.parquet"
        write_table(plain, docs_to_table(list(read_documents(part))))
        assert plain.read_bytes() == part.read_bytes(), part.name
        assert part.stat().st_nlink == 1  # the work folder's name for it is gone


def test_tables_written_without_pandas_are_the_same_bytes(tmp_path):
    """Workers tell pyarrow pandas is missing (it would import it, ~0.25 s, only to ask about inputs):
    the parquet they write is the same as with pandas loaded, and pandas still works when asked for."""
    import subprocess
    import sys

    import pandas  # noqa: F401  (this process: pyarrow with pandas)
    from stage2.documents import Document
    from stage2.io.parts import docs_to_table, write_table

    docs = [Document(id=f"d{i}", text=t, component="c", source="s", record=i + 1, metadata={"n": i, "é": "ü"})
            for i, t in enumerate(["plain", "ünïcödé", "", "x" * 5000])]
    write_table(tmp_path / "with.parquet", docs_to_table(docs))
    script = f"""
import sys
from stage2.io.parts import arrow_without_pandas, docs_to_table, write_table
from stage2.documents import Document
arrow_without_pandas()
docs = {[(d.id, d.text, d.record, d.metadata) for d in docs]!r}
write_table({str(tmp_path / "without.parquet")!r}, docs_to_table([Document(id=i, text=t, component="c", source="s", record=r, metadata=m) for i, t, r, m in docs]))
assert "pandas" not in sys.modules
import pyarrow.parquet as pq
assert pq.ParquetFile({str(tmp_path / "without.parquet")!r}).read().to_pandas().shape == (4, 6)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (tmp_path / "without.parquet").read_bytes() == (tmp_path / "with.parquet").read_bytes()


def test_no_document_text_travels_through_the_executor(tmp_path, plain_config):
    """Tasks carry plans and paths, results carry counts: what any executor (a process pool, Ray's object
    store) pickles holds no document's text, and stays small however large the partitions are."""
    import pickle

    docs = sample_records("web_stackexchange.jsonl.gz", 300)
    write_jsonl(tmp_path / "in" / "web.jsonl", docs + docs[:40])  # copies: the dedup passes have work
    cfg = plain_config("stage=filter", "progress=false", "dataset=files", f"dataset.paths=[{tmp_path / 'in' / 'web.jsonl'}]",
                       "executor.workers=2", "dataset.partition_size=60", "filter.keep_rejected=5")
    run = start_run(tmp_path / "run", cfg)
    sent: List[bytes] = []
    pool_map = run.executor.map

    def pickling_map(fn, tasks):
        tasks = list(tasks)
        sent.extend(pickle.dumps(t) for t in tasks)
        for result in pool_map(fn, tasks):
            sent.append(pickle.dumps(result))
            yield result

    run.executor.map = pickling_map
    try:
        filter_stage.run(run)
    finally:
        run.executor.close()
    stats = run.stats["stages"]["filter"]["components"]["web"]
    assert stats["dropped"]["duplicate"] >= 30 and stats["kept"] > 100  # (copies of documents the screen dropped are not duplicates)
    assert len(sent) >= 2 * (6 + 2 + 6)  # the screen, resolve and decide tasks and their results
    pieces = [d["text"][i : i + 40].encode() for d in docs if len(d["text"]) >= 200 for i in (0, 100)]
    for message in sent:
        assert len(message) < 16_000
        assert not any(piece in message for piece in pieces)
