"""Small DeepOBS result trees written by the analysis tests (shared through pytest's ``pythonpath``, which
puts this folder on sys.path: no test edits sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepobs_tree import CURVES, deepobs_output, dump_deepobs_json, setting_folder_name

PK = "PowKernelGradientDescentOptimizer"
# the paper's 8 test problems in protocol order (an independent list: tests compare the registry against it)
PAPER_PROBLEMS = [
    "quadratic_deep",
    "mnist_vae",
    "fmnist_vae",
    "fmnist_2c2d",
    "cifar10_3c3d",
    "cifar100_allcnnc",
    "svhn_wrn164",
    "tolstoi_char_rnn",
]

# deepobs-format §2: the curves in file order, and a file's keys in order when it has no accuracies
CURVE_KEYS = (
    "train_losses",
    "valid_losses",
    "test_losses",
    "train_accuracies",
    "valid_accuracies",
    "test_accuracies",
    "minibatch_train_losses",
)
LOSS_FILE_KEYS = [
    "testproblem",
    "batch_size",
    "num_epochs",
    "random_seed",
    "weight_decay",
    "optimizer_name",
    "optimizer_hyperparams",
    "training_params",
    *CURVE_KEYS[:3],
    "minibatch_train_losses",
]


def deepobs_result(
    problem: str,
    optimizer: str,
    hp: dict,
    seed: int,
    valid,
    test,
    *,
    accuracy: bool = True,
    minibatch=(1.0, 1.0),
    weight_decay=None,
    key: str = "weight_decay",
) -> dict:
    """A DeepOBS 1.2 result in file order: train and valid curves are ``valid``, the test curve ``test``,
    accuracies (the same values) only with ``accuracy``, no minibatch losses when ``minibatch`` is None;
    ``key`` names the decay field (``l2_reg`` in older files)."""
    data = {
        "testproblem": problem,
        "batch_size": 128,
        "num_epochs": len(valid) - 1,
        "random_seed": seed,
        key: weight_decay,
        "optimizer_name": optimizer,
        "optimizer_hyperparams": hp,
        "training_params": {},
        "train_losses": list(valid),
        "valid_losses": list(valid),
        "test_losses": list(test),
    }
    if accuracy:
        data.update(train_accuracies=list(valid), valid_accuracies=list(valid), test_accuracies=list(test))
    if minibatch is not None:
        data["minibatch_train_losses"] = list(minibatch)
    return data


def write_run(
    root: Path,
    problem: str,
    optimizer: str,
    hp: dict,
    seed: int,
    valid: list,
    test: list,
    stamp: str = "2022-01-01-00-00-00",
) -> Path:
    data = deepobs_result(problem, optimizer, hp, seed, valid, test)
    path = (
        root
        / problem
        / optimizer
        / setting_folder_name(len(valid) - 1, 128, hp, None)
        / f"random_seed__{seed}__{stamp}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))
    return path


def small_tree(root: Path) -> Path:
    """Two optimizers on quadratic_deep (one a baseline), three settings each, seeds 42-45 of the best."""
    rng = np.random.default_rng(0)
    for optimizer, base in (("PowKernelGradientDescentOptimizer", 86.0), ("GradientDescentOptimizer", 86.5)):
        for i, lr in enumerate((0.01, 0.02, 0.05)):
            hp = {"learning_rate": lr, "power": 0.5} if optimizer.startswith("Pow") else {"learning_rate": lr}
            write_run(root, "quadratic_deep", optimizer, hp, 42, [100.0, base + i], [100.0, base + 1 + i])
        best = {"learning_rate": 0.01, "power": 0.5} if optimizer.startswith("Pow") else {"learning_rate": 0.01}
        for seed in range(43, 46):
            write_run(
                root, "quadratic_deep", optimizer, best, seed, [100.0, base], [100.0, base + 1 + rng.normal(0, 0.1)]
            )
    return root


def run_args(optimizer: str, *hps: str, problem: str = "quadratic_deep") -> list[str]:
    """``--problem ... --optimizer ...`` and one ``--hp`` per ``name=value``: what `runners run` is told."""
    return ["--problem", problem, "--optimizer", optimizer, *(a for h in hps for a in ("--hp", h))]


def run_argv(optimizer: str, *hps: str, problem: str = "quadratic_deep") -> list[str]:
    """``-m runners run`` and :func:`run_args` (the line the CLI, Makefile and identity tests all start from)."""
    return ["-m", "runners", "run", *run_args(optimizer, *hps, problem=problem)]


# the cheapest real run: PowKernel on quadratic_deep, one epoch, no progress bar (append "--out", ...)
ONE_EPOCH = [*run_args(PK, "learning_rate=0.01", "power=0.5"), "--epochs", "1", "--no-progress"]


def result_data(spec, losses: list[float] | None = None) -> dict:
    """A DeepOBS result the runner would trust for ``spec`` (schema-valid, its values); every curve is
    ``losses`` (default all 1.0), the minibatch losses [1.0, 1.0]."""
    n = spec.effective_num_epochs()
    curves = {name: list(losses or [1.0] * (n + 1)) for name in CURVES}
    curves["minibatch_train_losses"] = [1.0, 1.0]
    return deepobs_output(
        testproblem=spec.testproblem,
        batch_size=spec.effective_batch_size(),
        num_epochs=n,
        random_seed=spec.seed,
        weight_decay=spec.weight_decay,
        optimizer_name=spec.optimizer,
        optimizer_hyperparams=spec.recorded_hyperparams(),
        curves=curves,
        has_accuracy=False,
    )


def valid_result_text(spec) -> str:
    """The JSON text of :func:`result_data` (for planting trusted results in a tree)."""
    return dump_deepobs_json(result_data(spec))
