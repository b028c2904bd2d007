"""Writes data/ of this example from the embedded sample (data/sample/ of the stage2 checkout): the first
records of three of its files, in three layouts a user's own data often has. Run from the checkout:
`uv run python examples/my_mixture/make_data.py`. Licences: those of data/sample/README.md."""

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "data" / "sample"


def first(name: str, n: int):
    with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def main() -> None:
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    # JSON lines with their own column names: text in "body", ids in "post_id".
    with open(out / "posts.jsonl", "w", encoding="utf-8") as f:
        for r in first("web_stackexchange.jsonl.gz", 250):
            f.write(json.dumps({"post_id": r["id"], "body": r["text"]}, ensure_ascii=False) + "\n")
    # Plain text, one document per paragraph (entries separated by a blank line).
    entries = [r["text"].strip() for r in first("foldoc.jsonl.gz", 200)]
    (out / "glossary.txt").write_text("\n\n".join(e.replace("\n\n", "\n") for e in entries) + "\n", encoding="utf-8")
    # Source files, compressed, the text in "content" and the file's path as its id.
    rows = pq.read_table(SAMPLE / "code_pip_setuptools.parquet").slice(0, 40).to_pylist()
    with gzip.GzipFile(out / "code.jsonl.gz", "wb", mtime=0) as f:
        for r in rows:
            f.write((json.dumps({"path": r["id"], "content": r["text"]}, ensure_ascii=False) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
