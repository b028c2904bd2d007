"""Quality heuristics as filter steps: Gopher repetition and quality, C4, FineWeb.

The steps `gopher_repetition`, `gopher_quality`, `c4_quality` and `fineweb_quality` (registered in
this order, FineWeb's, which is how `filter.quality`'s error message and FilterConfig list them). Each
is enabled by naming it in `filter.quality`; its settings are `filter.<step name>`. The modules
import nothing beyond the standard library.
"""

from stage2.steps.quality.gopher import GopherQuality, GopherQualitySettings, GopherRepetition, GopherRepetitionSettings
from stage2.steps.quality.c4 import C4Quality, C4QualitySettings
from stage2.steps.quality.fineweb import FineWebQuality, FineWebQualitySettings

__all__ = [
    "C4Quality",
    "C4QualitySettings",
    "FineWebQuality",
    "FineWebQualitySettings",
    "GopherQuality",
    "GopherQualitySettings",
    "GopherRepetition",
    "GopherRepetitionSettings",
]
