"""Word, line and sentence splitting for the quality steps, fast and in plain Python.

datatrove's Gopher, C4 and FineWeb filters count "words" with spaCy's blank English tokenizer and
C4's sentences with spaCy's sentencizer. Their thresholds are shares of those counts, so the steps
must split text the same way to give the same verdicts. This module re-implements that tokenizer's
procedure (split on whitespace; peel prefixes and suffixes off each chunk, checking special cases
at every turn; keep URLs whole; split infixes; merge special cases made of several pieces) with its
English character classes and a special-case table built here from rules (contractions,
abbreviations, emoticons, times). Differences left (measured on real text in
benchmarks/quality_agreement.py): a letter is what Python calls a letter, where spaCy lists scripts
(text in other scripts splits differently at - / .), a few rare special cases are missing, and
spaCy's special-case matcher can also match across a space.

Speed: a chunk (a run of non-whitespace) is analysed once and memoised, so on real text nearly every
chunk costs one dict lookup. No third-party imports; the regexes are compiled on first use.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain
from operator import itemgetter
from typing import Dict, List, Optional, Pattern, Sequence, Tuple

# ---------------------------------------------------------------------------------------------
# Character classes (spaCy's English tokenizer: what it splits off the start, end and middle).

# Unicode's Sentence_Terminal characters: datatrove's TERMINAL_PUNCTUATION (FineWeb's line-end test,
# and part of what Gopher counts as punctuation) and, but for the ones added in Unicode 13-15, the
# sentencizer's punct_chars.
_TERMINAL_RANGES = (
    "!.?\u0589\u061d-\u061f\u06d4\u0700-\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945"
    "\u1aa8-\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047-\u2049"
    "\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8"
    "\ua9c9\uaa5d-\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61"
    "\U00010a56\U00010a57\U00010f55-\U00010f59\U00010f86-\U00010f89\U00011047\U00011048"
    "\U000110be-\U000110c1\U00011141-\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df"
    "\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3"
    "\U000115c9-\U000115d7\U00011641\U00011642\U0001173c-\U0001173e\U00011944\U00011946\U00011a42"
    "\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44"
    "\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)


def _expand(ranges: str) -> frozenset:
    out, i = set(), 0
    while i < len(ranges):
        if i + 2 < len(ranges) and ranges[i + 1] == "-":
            out.update(chr(c) for c in range(ord(ranges[i]), ord(ranges[i + 2]) + 1))
            i += 3
        else:
            out.add(ranges[i])
            i += 1
    return frozenset(out)


TERMINAL_PUNCTUATION = _expand(_TERMINAL_RANGES)
TERMINAL_PUNCTUATION_STR = "!.?" + "".join(sorted(TERMINAL_PUNCTUATION - set("!.?")))  # as a setting's value

# What datatrove's Gopher quality filter calls punctuation (a word made only of these is a symbol):
# ASCII punctuation, C0/C1 control characters but tab and newline, common non-ASCII marks, and the
# sentence terminals above.
_ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
SYMBOL_CHARS = frozenset(
    _ASCII_PUNCT
    + "".join(chr(c) for c in (*range(0, 9), *range(11, 32), *range(127, 160)))
    + "«´»–—’“”„…∶━►、。〈〉《》「」【】！％（），．１：；？～"
) | TERMINAL_PUNCTUATION

_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"  # split off either end (and "……" as one)
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_CURRENCY_LONG = ("US$", "C$", "A$")
_PREFIX_CHARS = frozenset("§%=—–" + _PUNCT + _QUOTES + _CURRENCY)
_SUFFIX_CHARS = frozenset(_PUNCT + _QUOTES + "—–")
# Units and currencies split off a number's end ("5km" -> "5", "km"; "5$" -> "5", "$").
_UNIT_SET = frozenset(
    (
        "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
        "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² "
        "дм³ см см² см³ мм мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ"
    ).split()
    + list(_CURRENCY)
    + list(_CURRENCY_LONG)
)
_UNIT_LAST = frozenset(u[-1] for u in _UNIT_SET)
# No unit has an ASCII digit in it, so the only unit that can follow a digit at the end of a chunk is
# everything after its last digit.
_AFTER_DIGIT = re.compile(r"[0-9]([^0-9]{1,4})\Z")
# A final period splits off after a digit, a lower-case letter, one of these, or two capitals.
_BEFORE_PERIOD = frozenset("%²-+|(?:)" + _PUNCT + _QUOTES)
_DIGITS = frozenset("0123456789")


def _is_icon(ch: str) -> bool:
    return unicodedata.category(ch) == "So"


def _alpha(ch: str) -> bool:
    """spaCy's ALPHA, nearly: letters, but not the Latin-1 signs that are letters to Unicode (ª µ º)."""
    return ch.isalpha() and (ch >= "\u00c0" or ch.isascii())


def _lower(ch: str) -> bool:
    """spaCy's ALPHA_LOWER: lower-case letters and letters of scripts without case."""
    return _alpha(ch) and not ch.isupper()


def _upper(ch: str) -> bool:
    return _alpha(ch) and not ch.islower()


def _prefix_len(s: str) -> int:
    c = s[0]
    if c == ".":
        dots = len(s) - len(s.lstrip("."))
        return dots if dots >= 2 else 0
    if c == "+":
        return 0 if len(s) > 1 and s[1] in _DIGITS else 1
    if c in _PREFIX_CHARS or (c > "\x7f" and _is_icon(c)):
        return 1
    for cur in _CURRENCY_LONG:
        if s.startswith(cur):
            return len(cur)
    return 0


def _suffix_len(s: str) -> int:
    """Length of the suffix spaCy splits off: of all its suffix patterns that match at the end, the
    one that starts leftmost (so the longest)."""
    n = len(s)
    if not n:
        return 0
    last = s[-1]
    best = 1 if (last in _SUFFIX_CHARS or (last > "\x7f" and _is_icon(last))) else 0
    if n >= 2:
        if last == "…" and s[-2] == "…":
            best = 2
        elif last == ".":
            dots = n - len(s.rstrip("."))
            if dots >= 2:
                return dots
            p = s[-2]
            if p in _DIGITS or p in _BEFORE_PERIOD or _lower(p):
                best = max(best, 1)
            elif n >= 3 and ((_upper(p) and _upper(s[-3])) or (s[-3] == "°" and p in "FfCcKk")):
                best = max(best, 1)
        elif last in "sS" and s[-2] in "'’":
            best = 2
        elif last == "+" and s[-2] in _DIGITS:
            best = max(best, 1)
        if last in _UNIT_LAST:
            m = _AFTER_DIGIT.search(s)
            if m is not None and m.group(1) in _UNIT_SET and len(m.group(1)) > best:
                best = len(m.group(1))
    return best


_HYPHENS = ("-", "–", "—", "--", "---", "——", "~")  # in spaCy's order: the first that fits wins


def _infix_end(s: str, i: int) -> int:
    """Where the infix starting at s[i] ends, or -1: spaCy's infix patterns tried in its order."""
    c = s[i]
    n = len(s)
    nxt = s[i + 1] if i + 1 < n else ""
    prev = s[i - 1] if i else ""
    if c == "." and nxt == ".":
        j = i
        while j < n and s[j] == ".":
            j += 1
        return j
    if c == "…" or _is_icon(c):
        return i + 1
    if c in "+-*^" and prev and prev in _DIGITS and nxt and (nxt in _DIGITS or nxt == "-"):
        return i + 1
    if c == "." and prev and nxt and (_lower(prev) or prev in _QUOTES) and (_upper(nxt) or nxt in _QUOTES):
        return i + 1
    if c == "," and prev and nxt and _alpha(prev) and _alpha(nxt):
        return i + 1
    if prev and (prev in _DIGITS or _alpha(prev)):
        if c in "-–—~":
            for h in _HYPHENS:
                k = i + len(h)
                if s.startswith(h, i) and k < n and _alpha(s[k]):
                    return k
        if c in ":<>=/" and nxt and _alpha(nxt):
            return i + 1
    return -1


_INFIX_CHARS = frozenset(".…+-*^,–—~:<>=/")
# The same patterns, in the same order, for a chunk of ASCII (no icons, "…" or long dashes; the ASCII
# quotes are ' " ` and ,), as one regex: Python's finditer then does what spaCy's does.
_ASCII_INFIX = re.compile(
    r"\.\.+"
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"
    r"|(?<=[a-z'\"`,])\.(?=[A-Z'\"`,])"
    r"|(?<=[A-Za-z]),(?=[A-Za-z])"
    r"|(?<=[A-Za-z0-9])(?:-|--|---|~)(?=[A-Za-z])"
    r"|(?<=[A-Za-z0-9])[:<>=/](?=[A-Za-z])"
)


def _infixes(s: str) -> List[Tuple[int, int]]:
    """The infixes of `s`, left to right and not overlapping (what spaCy's infix_finditer finds)."""
    if s.isascii():
        return [m.span() for m in _ASCII_INFIX.finditer(s)]
    candidates = [i for i, c in enumerate(s) if c in _INFIX_CHARS or (c > "\x7f" and _is_icon(c))]
    out: List[Tuple[int, int]] = []
    done = 0
    for i in candidates:
        if i >= done:
            end = _infix_end(s, i)
            if end > i:
                out.append((i, end))
                done = end
    return out


_URL: List[Pattern] = []


def _url_match(s: str) -> bool:
    """A chunk that looks like a URL or an e-mail address stays one token: a host name ending in a
    lower-case top-level domain, or a public IPv4 address, with an optional scheme, user, port and path."""
    if not _URL:
        head, tail = r"(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?", r"(?::\d{2,5})?(?:[/?#]\S*)?\Z"
        label = r"(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\."
        _URL.append(re.compile(head + "(?:" + label + ")+[a-z\u00df-\u00f6\u00f8-\u00ff]{2,63}" + tail))
        _URL.append(re.compile(head + r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})" + tail))
    if _URL[0].match(s):
        return True
    m = _URL[1].match(s)
    if m is None:
        return False
    a, b, c, d = (int(x) for x in m.groups())
    private = a in (10, 127) or (a, b) in ((169, 254), (192, 168)) or (a == 172 and 16 <= b <= 31)
    return 1 <= a <= 223 and b <= 255 and c <= 255 and 1 <= d <= 254 and not private


# ---------------------------------------------------------------------------------------------
# Special cases: chunks spaCy's English tokenizer splits its own way (contractions, times) or keeps
# whole although its affix rules would split them (abbreviations, emoticons).


def _contractions() -> Dict[str, Tuple[str, ...]]:
    out: Dict[str, Tuple[str, ...]] = {}

    def add(pieces: Sequence[str], bare: bool = True) -> None:
        """The lower-case and Capitalised forms, with ' or ’, and without the apostrophe (`bare`)."""
        for apo in ("'", "’", ""):
            if apo == "" and not bare:
                continue
            toks = [p.replace("'", apo) for p in pieces]
            for cased in (toks, [toks[0][:1].upper() + toks[0][1:]] + toks[1:]):
                out["".join(cased)] = tuple(cased)

    # Pronouns and wh-words with 'd 'll 're 's 've (and 'd've, 'll've). Without an apostrophe spaCy
    # leaves out the forms that are English words (ill, hell, shell, well, its, shed, were, whore).
    clitics = {
        "i": ("'m", "'d", "'ll", "'ve"),
        "you": ("'d", "'ll", "'re", "'ve"),
        "he": ("'d", "'ll", "'s"),
        "she": ("'d", "'ll", "'s"),
        "it": ("'d", "'ll", "'s"),
        "we": ("'d", "'ll", "'re", "'ve"),
        "they": ("'d", "'ll", "'re", "'ve"),
        "that": ("'d", "'ll", "'s"),
        "this": ("'d", "'ll", "'s"),
        "these": ("'d", "'ll", "'re", "'ve"),
        "those": ("'d", "'ll", "'re", "'ve"),
        "there": ("'d", "'ll", "'re", "'s", "'ve"),
        **{w: ("'d", "'ll", "'re", "'s", "'ve") for w in ("what", "when", "where", "why", "how")},
        "who": ("'d", "'ll", "'re", "'s", "'ve"),
    }
    not_bare = {"ill", "hell", "shell", "well", "its", "shed", "were", "whore"}
    for base, ends in clitics.items():
        for end in ends:
            add([base, end], bare=(base + end[1:]) not in not_bare)
            if end in ("'d", "'ll"):
                add([base, end, "'ve"])
    add(["i", "'m", "a"])
    add(["how", "'d", "'y"], bare=False)
    add(["let", "'s"], bare=False)
    # Verbs with n't (can't -> ca n't, won't -> wo n't), some also with n't've.
    for verb in ("ca", "could", "did", "does", "do", "had", "may", "might", "must", "need", "ought", "sha", "should", "wo", "would"):
        add([verb, "n't"])
        add([verb, "n't", "'ve"])
    for verb in ("ai", "are", "dare", "has", "have", "is", "was", "were"):
        add([verb, "n't"])
    for verb in ("could", "might", "must", "should", "would", "not"):
        add([verb, "'ve"])
    for word, pieces in (("cannot", ("can", "not")), ("gonna", ("gon", "na")), ("gotta", ("got", "ta"))):
        out[word] = pieces
        out[word.capitalize()] = (pieces[0].capitalize(),) + pieces[1:]
    for apo in ("'", "’"):
        for a, b in ((f"c{apo}m", "on"), (f"y{apo}", "all")):
            out[a + b] = (a, b)
            out[a[0].upper() + a[1:] + b] = (a[0].upper() + a[1:], b)
    out["yall"], out["Yall"] = ("y", "all"), ("Y", "all")
    return out


# Kept whole: abbreviations whose final period would split off, words with apostrophes the affix
# rules would split, and emoticons.
_WHOLE = (
    "Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. D.C. Dec. Del. Dr. Feb. Fla. "
    "Ga. Gen. Gov. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. "
    "Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. "
    "Nov. Oct. Okla. Ore. Pa. Ph.D. Prof. Rep. Rev. S.C. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. "
    "a.m. p.m. co. e.g. E.g. E.G. i.e. I.e. I.E. vs. v.s. and/or w/o C++ "
    "'s 'S ’s ’S ‘s ‘S 'd ’d 'll ’ll 're ’re 'em ’em 'bout ’bout 'nuff ’nuff nuff em ll ol ol' ol’ Ol Ol' Ol’ "
    "'' ’’ ' ’ \\\") \\n \\t "
    ":) :)) :))) :-) :-)) :-))) :( :(( :((( :-( :-(( :-((( :() ;) ;-) ;_; :D :-D ;D ;-D 8D 8-D =D :P :-P "
    ":p :-p :O :-O :o :-o :o) :0 :-0 :X :-X :x :-x :/ :-/ :| :-| :] :-] :} :-} :* :-* :> :-> :3 :-3 :1 "
    ":'( :') :'-( :'-) :’( :’) :’-( :’-) =) =( =] =[ =| =/ =3 <3 <33 <333 </3 8) 8-) (: (; (= (-: (-; "
    "(-8 [: [-: [= ]= ): )-: >:( >:o >.< >.> <.< (o: xD xDD XD XDD ^_^ ^__^ ^___^ -_- -__- @_@ o_O O_o "
    "o_o O_O o_0 0_o 0_0 o.O O.o o.o O.O o.0 0.o 0.0 v.v V.V v_v V_V ._. (._.) (-_-) (^_^) (*_*) (>_<) "
    "(¬_¬) ಠ_ಠ (ಠ_ಠ) ಠ︵ಠ ¯\\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>"
).split() + [c + "." for c in "abcdefghijklmnopqrstuvwxyzäöü"] + [
    f"{w}{apo}" for w in ("doin", "goin", "havin", "lovin", "nothin", "nuthin", "somethin") for apo in ("", "'", "’")
] + [f"{w[0].upper()}{w[1:]}{apo}" for w in ("doin", "goin", "havin", "lovin", "nothin", "nuthin", "somethin") for apo in ("", "'", "’")] + [
    f"{a}{apo}{b}" for a, b in (("ma", "am"), ("o", "clock"), ("Ma", "am"), ("O", "clock")) for apo in ("'", "’")
] + [f"{apo}{w}" for w in ("cause", "cos", "coz", "cuz", "Cause", "Cos", "Coz", "Cuz") for apo in ("'", "’")]


def _build_specials() -> Dict[str, Tuple[str, ...]]:
    specials = _contractions()
    for s in _WHOLE:
        specials[s] = (s,)
    for hour in range(1, 13):
        for ampm in ("am", "pm", "a.m.", "p.m."):
            specials[f"{hour}{ampm}"] = (str(hour), ampm)
    for unit in "cfkCFK":
        specials[f"°{unit}."] = ("°", unit, ".")
    return specials


SPECIALS: Dict[str, Tuple[str, ...]] = _build_specials()
_MERGE: Optional[Dict[Tuple[str, ...], Tuple[str, ...]]] = None  # affix pieces -> a special's tokens
_MERGE_START: set = set()  # the first two pieces of those


def _merges() -> Dict[Tuple[str, ...], Tuple[str, ...]]:
    """spaCy also applies the special cases its affix rules would split ("word:)" -> "word", ":)"):
    the pieces each such special would be cut into, mapped to its own tokens."""
    global _MERGE
    if _MERGE is None:
        merge = {}
        for key, toks in SPECIALS.items():
            pieces = _affix_tokens(key, specials=False)
            if len(pieces) > 1:
                merge[pieces] = toks
        _MERGE_START.update(pieces[:2] for pieces in merge)
        _MERGE = merge
    return _MERGE


def _affix_tokens(s: str, specials: bool = True) -> Tuple[str, ...]:
    """spaCy's tokenizer on one chunk (no whitespace), before special cases of several pieces."""
    sp = SPECIALS if specials else {}
    if s in sp:
        return sp[s]
    prefixes: List[str] = []
    suffixes: List[str] = []
    last = -1
    while s and len(s) != last:
        if s in sp:
            break
        last = len(s)
        pre = _prefix_len(s)
        if pre:
            minus_pre = s[pre:]
            if minus_pre and minus_pre in sp:
                prefixes.append(s[:pre])
                s = minus_pre
                break
        suf = _suffix_len(s[pre:])
        if suf:
            minus_suf = s[:-suf]
            if minus_suf and minus_suf in sp:
                suffixes.append(s[-suf:])
                s = minus_suf
                break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
    tokens = prefixes
    if s:
        if s in sp:
            tokens.extend(sp[s])
        elif "." in s and _url_match(s):
            tokens.append(s)
        else:
            start = 0
            for a, b in _infixes(s):
                if a == 0:  # spaCy ignores an infix at the very start
                    continue
                if a != start:
                    tokens.append(s[start:a])
                if a != b:
                    tokens.append(s[a:b])
                start = b
            if s[start:]:
                tokens.append(s[start:])
    tokens.extend(reversed(suffixes))
    return tuple(tokens)


def _apply_merges(tokens: Tuple[str, ...]) -> Tuple[str, ...]:
    n = len(tokens)
    if n < 2:
        return tokens
    merges = _merges()
    starts = [i for i in range(n - 1) if tokens[i : i + 2] in _MERGE_START]
    if not starts:
        return tokens
    out: List[str] = []
    i = 0
    for start in starts:
        if start < i:
            continue
        for j in range(min(n, start + 6), start + 1, -1):  # longest first, as spaCy keeps the longest match
            hit = merges.get(tokens[start:j])
            if hit is not None:
                out.extend(tokens[i:start])
                out.extend(hit)
                i = j
                break
    out.extend(tokens[i:])
    return tuple(out)


def tokenize_chunk(chunk: str) -> Tuple[str, ...]:
    """The tokens of one whitespace-free chunk, uncached: the plain version of the procedure."""
    return _apply_merges(_affix_tokens(chunk))


# What the quality rules need of one chunk, computed once per distinct chunk: a plain tuple (faster
# to build than a NamedTuple) of
#   0 tokens         its tokens
#   1 n_symbol       how many are made only of SYMBOL_CHARS (Gopher's punctuation)
#   2 word_chars     characters of the other tokens
#   3 n_alpha        tokens with a letter
#   4 sentence_sig   a letter per token for the sentencizer: T terminal, P other punctuation, W word
Chunk = Tuple[Tuple[str, ...], int, int, int, str]
TOKENS, N_SYMBOL, WORD_CHARS, N_ALPHA, SENTENCE_SIG = range(5)


_CACHE: Dict[str, Chunk] = {}
_CACHE_MAX = 200_000  # distinct chunks remembered (~60 MB at most); the memo starts over when full


def _trim() -> None:
    """Start the memo over when it is full (at the start of a text or line, never inside one)."""
    if len(_CACHE) >= _CACHE_MAX or len(_TOKEN_INFO) >= _CACHE_MAX:
        clear_cache()


def _analyse(chunk: str) -> Chunk:
    # A chunk of letters alone (the common case) has nothing to split off: one token, unless it is a
    # special case ("cannot", "gonna").
    if chunk.isalpha():
        toks = SPECIALS.get(chunk, (chunk,))
        if len(toks) == 1:
            rec = (toks, 0, len(chunk), 1, "W")
            _CACHE[chunk] = rec
            return rec
    else:
        toks = _ascii_shortcut(chunk) if chunk.isascii() else None
        if toks is None:
            toks = tokenize_chunk(chunk)
    n_symbol = word_chars = n_alpha = 0
    sig = ""
    for t in toks:
        if t.isalpha():  # a word: no symbol, a letter, W
            word_chars += len(t)
            n_alpha += 1
            sig += "W"
            continue
        info = _TOKEN_INFO.get(t) or _token_info(t)
        n_symbol += info[0]
        word_chars += info[1]
        n_alpha += info[2]
        sig += info[3]
    rec = (toks, n_symbol, word_chars, n_alpha, sig)
    _CACHE[chunk] = rec
    return rec


_TOKEN_INFO: Dict[str, Tuple[int, int, int, str]] = {}  # token -> its share of a Chunk's fields


def _token_info(t: str) -> Tuple[int, int, int, str]:
    symbol = SYMBOL_CHARS.issuperset(t)
    info = (
        1 if symbol else 0,
        0 if symbol else len(t),
        1 if any(map(str.isalpha, t)) else 0,
        "T" if t in TERMINAL_PUNCTUATION else "P" if is_punct(t) else "W",
    )
    _TOKEN_INFO[t] = info
    return info


_TRAILING = frozenset(",;:!?)]\"'")  # split off any ASCII word's end
_LEADING = frozenset(c for c in _PREFIX_CHARS if c.isascii() and c != "+")


def _ascii_shortcut(chunk: str) -> Optional[Tuple[str, ...]]:
    """The tokens of the commonest ASCII chunks, found without the affix loop: digits; a word and one
    punctuation mark after it ("word," "word."); one before it ("(word"). None for any other chunk,
    and for these when the word is a special case (its pieces may merge with the mark: "id." is
    "i", "d."). Each gives what `tokenize_chunk` gives; a test checks it on real text."""
    if chunk.isdigit():
        return (chunk,)
    if chunk in SPECIALS:
        return None
    word, last = chunk[:-1], chunk[-1]
    if word.isalpha():
        if word in SPECIALS:
            return None
        if last in _TRAILING:
            return (word, last)
        if last == ".":
            # A full stop splits off after a lower-case letter or two capitals ("USA."), not "I."
            if word[-1].islower() or (len(word) > 1 and word[-2].isupper()):
                return (word, ".")
            return (chunk,)
        return None
    first, rest = chunk[0], chunk[1:]
    if first in _LEADING and rest.isalpha() and rest not in SPECIALS:
        return (first, rest)
    return None


def chunk_info(chunk: str) -> Chunk:
    rec = _CACHE.get(chunk)
    return rec if rec is not None else _analyse(chunk)


def records(text: str) -> List[Chunk]:
    """One `Chunk` per whitespace-separated chunk of `text`, in order (C loops on a warm memo)."""
    _trim()
    chunks = text.split()
    recs = list(map(_CACHE.get, chunks))
    if not all(recs):  # (records are non-empty tuples: only a miss is false)
        get = _CACHE.get  # (again: a chunk seen twice in the text is analysed once)
        recs = [r if r is not None else (get(c) or _analyse(c)) for r, c in zip(recs, chunks)]
    return recs


_TOKENS = itemgetter(0)


def words(text: str) -> List[str]:
    """The words (tokens, punctuation included) datatrove's English word splitter gives `text`."""
    return list(chain.from_iterable(map(_TOKENS, records(text))))


def clear_cache() -> None:
    _CACHE.clear()
    _TOKEN_INFO.clear()


# ---------------------------------------------------------------------------------------------
# Sentences (C4): spaCy's sentencizer starts a sentence at the first token after a sentence
# terminal ("." "!" "?" ... as a token of its own) that is not punctuation itself.


_ASCII_P = frozenset("!\"#%&'()*,-./:;?@[\\]_{}")  # ASCII characters of Unicode category P*


def is_punct(token: str) -> bool:
    """spaCy's is_punct: every character is punctuation (Unicode category P*)."""
    if token.isascii():
        return _ASCII_P.issuperset(token)
    return all(unicodedata.category(c).startswith("P") for c in token)


_BOUNDARY = re.compile("T[TP]*W")
_RUNS = re.compile(r"\s+|\S+")
# Whitespace that spaCy makes a token of: anything but one space between two chunks.
_SPACE_TOKEN = re.compile(r"[^\S ]|  ")


def _signature(text: str) -> str:
    """The sentencizer's letter for every token of `text`, whitespace tokens (W) included."""
    get = _CACHE.get
    if _SPACE_TOKEN.search(text) is None:
        return "".join([(get(c) or _analyse(c))[SENTENCE_SIG] for c in text.split()])
    sig = []
    for m in _RUNS.finditer(text):
        run = m.group()
        if run[0].isspace():
            if m.start() == 0 or run[0] != " " or len(run) > 1:  # spaCy gives one space to the token before
                sig.append("W")
        else:
            sig.append((get(run) or _analyse(run))[SENTENCE_SIG])
    return "".join(sig)


def sentence_count(line: str) -> int:
    """How many sentences spaCy's sentencizer finds in `line` (at least 1 for a non-empty line): one,
    and one more at each token after a sentence terminal that is not punctuation itself (a run of
    spaces or a tab is such a token: "Ha!  /\\" is two sentences)."""
    if line.isascii():
        if not line or line.isspace():
            return 0
        # Nothing but punctuation from the first ". ! ?" on (the common "A sentence."): no word can
        # follow a terminal, so one sentence, found without splitting the line into words.
        ends = [k for k in (line.find("."), line.find("!"), line.find("?")) if k >= 0]
        if not ends or _ASCII_P.issuperset(line[min(ends):]):
            return 1
    _trim()
    sig = _signature(line)
    return 1 + len(_BOUNDARY.findall(sig)) if sig else 0


def sentences(text: str) -> List[str]:
    """`text` cut where spaCy's sentencizer ends sentences, as datatrove's split_into_sentences cuts
    it: each piece runs from the end of the sentence before to the end of its own (the last to the
    end of the text), so the pieces join back to `text`. Whitespace runs other than one space are
    tokens of their own here, as in spaCy (a line starting with "(" after a full stop starts a
    sentence at the line break)."""
    _trim()
    kinds: List[str] = []
    ends: List[int] = []
    get = _CACHE.get
    for m in _RUNS.finditer(text):
        a, b = m.span()
        if text[a].isspace():
            if a and text[a] == " ":
                a += 1  # spaCy gives the first space to the token before
            if a < b:
                kinds.append("W")
                ends.append(b)
            continue
        rec = get(m.group()) or _analyse(m.group())
        kinds.append(rec[SENTENCE_SIG])
        for t in rec[TOKENS]:
            a += len(t)
            ends.append(a)
    sig = "".join(kinds)
    if not sig:
        return [text]
    # A sentence ends at the token before each boundary token (the W of "T[TP]*W").
    cuts = [ends[m.end() - 2] for m in _BOUNDARY.finditer(sig)]
    starts = [0] + cuts
    return [text[a:b] for a, b in zip(starts, cuts + [len(text)])]
