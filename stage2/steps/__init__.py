"""Per-document filter steps: the interface (base.py) and the shipped steps, registered by name."""

from stage2.steps import language, length  # noqa: F401  (register the shipped steps)
from stage2.steps.base import STEPS, Chain, Drop, Step, Verdict, register  # noqa: F401
