"""Quality heuristics as filter steps: Gopher repetition and quality, C4, FineWeb.

Importing this package registers the steps (`gopher_repetition`, `gopher_quality`, `c4_quality`,
`fineweb_quality`) in `stage2.steps.base.STEPS`. Each is enabled by naming it in `filter.quality`;
its settings are `filter.<step name>`. The modules import nothing beyond the standard library.
"""

from stage2.steps.quality.c4 import C4Quality, C4QualitySettings
from stage2.steps.quality.fineweb import FineWebQuality, FineWebQualitySettings
from stage2.steps.quality.gopher import GopherQuality, GopherQualitySettings, GopherRepetition, GopherRepetitionSettings

QUALITY_STEPS = {
    "gopher_repetition": GopherRepetitionSettings,
    "gopher_quality": GopherQualitySettings,
    "c4_quality": C4QualitySettings,
    "fineweb_quality": FineWebQualitySettings,
}

__all__ = [
    "QUALITY_STEPS",
    "C4Quality",
    "C4QualitySettings",
    "FineWebQuality",
    "FineWebQualitySettings",
    "GopherQuality",
    "GopherQualitySettings",
    "GopherRepetition",
    "GopherRepetitionSettings",
]
