"""The document every stage passes around, from its source record to its filtered part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Document:
    id: str
    text: Optional[str]
    component: str
    source: str  # the file or hub dataset it came from
    record: int  # 1-based record number within `source`
    metadata: Dict[str, Any] = field(default_factory=dict)  # the record's other columns
    problem: Optional[str] = None  # set when the record is unusable (null text, wrong type, ...)
