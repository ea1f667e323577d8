"""Schema check of a DeepOBS result file (deepobs-format §2): a file is trusted only if it passes.

Why: a results tree is user data that can hold anything named like a result (a foreign JSON, a file of the
wrong layout, a truncated copy). The reader (``analysis``) and the runner's resume (``runners``) both ask
``check_result`` before they count or reuse a file, so such a file is named in a warning and never
summarised or taken for a finished run.

Accepted layouts: DeepOBS 1.2 (``optimizer_name``/``optimizer_hyperparams``, Crowded Valley's ``l2_reg``
included) and DeepOBS 1.1 (``optimizer``/``hyperparams``/``learning_rate``, §2.8). Curves are flat lists of
numbers, finite or DeepOBS' ``NaN``/``Infinity`` literals; every epoch curve of a file has the same length,
at least 1 and at most ``num_epochs + 1`` (the released data hold shorter curves, Q6); ``exact_length``
asks for exactly ``num_epochs + 1`` (what this project's runner writes, so what a resumed sweep may reuse).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import NlwuError
from .result import CURVES

__all__ = ["INT_LIMIT", "ResultSchemaError", "check_result"]

INT_LIMIT = 2**63  # integers a result file may hold (seeds, sizes, hyperparameters): int64


class ResultSchemaError(NlwuError, ValueError):
    """A file that parses but is not a DeepOBS result; the message is the reason (one short line)."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_field(data: dict, key: str, *, required: bool, minimum: int | None = None) -> int | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ResultSchemaError(f"{key} is missing" if key not in data else f"{key} is null, not an integer")
        return None
    if not _is_int(value):
        raise ResultSchemaError(f"{key} is a {_kind(value)}, not an integer")
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise ResultSchemaError(f"{key} is an integer of {value.bit_length()} bits (outside int64)")
    if minimum is not None and value < minimum:
        raise ResultSchemaError(f"{key} is {value}, below {minimum}")
    return value


def _number_list(name: str, values: Any) -> int:
    """Length of a flat list of numbers (NaN/Infinity allowed: DeepOBS writes them); ResultSchemaError else."""
    if not isinstance(values, list):
        raise ResultSchemaError(f"{name} is a {_kind(values)}, not a list")
    for value in values:
        if not _is_number(value):
            raise ResultSchemaError(f"{name} holds a {_kind(value)}, not only numbers")
        if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
            raise ResultSchemaError(f"{name} holds an integer outside int64")
    return len(values)


def check_result(data: Any, *, seed: int | None = None, exact_length: bool = False) -> None:
    """ResultSchemaError (the reason) unless ``data`` (a parsed JSON document) is a DeepOBS result.

    ``seed``: the seed of the file's name, which ``random_seed`` must equal (DeepOBS names the file after it).
    ``exact_length``: every epoch curve has exactly ``num_epochs + 1`` values (a run that finished).
    """
    if not isinstance(data, dict):
        raise ResultSchemaError(f"top level is a JSON {_kind(data)}, not an object: not a DeepOBS result")
    if "optimizer_hyperparams" in data:
        hyper_key, name_key = "optimizer_hyperparams", "optimizer_name"
    elif "hyperparams" in data or "optimizer" in data:  # DeepOBS 1.1 (deepobs-format §2.8)
        hyper_key, name_key = "hyperparams", "optimizer"
    else:
        keys = ", ".join(sorted(map(str, data))[:5]) or "none"
        raise ResultSchemaError(
            f"not a DeepOBS result (no optimizer_hyperparams; keys: {keys}{', ...' if len(data) > 5 else ''})"
        )
    for key in ("testproblem", name_key):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ResultSchemaError(
                f"{key} is {'missing' if key not in data else 'a ' + _kind(data[key])}, not a non-empty string"
            )
    hyper = data.get(hyper_key)
    if not isinstance(hyper, dict) and not (hyper is None and hyper_key == "hyperparams"):
        raise ResultSchemaError(f"{hyper_key} is a {_kind(hyper)}, not an object")
    for name, value in (hyper or {}).items():
        if _is_int(value) and not -INT_LIMIT <= value < INT_LIMIT:
            raise ResultSchemaError(f"{hyper_key}.{str(name)[:40]} is an integer outside int64")
    _int_field(data, "batch_size", required=True, minimum=1)
    num_epochs = _int_field(data, "num_epochs", required=True, minimum=0)
    random_seed = _int_field(data, "random_seed", required=True)
    if seed is not None and random_seed != seed:
        raise ResultSchemaError(f"random_seed is {random_seed}, but the file name says seed {seed}")
    l2_key = "weight_decay" if "weight_decay" in data else "l2_reg"
    l2 = data.get(l2_key)
    if l2 is not None and not (_is_number(l2) and math.isfinite(l2)):
        raise ResultSchemaError(f"{l2_key} is a {_kind(l2)}, not a finite number or null")
    training_params = data.get("training_params")
    if training_params is not None and not isinstance(training_params, dict):
        raise ResultSchemaError(f"training_params is a {_kind(training_params)}, not an object")
    for key in ("train_losses", "test_losses"):
        if key not in data:
            raise ResultSchemaError(f"{key} is missing")
    lengths = {name: _number_list(name, data[name]) for name in CURVES if name in data}
    if "minibatch_train_losses" in data:
        _number_list("minibatch_train_losses", data["minibatch_train_losses"])
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} {n}" for k, n in lengths.items())
        raise ResultSchemaError(f"curves of unequal length ({shown})")
    length = next(iter(lengths.values()))
    if exact_length and length != num_epochs + 1:
        raise ResultSchemaError(
            f"curves hold {length} values, not num_epochs + 1 = {num_epochs + 1} (an unfinished run)"
        )
    if not 1 <= length <= num_epochs + 1:
        raise ResultSchemaError(f"curves hold {length} values; a run of {num_epochs} epochs has 1 to {num_epochs + 1}")
