"""`langdetect_fast` vs plain langdetect (seed 0): keep/drop agreement and speed on the dev corpora.
Writes benchmarks/results/langid_agreement.md and .json.

    uv run python -m benchmarks.langid_agreement            # data: ../shared/data or $STAGE2_SHARED_DATA
    uv run python -m benchmarks.langid_agreement --limit 2000   # a quick look

Documents: every document of multiling_*_dev and en_*_dev with >= filter.min_chars characters.
Verdicts use the shipped recipe's langdetect step (filter.languages, filter.lang_threshold,
filter.lang_max_chars and the text cleaning of stage2.lid.backends.language_text).
Speed, in CPU seconds (time.process_time: the machine is shared, so wall time says more about the
other jobs than about this code) in this one process: every block of BLOCK documents (a partition)
is identified in turn by langdetect one text at a time, by `langid_fast.detect_batch` (the whole
block: what `stage2.lid.backends.rank_all` hands it) and by `langid_fast.detect` one text at a time, so a
change of load hits all three alike. Then `detect_batch` in 2 spawned worker processes (wall seconds,
profiles loaded before timing) against the one-process langdetect CPU time. The 1-minute load
average is recorded with every figure. Goals: >= 99 % same verdicts; >= 10x on 2 cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import time
from typing import Callable, Dict, List, Sequence, Tuple

from benchmarks.common import RESULTS, machine, md_table, read_jsonl, shared_data_dir
from benchmarks.filter_quality import filter_cfg
from stage2.config import FilterConfig
from stage2.lid import langdetect_fast as langid_fast
from stage2.lid.rule import judge
from stage2.lid.backends import UNKNOWN, LangVerdict, get_backend, identify, language_text, target_score

FILES = (
    "multiling_fortunes_dev.jsonl.gz",
    "multiling_tldr_dev.jsonl.gz",
    "multiling_udhr_dev.jsonl.gz",
    "en_foldoc_dev.jsonl.gz",
    "en_web_stackexchange_dev.jsonl.gz",
    "en_web_cc_samples_dev.jsonl.gz",
)
BLOCK = 2000  # documents per timing block and per worker task: dataset.partition_size
WAYS = ("langdetect", "batch", "alone")  # langdetect per text, langdetect_fast batch, langdetect_fast per text


def _load() -> float:
    return os.getloadavg()[0]


def _verdict(ranked: List[Tuple[str, float]], languages: Sequence[str]) -> LangVerdict:
    """stage2.lid.backends.identify's verdict from a ranked list."""
    if not ranked:
        return LangVerdict(UNKNOWN, 0.0, 0.0)
    return LangVerdict(ranked[0][0], float(ranked[0][1]), target_score(ranked, languages))


def _per_text(backend: str) -> Callable[[Sequence[str], Sequence[str], int], List[LangVerdict]]:
    def run(texts: Sequence[str], languages: Sequence[str], max_chars: int) -> List[LangVerdict]:
        detector = get_backend(backend)
        return [identify(t, detector, languages, max_chars) for t in texts]

    return run


def _batch(texts: Sequence[str], languages: Sequence[str], max_chars: int) -> List[LangVerdict]:
    ranked = langid_fast.detect_batch([language_text(t, max_chars) for t in texts])
    return [_verdict(r, languages) for r in ranked]


def _warm(_: int) -> None:
    langid_fast.profiles()
    _batch(["warm up the caches"] * 20, ["en"], 2000)
    time.sleep(1.0)  # hold this worker so the other one loads too


def _timed(texts: List[str], f: FilterConfig) -> Tuple[Dict[str, List[LangVerdict]], Dict[str, float], List[float]]:
    """Verdicts and CPU seconds of each way, block by block in turn; the load after each block."""
    ways = {"langdetect": _per_text("langdetect"), "batch": _batch, "alone": _per_text("langdetect_fast")}
    for way in ways.values():  # loading profiles and the first-use caches is not per-document cost
        way(texts[:20], f.languages, f.lang_max_chars)
    verdicts: Dict[str, List[LangVerdict]] = {w: [] for w in WAYS}
    cpu = dict.fromkeys(WAYS, 0.0)
    loads = []
    for start in range(0, len(texts), BLOCK):
        block = texts[start : start + BLOCK]
        for name in WAYS:
            t0 = time.process_time()
            verdicts[name] += ways[name](block, f.languages, f.lang_max_chars)
            cpu[name] += time.process_time() - t0
        loads.append(_load())
    return verdicts, cpu, loads


def _two_workers(texts: List[str], f: FilterConfig) -> Tuple[List[LangVerdict], float, float]:
    ctx = multiprocessing.get_context("spawn")  # as the executor's workers
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        list(pool.map(_warm, range(2)))
        size = min(BLOCK, -(-len(texts) // 4))  # (a --limit run still gives both workers tasks)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        n = len(chunks)
        t0 = time.perf_counter()
        out = pool.map(_batch, chunks, [f.languages] * n, [f.lang_max_chars] * n)
        verdicts = [v for chunk in out for v in chunk]
        return verdicts, time.perf_counter() - t0, _load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="documents to use, spread over the set (0: all)")
    args = parser.parse_args()

    f = filter_cfg([])
    threshold = float(f.lang_threshold)
    data = shared_data_dir()
    docs = [(name, d["text"]) for name in FILES for d in read_jsonl(data / name) if len(d["text"]) >= f.min_chars]
    if args.limit:
        docs = docs[:: max(1, len(docs) // args.limit)]
    texts = [t for _, t in docs]

    verdicts, cpu, loads = _timed(texts, f)
    ref, nb = verdicts["langdetect"], verdicts["batch"]
    nb2, t_nb2, load2 = _two_workers(texts, f)

    keep_ref = [v.target_score >= threshold for v in ref]
    keep_nb = [v.target_score >= threshold for v in nb]
    same = sum(a == b for a, b in zip(keep_ref, keep_nb))
    confusion = {
        f"langdetect {'keep' if a else 'drop'} / langdetect_fast {'keep' if b else 'drop'}": sum(
            x == a and y == b for x, y in zip(keep_ref, keep_nb)
        )
        for a in (True, False)
        for b in (True, False)
    }
    same_top = sum(a.language == b.language for a, b in zip(ref, nb))
    identical = sum(a == b for a, b in zip(ref, nb))
    max_diff = max(max(abs(a.score - b.score), abs(a.target_score - b.target_score)) for a, b in zip(ref, nb))
    per_file = []
    for name in FILES:
        idx = [i for i, (n, _) in enumerate(docs) if n == name]
        if idx:
            agree = sum(keep_ref[i] == keep_nb[i] for i in idx)
            per_file.append([name, len(idx), sum(keep_ref[i] for i in idx), agree / len(idx)])
    n = len(texts)
    # The shipped recipe (checks before langdetect_fast, stage2/lid/rule.py) against plain langdetect:
    # the checks may only drop what langdetect keeps (they run first and never add a document).
    recipe = judge(texts, f.language_rule())["passed"]
    recipe_same = sum(a == b for a, b in zip(keep_ref, recipe))
    recipe_added = sum(b and not a for a, b in zip(keep_ref, recipe))
    ms = {w: 1e3 * cpu[w] / n for w in WAYS}
    load_range = f"{min(loads):.2f}-{max(loads):.2f}"
    summary = {
        "machine": machine(),
        "documents": n,
        "languages": list(f.languages),
        "threshold": threshold,
        "lang_max_chars": f.lang_max_chars,
        "verdict_agreement": same / n,
        "shipped_recipe_agreement": recipe_same / n,
        "top_language_agreement": same_top / n,
        "identical_verdicts": identical / n,
        "max_probability_difference": max_diff,
        "confusion": confusion,
        "per_text_verdicts_identical_to_batch": verdicts["alone"] == nb,
        "two_worker_verdicts_identical": nb2 == nb,
        "cpu_ms_per_doc": {"langdetect": ms["langdetect"], "langdetect_fast_batch": ms["batch"], "langdetect_fast_per_text": ms["alone"]},
        "speedup_one_process_cpu": {"batch": cpu["langdetect"] / cpu["batch"], "per_text": cpu["langdetect"] / cpu["alone"]},
        "load_1min_during_one_process": [min(loads), max(loads)],
        "two_workers_seconds": t_nb2,
        "load_1min_after_two_workers": load2,
        "speedup_two_workers_vs_one_process_langdetect": cpu["langdetect"] / t_nb2,
        "per_file": [dict(zip(["file", "docs", "kept_by_langdetect", "agreement"], row)) for row in per_file],
    }
    md = [
        "## langdetect_fast vs langdetect (seed 0)\n",
        f"Machine: {machine()}, shared with other jobs: times are CPU seconds in one process (ratios measured "
        f"block by block in turn), except the 2-worker run (wall). 1-minute load average {load_range} during "
        f"the one-process blocks, {load2:.2f} after the 2-worker run.",
        f"Documents: {n} with >= {f.min_chars} chars from {', '.join(FILES)}; verdict = keep if the probability "
        f"of {f.languages} >= {threshold} (first {f.lang_max_chars} chars, stage2.lid.backends.language_text).\n",
        md_table(
            ["measure", "value"],
            [
                ["same keep/drop verdict", f"{100 * same / n:.3f} % ({same}/{n})"],
                ["shipped recipe (fastText check, function words, langdetect_fast) vs langdetect's keep/drop",
                 f"{100 * recipe_same / n:.3f} % ({recipe_same}/{n}; {n - recipe_same - recipe_added} kept by langdetect, dropped by the checks; {recipe_added} the other way)"],
                ["same top language", f"{100 * same_top / n:.3f} % ({same_top}/{n})"],
                ["identical verdicts (language, probabilities)", f"{100 * identical / n:.3f} % ({identical}/{n})"],
                ["largest probability difference", f"{max_diff:.2e}"],
                ["langdetect, 1 text at a time", f"{ms['langdetect']:.3f} ms CPU/doc"],
                [f"langdetect_fast.detect_batch, {BLOCK} texts at a time", f"{ms['batch']:.3f} ms CPU/doc ({cpu['langdetect'] / cpu['batch']:.2f}x)"],
                ["langdetect_fast.detect, 1 text at a time", f"{ms['alone']:.3f} ms CPU/doc ({cpu['langdetect'] / cpu['alone']:.2f}x)"],
                ["detect_batch, 2 worker processes", f"{t_nb2:.2f} s wall for all ({cpu['langdetect'] / t_nb2:.2f}x one-process langdetect)"],
                ["per-text and 2-worker verdicts identical to batch", str(verdicts["alone"] == nb and nb2 == nb)],
            ],
        ),
        "\n### Verdict confusion\n",
        md_table(["langdetect \\ langdetect_fast", "keep", "drop"], [
            ["keep", confusion["langdetect keep / langdetect_fast keep"], confusion["langdetect keep / langdetect_fast drop"]],
            ["drop", confusion["langdetect drop / langdetect_fast keep"], confusion["langdetect drop / langdetect_fast drop"]],
        ]),
        "\n### Per file\n",
        md_table(["file", "docs", "kept by langdetect", "agreement"], per_file),
        "",
    ]
    text = "\n".join(md)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "langid_agreement.md").write_text(text, encoding="utf-8")
    (RESULTS / "langid_agreement.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
