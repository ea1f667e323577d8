"""The executor interface and the scheduling loop every backend shares.

``Executor.run`` skips done runs, takes each run's lock in ``runners.ledger``, waits for runs another live
sweep holds, records failures and returns a ``Report``; a backend (``runners.executors.local``,
``runners.executors.ray``) implements only ``start``, ``capacity``, ``submit``, ``poll`` and ``stop``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from deepobs_tree import NlwuError
from runners.ledger import (
    DEFAULT_POLICY,
    LockPolicy,
    RunLock,
    clean_partials,
    clear_failure,
    describe_lock,
    failure_path,
    file_mtime,
    format_age,
    lock_host,
    lock_state,
    quarantine,
    read_failure,
    record_failure,
)
from runners.spec import RunSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.5
#: a sweep waiting for runs other processes hold says so at least this often
WAIT_REPORT_S = 30.0
#: errors of the results folder itself (full disk, quota, read-only, no permission, bad names): every
#: further run would fail the same way, so the sweep stops at the first one instead of recording failures
FATAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR}
)
_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")


class BackendError(NlwuError, RuntimeError):
    """The backend could not start (e.g. no Ray cluster at the address): one line, exit code 2."""


class SweepStopped(BackendError):
    """A run could not write into the results folder (disk full, read-only, no permission): the sweep stops
    at once, keeps every finished result and releases its locks, so rerunning the command resumes it."""


def fatal_errno(error: str | None) -> int | None:
    """The errno of a run's error text when it is one of FATAL_ERRNOS (``[Errno 28]`` in any line), else None."""
    for match in _ERRNO_RE.finditer(error or ""):
        if int(match.group(1)) in FATAL_ERRNOS:
            return int(match.group(1))
    return None


def stop_if_unwritable(spec: RunSpec, out: Path, error: str | None) -> None:
    """Raise SweepStopped when a run's error says the results folder cannot be written (FATAL_ERRNOS)."""
    code = fatal_errno(error)
    if code is not None:
        raise SweepStopped(
            f"{spec.label()}: cannot write into {out}: {first_line(error)[:300]} "
            f"({errno.errorcode.get(code, code)}); the sweep stopped, every finished result is "
            "kept: fix it and rerun the same command to resume"
        )


def trusted_result(spec: RunSpec, out: Path) -> Path | None:
    """The run's trusted result file, else None; every file named like one of its results that cannot be trusted
    (``RunSpec.result_files``) is first moved aside (never deleted: the run is trained again), one warning each."""
    path, rejected = spec.result_files(out)
    for bad in rejected:
        moved = quarantine(out, bad.path)
        print(f"warning: {bad.path}: {bad.reason}; moved to {moved}", file=sys.stderr)
    return path


def claim(spec: RunSpec, out: Path, policy, backend: str) -> RunLock | Path | None:
    """Take ``spec``'s lock before training it: the lock (partial files of an earlier attempt cleaned up), or the
    result another sweep finished since planning (its lock released again), or None while another sweep holds the
    run. Shared by the per-run loop and the population pool."""
    lock = RunLock.acquire(out, spec.run_id, policy, backend=backend)
    if lock is None:
        return None
    done = spec.existing_result(out)
    if done is not None:
        lock.release()
        return done
    clean_partials(spec, out)
    return lock


@dataclasses.dataclass
class Report:
    """What one ``Executor.run`` call did, per run id."""

    done: dict[str, Path] = dataclasses.field(default_factory=dict)  # result exists now (any writer)
    ran: list[str] = dataclasses.field(default_factory=list)  # run ids this call trained
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> error

    @property
    def ok(self) -> bool:
        return not self.failed


class Executor:
    """Base class: subclasses implement ``start``, ``capacity``, ``submit``, ``poll`` and ``stop``.

    ``run`` skips runs whose result exists, takes each run's lock before dispatching it, waits for runs
    that another live sweep holds (taking them over if that sweep dies without a result), records
    failures and returns a ``Report``.
    """

    backend = "?"
    #: how locks of other hosts are treated (``--stale-lock-age``, ``--break-stale-locks``)
    lock_policy: LockPolicy = DEFAULT_POLICY

    # -- backend hooks --------------------------------------------------------------------------------
    def start(self, out: Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def capacity(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def submit(self, spec: RunSpec, out: Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def poll(self, timeout: float) -> list[tuple[RunSpec, Path | None, str | None]]:  # pragma: no cover
        """Finished runs as (spec, result path or None, error or None); waits up to ``timeout``."""
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - interface
        """Release the backend's processes (called by ``close``)."""
        raise NotImplementedError

    _started = False

    def _ensure_started(self, out: Path) -> None:
        if not self._started:
            self.start(out)
            self._started = True

    def close(self) -> None:
        """Stop the backend (workers, Ray); ``run`` may be called several times before."""
        if self._started:
            self._started = False
            self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, specs: Sequence[RunSpec], out: str | Path, *, desc: str = "runs", progress: bool = True):
        out = Path(out)
        report = Report()
        unique: dict[str, RunSpec] = {}
        for spec in specs:
            unique.setdefault(spec.run_id, spec)
        todo: list[RunSpec] = []
        for run_id, spec in unique.items():
            path = trusted_result(spec, out)
            if path is not None:
                report.done[run_id] = path
            else:
                todo.append(spec)
        if todo:
            self._ensure_started(out)  # a backend that cannot start fails here, before any output
        bar = tqdm(
            total=len(unique),
            initial=len(report.done),
            desc=desc,
            unit="run",
            disable=not progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        locks: dict[str, RunLock] = {}
        try:
            waiting: list[RunSpec] = []  # held by another live process
            waiting_since: dict[str, float] = {}
            in_flight = 0
            last_report = -WAIT_REPORT_S  # the first wait is reported at once
            while todo or waiting or in_flight:
                # dispatch as many as the backend takes
                if todo:
                    self._ensure_started(out)
                while todo and in_flight < (self.capacity() if self._started else 0):
                    spec = todo.pop(0)
                    lock = claim(spec, out, self.lock_policy, self.backend)
                    if lock is None:
                        waiting.append(spec)
                        waiting_since[spec.run_id] = time.time() - 1.0
                        continue
                    if isinstance(lock, Path):  # finished by someone else meanwhile
                        report.done[spec.run_id] = lock
                        bar.update(1)
                        continue
                    locks[spec.run_id] = lock
                    self.submit(spec, out)
                    in_flight += 1
                if in_flight:
                    finished = self.poll(POLL_S)
                else:
                    finished = []
                    time.sleep(POLL_S)
                for spec, path, error in finished:
                    in_flight -= 1
                    if path is None:
                        stop_if_unwritable(spec, out, error)
                    if path is not None:
                        clear_failure(out, spec.run_id)
                        spec.note_written(path)
                        report.done[spec.run_id] = path
                        report.ran.append(spec.run_id)
                    else:
                        record_failure(out, spec, error or "unknown error", self.backend)
                        report.failed[spec.run_id] = error or "unknown error"
                        bar.write(f"run failed: {spec.label()}: {first_line(error)}", file=sys.stderr)
                    locks.pop(spec.run_id).release()
                    bar.update(1)
                for lock in locks.values():
                    lock.heartbeat()
                # runs another sweep holds: done when its result appears, ours when its lock goes away
                still, held = [], []
                for spec in waiting:
                    path = spec.existing_result(out)
                    state = None if path is not None else lock_state(out, spec.run_id, self.lock_policy)
                    if path is not None:
                        report.done[spec.run_id] = path
                        bar.update(1)
                    elif state is not None and not (state[0] == "stale" and self.lock_policy.break_stale):
                        still.append(spec)
                        held.append((spec, state))
                    elif file_mtime(failure_path(out, spec.run_id), default=0.0) >= waiting_since[spec.run_id]:
                        # the other sweep failed it while we waited: report it, do not loop on it
                        report.failed[spec.run_id] = (read_failure(out, spec.run_id) or {}).get("error", "?")
                        bar.update(1)
                    else:  # its holder died without a result: ours now
                        todo.append(spec)
                waiting = still
                if held and time.monotonic() - last_report >= WAIT_REPORT_S:
                    last_report = time.monotonic()
                    bar.write(waiting_message(held, self.lock_policy), file=sys.stderr)
        except BaseException:
            self.close()  # in-flight runs must stop before their locks go
            raise
        finally:
            for lock in locks.values():
                lock.release()
            bar.close()
        return report


def waiting_message(held: list[tuple[RunSpec, tuple[str, dict, float]]], policy: LockPolicy) -> str:
    """What a sweep waits for: each run another process holds (up to 3 named), with host, pid and heartbeat
    age; stale ones (another host silent for ``policy.stale_age``) with how to take them over."""
    stale = [(spec, st) for spec, st in held if st[0] == "stale"]
    lines = [f"waiting for {len(held)} run(s) locked by other processes ({len(stale)} stale)"]
    for spec, (state, info, age) in held[:3]:
        what = (
            f"stale (host {lock_host(info)}, age {format_age(age)})" if state == "stale" else describe_lock(info, age)
        )
        lines.append(f"  {spec.label()} [{spec.run_id}]: {what}")
    if len(held) > 3:
        lines.append(f"  ... and {len(held) - 3} more (python -m runners status -v)")
    if stale:
        lines.append(
            f"  a stale lock's host has not touched it for {format_age(policy.stale_age)}: if that "
            "sweep is gone, rerun with --break-stale-locks to take its runs over"
        )
    return "\n".join(lines)


def first_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def parse_answer(spec: RunSpec, msg: dict[str, Any]) -> tuple[RunSpec, Path | None, str | None]:
    """A worker's reply line (``runners.worker`` protocol: ``{"status": "ok"|"failed", "path", "error",
    "traceback"}``) -> (spec, path, error)."""
    if msg.get("status") == "ok" and msg.get("path"):
        return spec, Path(msg["path"]), None
    error = msg.get("error") or json.dumps(msg)
    if msg.get("traceback"):
        error = f"{error}\n{msg['traceback']}"
    return spec, None, str(error)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
