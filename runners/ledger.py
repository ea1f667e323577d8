"""The ledger beside a results tree (``<out>/.nlwu/``): run locks, failure records, partial-file clean-up.

The results tree is the only state that matters: a run whose ``random_seed__<seed>__*.json`` exists is
done, whoever wrote it (any backend, any earlier or concurrent sweep). Book-keeping lives beside it:

* ``locks/<run_id>.lock`` -- created with O_EXCL by the process that dispatches the run and removed when it
  ends, so two sweeps on one tree never run the same run twice. A lock records host, pid, the pid's start
  time and the time it was taken; its holder touches it (mtime = heartbeat) every ``HEARTBEAT_S``. A lock of
  this host whose process is gone (or whose pid was reused) is stale and is broken under a short global
  mutex (flock), re-checked there so two breakers cannot both win. A lock of another host cannot be checked:
  once its heartbeat is older than the stale age (``STALE_AGE``, ``--stale-lock-age``) it is reported as
  "stale (host X, age Y)", and taken over only when the user asks (``--break-stale-locks``).
* ``quarantine/<relpath>`` -- result files that cannot be trusted (``RunSpec.result_files``), moved aside by
  a sweep so the run is trained again; never deleted.
* ``failed/<run_id>.json`` -- the spec and error of a run that raised (not a result file; removed when the
  run later succeeds).
* ``logs/`` -- stderr of the local pool's workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deepobs_tree import write_atomic
from deepobs_tree.safe_io import read_regular, short
from runners.commandline import run_command
from runners.quarantine import STATE, quarantine  # noqa: F401 - quarantine: part of the ledger's API
from runners.spec import RunSpec


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
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _pid_alive(pid):
        return False
    started = info.get("started")
    return started is None or _proc_start_time(pid) in (None, started)


#: the holder of a lock touches it this often; a lock of another host silent for STALE_AGE is stale
HEARTBEAT_S = 60.0
STALE_AGE = 600.0


@dataclasses.dataclass(frozen=True)
class LockPolicy:
    """How a sweep treats locks of other hosts: ``stale_age`` seconds without a heartbeat make one stale;
    ``break_stale`` takes stale ones over (``--break-stale-locks``), otherwise the sweep waits and says so."""

    stale_age: float = STALE_AGE
    break_stale: bool = False


DEFAULT_POLICY = LockPolicy()


def format_age(seconds: float) -> str:
    """``2d 3h``, ``5h 2m``, ``4m 10s``, ``12s``: a lock's age for people."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def lock_host(info: dict[str, Any]) -> str:
    """The host a lock names, printable and cut to 40 characters (the file may hold anything)."""
    text = "".join(c if c.isprintable() else "?" for c in str(info.get("host", "?")))
    return text if len(text) <= 40 else text[:40] + "..."


def describe_lock(info: dict[str, Any], age: float) -> str:
    """``host X pid P, heartbeat Y ago``: who holds a lock (values from the file, cut short)."""
    return f"host {lock_host(info)} pid {short(info.get('pid'), 12)}, heartbeat {format_age(age)} ago"


def read_lock(out: str | Path, run_id: str) -> dict[str, Any] | None:
    """The lock's content, or None when there is no lock. A half-written or foreign lock reads as ``{}``."""
    try:
        text = read_regular(lock_path(out, run_id), max_bytes=1 << 16).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    try:
        info = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def lock_state(out: str | Path, run_id: str, policy: LockPolicy = DEFAULT_POLICY) -> tuple[str, dict, float] | None:
    """None when nobody holds the run (no lock, or one whose holder is provably gone), else (state, content,
    heartbeat age in seconds) with state ``live`` or ``stale`` (another host's lock silent for
    ``policy.stale_age``; ``status`` shows it, a sweep takes it over only with ``policy.break_stale``)."""
    path = lock_path(out, run_id)
    info = read_lock(out, run_id)
    if info is None:
        return None
    age = time.time() - file_mtime(path)
    if info == {}:
        return None if age >= 10 else ("live", info, age)  # being written, or a crash between open and write
    if not _holder_alive(info):
        return None
    if info.get("host") != socket.gethostname() and age >= policy.stale_age:
        return "stale", info, age
    return "live", info, age


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
    """An O_EXCL lock file per run id; ``RunLock.acquire`` returns None when another process holds it."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = path
        self.info = info
        self.beat = time.monotonic()

    @classmethod
    def acquire(cls, out: str | Path, run_id: str, policy: LockPolicy = DEFAULT_POLICY, **extra) -> RunLock | None:
        """The run's lock, or None when a live holder (or a stale one the policy does not break) has it. A
        lock that cannot be written (full disk) is removed again and the OSError raised: no empty lock stays."""
        path = lock_path(out, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        info = {"host": socket.gethostname(), "pid": pid, "started": _proc_start_time(pid), "time": time.time()}
        info.update(extra)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not cls._break_if_stale(out, run_id, policy):
                    return None
                continue
            try:
                data = json.dumps(info).encode()
                while data:
                    data = data[os.write(fd, data) :]
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            os.close(fd)
            return cls(path, info)
        return None

    @staticmethod
    def _break_if_stale(out: str | Path, run_id: str, policy: LockPolicy = DEFAULT_POLICY) -> bool:
        """Remove the run's lock if its holder is gone (or stale, with ``policy.break_stale``); True if the
        lock is now free."""
        with _break_mutex(out):
            state = lock_state(out, run_id, policy)
            if state is not None and not (state[0] == "stale" and policy.break_stale):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path(out, run_id))
            return True

    def heartbeat(self, every: float = HEARTBEAT_S) -> None:
        """Touch the lock (its mtime is the heartbeat other hosts judge it by), at most once per ``every``."""
        now = time.monotonic()
        if now - self.beat >= every:
            self.beat = now
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def file_mtime(path: Path, default: float | None = None) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time() if default is None else default


def live_lock(out: str | Path, run_id: str, policy: LockPolicy = DEFAULT_POLICY) -> dict[str, Any] | None:
    """The lock's content if a process holds it (live, or stale but not broken by ``policy``), else None."""
    state = lock_state(out, run_id, policy)
    if state is None or (state[0] == "stale" and policy.break_stale):
        return None
    return state[1]


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
        record = json.loads(read_regular(failure_path(out, run_id), max_bytes=1 << 20))
    except (OSError, ValueError):  # missing, not a regular file, too large, not JSON
        return None
    return record if isinstance(record, dict) else None


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
