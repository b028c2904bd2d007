"""How tests/data/corpora/ was made: a seeded sample of every development corpus (../shared/data/*.jsonl.gz).

Per corpus, up to BUDGET bytes of text: first documents with a run of one character (where two
segmentations tie, the hard case for an exact tokenizer export), then random ones; documents over
MAX_DOC bytes are skipped. Documents keep their id and text only.

    uv run python tests/data/corpora/make_corpora.py /work/shared/data
"""

import gzip
import json
import random
import re
import sys
from pathlib import Path

BUDGET = 220_000  # bytes of text per corpus
MAX_DOC = 20_000
RUN = re.compile(r"(.)\1{5,}", re.S)


def main(shared: Path) -> None:
    out = Path(__file__).parent
    for path in sorted(shared.glob("*.jsonl.gz")):
        docs = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
        docs = [d for d in docs if isinstance(d.get("text"), str) and 0 < len(d["text"].encode("utf-8")) <= MAX_DOC]
        if not docs:
            continue  # neardup_dev_pairs: labels, no text
        rng = random.Random(0)
        rng.shuffle(docs)
        runs = [d for d in docs if RUN.search(d["text"])]
        picked, size = [], 0
        for d in runs[: len(runs) // 2] + [d for d in docs if not RUN.search(d["text"])] + runs[len(runs) // 2 :]:
            n = len(d["text"].encode("utf-8"))
            if size + n > BUDGET:
                continue
            picked.append({"id": d["id"], "text": d["text"]})
            size += n
        name = path.name.replace("_dev", "").replace(".jsonl.gz", "")
        with gzip.GzipFile(out / f"{name}.jsonl.gz", "wb", mtime=0) as f:
            f.write("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in picked).encode("utf-8"))
        print(name, len(picked), "docs", size, "bytes", sum(bool(RUN.search(d["text"])) for d in picked), "with runs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
