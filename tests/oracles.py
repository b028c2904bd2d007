"""Plain versions of fast code, kept here as the tests' oracles (and one convenience): the package
uses the fast versions, these say what they must compute."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

from stage2.dedup import batch_window_hashes
from stage2.lid.backends import UNKNOWN, Detector, LangVerdict, language_text, target_score
from stage2.shards.format import Packer, PackResult
from stage2.steps.quality.text import _RUNS, TERMINAL_PUNCTUATION, is_punct, tokenize_chunk


def words_plain(text: str) -> List[str]:
    """`text.words` without the memo and the shortcut for chunks of letters."""
    return [t for chunk in text.split() for t in tokenize_chunk(chunk)]


def tokens_with_spaces(text: str) -> List[str]:
    """spaCy's tokens of `text`, the whitespace tokens it makes included."""
    out: List[str] = []
    for m in _RUNS.finditer(text):
        run = m.group()
        if not run[0].isspace():
            out.extend(tokenize_chunk(run))
        elif m.start() == 0 or run[0] != " ":
            out.append(run)
        elif len(run) > 1:
            out.append(run[1:])
    return out


def sentence_count_plain(line: str) -> int:
    """The sentencizer's loop itself, on `tokens_with_spaces` (for tests)."""
    tokens = tokens_with_spaces(line)
    if not tokens:
        return 0
    count, seen_terminal = 1, False
    for t in tokens:
        if seen_terminal and not is_punct(t) and t not in TERMINAL_PUNCTUATION:
            count += 1
            seen_terminal = False
        elif t in TERMINAL_PUNCTUATION:
            seen_terminal = True
    return count


def window_hashes(text: str, k: int) -> np.ndarray:
    """Sorted distinct uint64 hashes of every window of k consecutive words of one text."""
    return np.sort(batch_window_hashes([text], k)[0])


def pack_stream(chunks: Iterable[np.ndarray], out_dir: Path, seq_len: int, rows_per_shard: int, dtype: np.dtype, remainder: str = "drop", pad_id: Optional[int] = None) -> PackResult:
    """Convenience: a whole token stream -> shards."""
    packer = Packer(out_dir, seq_len, rows_per_shard, dtype)
    for chunk in chunks:
        packer.add(chunk)
    return packer.finish(remainder, pad_id)


def identify(text: str, detector: Detector, languages: Sequence[str], max_chars: int) -> LangVerdict:
    """One text's verdict (the stage judges partitions in batches: stage2.lid.rule)."""
    ranked = detector(language_text(text, max_chars))
    if not ranked:
        return LangVerdict(UNKNOWN, 0.0, 0.0)
    return LangVerdict(ranked[0][0], float(ranked[0][1]), target_score(ranked, languages))


# --- decontamination (stage2/steps/decontaminate.py), one character and one window at a time ------------


def decont_words_plain(text: str) -> List[str]:
    """Lower-cased; punctuation, symbols, control and format characters removed; split at whitespace."""
    import unicodedata

    kept = "".join(c for c in text.lower() if c.isspace() or unicodedata.category(c)[0] not in "PS" and unicodedata.category(c) not in ("Cc", "Cf"))
    return kept.split()


def contamination_plain(text: str, items: Sequence[str], n: int, min_item_words: int) -> Optional[int]:
    """The first item (index) `text` shares an n-gram with, or holds whole (a shorter item), or None."""
    words = decont_words_plain(text)
    for index, item in enumerate(items):
        item_words = decont_words_plain(item)
        length = n if len(item_words) >= n else len(item_words)
        if length < min_item_words:
            continue
        grams = {tuple(item_words[i : i + length]) for i in range(len(item_words) - length + 1)} if length == n else {tuple(item_words)}
        if any(tuple(words[i : i + length]) in grams for i in range(len(words) - length + 1)):
            return index
    return None


def ngram_hash_plain(words: Sequence[bytes]) -> int:
    """mix(sum_j xxh3(word_j) * P^j mod 2^64), in Python integers."""
    import xxhash

    P, M = 0x9E3779B97F4A7C15, (1 << 64) - 1
    h = 0
    for j, w in enumerate(words):
        h = (h + xxhash.xxh3_64_intdigest(w) * pow(P, j, 1 << 64)) & M
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M
    return h ^ (h >> 31)


def tokenizer_sample_plain(docs: Iterable, quota: int, heldout_percent: int, eval_docs: int, seed: int) -> dict:
    """The tokenizer's sample of a component by sorting all its documents at once: training documents
    (not held out) and held-out ones, each ordered by (xxh64 of the id, xxh64 of the text, id, text)
    under `seed`, the first `quota` / `eval_docs` of each; held out = xxh64 of the id under the fixed
    held-out seed, mod 100, below `heldout_percent`. Empty texts do not count."""
    import xxhash

    from stage2.tokenizer.sample import HELDOUT_HASH_SEED

    def h(s: str, salt: int) -> int:
        return xxhash.xxh64_intdigest(s.encode("utf-8", "surrogatepass"), seed=salt)

    train, held = [], []
    for doc in docs:
        if not doc.text:
            continue
        entry = (h(doc.id, seed), h(doc.text, seed), doc.id, doc.text)
        is_held = heldout_percent > 0 and h(doc.id, HELDOUT_HASH_SEED) % 100 < heldout_percent
        (held if is_held else train).append(entry)
    seen, heldout = len(train) + len(held), len(held)
    train, held = sorted(train)[: max(quota, 0)], sorted(held)[: max(eval_docs, 0)]
    return {
        "train_ids": [e[2] for e in train], "train_texts": [e[3] for e in train],
        "eval_ids": [e[2] for e in held], "eval_texts": [e[3] for e in held],
        "docs_seen": seen, "heldout_docs": heldout,
    }


def unigram_viterbi(model: bytes, text: str, float32: bool) -> List[int]:
    """The ids of one text (no literal U+2581) by the unigram segmentation both SentencePiece and HF
    tokenizers run: over UTF-8 byte positions, left to right, a candidate replaces the best path
    ending at the same place only if strictly greater (so on a tie the earliest start wins); a
    character no piece starts with is an unknown node scored (lowest normal score - 10), spelled in
    byte pieces afterwards. `float32`: SentencePiece's sums (float32, and the running score rebased
    when it passes 1e5); else tokenizers' float64 sums. Slow: short texts only."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    num = np.float32 if float32 else float
    pieces = {p.piece.encode("utf-8"): (i, num(p.score)) for i, p in enumerate(proto.pieces) if p.type == 1}
    byte_ids = {int(p.piece[3:5], 16): i for i, p in enumerate(proto.pieces) if p.type == 6}
    unk_id = next(i for i, p in enumerate(proto.pieces) if p.type == 2)
    unk_score = num(min(s for _, s in pieces.values())) - num(10)
    longest = max(map(len, pieces))
    data = text.replace(" ", "\u2581").encode("utf-8")
    n = len(data)
    best: List = [num(0)] * (n + 1)
    start_of = [-1] * (n + 1)
    ids = [-1] * (n + 1)
    start = 0
    while start < n:
        till = best[start]
        if float32 and abs(till) > 1e5:  # rebase the running score (SentencePiece's kScoreResetThreshold)
            for end in range(start, min(n, start + longest) + 1):
                if end == start or start_of[end] != -1:
                    best[end] = num(best[end] - till)
            till = num(0)
        lead = data[start]
        width = min(n - start, 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4)
        one_char = False
        for end in range(start + 1, min(n, start + longest) + 1):
            hit = pieces.get(data[start:end])
            if hit is None:
                continue
            candidate = num(hit[1] + till)
            if start_of[end] == -1 or candidate > best[end]:
                best[end], start_of[end], ids[end] = candidate, start, hit[0]
            one_char = one_char or end - start == width
        if not one_char:
            end = start + width
            candidate = num(unk_score + till)
            if start_of[end] == -1 or candidate > best[end]:
                best[end], start_of[end], ids[end] = candidate, start, unk_id
        start += width
    out: List[int] = []
    end = n
    while end > 0:
        piece_id, start = ids[end], start_of[end]
        out[:0] = [byte_ids[b] for b in data[start:end]] if piece_id == unk_id else [piece_id]
        end = start
    return out
