"""PII redaction: e-mail addresses and public IP addresses in kept documents become fixed placeholders.

A transform, not a drop: the step returns an `Edit` whose text differs from the document's only at the
replaced spans, so a text without PII stays byte-identical. As datatrove's PIIFormatter, with these
differences (each keeps the result independent of the worker count, or avoids a common false match):
- one placeholder per kind (datatrove cycles through several across documents, which makes a
  document's text depend on the documents a worker saw before it);
- e-mail: datatrove's pattern, case-insensitive (datatrove's misses `John.Doe@Example.com`); an
  address whose last label is an image suffix (`icon@2x.png`) is a file name, not an address;
- IPv4: datatrove's pattern, whole numbers only (not inside `1.2.3.4.5` or `a1.2.3.4`), not after
  `v`, `version`, `ver`, `release` or `build` (a version string), and only where Python's
  `ipaddress` calls the address global and not multicast: private, loopback, link-local, shared,
  documentation, multicast, reserved and unspecified ranges stay;
- IPv6 (datatrove has none): a global unicast address (2000::/3) that `ipaddress` calls global.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from stage2.documents import Document
from stage2.steps.base import Edit, Rule, Step, Verdict, register

KINDS = ("email", "ip")

# datatrove's PIIFormatter pattern (RFC 5322's local part; a dotted domain or a bracketed IPv4 address).
EMAIL = re.compile(
    r"\b[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[a-z0-9](?:[a-z0-9-]*["
    r"a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25["
    r"0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[a-z0-9-]*[a-z0-9]:)])",
    re.IGNORECASE,
)
IMAGE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico"})
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9a-f]{1,4}:){1,7}(?::|(?::[0-9a-f]{1,4}){1,6}|[0-9a-f]{1,4})(?![\w:]|\.\d)", re.IGNORECASE)
VERSION_BEFORE = re.compile(r"(?:\bv|\bversion|\bver|\brelease|\bbuild)\.?\s*$", re.IGNORECASE)
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NEEDS = {EMAIL: "@", IPV4: ".", IPV6: ":"}  # a character every match holds


@dataclass
class PiiSettings:
    kinds: List[str] = field(default_factory=list)  # what to redact: email, ip ([]: the step is off)
    email_replacement: str = "email@example.com"  # datatrove's first placeholder
    ip_replacement: str = "22.214.171.124"  # datatrove's first placeholder (for IPv6 addresses too)

    def active(self) -> bool:
        return bool(self.kinds)

    def check(self, at: str) -> List[Rule]:
        kinds = list(self.kinds or [])
        unknown = [k for k in kinds if k not in KINDS]
        return [
            (not unknown, f"{at}.kinds=[{','.join(map(str, kinds))}]: no kind {unknown[0]!r} (the kinds are {', '.join(KINDS)})" if unknown else ""),
            (len(set(kinds)) == len(kinds), f"{at}.kinds=[{','.join(map(str, kinds))}] names a kind twice"),
        ]


def _is_email(text: str, match: re.Match) -> bool:
    return match.group(0).rsplit(".", 1)[-1].lower() not in IMAGE_SUFFIXES


def _is_public_ipv4(text: str, match: re.Match) -> bool:
    if VERSION_BEFORE.search(text, max(0, match.start() - 10), match.start()):
        return False
    try:
        return public(ipaddress.IPv4Address(match.group(0)))
    except ValueError:  # (leading zeros: `01.2.3.4` is no address to `ipaddress`)
        return False


def public(address: Any) -> bool:
    """Global, and in none of the special ranges (`is_global` alone lets multicast through)."""
    special = address.is_private or address.is_loopback or address.is_link_local or address.is_multicast or address.is_reserved or address.is_unspecified
    return address.is_global and not special


def _is_public_ipv6(text: str, match: re.Match) -> bool:
    try:
        address = ipaddress.IPv6Address(match.group(0))
    except ValueError:  # a time (12:30:45), a C++ scope (a::b) that is no address
        return False
    return address in GLOBAL_UNICAST and public(address)


# kind -> the patterns that find it, each with the check a match must pass
PATTERNS: Dict[str, Tuple[Tuple[re.Pattern, Callable[[str, re.Match], bool]], ...]] = {
    "email": ((EMAIL, _is_email),),
    "ip": ((IPV4, _is_public_ipv4), (IPV6, _is_public_ipv6)),
}


def find_pii(text: str, kinds: Sequence[str]) -> List[Tuple[int, int, str]]:
    """(start, end, kind) of every span to replace, in text order, without overlaps (the earlier
    kind in KINDS wins: an address inside an e-mail address `a@[8.8.8.8]` is part of the address)."""
    spans: List[Tuple[int, int, str]] = []  # sorted, disjoint
    for kind in KINDS:
        if kind not in kinds:
            continue
        for pattern, valid in PATTERNS[kind]:
            if not any(c in text for c in _NEEDS[pattern]):
                continue  # (most documents: no scan at all)
            for match in pattern.finditer(text):
                start, end = match.span()
                at = bisect.bisect_left(spans, (end,))  # the spans starting before `end`: only the last can overlap
                if (at == 0 or spans[at - 1][1] <= start) and valid(text, match):
                    spans.insert(at, (start, end, kind))
    return spans


def redact(text: str, kinds: Sequence[str], replacements: Mapping[str, str]) -> Tuple[str, List[Tuple[int, int, str]]]:
    """The text with every span of `find_pii` replaced by its kind's placeholder (a span that already
    is the placeholder is left, and not counted), and the spans replaced."""
    spans = [s for s in find_pii(text, kinds) if text[s[0] : s[1]] != replacements[s[2]]]
    if not spans:
        return text, []
    pieces, at = [], 0
    for start, end, kind in spans:
        pieces += [text[at:start], replacements[kind]]
        at = end
    pieces.append(text[at:])
    return "".join(pieces), spans


def _context(text: str, start: int, end: int, width: int = 30) -> str:
    before, after = text[max(0, start - width) : start], text[end : end + width]
    return " ".join(f"{before}[{text[start:end]}]{after}".split())


@register
class Pii(Step):
    name = "pii"
    Settings = PiiSettings
    order = 90  # last: only documents every check kept are redacted
    keyed = True
    edits = ("pii",)

    @classmethod
    def settings_for(cls, own: Mapping[str, Any], f: Any) -> Optional[Dict[str, Any]]:
        from dataclasses import asdict

        settings = f.step_settings(cls.name)
        return asdict(settings) if settings.active() else None

    def judge(self, docs: Sequence[Document]) -> List[Verdict]:
        kinds = self.settings.kinds
        replacements = {"email": self.settings.email_replacement, "ip": self.settings.ip_replacement}
        out: List[Verdict] = []
        for doc in docs:
            text, spans = redact(doc.text, kinds, replacements)
            if not spans:
                out.append(None)
                continue
            counts = {kind: sum(1 for s in spans if s[2] == kind) for kind in kinds}
            self.tally["documents"] += 1
            for kind, n in counts.items():
                self.tally[kind] += n
            shown = "; ".join(f"{kind}: {_context(doc.text, start, end)}" for start, end, kind in spans[:3])
            more = f"; +{len(spans) - 3} more" if len(spans) > 3 else ""
            out.append(Edit(text, self.name, f"{len(spans)} replaced: {shown}{more}", {f"pii_{kind}": n for kind, n in counts.items()}))
        return out
