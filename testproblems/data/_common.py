"""Shared pieces of the data package: the error type, folder names, default data dir, atomic writes."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


class DataError(ValueError):
    """Missing or corrupt data; the message names the file and the command that fixes it."""


def default_data_dir() -> Path:
    """`$NLWU_DATA_DIR` if set, else ./data."""
    return Path(os.environ.get("NLWU_DATA_DIR") or "data")


def fix_command(name: str, data_dir) -> str:
    """The command that (re)creates dataset `name` below `data_dir`."""
    return f"python -m testproblems prepare-data --data-dir {shlex.quote(str(data_dir))} --only {name}"


def data_error(name: str, data_dir, path, problem: str) -> DataError:
    """One-line DataError: '<name>: <problem>: <path>; fix: <command>'."""
    return DataError(f"{name} data {problem}: {path}; fix: {fix_command(name, data_dir)}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the final file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicFile:
    """Context manager: a binary file handle on a temp file that replaces `path` on clean exit."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.f = os.fdopen(fd, "wb")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.chmod(self.tmp, _FILE_MODE)
            os.replace(self.tmp, self.path)
        else:
            Path(self.tmp).unlink(missing_ok=True)
        return False
