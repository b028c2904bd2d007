"""`langdetect_fast`: langdetect's own answers (seed 0), bit for bit, computed with numpy.

langdetect (`Detector.get_probabilities`) extracts the 1-3-grams of a text that its 55 bundled
profiles know, then runs 7 trials: each starts from a uniform prior, draws n-grams at random from a
`random.Random` seeded with `DetectorFactory.seed` and multiplies every language's probability by
`alpha/10000 + P(n-gram | language)` (alpha = 0.5 + 0.05 x gauss), normalising after draw 0, 5,
10, ... until one language passes 0.99999 or 1001 draws; the 7 posteriors are averaged and those
> 0.1 reported. About 80 % of its ~3 ms per document goes to that loop over 55-element Python lists.

Here the same arithmetic runs on arrays: `detect_batch` runs the texts of a batch (a partition)
together, each in its own trial, a numpy call per step shared by all of them (`_Runs`), ~1/20 of
langdetect's CPU per text; `detect` runs one text alone, ~1/4. Every random draw is replayed exactly:
- the random stream is fixed: with seed 0 each document starts from the same Mersenne Twister state,
  so its 32-bit outputs are generated once per process (numpy's MT19937 with Python's state) and
  `random.choice` / `random.gauss` are decoded from them as CPython does (`getrandbits(k)` is the top
  k bits of one output, rejected while >= len(ngrams); `random()` takes 2 outputs, `gauss` 2 randoms
  and caches its second value for the next trial);
- the floating-point operations are langdetect's, in its order: `prob[i] *= weight + p` draw after
  draw (`np.multiply.reduce` over the draws of a group runs left to right), and the normalisation
  divides by a left-to-right sum (`_column_sums`, as Python <= 3.11's `sum`; 3.12 compensates it,
  which can move the last bit), so the probabilities are langdetect's bit for bit on this Python;
- n-gram extraction applies `NGram`'s rules to arrays of code points after the same text cleaning
  (langdetect's URL/e-mail patterns and Vietnamese normalisation, the 10,000-character cut, dropping
  Latin letters from mostly non-Latin text), with `NGram.normalize` precomputed as a table over all
  code points and n-grams looked up as integer keys (tests compare it with `_extract_ngrams`).
A document's answer depends on nothing else in its batch (every operation is per document), so it
keeps or drops the same documents in any order, batch or process. Profiles come from langdetect's
own `profiles/` folder through its `DetectorFactory`, built once per machine into a cache (`profiles`).
"""

from __future__ import annotations

import functools
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from stage2.lid import langdetect_profiles_directory

N_TRIAL = 7
ITERATION_LIMIT = 1000
CONV_THRESHOLD = 0.99999
PROB_THRESHOLD = 0.1
BASE_FREQ = 10000
ALPHA, ALPHA_WIDTH = 0.5, 0.05
MAX_TEXT_LENGTH = 10000
SEED = 0  # what stage2.lid.backends gives langdetect (`DetectorFactory.seed = 0`)
SPACE = 0x20
BATCH = 2048  # documents run together (a partition): each numpy call of a step is shared by all
EXTRACT_BATCH = 256  # documents whose n-grams are extracted together: their arrays stay in cache
FIRST_WORDS = 768  # stream outputs decoded per document at first: half the documents use <= 532
MORE_WORDS = 1024  # decoded each time a document runs out (1 % use > 3,800, the most ~9,400)
TAIL_DOCS, MAX_GROUPS = 1024, 32  # with n documents left a step takes min(32, 1024 // n) groups
ALONE_BELOW = 8  # fewer texts than this run one by one (`_posterior_alone`): cheaper than a batch
HASH_BITS = 18  # 2**18 slots for langdetect's 84,439 2- and 3-grams: a third full, ~1.3 probes a lookup
_EMPTY = -1
_ONE_GRAM_KEYS = 0x110000  # a 1-gram's key is its code point; a longer one's is >= 1 << 21
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key x this constant


@dataclass(frozen=True)
class Profiles:
    langs: Tuple[str, ...]  # langdetect's language order (its profile folder listing)
    words: Tuple[str, ...]  # the profile n-grams, one per row of `prob`
    prob: np.ndarray  # (n-grams, languages) P(n-gram | language), float64 as langdetect computes it
    char_map: np.ndarray  # code point -> NGram.normalize(code point), all 0x110000 code points
    upper: np.ndarray  # code point -> str.isupper (NGram's capitalword test)
    one_rows: np.ndarray  # code point -> row of that 1-gram in `prob` (-1: none)
    table_keys: np.ndarray  # open-addressing hash table of the 2- and 3-grams' `_keys` (_EMPTY: free slot)
    table_rows: np.ndarray  # their rows in `prob`


UPPER_LIMIT = 0x20000  # see profiles()


# Bump when build_profiles() computes anything differently: a cache of the older arrays is then ignored.
CACHE_VERSION = 1
_ARRAYS = ("prob", "char_map", "upper", "one_rows", "table_keys", "table_rows")


@functools.lru_cache(maxsize=None)
def profiles() -> Profiles:
    """langdetect's profiles as arrays. Building them is slow (JSON, a Python pass over every code
    point), so they are built once per machine into the cache folder (`cache_folder`) and then
    memory-mapped: a worker starts at once and all workers share one copy of the matrix.
    Without a writable cache folder they are built in every process."""
    folder = cache_folder()
    if folder is not None:
        cached = _load_profiles(folder)
        if cached is not None:
            return cached
        shutil.rmtree(folder, ignore_errors=True)  # a damaged one (mapped files stay readable to who has them)
    built = build_profiles()
    if folder is not None:
        _save_profiles(built, folder)
    return built


def cache_folder():
    """Where this machine's profile arrays are kept: `$STAGE2_CACHE_DIR` (or `$XDG_CACHE_HOME/stage2`,
    `~/.cache/stage2`), in a folder named by everything the arrays depend on: the profile files (in
    langdetect's listing order, which fixes the languages' order), the Python (str.isupper's Unicode
    tables) and CACHE_VERSION. None when that cannot be told."""
    import hashlib
    import json
    import sys
    import unicodedata
    from pathlib import Path

    try:
        directory = langdetect_profiles_directory()
        listing = [(name, os.path.getsize(os.path.join(directory, name))) for name in os.listdir(directory)]
    except (OSError, TypeError, IndexError):
        return None
    root = os.environ.get("STAGE2_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stage2")
    key = json.dumps([CACHE_VERSION, directory, listing, sys.version, unicodedata.unidata_version])
    return Path(root) / f"langid_fast-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _load_profiles(folder) -> "Profiles | None":
    import json

    try:
        meta = json.loads((folder / "profiles.json").read_text(encoding="utf-8"))
        # Plain arrays over the mapped files: np.memmap's subclass would cost Python calls at every slice.
        arrays = {name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r")) for name in _ARRAYS}
    except (OSError, ValueError, KeyError):  # none yet, or damaged: built again
        return None
    if arrays["prob"].shape != (len(meta["words"]), len(meta["langs"])):
        return None
    for array in arrays.values():  # read every page now: a worker's memory then stays flat as its texts reach new n-grams
        np.bitwise_or.reduce(array.view(np.uint8), axis=None)
    return Profiles(tuple(meta["langs"]), tuple(meta["words"]), **arrays)


def _save_profiles(prof: Profiles, folder) -> None:
    """Written into a temporary folder renamed into place: a reader finds all of it or none."""
    import json

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(prof, name), allow_pickle=False)
        (tmp / "profiles.json").write_text(json.dumps({"langs": prof.langs, "words": prof.words}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, folder)
    except OSError:  # read-only home, a full disk, another process was first: nothing to keep
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_profiles() -> Profiles:
    from langdetect.detector_factory import DetectorFactory
    from langdetect.utils.ngram import NGram

    factory = DetectorFactory()  # a private one: its dict of lists is dropped once copied to numpy
    factory.load_profile(langdetect_profiles_directory())  # (its PROFILES_DIRECTORY: the folder the cache key names)
    words = list(factory.word_lang_prob_map)
    prob = np.array([factory.word_lang_prob_map[w] for w in words], dtype=np.float64)
    char_map = np.arange(0x110000, dtype=np.uint32)
    # NGram.normalize only changes BMP blocks (Latin, punctuation, Arabic, kana, CJK, Hangul).
    for cp in range(0x10000):
        ch = chr(cp)
        norm = NGram.normalize(ch)
        if norm != ch:
            char_map[cp] = ord(norm)
    # No code point above the SMP is upper case (the highest is U+1F189; tests/unit/test_langid.py
    # checks it for the running Python): a tenth of the work.
    upper = np.zeros(0x110000, dtype=bool)
    upper[:UPPER_LIMIT] = [chr(cp).isupper() for cp in range(UPPER_LIMIT)]
    keys = _keys(words)
    one = keys < _ONE_GRAM_KEYS
    one_rows = np.full(_ONE_GRAM_KEYS, -1, dtype=np.int32)
    one_rows[keys[one]] = np.flatnonzero(one)
    table_keys, table_rows = _hash_table(keys, np.flatnonzero(~one))
    return Profiles(tuple(factory.langlist), tuple(words), prob, char_map, upper, one_rows, table_keys, table_rows)


# --- the random stream -------------------------------------------------------------------------


class _Stream:
    """The 32-bit outputs of `random.Random(SEED)`, generated on demand and kept (same for every text)."""

    def __init__(self, seed: int) -> None:
        state = random.Random(seed).getstate()[1]
        self._bitgen = np.random.MT19937()
        self._bitgen.state = {
            "bit_generator": "MT19937",
            "state": {"key": np.array(state[:624], dtype=np.uint32), "pos": state[624]},
        }
        self.words = self._bitgen.random_raw(1 << 14).astype(np.uint32)

    def ensure(self, n: int) -> np.ndarray:
        if n > len(self.words):
            more = self._bitgen.random_raw(max(n - len(self.words), len(self.words))).astype(np.uint32)
            self.words = np.concatenate([self.words, more])
        return self.words


@functools.lru_cache(maxsize=None)
def _stream(seed: int) -> _Stream:
    return _Stream(seed)


def _random_float(words: np.ndarray, pos: int) -> float:
    """CPython's `random()` from 2 outputs."""
    a, b = int(words[pos]) >> 5, int(words[pos + 1]) >> 6
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)


def _gauss(pos: int) -> Tuple[float, float]:
    """`random.gauss`'s value and the one it caches, from the 4 outputs at `pos` (math's libm, as
    CPython: numpy's own cos/log may differ in the last bit)."""
    words = _stream(SEED).ensure(pos + 4)
    x2pi = _random_float(words, pos) * 2 * math.pi
    g2rad = math.sqrt(-2.0 * math.log(1.0 - _random_float(words, pos + 2)))
    return math.cos(x2pi) * g2rad, math.sin(x2pi) * g2rad


class _GaussCache:
    """`_gauss` by stream position, computed once per position (NaN: not yet): few positions occur."""

    def __init__(self) -> None:
        self.values = np.full((1 << 14, 2), np.nan)

    def at(self, pos: np.ndarray) -> np.ndarray:
        values = self.values  # (filled and read through one reference: a thread never sees NaN)
        if len(pos) and pos.max() >= len(values):
            values = np.concatenate([values, np.full((2 * int(pos.max()), 2), np.nan)])
        for p in np.unique(pos[np.isnan(values[pos, 0])]).tolist():
            values[p] = _gauss(p)
        self.values = values
        return values[pos]


@functools.lru_cache(maxsize=None)
def _gauss_cache() -> _GaussCache:
    return _GaussCache()


@functools.lru_cache(maxsize=None)
def _bits_table(n_words: int) -> np.ndarray:
    """Row k - 1: `getrandbits(k)` from each of the first n_words outputs, k = 1..16 (a text has
    < 30,001 n-grams)."""
    words = _stream(SEED).ensure(n_words)[:n_words]
    return np.stack([(words >> np.uint32(32 - k)).astype(np.int32) for k in range(1, 17)])


def _bits(n_words: int) -> np.ndarray:
    """`_bits_table` of at least n_words outputs (cached per power of two)."""
    return _bits_table(1 << max(n_words - 1, 1).bit_length())


# --- n-gram extraction -------------------------------------------------------------------------


def _keys(grams: Sequence[str]) -> np.ndarray:
    """An n-gram of up to 3 code points as one int64: 21 bits each (normalised text has no NUL)."""
    out = np.zeros(len(grams), dtype=np.int64)
    for i, g in enumerate(grams):
        for ch in g:
            out[i] = (int(out[i]) << 21) | ord(ch)
    return out


def _slots(keys: np.ndarray) -> np.ndarray:
    return ((keys.view(np.uint64) * _HASH_MULT) >> np.uint64(64 - HASH_BITS)).astype(np.int64)


def _hash_table(keys: np.ndarray, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """keys[rows] -> rows by linear probing, filled a round at a time: a key whose slot is taken
    moves on, and of the keys that want the same free slot the first takes it (every key's probe
    run stays gap-free)."""
    size = 1 << HASH_BITS
    table_keys = np.full(size, _EMPTY, dtype=np.int64)
    table_rows = np.zeros(size, dtype=np.int32)
    slot = _slots(keys[rows])
    todo = np.arange(len(rows))
    while len(todo):
        taken = table_keys[slot[todo]] != _EMPTY
        slot[todo[taken]] = (slot[todo[taken]] + 1) & (size - 1)
        free = todo[~taken]
        won, first = np.unique(slot[free], return_index=True)
        table_keys[won] = keys[rows[free[first]]]
        table_rows[won] = rows[free[first]]
        placed = np.zeros(len(rows), dtype=bool)
        placed[free[first]] = True
        todo = todo[~placed[todo]]
    return table_keys, table_rows


def _lookup(prof: Profiles, keys: np.ndarray) -> np.ndarray:
    """Row in `prob` of each key, -1 when no profile has it: a 1-gram from a table by code point
    (a third of the lookups, at a tenth of the cost), the others from the hash table."""
    rows = np.empty(len(keys), dtype=np.int32)
    one = keys < _ONE_GRAM_KEYS
    rows[one] = prof.one_rows[keys[one]]
    more = np.flatnonzero(~one)
    rows[more] = _hash_lookup(prof, keys[more])
    return rows


def _hash_lookup(prof: Profiles, keys: np.ndarray) -> np.ndarray:
    """The first probe for every key at once; then only the keys whose slot holds another key (a
    quarter) probe on, a slot at a time."""
    mask = len(prof.table_keys) - 1
    slot = _slots(keys)
    at = prof.table_keys[slot]
    rows = np.where(at == keys, prof.table_rows[slot], -1)
    todo = np.flatnonzero((at != keys) & (at != _EMPTY))
    while len(todo):
        slot[todo] = (slot[todo] + 1) & mask
        at = prof.table_keys[slot[todo]]
        hit = at == keys[todo]
        rows[todo[hit]] = prof.table_rows[slot[todo[hit]]]
        todo = todo[~hit & (at != _EMPTY)]
    return rows


@functools.lru_cache(maxsize=None)
def _langdetect_text_rules():
    from langdetect.detector import Detector
    from langdetect.utils.ngram import NGram

    return Detector.URL_RE, Detector.MAIL_RE, NGram.normalize_vi, re.compile(f"[{NGram.DMARK_CLASS}]")


def _clean(text: str) -> str:
    """`Detector.append`'s substitutions and cut. Each is skipped when its pattern cannot match
    (no "://", no "@", no combining mark): the same text, without three regex scans per document."""
    url_re, mail_re, normalize_vi, dmark = _langdetect_text_rules()
    if "://" in text:
        text = url_re.sub(" ", text)
    if "@" in text:
        text = mail_re.sub(" ", text)
    if dmark.search(text):
        text = normalize_vi(text)
    # (Detector.append also squeezes runs of spaces: NGram skips repeated spaces anyway.)
    return text[:MAX_TEXT_LENGTH]


def _drop_latin(cps: np.ndarray, doc: np.ndarray, n_docs: int) -> Tuple[np.ndarray, np.ndarray]:
    """Detector.cleaning_text: a mostly non-Latin text loses its Latin letters ('A' <= ch <= 'z')."""
    non_latin = (cps >= 0x300) & ~((cps >= 0x1E00) & (cps <= 0x1EFF))
    if not non_latin.any():  # (most batches of English)
        return cps, doc
    latin = (cps >= 0x41) & (cps <= 0x7A)
    n_latin = np.bincount(doc[latin], minlength=n_docs)
    n_non_latin = np.bincount(doc[non_latin], minlength=n_docs)
    drop = latin & (n_latin * 2 < n_non_latin)[doc]
    return cps[~drop], doc[~drop]


def _ngram_keys(c: np.ndarray, is_char: np.ndarray, upper: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The 1-, 2- and 3-gram keys ending at each character of `c` (position-major, then n = 1, 2, 3:
    langdetect's order) and which of them NGram emits. Each text in `c` is preceded by two spaces, so
    position q sees its q-1 and q-2 as NGram's buffer does (it restarts after a space)."""
    cur, prev, prev2 = c[2:], c[1:-1], c[:-2]
    up = upper[c]
    emit = is_char[2:] & ~(up[2:] & up[1:-1])  # capitalword; a padding space emits nothing
    valid = np.stack(
        [
            emit & (cur != SPACE),
            emit & ~((prev == SPACE) & (cur == SPACE)),
            emit & (prev != SPACE),  # a 3-gram may start with a space, never hold one inside
        ],
        axis=1,
    )
    keys = np.stack([cur, (prev << 21) | cur, (prev2 << 42) | (prev << 21) | cur], axis=1)
    return keys.ravel(), valid.ravel()


def extract_batch(texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Profile rows of the n-grams langdetect samples from each text, in its order: all texts'
    rows concatenated, and how many belong to each text.

    `Detector._extract_ngrams` feeds characters to an `NGram` buffer that restarts after a space;
    at each character it emits the 1-, 2- and 3-grams ending there (never a lone space, never across
    a space) unless the character and the one before it are both upper case (`capitalword`). The
    same rule as array operations over the normalised code points of all texts at once."""
    prof = profiles()
    cleaned = [_clean(t) for t in texts]
    n = len(cleaned)
    lens = np.array([len(t) for t in cleaned], dtype=np.int64)
    cps = np.frombuffer("".join(cleaned).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cps, doc = _drop_latin(cps, np.repeat(np.arange(n), lens), n)
    lens = np.bincount(doc, minlength=n)
    # Text d goes at start[d] + 2, after two padding spaces: NGram's buffer starts as a space.
    start = np.concatenate([[0], np.cumsum(lens + 2)])
    at = np.arange(len(cps)) + 2 * (doc + 1)
    c = np.full(start[-1], SPACE, dtype=np.int64)
    c[at] = prof.char_map[cps]
    is_char = np.zeros(len(c), dtype=bool)
    is_char[at] = True
    keys, valid = _ngram_keys(c, is_char, prof.upper)
    chosen = np.flatnonzero(valid)
    rows = _lookup(prof, keys[chosen])
    known = rows >= 0
    # Text d's keys are [3 start[d], 3 start[d + 1]) (with the next text's padding, which emits none).
    ends = np.searchsorted(chosen[known], 3 * start)
    return rows[known], np.diff(ends)


def extract(text: str) -> np.ndarray:
    """Profile rows of the n-grams langdetect samples from `text`, in its order."""
    return extract_batch([text])[0]


# --- the 7 trials ------------------------------------------------------------------------------


def _nonzero_2d(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """np.nonzero of a 2-D mask, faster: np.nonzero builds multi-indices element by element."""
    flat = np.flatnonzero(mask)
    return flat // mask.shape[1], flat % mask.shape[1]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """starts[i], starts[i] + 1, ..., starts[i] + lengths[i] - 1, for every i, concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


class _Draws:
    """What `random.choice(ngrams)` draws for each document (profile rows) and the stream outputs
    they come from, decoded a window of outputs at a time into flat arrays: document d's undrawn
    candidates are [at, end) there. k = len(ngrams).bit_length() top bits of an output, rejected
    while >= len(ngrams)."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray) -> None:
        self.rows, self.counts = rows, counts
        self.row_start = np.cumsum(counts) - counts
        self.bits = np.searchsorted(1 << np.arange(32), counts, side="right")  # int.bit_length
        self.decoded_to = np.full(len(counts), FIRST_WORDS)  # where each document's next window starts
        cands, pos, per_doc = self._first_window()
        self.cands = np.zeros(2 * len(cands) + 16, dtype=np.int32)
        self.pos = np.zeros(len(self.cands), dtype=np.int64)
        self.cands[: len(cands)], self.pos[: len(pos)] = cands, pos
        self.size = len(cands)
        self.end = np.cumsum(per_doc)
        self.start = self.end - per_doc

    def _first_window(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every document starts at output 0: one comparison with a row of the table per k."""
        table = _bits(FIRST_WORDS)
        accepted = np.empty((len(self.counts), FIRST_WORDS), dtype=bool)
        for k in np.unique(self.bits).tolist():
            docs = np.flatnonzero(self.bits == k)
            accepted[docs] = table[k - 1, :FIRST_WORDS] < self.counts[docs, None]
        doc, pos = _nonzero_2d(accepted)
        drawn = np.take(table.ravel(), (self.bits[doc] - 1) * table.shape[1] + pos)
        return self.rows[self.row_start[doc] + drawn], pos, np.bincount(doc, minlength=len(self.counts))

    def extend(self, docs: np.ndarray, at: np.ndarray, end: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The next MORE_WORDS outputs of each of `docs`, appended after its undrawn candidates
        [at, end) (moved along): the documents' new [at, end)."""
        first = self.decoded_to[docs]
        self.decoded_to[docs] = first + MORE_WORDS
        table = _bits(int(first.max()) + MORE_WORDS)
        starts = (self.bits[docs] - 1) * table.shape[1] + first  # in the flattened table
        values = np.take(table.ravel(), starts[:, None] + np.arange(MORE_WORDS))
        doc, offset = _nonzero_2d(values < self.counts[docs, None])
        drawn = np.take(values.ravel(), doc * MORE_WORDS + offset)
        kept, new = end - at, np.bincount(doc, minlength=len(docs))
        start = self.size + np.cumsum(kept + new) - (kept + new)
        self._reserve(int((kept + new).sum()))
        moved, into = _ranges(at, kept), _ranges(start, kept)
        self.cands[into], self.pos[into] = self.cands[moved], self.pos[moved]
        into = _ranges(start + kept, new)
        self.cands[into] = self.rows[self.row_start[docs][doc] + drawn]
        self.pos[into] = first[doc] + offset
        self.size += int((kept + new).sum())
        return start, start + kept + new

    def consumed(self, docs: np.ndarray, upto: np.ndarray) -> None:
        """random.gauss read the outputs before `upto`: a later window starts after them."""
        self.decoded_to[docs] = np.maximum(self.decoded_to[docs], upto)

    def _reserve(self, n: int) -> None:
        if self.size + n > len(self.cands):
            grown = 2 * (self.size + n)
            self.cands = np.concatenate([self.cands[: self.size], np.zeros(grown - self.size, dtype=np.int32)])
            self.pos = np.concatenate([self.pos[: self.size], np.zeros(grown - self.size, dtype=np.int64)])


def _skip(cand_pos: np.ndarray, at: np.ndarray, end: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Move each index `at` (< its `end`) past the candidates from outputs before `pos`: gauss has
    used up to 4 outputs since the last draw."""
    for _ in range(4):
        behind = at < end
        behind[behind] = cand_pos[at[behind]] < pos[behind]
        at = at + behind
    return at


def _column_sums(a: np.ndarray) -> np.ndarray:
    """Column sums of a C-contiguous 2-D array, each left to right down its column, as Python's
    `sum` (<= 3.11) adds a list: numpy adds row after row into the sums. A single column would be
    reduced as one contiguous run, pairwise (another order), so it gets a zero column beside it."""
    if a.shape[1] == 1:
        return np.add.reduce(np.concatenate([a, np.zeros_like(a)], axis=1), axis=0)[:1]
    return np.add.reduce(a, axis=0)


def _take_rows(prob: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """prob[rows] into `out`. mode="clip" (the rows are valid) skips the bounds-checking pass that
    makes `take` into `out` ~2x slower."""
    return np.take(prob, rows, axis=0, out=out, mode="clip")


def _normalise(state: np.ndarray, out: np.ndarray) -> np.ndarray:
    """langdetect's `_normalize_prob` for each row of `state` (documents x languages), into `out`:
    its maximum normalised probability. max(p / sum) is max(p) / sum: division is monotone."""
    by_lang = np.ascontiguousarray(state.T)  # sums down contiguous columns, in langdetect's order
    sums = _column_sums(by_lang)
    top = np.maximum.reduce(by_lang, axis=0) / sums  # (before `out`, which may be `state`)
    np.divide(state, sums[:, None], out=out)
    return top


class _Runs:
    """Every document of a batch running its own 7 trials, all advanced together by `_step`.

    langdetect checks convergence after draw 0, 5, 10, ... of a trial: a trial's draw 0 is done when
    it starts, then each step applies the next groups of 5 draws to every running document and
    normalises after each. Documents finish at different steps and leave; none waits for another,
    so a step's numpy calls are shared by all that remain (~80 groups per document, the longest
    ~1,400). When few remain, a step takes several groups at once (a document that stops inside
    wastes the rest: cheap next to the calls saved)."""

    def __init__(self, draws: _Draws) -> None:
        self.prob = profiles().prob
        self.draws = draws
        n_docs, self.n_langs = len(draws.counts), self.prob.shape[1]
        self.total = np.zeros((n_docs, self.n_langs))  # langdetect's `langprob`, per document
        # The running documents (arrays aligned by position, compacted as documents finish):
        self.doc = np.arange(n_docs)
        self.at, self.end = draws.start.copy(), draws.end.copy()  # undrawn candidates in `draws`
        self.trial = np.zeros(n_docs, dtype=np.int64)
        self.drawn = np.zeros(n_docs, dtype=np.int64)  # draws in the current trial
        self.weight = np.zeros(n_docs)  # alpha / BASE_FREQ of the current trial
        self.z_next = np.zeros(n_docs)  # the gauss value cached for the next trial
        self.state = np.zeros((n_docs, self.n_langs))  # the current trial's `prob`
        self._start(np.arange(n_docs))

    def run(self) -> np.ndarray:
        while len(self.doc):
            self._step(max(1, min(MAX_GROUPS, TAIL_DOCS // len(self.doc))))
        return self.total

    def _fit(self, sel: np.ndarray, need: np.ndarray) -> None:
        """Decode more of the stream for documents with fewer than `need` undrawn candidates."""
        short = self.at[sel] + need > self.end[sel]
        while short.any():
            sel, need = sel[short], need[short]
            self.at[sel], self.end[sel] = self.draws.extend(self.doc[sel], self.at[sel], self.end[sel])
            short = self.at[sel] + need > self.end[sel]

    def _start(self, sel: np.ndarray) -> None:
        """New trials: alpha = 0.5 + 0.05 x gauss, the uniform prior and draw 0 with its check."""
        while len(sel):
            self._alpha(sel)
            self._fit(sel, np.ones(len(sel), dtype=np.int64))
            factors = _take_rows(self.prob, self.draws.cands[self.at[sel]], np.empty((len(sel), self.n_langs)))
            factors += self.weight[sel, None]
            state = factors * (1.0 / self.n_langs)  # langdetect: (1 / 55) * (weight + p)
            self.at[sel] += 1
            self.drawn[sel] = 1
            top = _normalise(state, state)
            self.state[sel] = state
            sel = self._end_trials(sel[top > CONV_THRESHOLD])
        if (self.trial == N_TRIAL).any():
            self._keep(self.trial < N_TRIAL)

    def _alpha(self, sel: np.ndarray) -> None:
        fresh = sel[self.trial[sel] % 2 == 0]  # random.gauss computes 2 values, for 2 trials
        if len(fresh):
            at = self.at[fresh]
            # Trial 0 starts the stream; a later one follows its predecessor's last draw.
            pos = np.where(self.trial[fresh] == 0, 0, self.draws.pos[np.maximum(at - 1, 0)] + 1)
            z = _gauss_cache().at(pos)
            self.weight[fresh] = (ALPHA + z[:, 0] * ALPHA_WIDTH) / BASE_FREQ
            self.z_next[fresh] = z[:, 1]
            self.draws.consumed(self.doc[fresh], pos + 4)
            self.at[fresh] = _skip(self.draws.pos, at, self.end[fresh], pos + 4)
        cached = sel[self.trial[sel] % 2 == 1]
        self.weight[cached] = (ALPHA + self.z_next[cached] * ALPHA_WIDTH) / BASE_FREQ

    def _step(self, n_groups: int) -> None:
        """The next n_groups groups of 5 draws of every running document, or up to its trial's end."""
        every = np.arange(len(self.doc))
        left = (ITERATION_LIMIT + 1 - self.drawn) // 5  # groups to the 1001st draw (always stops)
        self._fit(every, 5 * np.minimum(left, n_groups))
        # Slot 0 carries the state in, slot j the factors of draw j - 1 from here; a slot past a
        # document's 1001st draw re-reads its last candidate (wasted: the trial has ended).
        slots = np.minimum(self.at + np.arange(5 * n_groups)[:, None], self.end - 1)
        buf = np.empty((5 * n_groups + 1, len(every), self.n_langs))
        buf[0] = self.state
        _take_rows(self.prob, self.draws.cands[slots], buf[1:])
        # weight + P(n-gram | language), the weights spelled out per language: adding a broadcast
        # column would run numpy's inner loop per 55 values instead of per slot.
        buf[1:] += np.repeat(self.weight, self.n_langs).reshape(-1, self.n_langs)
        top = np.empty((n_groups, len(every)))
        for g in range(n_groups):
            state = np.multiply.reduce(buf[5 * g : 5 * g + 6], axis=0)  # ((prob * f1) * f2) ...
            top[g] = _normalise(state, buf[5 * g + 5])
        stop = (top > CONV_THRESHOLD) | (np.arange(n_groups)[:, None] >= left - 1)
        stops = stop.any(axis=0)
        groups = np.where(stops, stop.argmax(axis=0), n_groups - 1) + 1
        self.state = buf[5] if n_groups == 1 else buf[5 * groups, every]
        self.at += 5 * groups
        self.drawn += 5 * groups
        self._start(self._end_trials(np.flatnonzero(stops)))

    def _end_trials(self, sel: np.ndarray) -> np.ndarray:
        """Add the trials' posteriors to their documents' averages; the documents that go on."""
        self.total[self.doc[sel]] += self.state[sel] / N_TRIAL
        self.trial[sel] += 1
        return sel[self.trial[sel] < N_TRIAL]

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("doc", "at", "end", "trial", "drawn", "weight", "z_next", "state"):
            setattr(self, name, getattr(self, name)[keep])


# --- one document alone ------------------------------------------------------------------------


class _Candidates:
    """One document's `random.choice` draws (profile rows) and the outputs they come from, decoded
    from the start of the stream, twice as far each time more are needed."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.n_words = rows, 0
        self.cover(FIRST_WORDS)

    def cover(self, n_words: int) -> None:
        """Decode at least the first n_words outputs."""
        if n_words > self.n_words:
            self.n_words = max(n_words, 2 * self.n_words)
            table = _bits(self.n_words)[len(self.rows).bit_length() - 1, : self.n_words]
            self.pos = np.flatnonzero(table < len(self.rows))
            self.rows_drawn = self.rows[table[self.pos]]

    def ensure(self, n_cands: int) -> None:
        while n_cands > len(self.pos):
            self.cover(2 * self.n_words)


def _normalise_alone(state: np.ndarray, out: np.ndarray) -> float:
    """`_normalise` for one document: a 1-D accumulate adds left to right (a 1-D sum is pairwise).
    (ufunc methods called directly: np.cumsum and ndarray.max add ~1 us of wrappers each.)"""
    total = float(np.add.accumulate(state)[-1])
    top = float(np.maximum.reduce(state)) / total
    np.divide(state, total, out=out)
    return top


def _trial_alone(cands: _Candidates, at: int, weight: float) -> Tuple[np.ndarray, int]:
    """One trial from candidate `at` on: (its posterior, draws used). Groups of 5 draws are
    gathered 2, 4, 8, ... 32 at a time; a trial that stops inside wastes only the gathering."""
    prob = profiles().prob
    cands.ensure(at + 1)
    state = (prob[cands.rows_drawn[at]] + weight) * (1.0 / prob.shape[1])  # draw 0
    if _normalise_alone(state, state) > CONV_THRESHOLD:
        return state, 1
    drawn, n_groups = 1, 2
    while True:
        n_groups = min(n_groups, (ITERATION_LIMIT + 1 - drawn) // 5)
        cands.ensure(at + drawn + 5 * n_groups)
        buf = np.empty((5 * n_groups + 1, prob.shape[1]))
        buf[0] = state
        _take_rows(prob, cands.rows_drawn[at + drawn : at + drawn + 5 * n_groups], buf[1:])
        buf[1:] += weight
        for g in range(n_groups):
            np.multiply.reduce(buf[5 * g : 5 * g + 6], axis=0, out=state)
            top = _normalise_alone(state, buf[5 * g + 5])
            drawn += 5
            if top > CONV_THRESHOLD or drawn > ITERATION_LIMIT:
                return buf[5 * g + 5], drawn
        state = buf[-1].copy()
        n_groups = min(2 * n_groups, 32)


def _posterior_alone(rows: np.ndarray) -> np.ndarray:
    """`_Runs` for a single document, without the batch bookkeeping (each numpy call of a batch
    step costs ~1 us however few documents share it): ~4 calls per 5 draws. The same arithmetic,
    so the same bits."""
    cands = _Candidates(rows)
    total = np.zeros(profiles().prob.shape[1])
    at, z_next = 0, 0.0
    for t in range(N_TRIAL):
        if t % 2 == 0:  # random.gauss reads 4 outputs, from the one after the last draw
            pos = 0 if t == 0 else int(cands.pos[at - 1]) + 1
            z, z_next = _gauss(pos)
            cands.cover(pos + 4)
            at = int(np.searchsorted(cands.pos, pos + 4))
        else:
            z = z_next
        post, used = _trial_alone(cands, at, (ALPHA + z * ALPHA_WIDTH) / BASE_FREQ)
        total += post / N_TRIAL
        at += used
    return total


def _ranked(probs: np.ndarray) -> List[Tuple[str, float]]:
    """[(language, probability)] > 0.1, best first, as langdetect's `_sort_probability`."""
    langs = profiles().langs
    kept = np.flatnonzero(probs > PROB_THRESHOLD)
    ranked = [(langs[i], p) for i, p in zip(kept.tolist(), probs[kept].tolist())]
    ranked.sort(key=lambda lp: -lp[1])  # stable, like langdetect's sort of its language list
    return ranked


def _detect_chunk(texts: Sequence[str]) -> List[List[Tuple[str, float]]]:
    parts = [extract_batch(texts[i : i + EXTRACT_BATCH]) for i in range(0, len(texts), EXTRACT_BATCH)]
    rows = np.concatenate([r for r, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    has = np.flatnonzero(counts > 0)  # langdetect: "No features in text." otherwise: []
    if len(has) < ALONE_BELOW:
        ends = np.cumsum(counts)
        probs = [_posterior_alone(rows[ends[d] - counts[d] : ends[d]]) for d in has.tolist()]
    else:
        probs = _Runs(_Draws(rows, counts[has])).run()
    out: List[List[Tuple[str, float]]] = [[] for _ in texts]
    for d, p in zip(has.tolist(), probs):
        out[d] = _ranked(p)
    return out


def detect_batch(texts: Sequence[str]) -> List[List[Tuple[str, float]]]:
    """`detect` for every text, BATCH texts run together (each answer is the text's own: every
    operation is per document)."""
    out: List[List[Tuple[str, float]]] = []
    for i in range(0, len(texts), BATCH):
        out += _detect_chunk(texts[i : i + BATCH])
    return out


def detect(text: str) -> List[Tuple[str, float]]:
    """[(language, probability)] > 0.1, best first, as langdetect's `get_probabilities` (seed 0).
    (`detect_batch` of many texts is cheaper per text: it shares its numpy calls between them.)"""
    rows = extract(text)
    return _ranked(_posterior_alone(rows)) if len(rows) else []  # langdetect: "No features in text."
