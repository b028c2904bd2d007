"""`langdetect_fast`: langdetect's own answers (seed 0), computed with numpy instead of a Python loop.

langdetect (`Detector.get_probabilities`) extracts the 1-3-grams of a text that its 55 bundled
profiles know, then runs 7 trials: each starts from a uniform prior, draws n-grams at random from a
`random.Random` seeded with `DetectorFactory.seed` and multiplies every language's probability by
`alpha/10000 + P(n-gram | language)` (alpha = 0.5 + 0.05 x gauss) until one language passes 0.99999
(checked every 5 draws) or 1001 draws; the 7 normalised posteriors are averaged and those > 0.1
reported. About 80 % of its ~3 ms per document goes to that loop over 55-element Python lists.

Here the same computation is vectorised and every random draw is replayed exactly:
- the random stream is fixed: with seed 0 each document starts from the same Mersenne Twister state,
  so its 32-bit outputs are generated once per process (numpy's MT19937 with Python's state) and
  `random.choice` / `random.gauss` are decoded from them as CPython does (`getrandbits(k)` is the top
  k bits of one output, rejected while >= len(ngrams); `random()` takes 2 outputs, `gauss` 2 randoms
  and caches its second value for the next trial);
- a trial's draws become one gather of profile rows, a cumulative sum of log factors and a softmax at
  every 5th draw (normalising only rescales, so the stopping draw is the same);
- n-gram extraction applies `NGram`'s rules to arrays of code points after the same text cleaning
  (langdetect's URL/e-mail patterns and Vietnamese normalisation, the 10,000-character cut, dropping
  Latin letters from mostly non-Latin text), with `NGram.normalize` precomputed as a table over all
  code points and n-grams looked up as integer keys (tests compare it with `_extract_ngrams`).
The result is langdetect's ranked list up to float rounding (sums taken in another order: ~1e-15),
so it keeps or drops the same documents at any threshold, with no dependence on document order or
process. Profiles come from langdetect's own `profiles/` folder through its `DetectorFactory`.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

N_TRIAL = 7
ITERATION_LIMIT = 1000
CONV_THRESHOLD = 0.99999
PROB_THRESHOLD = 0.1
BASE_FREQ = 10000
ALPHA, ALPHA_WIDTH = 0.5, 0.05
MAX_TEXT_LENGTH = 10000
SEED = 0  # what stage2.langid gives langdetect (`DetectorFactory.seed = 0`)
# Draws are decided in chunks: half the trials stop within ~46 draws, 3 % need > 256 (dev set).
CHUNK_ENDS = (48, 128, 256, 384, 512, 640, 768, 896, ITERATION_LIMIT + 1)
SPACE = 0x20
PREFIX_WORDS = 4096


@dataclass(frozen=True)
class Profiles:
    langs: Tuple[str, ...]  # langdetect's language order (its profile folder listing)
    words: Tuple[str, ...]  # the profile n-grams, one per row of `prob`
    prob: np.ndarray  # (n-grams, languages) P(n-gram | language), float64 as langdetect computes it
    char_map: np.ndarray  # code point -> NGram.normalize(code point), all 0x110000 code points
    upper: np.ndarray  # code point -> str.isupper (NGram's capitalword test)
    keys: np.ndarray  # sorted `_keys` of the profile n-grams
    key_rows: np.ndarray  # their rows in `prob`


@functools.lru_cache(maxsize=None)
def profiles() -> Profiles:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from langdetect.utils.ngram import NGram

    factory = DetectorFactory()  # a private one: its dict of lists is dropped once copied to numpy
    factory.load_profile(PROFILES_DIRECTORY)
    words = list(factory.word_lang_prob_map)
    prob = np.array([factory.word_lang_prob_map[w] for w in words], dtype=np.float64)
    char_map = np.arange(0x110000, dtype=np.uint32)
    # NGram.normalize only changes BMP blocks (Latin, punctuation, Arabic, kana, CJK, Hangul).
    for cp in range(0x10000):
        ch = chr(cp)
        norm = NGram.normalize(ch)
        if norm != ch:
            char_map[cp] = ord(norm)
    upper = np.array([chr(cp).isupper() for cp in range(0x110000)], dtype=bool)
    keys = _keys(words)
    order = np.argsort(keys, kind="stable")
    return Profiles(
        tuple(factory.langlist), tuple(words), prob, char_map, upper, keys[order], order
    )


def languages() -> Tuple[str, ...]:
    return profiles().langs


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


# --- n-gram extraction -------------------------------------------------------------------------


def _keys(grams: Sequence[str]) -> np.ndarray:
    """An n-gram of up to 3 code points as one int64: 21 bits each (normalised text has no NUL)."""
    out = np.zeros(len(grams), dtype=np.int64)
    for i, g in enumerate(grams):
        for ch in g:
            out[i] = (int(out[i]) << 21) | ord(ch)
    return out


def extract(text: str) -> np.ndarray:
    """Profile rows of the n-grams langdetect samples from `text`, in its order.

    `Detector._extract_ngrams` feeds characters to an `NGram` buffer that restarts after a space;
    at each character it emits the 1-, 2- and 3-grams ending there (never a lone space, never across
    a space) unless the character and the one before it are both upper case (`capitalword`). The
    same rule as array operations over the normalised code points."""
    from langdetect.detector import Detector
    from langdetect.utils.ngram import NGram

    prof = profiles()
    text = Detector.URL_RE.sub(" ", text)
    text = Detector.MAIL_RE.sub(" ", text)
    text = NGram.normalize_vi(text)[:MAX_TEXT_LENGTH]
    # (Detector.append also squeezes runs of spaces: NGram skips repeated spaces anyway.)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    # Detector.cleaning_text: mostly non-Latin text loses its Latin letters ('A' <= ch <= 'z').
    latin = (cps >= 0x41) & (cps <= 0x7A)
    non_latin = (cps >= 0x300) & ~((cps >= 0x1E00) & (cps <= 0x1EFF))
    if int(latin.sum()) * 2 < int(non_latin.sum()):
        cps = cps[~latin]
    # The buffer starts as a space: pad with two so position q has q-1 and q-2 (c = this character).
    c = np.concatenate([[SPACE, SPACE], prof.char_map[cps]]).astype(np.int64)
    cur, prev, prev2 = c[2:], c[1:-1], c[:-2]
    up = prof.upper[c]
    emit = ~(up[2:] & up[1:-1])  # capitalword
    valid = np.stack(
        [
            emit & (cur != SPACE),
            emit & ~((prev == SPACE) & (cur == SPACE)),
            emit & (prev != SPACE),  # a 3-gram may start with a space, never hold one inside
        ],
        axis=1,
    )
    keys = np.stack([cur, (prev << 21) | cur, (prev2 << 42) | (prev << 21) | cur], axis=1)
    keys, valid = keys.ravel(), valid.ravel()  # position-major, then n = 1, 2, 3: langdetect's order
    at = np.searchsorted(prof.keys, keys)
    at[at == len(prof.keys)] = 0
    found = valid & (prof.keys[at] == keys)
    return prof.key_rows[at[found]]


# --- the 7 trials ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _chunks() -> Tuple[Tuple[int, int, np.ndarray, np.ndarray], ...]:
    """Per chunk of draws [a, b): the draw numbers i checked there (i % 5 == 0; i = 1000 always
    stops a trial) and a 0/1 matrix whose rows sum the chunk's log factors up to each check, plus a
    last row summing the whole chunk. A matrix product is ~5x faster than numpy's cumsum along
    axis 0 at these sizes; chunks stay small enough (< 2**18 multiply-adds) for OpenBLAS to use
    one thread, so it never competes with the executor's workers for cores."""
    out = []
    a = 0
    for b in CHUNK_ENDS:
        checks = np.arange(a + (-a) % 5, b, 5)
        draw = np.arange(a, b)
        sums = np.vstack([draw[None, :] <= checks[:, None], np.ones((1, b - a), dtype=bool)])
        out.append((a, b, checks, sums.astype(np.float64)))
        a = b
    return tuple(out)


def _trial(prob: np.ndarray, drawn: np.ndarray, alpha: float) -> Tuple[np.ndarray, int]:
    """One trial over its candidate draws (profile rows): (normalised posterior, draws used)."""
    weight = alpha / BASE_FREQ
    offset = -math.log(prob.shape[1])  # the uniform prior
    for a, b, checks, sums in _chunks():
        logp = sums @ np.log(prob[drawn[a:b]] + weight)
        logp += offset
        at_checks = logp[:-1]
        top = at_checks.max(axis=1, keepdims=True)
        total = np.exp(at_checks - top).sum(axis=1)
        done = np.flatnonzero((1.0 / total > CONV_THRESHOLD) | (checks >= ITERATION_LIMIT))
        if len(done):
            last = at_checks[done[0]]
            post = np.exp(last - last.max())
            return post / post.sum(), int(checks[done[0]]) + 1
        offset = logp[-1]
    raise AssertionError("a langdetect trial always stops by its 1001st draw")


def posterior(rows: np.ndarray, seed: int = SEED) -> np.ndarray:
    """langdetect's averaged posterior over its languages for the n-gram rows of one text."""
    prob = profiles().prob
    n = len(rows)
    k = n.bit_length()
    stream = _stream(seed)
    total = np.zeros(prob.shape[1])
    pos = 0  # next unused 32-bit output
    gauss_next = None
    # Candidates are decoded from a prefix of the stream, doubled when a trial may need more:
    # most texts use < 1,000 outputs, 7 x 1001 draws need ~14,000.
    limit = 0
    accepted = draws = np.zeros(0, dtype=np.int64)
    for _ in range(N_TRIAL):
        words = stream.ensure(pos + 4)
        if gauss_next is None:  # random.gauss: 2 random() calls, the second value cached
            x2pi = _random_float(words, pos) * 2 * math.pi
            g2rad = math.sqrt(-2.0 * math.log(1.0 - _random_float(words, pos + 2)))
            z, gauss_next = math.cos(x2pi) * g2rad, math.sin(x2pi) * g2rad
            pos += 4
        else:
            z, gauss_next = gauss_next, None
        alpha = ALPHA + z * ALPHA_WIDTH
        while True:
            first = int(np.searchsorted(accepted, pos))
            take = accepted[first : first + ITERATION_LIMIT + 1]
            if len(take) > ITERATION_LIMIT:
                break
            limit = max(PREFIX_WORDS, 2 * limit)
            draws = stream.ensure(limit)[:limit] >> np.uint32(32 - k)
            accepted = np.flatnonzero(draws < n)  # outputs that yield a draw (the rest are rejected)
        post, used = _trial(prob, rows[draws[take]], alpha)
        total += post / N_TRIAL
        pos = int(take[used - 1]) + 1
    return total


def detect(text: str) -> List[Tuple[str, float]]:
    """[(language, probability)] > 0.1, best first, as langdetect's `get_probabilities` (seed 0)."""
    rows = extract(text)
    if not len(rows):  # langdetect: "No features in text."
        return []
    probs = posterior(rows)
    langs = profiles().langs
    ranked = [(langs[i], float(p)) for i, p in enumerate(probs) if p > PROB_THRESHOLD]
    ranked.sort(key=lambda lp: -lp[1])  # stable, like langdetect's sort of its language list
    return ranked


def check_languages(wanted: Sequence[str]) -> None:
    from stage2.errors import Stage2Error

    known = profiles().langs
    unknown = [lang for lang in wanted if lang not in known]
    if unknown:
        raise Stage2Error(
            f"filter.languages: {', '.join(map(repr, unknown))} unknown to langdetect's profiles "
            f"(it knows {', '.join(sorted(known))})"
        )
