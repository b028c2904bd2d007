"""Runs one of datatrove's quality filters on a JSONL of documents; for benchmarks/quality_agreement.py.

Runs under the peers' Python (a venv with `datatrove[io,processing]` and spaCy), never stage2's:
it imports datatrove and the standard library only.

    /tmp/peers/bin/python benchmarks/quality_peer.py STEP DOCS.jsonl OUT.json [KWARGS_JSON]
    /tmp/peers/bin/python benchmarks/quality_peer.py tokens DOCS.jsonl OUT.json

STEP is gopher_repetition | gopher_quality | c4_quality | fineweb_quality; KWARGS_JSON the filter's
arguments. OUT gets each document's verdict (true, or the drop reason) and the CPU seconds of the
loop over all documents (time.process_time), after one warm-up document has loaded spaCy's
tokenizer. `tokens` writes spaCy's words of every document (datatrove's split_into_words) instead.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version


def main() -> None:
    step, docs_path, out_path = sys.argv[1:4]
    kwargs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    with open(docs_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    from datatrove.data import Document

    out = {"datatrove": version("datatrove"), "spacy": version("spacy")}
    if step == "tokens":
        from datatrove.utils.text import split_into_words

        out["words"] = [split_into_words(r["text"]) for r in records]
    else:
        from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

        cls = {
            "gopher_repetition": GopherRepetitionFilter,
            "gopher_quality": GopherQualityFilter,
            "c4_quality": C4QualityFilter,
            "fineweb_quality": FineWebQualityFilter,
        }[step]
        filt = cls(**kwargs)
        filt.filter(Document(text="A warm-up sentence loads the tokenizer. And a second one.\nA line.", id="warm-up"))
        docs = [Document(text=r["text"], id=r["id"]) for r in records]
        verdicts = []
        started = time.process_time()
        for doc in docs:
            result = filt.filter(doc)
            verdicts.append(True if result is True else (result[1] if isinstance(result, tuple) else bool(result)))
        out["cpu_s"] = time.process_time() - started
        out["verdicts"] = verdicts
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
