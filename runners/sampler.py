"""The random-search sampler of DeepOBS / the paper (protocol §3.2), exactly reproduced.

DeepOBS' ``RandomSearch`` seeds NumPy's global RNG with the tuning seed (``Tuner._set_seed``) and then, per
sample, calls ``rvs()`` on each distribution in the order of the search-space dict. The paper used
``learning_rate = log_uniform(-4, 0)`` (``10 ** scipy.stats.uniform(-4, 4).rvs()``) then
``power = 0.1 * scipy.stats.randint(4, 10).rvs()``. We draw the same stream from a private
``np.random.RandomState(seed)`` (bit-identical to the seeded global RNG, but without touching global state),
so seed 42 gives the paper's 50 (learning rate, power) pairs in order.

``10 ** u`` is computed correctly rounded (``pow10``, in 50-digit decimal arithmetic), not with ``np.power``:
NumPy's AVX-512 ``power`` (SVML) differs from its AVX2/scalar one in the last bits, so the same seed gave
learning rates 1 ulp apart on different CPUs (3 of the paper's 50, on an AMD EPYC with AVX-512): run identity
tolerates that (``runners.spec.same_value``), but the recorded values and every digest of the specs differed.
The correctly rounded value equals the paper's released learning rates bit for bit in all 50 samples (glibc's
``pow`` in 49, AVX-512 ``np.power`` in 47).

A search space is an ordered mapping ``name -> distribution``; distributions (also the YAML syntax):

* ``{"log_uniform": [lo, hi]}``   10 ** U(log10 lo, log10 hi)                    (DeepOBS ``log_uniform``)
* ``{"uniform": [lo, hi]}``       U(lo, hi)                                       (scipy ``uniform``)
* ``{"randint": [lo, hi], "scale": s}``  s * k, k uniform on {lo, ..., hi} (inclusive) (scipy ``randint``)
* ``{"choice": [v0, v1, ...]}``   v_k, k uniform on {0, ..., n-1} (same stream as randint)
* a plain scalar (number, bool, string) or ``{"fixed": v}``: constant, draws nothing.
"""

from __future__ import annotations

import copy
import decimal
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from deepobs_tree import TUNING_SEED
from optimizers.registry import BUILTIN_SEARCH

#: protocol §3.2: the paper's search space (order matters: learning rate is drawn first).
PAPER_SPACE: dict[str, Any] = {n: copy.deepcopy(BUILTIN_SEARCH[n]) for n in ("learning_rate", "power")}
#: protocol §6: Crowded Valley's space for the Momentum/NAG baselines (SGD: learning rate only).
CROWDED_VALLEY_SPACE: dict[str, Any] = {n: copy.deepcopy(BUILTIN_SEARCH[n]) for n in ("learning_rate", "momentum")}
PAPER_BUDGET = 50

KINDS = ("log_uniform", "uniform", "randint", "choice", "fixed")


class SpaceError(ValueError):
    """A malformed search space; the message names the parameter."""


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate_distribution(name: str, dist: Any) -> None:
    """Raise SpaceError naming ``name`` if ``dist`` is not a distribution of the syntax above."""
    if not isinstance(dist, Mapping):
        if isinstance(dist, int | float | str | bool) or dist is None:
            return
        raise SpaceError(f"{name}: expected a number, string or a one-key mapping {KINDS}, got {dist!r}")
    kinds = [k for k in dist if k in KINDS]
    extra = sorted(set(dist) - set(KINDS) - {"scale"})
    if len(kinds) != 1 or extra:
        raise SpaceError(f"{name}: a distribution needs exactly one of {list(KINDS)} (+ 'scale' for randint), "
                         f"got keys {sorted(dist)}")
    kind = kinds[0]
    arg = dist[kind]
    if "scale" in dist and kind != "randint":
        raise SpaceError(f"{name}: 'scale' is only allowed with randint")
    if kind == "fixed":
        return
    if kind == "choice":
        if not isinstance(arg, list | tuple) or not arg:
            raise SpaceError(f"{name}: choice needs a non-empty list of values, got {arg!r}")
        return
    if not isinstance(arg, list | tuple) or len(arg) != 2 or not all(_number(v) for v in arg):
        raise SpaceError(f"{name}: {kind} needs [low, high] (two finite numbers), got {arg!r}")
    lo, hi = arg
    if kind == "log_uniform" and not 0 < lo < hi:
        raise SpaceError(f"{name}: log_uniform needs 0 < low < high, got {arg!r}")
    if kind == "uniform" and not lo < hi:
        raise SpaceError(f"{name}: uniform needs low < high, got {arg!r}")
    if kind == "randint":
        if not all(isinstance(v, int) for v in arg) or lo > hi:
            raise SpaceError(f"{name}: randint needs integers low <= high, got {arg!r}")
        scale = dist.get("scale", 1)
        if not _number(scale):
            raise SpaceError(f"{name}: randint scale must be a finite number, got {scale!r}")


def validate_space(space: Any) -> None:
    if not isinstance(space, Mapping) or not space:
        raise SpaceError(f"a search space must be a non-empty mapping name -> distribution, got {space!r}")
    for name, dist in space.items():
        validate_distribution(str(name), dist)


def is_searched(dist: Any) -> bool:
    """True if the distribution draws from the RNG (i.e. the parameter is searched, not fixed)."""
    return isinstance(dist, Mapping) and "fixed" not in dist


_DECIMAL = decimal.Context(prec=50)


def pow10(exponent: float) -> float:
    """10 ** ``exponent`` correctly rounded to float64, the same on every CPU (module docstring)."""
    return float(_DECIMAL.power(decimal.Decimal(10), decimal.Decimal(exponent)))


def _drawer(dist: Any):
    """A function rng -> value for one distribution (frozen scipy distributions built once, not per draw)."""
    if not isinstance(dist, Mapping):
        return lambda rng: dist
    if "fixed" in dist:
        value = dist["fixed"]
        return lambda rng: value
    if "log_uniform" in dist:
        lo, hi = (math.log10(v) for v in dist["log_uniform"])
        frozen = stats.uniform(loc=lo, scale=hi - lo)
        # DeepOBS tuner_utils.log_uniform: np.power(base, uniform(loc, scale).rvs(size=1))[0], correctly rounded
        return lambda rng: pow10(float(frozen.rvs(size=1, random_state=rng)[0]))
    if "uniform" in dist:
        lo, hi = dist["uniform"]
        frozen = stats.uniform(loc=lo, scale=hi - lo)
        return lambda rng: float(frozen.rvs(random_state=rng))
    if "randint" in dist:
        lo, hi = dist["randint"]
        frozen = stats.randint(lo, hi + 1)
        scale = dist.get("scale", 1)
        if isinstance(scale, float):
            return lambda rng: float(scale * frozen.rvs(random_state=rng))
        return lambda rng: int(scale * frozen.rvs(random_state=rng))
    if "choice" in dist:
        values = list(dist["choice"])
        frozen = stats.randint(0, len(values))
        return lambda rng: values[int(frozen.rvs(random_state=rng))]
    raise SpaceError(f"unknown distribution {dist!r}")


def sample_search(space: Mapping[str, Any], n: int, seed: int = TUNING_SEED) -> list[dict[str, Any]]:
    """``n`` samples of ``space`` (dicts in the space's key order), DeepOBS ``RandomSearch`` order and stream."""
    validate_space(space)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SpaceError(f"the number of samples must be an integer >= 0, got {n!r}")
    rng = np.random.RandomState(seed)
    drawers = [(name, _drawer(dist)) for name, dist in space.items()]
    return [{name: draw(rng) for name, draw in drawers} for _ in range(n)]


def paper_samples(n: int = PAPER_BUDGET, seed: int = TUNING_SEED) -> list[dict[str, float]]:
    """The paper's random search (protocol §3.2): seed 42 gives its 50 (learning_rate, power) pairs in order."""
    return sample_search(PAPER_SPACE, n, seed)


def crowded_valley_samples(n: int = PAPER_BUDGET, seed: int = TUNING_SEED, momentum: bool = True):
    """Crowded Valley's baseline search (protocol §6); without momentum, the SGD space (learning rate only)."""
    space = CROWDED_VALLEY_SPACE if momentum else {"learning_rate": CROWDED_VALLEY_SPACE["learning_rate"]}
    return sample_search(space, n, seed)
