"""Shared pieces of the data package: the error type, folder names (the default data dir, data sets and
fidelities come from ``testproblems.registry``; atomic writes from ``deepobs_tree.atomic``, the one writer)."""

from __future__ import annotations

import shlex

from deepobs_tree.atomic import AtomicFile, write_atomic  # noqa: F401 - re-exported for the data package
from deepobs_tree.errors import NlwuError
from testproblems.registry import DATASETS, FIDELITIES, default_data_dir  # noqa: F401 - re-exported

#: the data package's name for the writer
atomic_write_bytes = write_atomic

#: dataset name (ProblemSpec.dataset) -> DeepOBS folder below the data dir (data.md §1); quadratic has none.
FOLDERS = {
    "mnist": "mnist",
    "fmnist": "fmnist",
    "cifar10": "cifar-10",
    "cifar100": "cifar-100",
    "svhn": "svhn",
    "tolstoi": "tolstoi",
}
PHASES = ("train", "train_eval", "valid", "test")


class DataError(NlwuError, ValueError):
    """Missing or corrupt data; the message names the file and the command that fixes it."""


def fix_command(name: str, data_dir) -> str:
    """The command that (re)creates dataset `name` below `data_dir` (``--force``: a corrupt file may keep the
    size the "already prepared" marker records)."""
    return f"python -m testproblems prepare-data --data-dir {shlex.quote(str(data_dir))} --only {name} --force"


def data_error(name: str, data_dir, path, problem: str) -> DataError:
    """One-line DataError: '<name>: <problem>: <path>; fix: <command>'."""
    return DataError(f"{name} data {problem}: {path}; fix: {fix_command(name, data_dir)}")
