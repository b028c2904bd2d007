"""The document every stage passes around, from its source record to its filtered part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Document:
    id: str
    text: Optional[str]
    component: str
    source: str  # the file (below its component's root) or hub dataset it came from
    record: int  # 1-based record number within `source`
    metadata: Dict[str, Any] = field(default_factory=dict)  # the record's other columns
    problem: Optional[str] = None  # set when the record is unusable (null text, wrong type, ...)
    # Where `source` is on this machine, for messages (None when read back from parts): artifacts name
    # the source relative to its component's root, so that they do not depend on where the data lives.
    path: Optional[str] = None

    @property
    def location(self) -> str:
        """The source as messages name it: where the user finds it."""
        return self.path or self.source
