"""The quality steps against datatrove's own filters: keep/drop agreement and CPU per document.
Writes benchmarks/results/quality_agreement.md and .json.

    uv run python -m benchmarks.quality_agreement                # data: ../shared/data or $STAGE2_SHARED_DATA
    uv run python -m benchmarks.quality_agreement --repeats 1    # a quicker look

datatrove is never a dependency of stage2: it runs in a separate virtual environment (the "peers"),
through benchmarks/quality_peer.py in a subprocess of that environment's Python:

    python -m venv /tmp/peers && /tmp/peers/bin/pip install 'datatrove[io,processing]' spacy

(`--peers PYTHON` or $STAGE2_PEERS_PYTHON names another one; datatrove's English word splitter is
spaCy's blank English tokenizer, which needs no model download.)

Documents: every document of en_web_stackexchange_dev and en_web_cc_samples_dev (real web text:
Stack Exchange posts and Common Crawl pages), each step alone on all of them, with datatrove's
default arguments (and C4 once more with FineWeb's `filter_no_terminal_punct=False`).
Speed: CPU seconds (time.process_time; the machine is shared, so wall time would measure the other
jobs) of the loop over all documents, the best of --repeats runs. datatrove: each run is a fresh
process, timed after one warm-up document has loaded spaCy. stage2: each run starts with an empty
chunk memo (text.clear_cache), so the figure includes analysing every distinct chunk once.
Goals: >= 99 % the same keep/drop verdicts, >= 10x less CPU per document, for every step.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.common import REPO, machine, md_table, read_jsonl, shared_data_dir, write_results
from stage2.documents import Document
from stage2.steps.quality import text
from stage2.steps.base import STEPS

FILES = ("en_web_stackexchange_dev.jsonl.gz", "en_web_cc_samples_dev.jsonl.gz")
PEER = REPO / "benchmarks" / "quality_peer.py"
# (label, step, settings: the same for stage2's step and datatrove's filter)
CASES: List[Tuple[str, str, Dict[str, Any]]] = [
    ("gopher_repetition", "gopher_repetition", {}),
    ("gopher_quality", "gopher_quality", {}),
    ("c4_quality", "c4_quality", {}),
    ("c4_quality, filter_no_terminal_punct=false (FineWeb's)", "c4_quality", {"filter_no_terminal_punct": False}),
    ("fineweb_quality", "fineweb_quality", {}),
]
# datatrove's drop reasons -> the steps' failed_rule
REASONS = {
    "empty": "empty",
    **{r: r for r in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")},
    **{f"top_{n}_gram": f"top_{n}_gram" for n in (2, 3, 4)},
    **{f"duplicated_{n}_n_grams": f"dup_{n}_gram" for n in range(5, 11)},
    "gopher_short_doc": "min_doc_words",
    "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length",
    "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "max_symbol_word_ratio",
    "gopher_too_many_ellipsis": "max_symbol_word_ratio",
    "gopher_too_many_bullets": "max_bullet_lines_ratio",
    "gopher_too_many_end_ellipsis": "max_ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "max_non_alpha_words_ratio",
    "gopher_enough_stop_words": "min_stop_words",
    "lorem_ipsum": "filter_lorem_ipsum",
    "curly_bracket": "filter_curly_bracket",
    "too_few_sentences": "min_num_sentences",
    "line_punct_ratio": "line_punct_thr",
    "short_line_ratio": "short_line_thr",
    "char_dup_ratio": "char_duplicates_ratio",
    "list_ratio": "new_line_ratio",
}


KNOWN = """### Known differences from datatrove

None of these changed a verdict on the documents above; each could on other text.

- **Words.** `stage2/steps/quality/text.py` re-implements spaCy's English tokenizer (affix rules,
  URL match, special cases) without spaCy. Where it still differs: spaCy's matcher for special
  cases that contain punctuation also matches across a space, and a longer match found that way
  hides a shorter one (`maybe?:) )` gives `:` `)` in spaCy, `:)` here); its character classes
  list scripts one by one, while here a letter is what Python calls one, so text in other
  scripts splits differently at `-` `/` `.` (Thai and the vowel signs of Devanagari are letters
  here, not in spaCy; a CJK or Hangul name after a dot is a URL's domain to spaCy, not here);
  special cases with spaces in them are not in the table.
- **Sentence terminals.** spaCy's sentencizer knows 128 sentence terminals, Unicode (and datatrove's
  TERMINAL_PUNCTUATION) 159; these steps use the 159 for both, so the 31 newer ones (Khmer `។`,
  Arabic `؝` ...) end C4 sentences here, not in datatrove.
- **Repeated n-grams.** datatrove keys an n-gram by its words joined without spaces, so two
  different n-grams with the same letters (`ab c`, `a bc`) count as one; here they are two.
- **No words at all.** datatrove's Gopher quality filter divides by zero on a text without tokens
  (reachable only with `min_doc_words` off); here its ratios are 0.
"""


def _load() -> float:
    return os.getloadavg()[0]


def peers_python(arg: Optional[str]) -> str:
    path = arg or os.environ.get("STAGE2_PEERS_PYTHON") or "/tmp/peers/bin/python"
    if not Path(path).exists():
        raise SystemExit(
            f"no peers' Python at {path}: create it with\n"
            "  python -m venv /tmp/peers && /tmp/peers/bin/pip install 'datatrove[io,processing]' spacy\n"
            "or name one with --peers / $STAGE2_PEERS_PYTHON"
        )
    return path


def run_peer(python: str, step: str, docs_file: Path, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        args = [python, str(PEER), step, str(docs_file), str(out)] + ([json.dumps(kwargs)] if kwargs else [])
        subprocess.run(args, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return json.loads(out.read_text(encoding="utf-8"))


def run_ours(step: str, settings: Dict[str, Any], docs: List[Document], repeats: int) -> Tuple[list, float, float]:
    """Verdicts, best CPU seconds from an empty memo, and CPU seconds of one more run with it warm."""
    cls = STEPS[step]
    best, verdicts = float("inf"), None
    for _ in range(repeats):
        text.clear_cache()
        judge = cls(cls.Settings(**settings))
        started = time.process_time()
        verdicts = judge.judge(docs)
        best = min(best, time.process_time() - started)
    started = time.process_time()
    cls(cls.Settings(**settings)).judge(docs)
    return verdicts, best, time.process_time() - started


def token_diff(ours: List[str], theirs: List[str]) -> str:
    """The first place the two word lists differ, as `spaCy [..] / here [..]`."""
    sm = difflib.SequenceMatcher(None, theirs, ours, autojunk=False)
    for op, a1, a2, b1, b2 in sm.get_opcodes():
        if op != "equal":
            return f"spaCy {theirs[a1:a2]} / here {ours[b1:b2]}"
    return ""


def describe(v) -> str:
    return "keep" if v is None else v.detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per step and side (best kept)")
    parser.add_argument("--peers", default=None, help="the Python of a venv with datatrove and spaCy")
    parser.add_argument("--limit", type=int, default=0, help="documents per file (0: all); a quick look")
    parser.add_argument("--files", nargs="+", default=list(FILES), help="dev corpora files to judge (default: the web ones)")
    args = parser.parse_args()
    python = peers_python(args.peers)
    data = shared_data_dir()

    records: List[Dict[str, Any]] = []
    per_file: Dict[str, int] = {}
    for name in args.files:
        rows = list(read_jsonl(data / name))
        rows = rows[: args.limit] if args.limit else rows
        per_file[name] = len(rows)
        records += [{"id": r["id"], "text": r["text"], "file": name} for r in rows]
    docs = [Document(id=r["id"], text=r["text"], component="web", source=r["file"], record=i + 1) for i, r in enumerate(records)]
    n = len(docs)
    print(f"{n} documents; datatrove at {python}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        docs_file = Path(tmp) / "docs.jsonl"
        docs_file.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in records), encoding="utf-8")
        spacy_words = run_peer(python, "tokens", docs_file, {})
        versions = {"datatrove": spacy_words["datatrove"], "spacy": spacy_words["spacy"]}
        ours_words = [text.words(r["text"]) for r in records]
        same_words = [a == b for a, b in zip(ours_words, spacy_words["words"])]
        word_diffs = [[r["id"], token_diff(w, sw)] for r, w, sw, same in zip(records, ours_words, spacy_words["words"], same_words) if not same]
        print(f"words identical to spaCy's on {sum(same_words)}/{n} documents", flush=True)

        rows, summary, details = [], {}, []
        loads = [_load()]
        for label, step, settings in CASES:
            runs = [run_peer(python, step, docs_file, settings) for _ in range(args.repeats)]
            theirs = runs[0]["verdicts"]
            dt_cpu = min(r["cpu_s"] for r in runs)
            ours, our_cpu, our_warm = run_ours(step, settings, docs, args.repeats)
            loads.append(_load())
            agree = sum((v is None) == (t is True) for v, t in zip(ours, theirs))
            both_drop = [(v, t) for v, t in zip(ours, theirs) if v is not None and t is not True]
            same_rule = sum(REASONS.get(t) == v.values["failed_rule"] for v, t in both_drop)
            dropped_dt = sum(t is not True for t in theirs)
            dt_ms, our_ms = dt_cpu / n * 1e3, our_cpu / n * 1e3
            rows.append([
                label, f"{agree / n * 100:.2f} % ({agree}/{n})", f"{dropped_dt} / {sum(v is not None for v in ours)}",
                f"{same_rule}/{len(both_drop)}", f"{dt_ms:.3f}", f"{our_ms:.3f}", f"{dt_ms / our_ms:.1f}x",
                f"{our_warm / n * 1e3:.3f}",
            ])
            summary[label] = {
                "step": step, "settings": settings, "agreement": agree / n, "documents": n,
                "dropped_datatrove": dropped_dt, "dropped_stage2": sum(v is not None for v in ours),
                "same_rule_when_both_drop": [same_rule, len(both_drop)],
                "datatrove_ms_per_doc": dt_ms, "stage2_ms_per_doc": our_ms, "speedup": dt_ms / our_ms,
                "stage2_warm_ms_per_doc": our_warm / n * 1e3,
            }
            for i, (v, t) in enumerate(zip(ours, theirs)):
                if (v is None) != (t is True):
                    details.append([
                        label, records[i]["id"], describe(v), "keep" if t is True else t,
                        "same" if same_words[i] else token_diff(ours_words[i], spacy_words["words"][i]),
                    ])
            print(f"{label}: {agree}/{n} agree, datatrove {dt_ms:.3f} ms/doc, stage2 {our_ms:.3f} ms/doc ({dt_ms / our_ms:.1f}x)", flush=True)

    md = [
        "## Quality steps vs datatrove's filters",
        "",
        f"Machine: {machine()}, shared with other jobs; 1-minute load average {min(loads):.2f}-{max(loads):.2f}. "
        f"datatrove {versions['datatrove']} and spaCy {versions['spacy']} in their own venv (benchmarks/quality_peer.py).",
        f"Documents: {n} ({', '.join(f'{k}: {v}' for k, v in per_file.items())}), every step alone on all of them, "
        "datatrove's default arguments on both sides.",
        f"CPU: time.process_time of the loop over all documents, best of {args.repeats} runs "
        "(datatrove: a fresh process each, after a warm-up document; stage2: an empty chunk memo each; "
        "\"warm\": one more stage2 run with the memo filled, as in a long partition).",
        "",
        md_table(
            ["step", "same keep/drop", "dropped (datatrove / stage2)", "same rule when both drop", "datatrove ms/doc", "stage2 ms/doc", "less CPU", "stage2 warm ms/doc"],
            rows,
        ),
        "",
        f"Words (datatrove's split_into_words, spaCy's blank English tokenizer, vs stage2.steps.quality.text.words) "
        f"identical on {sum(same_words)}/{n} documents.",
        "",
        md_table(["document", "first difference"], word_diffs) if word_diffs else "",
        "",
        "### Every disagreement",
        "",
        md_table(["step", "document", "stage2", "datatrove", "words vs spaCy's"], details) if details else "None.",
        "",
        KNOWN,
    ]
    write_results("quality_agreement", "\n".join(md), {
        "documents": n, "files": per_file, "versions": versions, "repeats": args.repeats,
        "words_identical": sum(same_words), "steps": summary, "disagreements": len(details),
        "load_average": [min(loads), max(loads)],
    })
    print("\n".join(md))


if __name__ == "__main__":
    main()
