"""Per-document filter steps: the interface (base.py) and every step, registered by name.

Importing the package imports each of its modules, so a step is one file in this folder (or below):
nothing else lists the steps.
"""

import importlib
import pkgutil

from stage2.steps.base import STEPS, Chain, Drop, Edit, Step, StepInputs, Verdict, chain_settings, optional_steps, quality_steps, register  # noqa: F401

for _module in pkgutil.walk_packages(__path__, f"{__name__}."):
    importlib.import_module(_module.name)
