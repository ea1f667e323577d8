"""The search-space grammar of the study files, in one leaf module (of the project only the error base).

A search space is an ordered mapping ``name -> distribution``; a distribution is (also the YAML syntax):

* ``{"log_uniform": [lo, hi]}``   10 ** U(log10 lo, log10 hi)                    (DeepOBS ``log_uniform``)
* ``{"uniform": [lo, hi]}``       U(lo, hi)                                       (scipy ``uniform``)
* ``{"randint": [lo, hi], "scale": s}``  s * k, k uniform on {lo, ..., hi} (inclusive) (scipy ``randint``)
* ``{"choice": [v0, v1, ...]}``   v_k, k uniform on {0, ..., n-1} (same stream as randint)
* a plain scalar (number, bool, string) or ``{"fixed": v}``: constant, draws nothing.

``parse`` turns the syntax into a typed ``Distribution`` once; each kind knows its bounds, its middle value
(to build an optimizer once at planning time) and how it draws from a ``np.random.RandomState`` (the
stream of DeepOBS' ``RandomSearch``, see ``runners.sampler``). Allowed ranges (``'[0, 1)'``) are parsed here
too, and the protocol's defaults (the paper's and Crowded Valley's search, the built-ins' ranges) live here.

``10 ** u`` is computed correctly rounded (``pow10``, in 50-digit decimal arithmetic), not with ``np.power``:
NumPy's AVX-512 ``power`` (SVML) differs from its AVX2/scalar one in the last bits, so the same seed gave
learning rates 1 ulp apart on different CPUs (3 of the paper's 50, on an AMD EPYC with AVX-512). The
correctly rounded value equals the paper's released learning rates bit for bit in all 50 samples.
"""

from __future__ import annotations

import copy
import dataclasses
import decimal
import math
from collections.abc import Callable, Mapping
from typing import Any

from deepobs_tree.errors import NlwuError

KINDS = ("log_uniform", "uniform", "randint", "choice", "fixed")

#: protocol §3.2 and §6: the default distribution of each searched hyperparameter, in draw order (learning
#: rate first). An optimizer that records one of these names and declares no distribution searches this one.
DEFAULT_SEARCH: dict[str, Any] = {
    "learning_rate": {"log_uniform": [1e-4, 1.0]},
    "power": {"randint": [4, 9], "scale": 0.1},
    "momentum": {"log_uniform": [1e-3, 1.0]},
}
#: allowed range of the built-ins' hyperparameters, also applied to any optimizer that takes these names undeclared
DEFAULT_RANGES: dict[str, str] = {
    "learning_rate": "(0, inf)",
    "momentum": "[0, 1)",
    "power": "(0, inf)",
    "weight_decay_opt": "[0, inf)",
}
#: protocol §3.2: the paper's search space (order matters: learning rate is drawn first) and budget.
PAPER_SPACE: dict[str, Any] = {n: copy.deepcopy(DEFAULT_SEARCH[n]) for n in ("learning_rate", "power")}
#: protocol §6: Crowded Valley's space for the Momentum/NAG baselines (SGD: learning rate only).
CROWDED_VALLEY_SPACE: dict[str, Any] = {n: copy.deepcopy(DEFAULT_SEARCH[n]) for n in ("learning_rate", "momentum")}
PAPER_BUDGET = 50


class SpaceError(NlwuError, ValueError):
    """A malformed search space; the message names the parameter."""


Draw = Callable[[Any], Any]  # np.random.RandomState -> value


@dataclasses.dataclass(frozen=True)
class Distribution:
    """One parsed distribution; ``syntax`` is what the study (or ``register``) wrote."""

    syntax: Any

    searched = True  # draws from the RNG (a constant does not)

    def bounds(self) -> tuple[Any, Any]:
        """Smallest and largest value it can give."""
        raise NotImplementedError

    def midpoint(self) -> Any:
        """A representative value (to build an optimizer once before anything trains)."""
        raise NotImplementedError

    def drawer(self) -> Draw:
        """A function rng -> value drawing DeepOBS' stream (the NumPy calls SciPy's frozen distributions make)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Constant(Distribution):
    """A plain value or ``{fixed: v}``: draws nothing."""

    value: Any
    searched = False

    def bounds(self):
        return self.value, self.value

    def midpoint(self):
        return self.value

    def drawer(self):
        value = self.value
        return lambda rng: value


@dataclasses.dataclass(frozen=True)
class _Interval(Distribution):
    """A continuous draw on [low, high]."""

    low: float
    high: float

    def bounds(self):
        return self.low, self.high


@dataclasses.dataclass(frozen=True)
class LogUniform(_Interval):
    def midpoint(self):
        return math.sqrt(self.low * self.high)

    def drawer(self):
        lo, hi = math.log10(self.low), math.log10(self.high)
        # DeepOBS tuner_utils.log_uniform: np.power(base, uniform(loc, scale).rvs(size=1))[0], correctly rounded
        return lambda rng: pow10(_uniform_rvs(rng, lo, hi - lo))


@dataclasses.dataclass(frozen=True)
class Uniform(_Interval):
    def midpoint(self):
        return (self.low + self.high) / 2

    def drawer(self):
        loc, scale = self.low, self.high - self.low
        return lambda rng: _uniform_rvs(rng, loc, scale)


@dataclasses.dataclass(frozen=True)
class RandInt(Distribution):
    """``scale * k``, k uniform on {low, ..., high}; a float scale gives floats."""

    low: int
    high: int
    scale: float = 1

    def bounds(self):
        low, high = self.scale * self.low, self.scale * self.high
        return min(low, high), max(low, high)

    def midpoint(self):
        return self.scale * ((self.low + self.high) // 2)

    def drawer(self):
        low, high, scale = self.low, self.high + 1, self.scale
        if isinstance(scale, float):
            return lambda rng: float(scale * _randint_rvs(rng, low, high))
        return lambda rng: int(scale * _randint_rvs(rng, low, high))


@dataclasses.dataclass(frozen=True)
class Choice(Distribution):
    values: tuple

    def bounds(self):
        numbers = [v for v in self.values if _number(v)]
        return (min(numbers), max(numbers)) if len(numbers) == len(self.values) else (self.values[0], self.values[-1])

    def midpoint(self):
        return self.values[0]

    def drawer(self):
        values = list(self.values)
        return lambda rng: values[_randint_rvs(rng, 0, len(values))]


def _uniform_rvs(rng, loc: float, scale: float) -> float:
    """``scipy.stats.uniform(loc, scale).rvs(random_state=rng)`` without importing SciPy (~1 s): SciPy draws
    ``rng.uniform(0.0, 1.0)`` and returns ``value * scale + loc`` (tests/test_runners_core_sampler.py checks the
    two bit for bit)."""
    return float(rng.uniform(0.0, 1.0, size=()) * scale + loc)


def _randint_rvs(rng, low: int, high: int) -> int:
    """``scipy.stats.randint(low, high).rvs(random_state=rng)`` (``high`` exclusive) without SciPy: SciPy draws
    ``rng.randint(low, high)`` (same test)."""
    return int(rng.randint(low, high, size=()))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def parse(name: str, dist: Any) -> Distribution:
    """The typed value of one distribution (a ``Distribution`` is returned as it is); SpaceError naming
    ``name`` if ``dist`` is not of the syntax above."""
    if isinstance(dist, Distribution):
        return dist
    if not isinstance(dist, Mapping):
        if isinstance(dist, int | float | str | bool) or dist is None:
            return Constant(dist, dist)
        raise SpaceError(f"{name}: expected a number, string or a one-key mapping {KINDS}, got {dist!r}")
    kinds = [k for k in dist if k in KINDS]
    extra = sorted(set(dist) - set(KINDS) - {"scale"})
    if len(kinds) != 1 or extra:
        raise SpaceError(
            f"{name}: a distribution needs exactly one of {list(KINDS)} (+ 'scale' for randint), "
            f"got keys {sorted(dist)}"
        )
    kind = kinds[0]
    arg = dist[kind]
    if "scale" in dist and kind != "randint":
        raise SpaceError(f"{name}: 'scale' is only allowed with randint")
    if kind == "fixed":
        return Constant(dist, arg)
    if kind == "choice":
        if not isinstance(arg, list | tuple) or not arg:
            raise SpaceError(f"{name}: choice needs a non-empty list of values, got {arg!r}")
        return Choice(dist, tuple(arg))
    if not isinstance(arg, list | tuple) or len(arg) != 2 or not all(_number(v) for v in arg):
        raise SpaceError(f"{name}: {kind} needs [low, high] (two finite numbers), got {arg!r}")
    lo, hi = arg
    if kind == "log_uniform":
        if not 0 < lo < hi:
            raise SpaceError(f"{name}: log_uniform needs 0 < low < high, got {arg!r}")
        return LogUniform(dist, lo, hi)
    if kind == "uniform":
        if not lo < hi:
            raise SpaceError(f"{name}: uniform needs low < high, got {arg!r}")
        return Uniform(dist, lo, hi)
    if not all(isinstance(v, int) for v in arg) or lo > hi:
        raise SpaceError(f"{name}: randint needs integers low <= high, got {arg!r}")
    scale = dist.get("scale", 1)
    if not _number(scale):
        raise SpaceError(f"{name}: randint scale must be a finite number, got {scale!r}")
    return RandInt(dist, lo, hi, scale)


def parse_space(space: Any) -> dict[str, Distribution]:
    """Every distribution of a search space, parsed, in its order; SpaceError on a bad one or an empty space."""
    if not isinstance(space, Mapping) or not space:
        raise SpaceError(f"a search space must be a non-empty mapping name -> distribution, got {space!r}")
    return {str(name): parse(str(name), dist) for name, dist in space.items()}


_DECIMAL = decimal.Context(prec=50)


def pow10(exponent: float) -> float:
    """10 ** ``exponent`` correctly rounded to float64, the same on every CPU (module docstring)."""
    return float(_DECIMAL.power(decimal.Decimal(10), decimal.Decimal(exponent)))


# ---------------------------------------------------------------------------------------------------------
# Allowed ranges: '[lo, hi)' intervals
# ---------------------------------------------------------------------------------------------------------
def parse_range(text: Any) -> tuple[float, float, bool, bool]:
    """``'[lo, hi)'``-style interval (``inf`` allowed; a 2-sequence is closed) -> (lo, hi, lo_closed,
    hi_closed); ValueError on anything else."""
    if isinstance(text, list | tuple) and len(text) == 2:
        text = f"[{text[0]}, {text[1]}]"
    if not isinstance(text, str):
        raise ValueError(f"expected an interval like '[0, 1)' or '(0, inf)', got {text!r}")
    body = text.strip()
    parts = body[1:-1].split(",") if len(body) >= 2 else []
    try:
        if body[0] not in "[(" or body[-1] not in ")]" or len(parts) != 2:
            raise ValueError
        lo, hi = (float(p) for p in parts)
    except (ValueError, IndexError):
        raise ValueError(f"expected an interval like '[0, 1)' or '(0, inf)', got {text!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not lo <= hi:
        raise ValueError(f"expected an interval with low <= high, got {text!r}")
    return lo, hi, body[0] == "[" and math.isfinite(lo), body[-1] == "]" and math.isfinite(hi)


def range_check(text: Any) -> tuple[Callable[[float], bool], str]:
    """(predicate, 'a number in [lo, hi)') of an interval; half-lines read 'a number > 0' etc."""
    lo, hi, lo_in, hi_in = parse_range(text)

    def ok(x: float) -> bool:
        return (lo <= x if lo_in else lo < x) and (x <= hi if hi_in else x < hi)

    def num(v: float) -> str:
        return f"{v:g}" if math.isfinite(v) else ("inf" if v > 0 else "-inf")

    if math.isinf(hi) and math.isfinite(lo):
        allowed = f"a number {'>=' if lo_in else '>'} {num(lo)}"
    elif math.isinf(lo) and math.isfinite(hi):
        allowed = f"a number {'<=' if hi_in else '<'} {num(hi)}"
    else:
        allowed = f"a number in {'[' if lo_in else '('}{num(lo)}, {num(hi)}{']' if hi_in else ')'}"
    return ok, allowed


def allowed_range(declared: Mapping[str, Any], name: str) -> Any:
    """The range of hyperparameter ``name``: the optimizer's declared one, else the built-in one (or None)."""
    return declared.get(name) or DEFAULT_RANGES.get(name)


def check_range(name: str, dist: Any, allowed: Any = None) -> Distribution:
    """The parsed ``dist``; ValueError ('NAME: what is wrong') if it is not valid syntax or can leave the
    interval ``allowed`` (None: any value)."""
    parsed = parse(name, dist)
    if allowed is None:
        return parsed
    ok, text = range_check(allowed)
    if isinstance(parsed, _Interval):
        low, high = parse_range(allowed)[:2]  # a continuous draw hits an open end with probability 0
        ok = lambda x: low <= x <= high  # noqa: E731
    for value in parsed.bounds():
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(float(value)):
            raise ValueError(f"{name}: {parsed.syntax!r} reaches {value!r}, outside the allowed range ({text})")
    return parsed
