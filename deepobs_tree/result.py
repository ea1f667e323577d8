"""The DeepOBS 1.2 result file: its curve keys and the result dict in file order (deepobs-format §2)."""

from __future__ import annotations

import json
from typing import Any

CURVE_KEYS = ("train_losses", "valid_losses", "test_losses")
ACCURACY_KEYS = ("train_accuracies", "valid_accuracies", "test_accuracies")
#: the per-epoch curves (num_epochs + 1 values each); ``minibatch_train_losses`` is logged per step
CURVES = (*CURVE_KEYS, *ACCURACY_KEYS)


def deepobs_output(
    *,
    testproblem: str,
    batch_size: int,
    num_epochs: int,
    random_seed: int,
    weight_decay: float | None,
    optimizer_name: str,
    optimizer_hyperparams: dict,
    curves: dict[str, Any],
    has_accuracy: bool,
    training_params: dict | None = None,
) -> dict[str, Any]:
    """The DeepOBS 1.2 result dict, keys in file order (deepobs-format §2.1). Accuracy keys only when the
    problem has an accuracy (§2.4: DeepOBS drops them for problems that report 0.0 accuracies)."""
    output: dict[str, Any] = {
        "testproblem": testproblem,
        "batch_size": int(batch_size),
        "num_epochs": int(num_epochs),
        "random_seed": int(random_seed),
        "weight_decay": weight_decay,
        "optimizer_name": optimizer_name,
        "optimizer_hyperparams": dict(optimizer_hyperparams),
        "training_params": dict(training_params or {}),
    }
    for key in CURVE_KEYS:
        output[key] = list(curves[key])
    if has_accuracy:
        for key in ACCURACY_KEYS:
            output[key] = list(curves[key])
    output["minibatch_train_losses"] = list(curves["minibatch_train_losses"])
    return output


def dump_deepobs_json(output: dict) -> str:
    """``json.dump(output, f, indent=4)`` as DeepOBS' ``write_output`` (no trailing newline; NaN literals)."""
    return json.dumps(output, indent=4)
