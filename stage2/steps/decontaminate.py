"""Benchmark decontamination: drop training documents that share a word n-gram with an evaluation item.

Both sides are normalised alike (`ngram_words`): lower-cased (`str.lower`), every punctuation, symbol,
control and format character (Unicode categories P*, S*, Cc, Cf) removed, and the text split at runs
of whitespace (`str.split`). That is datatrove's `simplify_text` (lowercase, whitespace, punctuation)
without its diacritics and number folding, and split at whitespace rather than by NLTK's tokenizer.
An eval item's text is its `columns` joined by a space. An item of at least `ngram` words gives its
word n-grams; a shorter one (of at least `min_item_words` words) is matched as a whole: a training
document holding its normalised words in a row matches; shorter items are skipped (counted).

The driver builds the index once per run (`prepare`): every n-gram's 64-bit hash (a polynomial over
per-word xxh3 hashes) and the item it came from, sorted, as .npy files in the run's work folder that
every worker memory-maps (the whole short items in a small index of their own); documents are hashed
a batch at a time with numpy, each window length once.
"""

from __future__ import annotations

import functools
import itertools
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import xxhash

from stage2.documents import Document
from stage2.errors import Stage2Error, SystemRefused
from stage2.steps.base import HUB_PREFIX, Drop, Rule, Step, StepInputs, Verdict, parse_hub_entry, register

if TYPE_CHECKING:  # numpy is imported by what builds or reads the index: the config imports every step, a driver needs no numpy
    import numpy as np

COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
PATHS_KEY = "filter.decontaminate.paths"  # what messages about an eval set's files name


@dataclass
class DecontaminateSettings:
    FILE_KEYS: ClassVar[Tuple[str, ...]] = ("paths",)
    HUB_KEYS: ClassVar[Tuple[str, ...]] = ("paths",)  # entries `hub:<path>[:<subset>[:<split>]][@<revision>]` name hub datasets

    # Eval sets: files or globs (jsonl/json/parquet/txt, compressed too; a .txt file: an item a line), or
    # hub datasets (`hub:cais/mmlu:all:test`). Each entry is one eval set, named after its file stem (a
    # glob: what is left of it without wildcards; a hub dataset: its name and subset, `mmlu/all`).
    paths: List[str] = field(default_factory=list)
    columns: List[str] = field(default_factory=lambda: ["text"])  # joined by a space: an item's text
    id_column: Optional[str] = "id"  # names the item in `detail` (a record without it: <file>:<record>)
    ngram: int = 13  # words per n-gram (GPT-3's and datatrove's 13)
    min_item_words: int = 5  # an item shorter than ngram words is matched whole if it has this many; shorter: skipped

    def active(self) -> bool:
        return bool(self.paths)

    def check(self, at: str) -> List[Rule]:
        malformed = next(filter(None, (_hub_entry_problem(p, f"{at}.paths") for p in self.paths or [] if p.startswith(HUB_PREFIX))), "")
        if malformed:
            return [(False, malformed)]
        names = [set_name(p) for p in self.paths or []]
        twice = sorted({n for n in names if names.count(n) > 1})
        return [
            (self.ngram >= 1, f"{at}.ngram={self.ngram} must be at least 1 (words per n-gram)"),
            (1 <= self.min_item_words <= self.ngram, f"{at}.min_item_words={self.min_item_words} must be 1 to {at}.ngram={self.ngram}"),
            (len(self.columns or []) >= 1, f"{at}.columns is empty: name the column(s) holding an eval item's text (e.g. [question,answer])"),
            (not twice, f"{at}.paths: two eval sets are named {twice[0]!r} (named after their file stems; a hub dataset after its name"
                        " and subset): rename a file, or join a hub dataset's splits in one entry (hub:<path>:<subset>:test+validation)" if twice else ""),
        ]


def _hub_entry_problem(entry: str, at: str) -> str:
    """What is wrong with how a `hub:` entry is written, or ""."""
    try:
        parse_hub_entry(entry, at)
    except Stage2Error as exc:
        return str(exc)
    return ""


def set_name(pattern: str) -> str:
    """`evals/mmlu.jsonl.gz` -> `mmlu`; `evals/hellaswag-*.parquet` -> `hellaswag`; `evals/arc/*.jsonl` -> `arc`;
    `hub:cais/mmlu:all:test` -> `mmlu/all`."""
    if pattern.startswith(HUB_PREFIX):
        return parse_hub_entry(pattern, PATHS_KEY).name
    base = os.path.basename(pattern)
    for suffix in COMPRESSION_SUFFIXES:
        base = base.removesuffix(suffix)
    stem = re.sub(r"\[[^\]]*\]|[*?]", "", base.split(".")[0]).strip("-_. ")
    return stem or os.path.basename(os.path.dirname(pattern.split("*")[0] + "x")) or "eval"


# ---- normalisation and hashing ------------------------------------------------------------------

_ASCII_SPACE = bytes(c if not chr(c).isspace() else 0x20 for c in range(256))  # (\x1c-\x1f are spaces to str.split too)
_ASCII_DROP = bytes(c for c in range(128) if not chr(c).isspace() and unicodedata.category(chr(c))[0] in "PSC")


class _Dropped(dict):
    """str.translate's table: code point -> None for the characters removed, filled as text meets them."""

    def __missing__(self, cp: int) -> Optional[int]:
        ch = chr(cp)
        value = None if not ch.isspace() and unicodedata.category(ch) in _DROP_CATEGORIES else cp
        self[cp] = value
        return value


_DROP_CATEGORIES = frozenset({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Cc", "Cf"})
_DROPPED = _Dropped()


def ngram_words(text: str) -> List[bytes]:
    """The normalised words of a text (module docstring), as UTF-8."""
    if text.isascii():  # (the same result, without a per-character table lookup)
        return text.encode("ascii").lower().translate(_ASCII_SPACE, _ASCII_DROP).split()
    return [w.encode("utf-8") for w in text.lower().translate(_DROPPED).split()]


_P = 0x9E3779B97F4A7C15  # odd: invertible mod 2^64
_P_INV = pow(_P, -1, 1 << 64)


def _powers(base: int, n: int) -> np.ndarray:
    import numpy as np

    out = np.full(n, base, dtype=np.uint64)
    if n:
        out[0] = 1
        np.cumprod(out, out=out)  # (wraps mod 2^64, as the hash's arithmetic does)
    return out


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial sum over all bits."""
    import numpy as np

    h = h ^ (h >> np.uint64(30))
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class WordBatch:
    """Many texts' words, hashed once; `windows(L)` gives every L-word window's hash within one text.

    A window's hash is mix(sum_j xxh3(word[i+j]) * P^j mod 2^64): from prefix sums S of xxh3(word[t]) * P^t,
    it is (S[i+L] - S[i]) * P^-i, two vector operations per window length whatever L is.
    """

    def __init__(self, words: Sequence[Sequence[bytes]]) -> None:
        import numpy as np

        self.words = words
        self.lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.ends = np.cumsum(self.lens)
        total = int(self.ends[-1]) if len(words) else 0
        w = np.fromiter(map(xxhash.xxh3_64_intdigest, itertools.chain.from_iterable(words)), dtype=np.uint64, count=total)
        self.prefix = np.zeros(total + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(w * _powers(_P, total), out=self.prefix[1:])
        self.total = total

    def windows(self, length: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, text, first word) of every window of `length` words inside one text."""
        import numpy as np

        n = self.total - length + 1
        if n <= 0:
            empty = np.empty(0, dtype=np.int64)
            return np.empty(0, dtype=np.uint64), empty, empty
        with np.errstate(over="ignore"):
            h = _mix((self.prefix[length:] - self.prefix[:n]) * _powers(_P_INV, n))
        starts = np.arange(n)
        text = np.searchsorted(self.ends, starts, side="right")
        inside = starts + length <= self.ends[text]
        first = starts - (self.ends - self.lens)[text]
        return h[inside], text[inside], first[inside]


# ---- the index ----------------------------------------------------------------------------------

INDEX_DIR = "decontaminate"
ITEMS_PER_BATCH = 20000


def item_text(doc: Document, columns: Sequence[str]) -> str:
    """The item's columns joined by a space (a list column: its values joined by a space)."""
    parts = [doc.text]
    for column in columns[1:]:
        if column not in doc.metadata:
            have = ", ".join(sorted(doc.metadata)) or "none besides the first"
            raise Stage2Error(f"{doc.location}: record {doc.record}: has no column {column!r} (filter.decontaminate.columns; other columns: {have})")
        parts.append(_as_text(doc.metadata[column]))
    return " ".join(parts)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(_as_text, value))
    return value if isinstance(value, str) else str(value)


def build_index(settings: DecontaminateSettings, folder: Path, inputs: StepInputs) -> Dict[str, Any]:
    """Read every eval set, write the index under `folder`; return its description (meta.json)."""
    import numpy as np

    n, floor = settings.ngram, settings.min_item_words
    sets: List[Dict[str, Any]] = []
    names: List[str] = []
    set_of: List[int] = []
    hashes: Dict[bool, List[np.ndarray]] = {False: [], True: []}  # short (whole items)? -> hashes
    owners: Dict[bool, List[np.ndarray]] = {False: [], True: []}
    short_lengths: set = set()
    for index, pattern in enumerate(settings.paths):
        files = inputs.files(pattern, PATHS_KEY)
        entry = {"name": set_name(pattern), "files": [os.path.basename(p) for p in files], "items": 0, "short_items": 0, "skipped_items": 0, "ngrams": 0}
        if pattern.startswith(HUB_PREFIX):
            entry["hub"] = pattern
        batch: List[Tuple[str, List[bytes]]] = []

        def flush() -> None:
            first = len(names)
            words = [w for _, w in batch]
            names.extend(name for name, _ in batch)
            set_of.extend([index] * len(batch))
            hashed = WordBatch(words)
            lens = hashed.lens
            for length in sorted({n, *(int(x) for x in lens[(lens < n) & (lens >= floor)])}):
                h, text, start = hashed.windows(length)
                keep = (lens[text] >= n) if length == n else (lens[text] == length) & (start == 0)
                hashes[length < n].append(h[keep])
                owners[length < n].append((first + text[keep]).astype(np.uint32))
                if length < n:
                    short_lengths.add(length)
            entry["short_items"] += int(((lens < n) & (lens >= floor)).sum())
            entry["skipped_items"] += int((lens < floor).sum())
            batch.clear()

        for path in files:
            for doc in inputs.read(path, settings.columns[0], settings.id_column):
                if doc.problem is not None:
                    raise Stage2Error(f"{doc.location}: record {doc.record}: {doc.problem} (an eval set of filter.decontaminate.paths)")
                batch.append((doc.id, ngram_words(item_text(doc, settings.columns))))
                entry["items"] += 1
                if len(batch) == ITEMS_PER_BATCH:
                    flush()
        if batch:
            flush()
        sets.append(entry)
    set_index = np.asarray(set_of, dtype=np.uint32)
    folder.mkdir(parents=True, exist_ok=True)
    for short, prefix in ((False, ""), (True, "short_")):
        h, o = _sorted_pairs(hashes[short], owners[short])
        for i, entry in enumerate(sets):
            entry["whole_items" if short else "ngrams"] = int(np.unique(h[set_index[o] == i]).size) if len(h) else 0
        for name, array in ((f"{prefix}hashes.npy", h), (f"{prefix}owners.npy", o)):
            _write(folder / name, lambda f, a=array: np.save(f, a))
    _write(folder / "item_sets.npy", lambda f: np.save(f, set_index))
    _write(folder / "items.json", lambda f: f.write(json.dumps(names, ensure_ascii=False).encode("utf-8")))
    meta = {"ngram": n, "min_item_words": floor, "short_lengths": sorted(short_lengths), "sets": sets}
    _write(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode("utf-8")))  # last: a folder with it holds a whole index
    return meta


def _sorted_pairs(hashes: List[np.ndarray], owners: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct (hash, item) pairs, by hash then item."""
    import numpy as np

    h = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    o = np.concatenate(owners) if owners else np.empty(0, dtype=np.uint32)
    order = np.lexsort((o, h))
    h, o = h[order], o[order]
    distinct = np.ones(len(h), dtype=bool)
    distinct[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
    return h[distinct], o[distinct]


def _write(path: Path, fill: Any) -> None:
    """Write a file whole or not at all (a killed build leaves no index a resume would trust)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            fill(f)
        os.replace(tmp, path)
    except OSError as exc:
        raise SystemRefused(f"{path}: cannot write the decontamination index: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=4)
def load_index(folder: str) -> Tuple[Dict[bool, Tuple[np.ndarray, np.ndarray]], np.ndarray, Dict[str, Any]]:
    """({short?: (hashes, owners)}, item_sets, meta) of an index, memory-mapped: the workers share the pages."""
    import numpy as np

    path = Path(folder)
    meta = json.loads((path / "meta.json").read_text())
    load = lambda name: np.load(path / name, mmap_mode="r") if (path / name).stat().st_size > 128 else np.load(path / name)  # noqa: E731
    pairs = {short: (load(f"{prefix}hashes.npy"), load(f"{prefix}owners.npy")) for short, prefix in ((False, ""), (True, "short_"))}
    return pairs, load("item_sets.npy"), meta


@functools.lru_cache(maxsize=4)
def load_item_names(folder: str) -> List[str]:
    return json.loads((Path(folder) / "items.json").read_text())


def index_key(settings: Mapping[str, Any], inputs: StepInputs) -> str:
    """What the index depends on: the settings and every eval file's content hash."""
    files = [(p, inputs.fingerprint(p)) for pattern in settings["paths"] for p in inputs.files(pattern, PATHS_KEY)]
    plain = {k: settings[k] for k in ("paths", "columns", "id_column", "ngram", "min_item_words")}
    return hashlib.sha256(json.dumps([plain, files], sort_keys=True).encode()).hexdigest()[:16]


@register
class Decontaminate(Step):
    name = "decontaminate"
    Settings = DecontaminateSettings
    order = 40  # after the quality steps: it hashes every word of what they keep
    keyed = True

    def __init__(self, settings: DecontaminateSettings, index: Optional[str] = None) -> None:
        super().__init__(settings)
        self.index = index  # the index folder (`prepare`); loaded at the first judge

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Optional[Dict[str, Any]]:
        settings = f.step_settings(cls.name)
        return asdict(settings) if settings.active() else None

    @classmethod
    def prepare(cls, settings: Dict[str, Any], scratch: Path, inputs: StepInputs) -> Dict[str, Any]:
        folder = scratch / INDEX_DIR / index_key(settings, inputs)
        if not (folder / "meta.json").is_file():  # (a resumed run keeps the index it built)
            build_index(DecontaminateSettings(**settings), folder, inputs)
        return {**settings, "index": str(folder)}

    @classmethod
    def describe(cls, settings: Mapping[str, Any]) -> Dict[str, Any]:
        """For stats.json: the eval sets as the index holds them."""
        return load_index(settings["index"])[2]

    @classmethod
    def from_plain(cls, settings: Mapping[str, Any]) -> "Decontaminate":
        own = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k != "index"}
        return cls(DecontaminateSettings(**own), settings.get("index"))

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        import numpy as np

        if self.index is None:
            raise RuntimeError("decontaminate: no index (the driver's prepare builds it)")
        pairs, item_sets, meta = load_index(self.index)
        words = [ngram_words(d.text) for d in docs]
        batch = WordBatch(words)
        first: Dict[int, Tuple[int, int, int]] = {}  # text -> (first word, length, item) of its earliest match
        matched_sets: Dict[int, set] = {}
        for length in [self.settings.ngram, *meta["short_lengths"]]:
            hashes, owners = pairs[length < self.settings.ngram]  # (whole short items: a small index of their own)
            h, text, start = batch.windows(length)
            if not len(h) or not len(hashes):
                continue
            if length == self.settings.ngram:  # sorted queries walk the large index in order: far fewer cache and page misses
                order = np.argsort(h)
                at = np.empty(len(h), dtype=np.int64)
                at[order] = np.searchsorted(hashes, h[order])
            else:
                at = np.searchsorted(hashes, h)
            found = np.flatnonzero((at < len(hashes)) & (hashes[np.minimum(at, len(hashes) - 1)] == h))
            for k in found.tolist():
                lo, hi = int(at[k]), int(np.searchsorted(hashes, h[k], side="right"))
                items = owners[lo:hi].tolist()  # (an n-gram several items share)
                t = int(text[k])
                matched_sets.setdefault(t, set()).update(int(item_sets[i]) for i in items)
                mark = (int(start[k]), length, int(items[0]))
                if t not in first or mark < first[t]:
                    first[t] = mark
        out: List[Verdict] = [None] * len(docs)
        sets = meta["sets"]
        for t, (begin, length, item) in first.items():
            for s in sorted(matched_sets[t]):
                self.tally[f"matched:{sets[s]['name']}"] += 1
            ngram = b" ".join(words[t][begin : begin + length]).decode("utf-8")
            name, eval_set = load_item_names(self.index)[item], sets[int(item_sets[item])]["name"]
            what = "n-gram" if length == self.settings.ngram else f"whole {length}-word item"
            out[t] = Drop(self.name, f"{what} {ngram!r} of eval item {name} ({eval_set})", {"eval_set": eval_set, "eval_item": name, "ngram": ngram})
        return out
