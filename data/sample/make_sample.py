"""How data/sample/ was made from the team's dev corpora (shared/data, see README.md here).

    uv run python data/sample/make_sample.py <path to shared/data>

Files are copied unchanged except: the code set is converted to parquet, and the UDHR set is cut to
its first 2,000 records and recompressed with zstd (so the sample exercises parquet and .zst too).
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

src = Path(sys.argv[1])
out = Path(__file__).resolve().parent

for name, target in [
    ("en_web_stackexchange_dev.jsonl.gz", "web_stackexchange.jsonl.gz"),
    ("en_web_cc_samples_dev.jsonl.gz", "web_cc.jsonl.gz"),
    ("en_foldoc_dev.jsonl.gz", "foldoc.jsonl.gz"),
    ("multiling_fortunes_dev.jsonl.gz", "noisy_fortunes.jsonl.gz"),
    ("multiling_tldr_dev.jsonl.gz", "noisy_tldr.jsonl.gz"),
    ("neardup_dev_docs.jsonl.gz", "noisy_neardup.jsonl.gz"),
]:
    shutil.copyfile(src / name, out / target)

code = [json.loads(line) for line in gzip.open(src / "code_python_pip_setuptools_dev.jsonl.gz", "rt", encoding="utf-8")]
table = pa.table(
    {
        "id": [d["id"] for d in code],
        "text": [d["text"] for d in code],
        "source": [d["source"] for d in code],
        "meta": [json.dumps(d.get("meta") or {}, sort_keys=True) for d in code],
    }
)
pq.write_table(table, out / "code_pip_setuptools.parquet", compression="zstd")

lines = gzip.open(src / "multiling_udhr_dev.jsonl.gz", "rt", encoding="utf-8").readlines()[:2000]
with open(out / "noisy_udhr.jsonl.zst", "wb") as f:
    f.write(zstandard.ZstdCompressor(level=19).compress("".join(lines).encode("utf-8")))
