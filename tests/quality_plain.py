"""Plain, slow transcriptions of the four quality steps' rules: one loop per rule, words from the
uncached tokenizer, nothing precomputed. The steps must give the same answers; tests/unit/test_quality_steps.py
checks that on real documents. Each function returns None (keep) or (failed_rule, value).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import List, Optional, Sequence, Tuple

from stage2.steps.quality.c4 import CITATION, END_PUNCTUATION, POLICY_SUBSTRINGS
from oracles import sentence_count_plain, words_plain
from stage2.steps.quality.text import SYMBOL_CHARS, TERMINAL_PUNCTUATION, sentences

Result = Optional[Tuple[str, float]]


def find_duplicates(items: Sequence[str]) -> Tuple[int, int]:
    seen, n, chars = set(), 0, 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def repeated_ngram_chars(words: List[str], n: int) -> int:
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            chars += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def gopher_repetition(text: str, s) -> Result:
    if not text:
        return ("empty", 0.0)
    paragraphs = re.split(r"\n{2,}", text.strip())
    n, chars = find_duplicates(paragraphs)
    if s.dup_para_frac and n / len(paragraphs) > s.dup_para_frac:
        return ("dup_para_frac", n / len(paragraphs))
    if s.dup_para_char_frac and chars / len(text) > s.dup_para_char_frac:
        return ("dup_para_char_frac", chars / len(text))
    lines = re.split(r"\n+", text)
    n, chars = find_duplicates(lines)
    if s.dup_line_frac and n / len(lines) > s.dup_line_frac:
        return ("dup_line_frac", n / len(lines))
    if s.dup_line_char_frac and chars / len(text) > s.dup_line_char_frac:
        return ("dup_line_char_frac", chars / len(text))
    words = words_plain(text)
    for n in (2, 3, 4):
        threshold = getattr(s, f"top_{n}_gram")
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        if threshold is None or not grams:
            continue
        gram, count = Counter(grams).most_common(1)[0]
        if len(gram) * count / len(text) > threshold:
            return (f"top_{n}_gram", len(gram) * count / len(text))
    for n in range(5, 11):
        threshold = getattr(s, f"dup_{n}_gram")
        if threshold is not None and repeated_ngram_chars(words, n) / len(text) > threshold:
            return (f"dup_{n}_gram", repeated_ngram_chars(words, n) / len(text))
    return None


def gopher_quality(text: str, s) -> Result:
    words = words_plain(text)
    non_symbol = [w for w in words if any(c not in SYMBOL_CHARS for c in w)]
    if s.min_doc_words and len(non_symbol) < s.min_doc_words:
        return ("min_doc_words", len(non_symbol))
    if s.max_doc_words and len(non_symbol) > s.max_doc_words:
        return ("max_doc_words", len(non_symbol))
    avg = sum(len(w) for w in non_symbol) / len(non_symbol) if non_symbol else math.nan
    if s.min_avg_word_length and avg < s.min_avg_word_length:
        return ("min_avg_word_length", avg)
    if s.max_avg_word_length and avg > s.max_avg_word_length:
        return ("max_avg_word_length", avg)
    n = len(words) or math.inf
    if s.max_symbol_word_ratio and text.count("#") / n > s.max_symbol_word_ratio:
        return ("max_symbol_word_ratio", text.count("#") / n)
    if s.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n > s.max_symbol_word_ratio:
        return ("max_symbol_word_ratio", (text.count("...") + text.count("…")) / n)
    lines = text.splitlines()
    n_lines = len(lines) or math.inf
    bullets = sum(1 for ln in lines if ln.lstrip().startswith("•") or ln.lstrip().startswith("-"))
    if s.max_bullet_lines_ratio and bullets / n_lines > s.max_bullet_lines_ratio:
        return ("max_bullet_lines_ratio", bullets / n_lines)
    ellipses = sum(1 for ln in lines if ln.rstrip().endswith("...") or ln.rstrip().endswith("…"))
    if s.max_ellipsis_lines_ratio and ellipses / n_lines > s.max_ellipsis_lines_ratio:
        return ("max_ellipsis_lines_ratio", ellipses / n_lines)
    alpha = sum(1 for w in words if any(c.isalpha() for c in w))
    if s.max_non_alpha_words_ratio and words and alpha / n < s.max_non_alpha_words_ratio:
        return ("max_non_alpha_words_ratio", alpha / n)
    present = set(s.stop_words) & set(words)
    if s.min_stop_words and len(present) < s.min_stop_words:
        return ("min_stop_words", len(present))
    return None


def c4_quality(text: str, s) -> Result:
    lines = text.splitlines() if s.split_paragraph else sentences(text)
    count = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        words = line.split()
        if s.max_word_length != -1 and any(len(w) > s.max_word_length for w in words):
            continue
        if s.remove_citations:
            line = CITATION.sub("", line)
        if s.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            continue
        if len(words) < s.min_words_per_line:
            continue
        low = line.lower()
        if s.filter_lorem_ipsum and "lorem ipsum" in low:
            return ("filter_lorem_ipsum", number)
        if s.filter_javascript and "javascript" in low:
            continue
        if s.filter_curly_bracket and "{" in line:
            return ("filter_curly_bracket", number)
        if s.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
            continue
        if s.min_num_sentences != -1:
            count += max(1, sentence_count_plain(line)) if s.split_paragraph else 1
    if count < s.min_num_sentences:
        return ("min_num_sentences", count)
    return None


def fineweb_quality(text: str, s) -> Result:
    stop = tuple(TERMINAL_PUNCTUATION) if s.stop_chars is None else tuple(s.stop_chars)
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if not lines:
        return ("empty", 0.0)
    ratio = sum(1 for ln in lines if ln.endswith(stop)) / len(lines)
    if ratio < s.line_punct_thr and not (ratio == 0 and s.line_punct_exclude_zero):
        return ("line_punct_thr", ratio)
    ratio = sum(1 for ln in lines if len(ln) <= s.short_line_length) / len(lines)
    if ratio > s.short_line_thr:
        return ("short_line_thr", ratio)
    ratio = find_duplicates(lines)[1] / len(text.replace("\n", ""))
    if ratio > s.char_duplicates_ratio:
        return ("char_duplicates_ratio", ratio)
    ratio = text.count("\n") / len(words_plain(text))
    if ratio > s.new_line_ratio:
        return ("new_line_ratio", ratio)
    return None
