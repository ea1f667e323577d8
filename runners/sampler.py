"""The random-search sampler of DeepOBS / the paper (protocol §3.2), exactly reproduced.

DeepOBS' ``RandomSearch`` seeds NumPy's global RNG with the tuning seed (``Tuner._set_seed``) and then, per
sample, calls ``rvs()`` on each distribution in the order of the search-space dict. The paper used
``learning_rate = log_uniform(-4, 0)`` (``10 ** scipy.stats.uniform(-4, 4).rvs()``) then
``power = 0.1 * scipy.stats.randint(4, 10).rvs()``. We draw the same stream from a private
``np.random.RandomState(seed)`` (bit-identical to the seeded global RNG, but without touching global state),
so seed 42 gives the paper's 50 (learning rate, power) pairs in order.

The grammar of a search space (its distributions, how each one draws, ``pow10``) is
``optimizers.distributions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepobs_tree import TUNING_SEED
from optimizers.distributions import CROWDED_VALLEY_SPACE, PAPER_BUDGET, PAPER_SPACE, SpaceError, parse_space


def sample_search(space: Mapping[str, Any], n: int, seed: int = TUNING_SEED) -> list[dict[str, Any]]:
    """``n`` samples of ``space`` (syntax or parsed distributions; dicts in the space's key order), DeepOBS
    ``RandomSearch`` order and stream."""
    parsed = parse_space(space)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SpaceError(f"the number of samples must be an integer >= 0, got {n!r}")
    rng = np.random.RandomState(seed)
    drawers = [(name, dist.drawer()) for name, dist in parsed.items()]
    return [{name: draw(rng) for name, draw in drawers} for _ in range(n)]


def paper_samples(n: int = PAPER_BUDGET, seed: int = TUNING_SEED) -> list[dict[str, float]]:
    """The paper's random search (protocol §3.2): seed 42 gives its 50 (learning_rate, power) pairs in order."""
    return sample_search(PAPER_SPACE, n, seed)


def crowded_valley_samples(n: int = PAPER_BUDGET, seed: int = TUNING_SEED, momentum: bool = True):
    """Crowded Valley's baseline search (protocol §6); without momentum, the SGD space (learning rate only)."""
    space = CROWDED_VALLEY_SPACE if momentum else {"learning_rate": CROWDED_VALLEY_SPACE["learning_rate"]}
    return sample_search(space, n, seed)
