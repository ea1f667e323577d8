"""Search distributions of the study syntax as the registry needs them: checked against a declared range, and
a representative value (to build an optimizer once when a plugin is validated).

The syntax and its parser are runners' (``runners.sampler.validate_distribution``, imported on first use so
that ``import optimizers`` stays free of SciPy): ``{log_uniform: [lo, hi]}``, ``{uniform: [lo, hi]}``,
``{randint: [a, b], scale: s}``, ``{choice: [...]}``, ``{fixed: v}`` or a plain constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def bounds(dist: Any) -> tuple[Any, Any]:
    """Smallest and largest value a (syntactically valid) distribution can give; constants give (v, v)."""
    if not isinstance(dist, Mapping):
        return dist, dist
    if "fixed" in dist:
        return dist["fixed"], dist["fixed"]
    if "choice" in dist:
        values = list(dist["choice"])
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return (min(numbers), max(numbers)) if len(numbers) == len(values) else (values[0], values[-1])
    if "randint" in dist:
        scale = dist.get("scale", 1)
        low, high = (scale * v for v in dist["randint"])
        return min(low, high), max(low, high)
    kind = "log_uniform" if "log_uniform" in dist else "uniform"
    return tuple(dist[kind])


def midpoint(dist: Any) -> Any:
    """A representative value: the geometric middle of log_uniform, the middle of uniform, the middle integer
    (times scale) of randint, the first choice, the constant itself."""
    if not isinstance(dist, Mapping):
        return dist
    if "fixed" in dist:
        return dist["fixed"]
    if "choice" in dist:
        return list(dist["choice"])[0]
    if "randint" in dist:
        low, high = dist["randint"]
        return dist.get("scale", 1) * ((low + high) // 2)
    if "log_uniform" in dist:
        low, high = dist["log_uniform"]
        return math.sqrt(low * high)
    low, high = dist["uniform"]
    return (low + high) / 2


def check_distribution(name: str, dist: Any, allowed_range: Any = None) -> None:
    """ValueError ('NAME: what is wrong') if ``dist`` is not valid study syntax or leaves ``allowed_range``."""
    from runners.sampler import validate_distribution

    from .registry import _range_check, parse_range

    validate_distribution(name, dist)
    if allowed_range is None:
        return
    ok, allowed = _range_check(allowed_range)
    if isinstance(dist, Mapping) and ("uniform" in dist or "log_uniform" in dist):
        low, high = parse_range(allowed_range)[:2]  # a continuous draw hits an open end with probability 0
        ok = lambda x: low <= x <= high  # noqa: E731
    for value in bounds(dist):
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(float(value)):
            raise ValueError(f"{name}: {dist!r} reaches {value!r}, outside the allowed range ({allowed})")
