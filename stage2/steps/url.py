"""URL rules: drop documents whose URL's host is on a blocklist, or whose URL holds a banned word.

A record's URL is in its component's `url_column` (`dataset.url_column`, or per component in a
manifest; a dotted name such as `meta.url` reaches into a nested column), read from the document's metadata. The host (`urllib.parse`, lower-cased, without port,
user or trailing dot) matches a listed domain when it is that domain or a subdomain of it:
`en.wikipedia.org` matches `wikipedia.org`, `notwikipedia.org` does not. Banned words are matched as
datatrove's URLFilter matches its `banned_words`: whole tokens of the URL split at every run of
characters other than a-z and 0-9 (the URL lower-cased first; datatrove compares the URL's case).
Records without a URL are kept and counted (`url.no_url`).
"""

from __future__ import annotations

import functools
import gzip
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from stage2.documents import Document
from stage2.errors import Stage2Error
from stage2.steps.base import Drop, Rule, Step, StepInputs, Verdict, register

_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://|//", re.IGNORECASE)  # (a scheme, or a network path: `//host/...`)
_DOMAIN = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


@dataclass
class UrlSettings:
    FILE_KEYS: ClassVar[Tuple[str, ...]] = ("blocklist", "banned_word_files")

    blocklist: List[str] = field(default_factory=list)  # files: one domain per line, `#` comments
    banned_words: List[str] = field(default_factory=list)  # words; a URL holding one as a token is dropped
    banned_word_files: List[str] = field(default_factory=list)  # files: one banned word per line, `#` comments

    def active(self) -> bool:
        return bool(self.blocklist or self.banned_words or self.banned_word_files)

    def check(self, at: str) -> List[Rule]:
        bad = [w for w in self.banned_words or [] if not _TOKEN_SPLIT.sub("", str(w).lower())]
        return [(not bad, f"{at}.banned_words holds {bad[0]!r}, which has no letter or digit: no URL token can equal it" if bad else "")]


def column_value(metadata: Mapping[str, Any], column: str) -> Any:
    """A record's column; a dotted name reaches into a nested one (`meta.url`, as dolma's documents keep it)."""
    if column in metadata or "." not in column:
        return metadata.get(column)
    value: Any = metadata
    for part in column.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def url_host(url: str) -> Optional[str]:
    """The host of a URL, lower-cased, without port, user or trailing dot; None when it has none.
    A URL without a scheme (`example.com/page`) is read as one with `//` before it."""
    text = url.strip()
    if not _SCHEME.match(text):
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:  # an unbalanced [ of an IPv6 host
        return None
    host = (host or "").rstrip(".")
    return host or None


def url_tokens(url: str) -> FrozenSet[str]:
    """The URL's words as datatrove's URLFilter splits them (on runs of non-alphanumerics), lower-cased."""
    return frozenset(t for t in _TOKEN_SPLIT.split(url.lower()) if t)


def blocked_by(host: str, domains: Mapping[str, str]) -> Optional[str]:
    """The listed domain `host` is or is a subdomain of (the longest, i.e. the host's own first), or None."""
    labels = host.split(".")
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in domains:
            return suffix
    return None


def _lines(path: str) -> List[Tuple[int, str]]:
    """(line number, text before any `#`, stripped) of a list file's non-blank lines (.gz compressed too)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            raw = f.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise Stage2Error(f"{path}: cannot be read as a list of domains or words: {exc}") from None
    out = []
    for number, line in enumerate(raw, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            out.append((number, text))
    return out


@functools.lru_cache(maxsize=8)
def load_blocklist(paths: Tuple[str, ...], stamp: Tuple[Tuple[int, int], ...]) -> Dict[str, str]:
    """Listed domain -> where it is listed (`file:line`). `stamp` (size, mtime of each file) keys the
    per-process cache, so a worker parses a list once for all its tasks."""
    domains: Dict[str, str] = {}
    for path in paths:
        for number, text in _lines(path):
            entry = text.lower()
            if "/" in entry or ":" in entry:  # a URL rather than a domain: its host
                entry = url_host(entry) or ""
            entry = entry.removeprefix("*.").lstrip(".").rstrip(".")
            if not _DOMAIN.fullmatch(entry):
                raise Stage2Error(f"{path}: line {number}: {text!r} is not a domain (one domain per line, e.g. example.com; `#` starts a comment)")
            domains.setdefault(entry, f"{os.path.basename(path)}:{number}")
    return domains


@functools.lru_cache(maxsize=8)
def load_words(words: Tuple[str, ...], paths: Tuple[str, ...], stamp: Tuple[Tuple[int, int], ...]) -> FrozenSet[str]:
    """Banned words, normalised as datatrove's lists are (letters and digits only, lower-cased)."""
    listed = list(words) + [text for path in paths for _, text in _lines(path)]
    return frozenset(w for w in (_TOKEN_SPLIT.sub("", str(x).lower()) for x in listed) if w)


def _stamp(paths: Sequence[str]) -> Tuple[Tuple[int, int], ...]:
    return tuple((os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


@register
class Url(Step):
    name = "url"
    Settings = UrlSettings
    order = 5  # first after unusable records: it reads no text
    keyed = True

    def __init__(self, settings: UrlSettings, url_column: Optional[str] = None) -> None:
        super().__init__(settings)
        self.url_column = url_column
        blocklist, files = tuple(settings.blocklist), tuple(settings.banned_word_files)
        self.domains = load_blocklist(blocklist, _stamp(blocklist)) if blocklist else {}
        self.words = load_words(tuple(settings.banned_words), files, _stamp(files))

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Optional[Dict[str, Any]]:
        settings = f.step_settings(cls.name)
        if not settings.active() or not own["url_filter"]:
            return None
        from dataclasses import asdict

        return {**asdict(settings), "url_column": own["url_column"]}

    @classmethod
    def prepare(cls, settings: Dict[str, Any], scratch: Path, inputs: StepInputs) -> Dict[str, Any]:
        cls.from_plain(settings)  # a list file that cannot be read, or a line that is no domain: fails at start-up
        return settings

    @classmethod
    def from_plain(cls, settings: Mapping[str, Any]) -> "Url":
        own = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k != "url_column"}
        return cls(UrlSettings(**own), settings.get("url_column"))

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        out: List[Verdict] = []
        for doc in docs:
            url = column_value(doc.metadata, self.url_column) if self.url_column else None
            if not isinstance(url, str) or not url.strip():
                self.tally["no_url"] += 1
                out.append(None)
                continue
            out.append(self.judge_url(url))
        return out

    def judge_url(self, url: str) -> Verdict:
        host = url_host(url)
        listed = blocked_by(host, self.domains) if host and self.domains else None
        if listed is not None:
            self.tally["blocklist"] += 1
            rule = f"blocklist:{listed}"
            return Drop("url", f"host {host} is {'listed' if host == listed else 'a subdomain of'} {listed} ({self.domains[listed]})", {"url_rule": rule, "url": url})
        if self.words:
            banned = sorted(url_tokens(url) & self.words)
            if banned:
                self.tally["banned_word"] += 1
                return Drop("url", f"banned word {banned[0]!r} in the URL", {"url_rule": f"banned_word:{banned[0]}", "url": url})
        return None
