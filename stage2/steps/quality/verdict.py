"""How a quality step says why it dropped a document: the rule (its config key), the measured value
and the threshold it failed, in the same shape for every step."""

from __future__ import annotations

from typing import Optional, Union

from stage2.steps.base import Drop

Number = Union[int, float]


def failed(step: str, rule: str, measure: str, value: Number, op: str, threshold: Optional[Number]) -> Drop:
    """`Drop(step, "dup_line_frac=0.410 > 0.300", {"failed_rule": "dup_line_frac", "value": 0.41, ...})`.

    `rule` is the setting whose threshold failed (what to change or sweep), `measure` what was
    measured (often the same name), `op` how the value compared with the threshold to fail."""
    def show(v: Number) -> str:
        return str(v) if isinstance(v, int) else f"{v:.3f}"

    detail = f"{measure}={show(value)} {op} {show(threshold)}" if threshold is not None else f"{measure}={show(value)}"
    if measure != rule:
        detail += f" ({rule})"
    return Drop(step, detail, {"failed_rule": rule, "value": float(value), "threshold": None if threshold is None else float(threshold)})
