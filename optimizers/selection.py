"""Which trainable tensors get the element-wise map (protocol §1.2): rules on shape/rank, never on names.

A rule is a name from ``RULES`` or a callable ``variable -> bool``. The default ``'rank>=2'`` selects conv
kernels, dense/LSTM kernels, embedding matrices and quadratic_deep's 1x100 ``theta``; biases and batch-norm
scale/offset (rank 1) get the plain gradient. ``'rank>=N'`` works for any integer N.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

DEFAULT_RULE = "rank>=2"
DECAY_ON = ("selected", "all")
_RANK_RE = re.compile(r"^rank>=(\d+)$")


def _rank(variable: Any) -> int:
    return len(tuple(variable.shape))


RULES: dict[str, Callable[[Any], bool]] = {
    "rank>=2": lambda v: _rank(v) >= 2,
    "all": lambda v: True,
    "none": lambda v: False,
}


def resolve_rule(rule: Any = DEFAULT_RULE) -> Callable[[Any], bool]:
    """The predicate ``variable -> bool`` of a rule name or callable; ValueError naming the allowed rules."""
    if rule is None:
        rule = DEFAULT_RULE
    if callable(rule):
        return rule
    if isinstance(rule, str):
        if rule in RULES:
            return RULES[rule]
        match = _RANK_RE.match(rule)
        if match:
            n = int(match.group(1))
            return lambda v: _rank(v) >= n
    raise ValueError(
        f"unknown selection rule {rule!r}; allowed: {', '.join(repr(r) for r in RULES)}, 'rank>=N' "
        "or a callable(variable) -> bool"
    )


def rule_name(rule: Any) -> str:
    """Recordable name of a rule (the string itself, or the callable's qualified name)."""
    if rule is None:
        return DEFAULT_RULE
    if isinstance(rule, str):
        return rule
    return getattr(rule, "__qualname__", repr(rule))


def validate_decay_on(decay_on: Any) -> str:
    if decay_on not in DECAY_ON:
        raise ValueError(f"decay_on must be one of {', '.join(repr(d) for d in DECAY_ON)}, got {decay_on!r}")
    return decay_on


def mask(variables: Sequence[Any], rule: Any = DEFAULT_RULE) -> list[bool]:
    """``[rule(v) for v in variables]`` as Python bools (fixed when the optimizer is built)."""
    predicate = resolve_rule(rule)
    return [bool(predicate(v)) for v in variables]


def variable_path(variable: Any) -> str:
    """Keras 3 variable path (``model/layer/kernel``), falling back to the name."""
    return str(getattr(variable, "path", None) or getattr(variable, "name", "?"))


def selection_record(variables: Iterable[Any], rule: Any = DEFAULT_RULE, decay_on: str | None = None) -> dict:
    """Provenance: the rule, the selected / plain variable paths and (if given) the decayed ones."""
    variables = list(variables)
    selected = mask(variables, rule)
    record = {
        "select": rule_name(rule),
        "selected": [variable_path(v) for v, s in zip(variables, selected) if s],
        "not_selected": [variable_path(v) for v, s in zip(variables, selected) if not s],
    }
    if decay_on is not None:
        record["decay_on"] = decay_on
        record["decayed"] = [variable_path(v) for v, s in zip(variables, selected) if s or decay_on == "all"]
    return record
