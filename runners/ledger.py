"""The ledger beside a results tree (``<out>/.nlwu/``): run locks, failure records, partial-file clean-up.

The results tree is the only state that matters: a run whose ``random_seed__<seed>__*.json`` exists is
done, whoever wrote it (any backend, any earlier or concurrent sweep). Book-keeping lives beside it:

* ``locks/<run_id>.lock`` -- created with O_EXCL by the process that dispatches the run and removed when it
  ends, so two sweeps on one tree never run the same run twice. A lock records host, pid and the pid's
  start time; a lock of this host whose process is gone (or whose pid was reused) is stale and is broken
  under a short global mutex (flock), re-checked there so two breakers cannot both win.
* ``failed/<run_id>.json`` -- the spec and error of a run that raised (not a result file; removed when the
  run later succeeds).
* ``logs/`` -- stderr of the local pool's workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deepobs_tree import write_atomic
from runners.commandline import run_command
from runners.spec import RunSpec

STATE = ".nlwu"


# ---------------------------------------------------------------------------------------------------------
# Book-keeping paths
# ---------------------------------------------------------------------------------------------------------
def state_dir(out: str | Path) -> Path:
    return Path(out) / STATE


def lock_path(out: str | Path, run_id: str) -> Path:
    return state_dir(out) / "locks" / f"{run_id}.lock"


def failure_path(out: str | Path, run_id: str) -> Path:
    return state_dir(out) / "failed" / f"{run_id}.json"


# ---------------------------------------------------------------------------------------------------------
# Run locks
# ---------------------------------------------------------------------------------------------------------
def _proc_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_alive(info: dict[str, Any]) -> bool:
    """Whether the process recorded in a lock still holds it. Locks of other hosts count as alive."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    started = info.get("started")
    return started is None or _proc_start_time(pid) in (None, started)


def read_lock(out: str | Path, run_id: str) -> dict[str, Any] | None:
    """The lock's content, or None when there is no lock. A half-written lock reads as ``{}``."""
    try:
        text = lock_path(out, run_id).read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


@contextlib.contextmanager
def _break_mutex(out: str | Path):
    """A short, kernel-released global mutex (flock) serialising stale-lock breaking."""
    path = state_dir(out) / "locks" / ".break"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class RunLock:
    """An O_EXCL lock file per run id; ``RunLock.acquire`` returns None when a live process holds it."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = path
        self.info = info

    @classmethod
    def acquire(cls, out: str | Path, run_id: str, **extra) -> RunLock | None:
        path = lock_path(out, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        info = {"host": socket.gethostname(), "pid": pid, "started": _proc_start_time(pid), "time": time.time()}
        info.update(extra)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not cls._break_if_stale(out, run_id):
                    return None
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(info))
            return cls(path, info)
        return None

    @staticmethod
    def _break_if_stale(out: str | Path, run_id: str) -> bool:
        """Remove the run's lock if its holder is gone; True if the lock is now free."""
        with _break_mutex(out):
            info = read_lock(out, run_id)
            if info is None:
                return True
            if not _is_stale(info, lock_path(out, run_id)):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path(out, run_id))
            return True

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _is_stale(info: dict[str, Any], path: Path) -> bool:
    """A lock whose holder is gone; an empty lock (being written, or a crash between open and write) only
    once it is older than 10 s."""
    if info == {}:
        return time.time() - file_mtime(path) >= 10
    return not _holder_alive(info)


def file_mtime(path: Path, default: float | None = None) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time() if default is None else default


def live_lock(out: str | Path, run_id: str) -> dict[str, Any] | None:
    """The lock's content if a live process holds it (for ``status``), else None."""
    info = read_lock(out, run_id)
    if info is None or _is_stale(info, lock_path(out, run_id)):
        return None
    return info


# ---------------------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------------------
def record_failure(out: str | Path, spec: RunSpec, error: str, backend: str) -> Path:
    path = failure_path(out, spec.run_id)
    record = {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "error": error,
        "backend": backend,
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": run_command(spec, out),
    }
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def clear_failure(out: str | Path, run_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(failure_path(out, run_id))


def read_failure(out: str | Path, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(failure_path(out, run_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def clean_partials(spec: RunSpec, out: str | Path) -> list[Path]:
    """Remove temporary files a killed writer left in the run's setting folder (only this seed's; called
    while holding the run's lock, so no live writer owns them)."""
    folder = spec.setting_dir(out)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            name = path.name
            if name.endswith(".tmp") and f"random_seed__{spec.seed:d}__" in name:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def pending(specs: Iterable[RunSpec], out: str | Path) -> list[RunSpec]:
    """The specs (deduplicated, in order) without a result in ``out``."""
    seen, todo = set(), []
    for spec in specs:
        if spec.run_id in seen:
            continue
        seen.add(spec.run_id)
        if spec.existing_result(out) is None:
            todo.append(spec)
    return todo
