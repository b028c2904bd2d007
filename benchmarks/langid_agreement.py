"""`langdetect_fast` vs plain langdetect (seed 0): keep/drop agreement and speed on the dev corpora.
Writes benchmarks/results/langid_agreement.md and .json.

    uv run python -m benchmarks.langid_agreement            # data: ../shared/data or $STAGE2_SHARED_DATA
    uv run python -m benchmarks.langid_agreement --limit 2000   # a quick look

Documents: every document of multiling_*_dev and en_*_dev with >= filter.min_chars characters.
Verdicts use the shipped filter recipe (filter.languages, filter.lang_threshold, filter.lang_max_chars
and the text cleaning of stage2.langid.language_text), as the filter stage applies them.
Speed: both backends in this one process over the same documents, timed block by block in turn
(the machine is shared: alternating keeps the ratio fair when the load changes), then
`langdetect_fast` in 2 spawned worker processes (profiles loaded before timing) against the
one-process langdetect time. Goals: >= 99 % same verdicts; >= 10x on 2 cores (>= 5x per core).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import time
from typing import Any, Dict, List, Sequence, Tuple

from benchmarks.common import RESULTS, machine, md_table, read_jsonl, shared_data_dir
from benchmarks.filter_quality import filter_cfg
from stage2.langid import LangVerdict, get_backend, identify

FILES = (
    "multiling_fortunes_dev.jsonl.gz",
    "multiling_tldr_dev.jsonl.gz",
    "multiling_udhr_dev.jsonl.gz",
    "en_foldoc_dev.jsonl.gz",
    "en_web_stackexchange_dev.jsonl.gz",
    "en_web_cc_samples_dev.jsonl.gz",
)
BLOCK = 250  # documents per alternating timing block
WORKER_CHUNK = 100  # documents per task for the 2-worker run


def _identify(texts: Sequence[str], backend: str, languages: Sequence[str], max_chars: int) -> List[LangVerdict]:
    detector = get_backend(backend)
    return [identify(t, detector, languages, max_chars) for t in texts]


def _warm(backend: str) -> None:
    get_backend(backend)
    time.sleep(1.0)  # hold this worker so the other one loads too


def _timed(texts: List[str], f: Dict[str, Any]) -> Tuple[List[LangVerdict], List[LangVerdict], float, float]:
    args = (f["languages"], f["lang_max_chars"])
    get_backend("langdetect"), get_backend("langdetect_fast")  # loading is not part of the per-doc cost
    ref: List[LangVerdict] = []
    nb: List[LangVerdict] = []
    t_ref = t_nb = 0.0
    for start in range(0, len(texts), BLOCK):
        block = texts[start : start + BLOCK]
        t0 = time.perf_counter()
        ref += _identify(block, "langdetect", *args)
        t1 = time.perf_counter()
        nb += _identify(block, "langdetect_fast", *args)
        t2 = time.perf_counter()
        t_ref += t1 - t0
        t_nb += t2 - t1
    return ref, nb, t_ref, t_nb


def _two_workers(texts: List[str], f: Dict[str, Any]) -> Tuple[List[LangVerdict], float]:
    ctx = multiprocessing.get_context("spawn")  # as the executor's workers
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        list(pool.map(_warm, ["langdetect_fast"] * 2))
        chunks = [texts[i : i + WORKER_CHUNK] for i in range(0, len(texts), WORKER_CHUNK)]
        n = len(chunks)
        t0 = time.perf_counter()
        out = pool.map(_identify, chunks, ["langdetect_fast"] * n, [f["languages"]] * n, [f["lang_max_chars"]] * n)
        verdicts = [v for chunk in out for v in chunk]
        return verdicts, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="documents to use, spread over the set (0: all)")
    args = parser.parse_args()

    f = filter_cfg("langdetect")
    threshold = float(f["lang_threshold"])
    data = shared_data_dir()
    docs = [(name, d["text"]) for name in FILES for d in read_jsonl(data / name) if len(d["text"]) >= f["min_chars"]]
    if args.limit:
        docs = docs[:: max(1, len(docs) // args.limit)]
    texts = [t for _, t in docs]

    ref, nb, t_ref, t_nb = _timed(texts, f)
    nb2, t_nb2 = _two_workers(texts, f)

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
    max_diff = max(max(abs(a.score - b.score), abs(a.target_score - b.target_score)) for a, b in zip(ref, nb))
    per_file = []
    for name in FILES:
        idx = [i for i, (n, _) in enumerate(docs) if n == name]
        if idx:
            agree = sum(keep_ref[i] == keep_nb[i] for i in idx)
            per_file.append([name, len(idx), sum(keep_ref[i] for i in idx), agree / len(idx)])
    n = len(texts)
    summary = {
        "machine": machine(),
        "documents": n,
        "languages": list(f["languages"]),
        "threshold": threshold,
        "lang_max_chars": f["lang_max_chars"],
        "verdict_agreement": same / n,
        "top_language_agreement": same_top / n,
        "max_probability_difference": max_diff,
        "confusion": confusion,
        "two_worker_verdicts_identical": nb2 == nb,
        "ms_per_doc": {"langdetect": 1e3 * t_ref / n, "langdetect_fast": 1e3 * t_nb / n},
        "speedup_one_process": t_ref / t_nb,
        "two_workers_seconds": t_nb2,
        "speedup_two_workers_vs_one_process_langdetect": t_ref / t_nb2,
        "per_file": [dict(zip(["file", "docs", "kept_by_langdetect", "agreement"], row)) for row in per_file],
    }
    md = [
        "## langdetect_fast vs langdetect (seed 0)\n",
        f"Machine: {machine()}, shared with other jobs (figures are ratios measured in one run).",
        f"Documents: {n} with >= {f['min_chars']} chars from {', '.join(FILES)}; verdict = keep if the probability "
        f"of {f['languages']} >= {threshold} (first {f['lang_max_chars']} chars, stage2.langid.language_text).\n",
        md_table(
            ["measure", "value"],
            [
                ["same keep/drop verdict", f"{100 * same / n:.3f} % ({same}/{n})"],
                ["same top language", f"{100 * same_top / n:.3f} % ({same_top}/{n})"],
                ["largest probability difference", f"{max_diff:.2e}"],
                ["langdetect, 1 process", f"{1e3 * t_ref / n:.3f} ms/doc"],
                ["langdetect_fast, 1 process", f"{1e3 * t_nb / n:.3f} ms/doc ({t_ref / t_nb:.2f}x)"],
                ["langdetect_fast, 2 worker processes", f"{t_nb2:.2f} s for all ({t_ref / t_nb2:.2f}x one-process langdetect)"],
                ["2-worker verdicts identical to 1-process", str(nb2 == nb)],
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
