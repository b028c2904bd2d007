"""Language ID: the detector backends behind one protocol (backends), a langdetect-exact fast detector
(langdetect_fast), function-word lists, and the filter's language rule (rule).

Here: where langdetect's profiles are and which languages they cover, for both langdetect backends
and for the driver's check of `filter.languages`, which must not load them (nor numpy)."""

from __future__ import annotations

import os
from typing import Tuple


def langdetect_profiles_directory() -> str:
    """langdetect's `profiles/` folder (its PROFILES_DIRECTORY), found without importing langdetect."""
    import importlib.util

    spec = importlib.util.find_spec("langdetect")
    return os.path.join(list(spec.submodule_search_locations)[0], "profiles")


def langdetect_languages() -> Tuple[str, ...]:
    """The languages langdetect has profiles for: its profile files' names."""
    return tuple(sorted(os.listdir(langdetect_profiles_directory())))
