"""An optimizer's search space in a study, from the grammar of ``optimizers.distributions``.

Per searched hyperparameter one rule, the same for built-ins and plugins: the study's distribution, else the
optimizer's declared one, else the protocol's default (``distributions.DEFAULT_SEARCH``: learning_rate, power,
momentum); a hyperparameter with none of these but a default value is a constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .distributions import DEFAULT_SEARCH, Distribution, allowed_range, check_range
from .registry import PluginError, spec, who


def search_space(name: str, study_space: Mapping[str, Any] | None = None, fixed: Any = ()) -> dict[str, Distribution]:
    """The search space of ``name`` in a study: its recorded, non-fixed hyperparameters, each with the study's
    distribution (``study_space``, in the study's order) or else the declared (or protocol) default (in
    registry order), parsed.

    Names in ``fixed`` (the study's fixed values) and recorded names with a default value but no distribution
    are left out (constant). A searched hyperparameter with neither raises PluginError naming it; every
    distribution is checked (study syntax, inside the declared range).
    """
    entry = spec(name)
    study_space = dict(study_space or {})
    wanted = [n for n in entry.hyperparams if n not in entry.fixed and n not in set(fixed)]
    space = {n: study_space[n] for n in study_space if n in wanted}
    for n in wanted:
        if n in space:
            continue
        if n in entry.search:
            space[n] = entry.search[n]
        elif n in DEFAULT_SEARCH:
            space[n] = DEFAULT_SEARCH[n]
        elif n not in entry.defaults:
            raise PluginError(
                f"{who(name)}: hyperparameter {n} has no search distribution: declare "
                f"search={{{n!r}: ...}} at register() or set search_space.{n} (or fixed.{n}) in the study"
            )
    parsed = {}
    for n, dist in space.items():
        source = "study search_space" if n in study_space else "declared search"
        try:
            parsed[n] = check_range(n, dist, allowed_range(entry.ranges, n))
        except ValueError as exc:
            raise PluginError(f"{who(name)}: {source} of {exc}") from None
    return parsed
