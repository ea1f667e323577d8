"""Shared pieces of the data package: the error type, folder names, default data dir (atomic writes:
``deepobs_tree.atomic``, the project's one writer)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from deepobs_tree.atomic import AtomicFile, write_atomic  # noqa: F401 - re-exported for the data package

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
DATASETS = ("quadratic", "mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")
PHASES = ("train", "train_eval", "valid", "test")
FIDELITIES = ("deepobs", "corrected")


class DataError(ValueError):
    """Missing or corrupt data; the message names the file and the command that fixes it."""


def default_data_dir() -> Path:
    """`$NLWU_DATA_DIR` if set, else ./data."""
    return Path(os.environ.get("NLWU_DATA_DIR") or "data")


def fix_command(name: str, data_dir) -> str:
    """The command that (re)creates dataset `name` below `data_dir` (``--force``: a corrupt file may keep the
    size the "already prepared" marker records)."""
    return f"python -m testproblems prepare-data --data-dir {shlex.quote(str(data_dir))} --only {name} --force"


def data_error(name: str, data_dir, path, problem: str) -> DataError:
    """One-line DataError: '<name>: <problem>: <path>; fix: <command>'."""
    return DataError(f"{name} data {problem}: {path}; fix: {fix_command(name, data_dir)}")
