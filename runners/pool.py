"""Executors: run a list of RunSpecs into one results tree, each run exactly once, resumably.

``Executor.run`` is the scheduling loop shared by every backend (skip done runs, take each run's lock in
``runners.ledger``, wait for runs another live sweep holds, record failures, return a ``Report``).
``LocalPool`` runs long-lived ``runners.worker`` processes, one run at a time each, so TensorFlow starts
once per worker and not once per run; ``runners.ray_executor.RayExecutor`` is the Ray backend;
``make_executor`` picks one by name.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runners.ledger import (
    RunLock,
    clean_partials,
    clear_failure,
    failure_path,
    file_mtime,
    live_lock,
    read_failure,
    record_failure,
    state_dir,
)
from runners.spec import RunSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.5


# ---------------------------------------------------------------------------------------------------------
# The scheduling loop shared by all backends
# ---------------------------------------------------------------------------------------------------------
class BackendError(RuntimeError):
    """The backend could not start (e.g. no Ray cluster at the address): one line, exit code 2."""


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
        from tqdm.auto import tqdm

        out = Path(out)
        report = Report()
        unique: dict[str, RunSpec] = {}
        for spec in specs:
            unique.setdefault(spec.run_id, spec)
        todo: list[RunSpec] = []
        for run_id, spec in unique.items():
            path = spec.existing_result(out)
            if path is not None:
                report.done[run_id] = path
            else:
                todo.append(spec)
        if todo:
            self._ensure_started(out)  # a backend that cannot start fails here, before any output
        bar = tqdm(
            total=len(unique), initial=len(report.done), desc=desc, unit="run", disable=not progress,
            dynamic_ncols=True, file=sys.stderr,
        )
        locks: dict[str, RunLock] = {}
        try:
            waiting: list[RunSpec] = []  # held by another live process
            waiting_since: dict[str, float] = {}
            in_flight = 0
            while todo or waiting or in_flight:
                # dispatch as many as the backend takes
                if todo:
                    self._ensure_started(out)
                while todo and in_flight < (self.capacity() if self._started else 0):
                    spec = todo.pop(0)
                    lock = RunLock.acquire(out, spec.run_id, backend=self.backend)
                    if lock is None:
                        waiting.append(spec)
                        waiting_since[spec.run_id] = time.time() - 1.0
                        continue
                    path = spec.existing_result(out)
                    if path is not None:  # finished by someone else meanwhile
                        lock.release()
                        report.done[spec.run_id] = path
                        bar.update(1)
                        continue
                    clean_partials(spec, out)
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
                    if path is not None:
                        clear_failure(out, spec.run_id)
                        report.done[spec.run_id] = path
                        report.ran.append(spec.run_id)
                    else:
                        record_failure(out, spec, error or "unknown error", self.backend)
                        report.failed[spec.run_id] = error or "unknown error"
                        bar.write(f"run failed: {spec.label()}: {_first_line(error)}", file=sys.stderr)
                    locks.pop(spec.run_id).release()
                    bar.update(1)
                # runs another sweep holds: done when its result appears, ours when its lock goes away
                still = []
                for spec in waiting:
                    path = spec.existing_result(out)
                    if path is not None:
                        report.done[spec.run_id] = path
                        bar.update(1)
                    elif live_lock(out, spec.run_id) is not None:
                        still.append(spec)
                    elif file_mtime(failure_path(out, spec.run_id), default=0.0) >= waiting_since[spec.run_id]:
                        # the other sweep failed it while we waited: report it, do not loop on it
                        report.failed[spec.run_id] = (read_failure(out, spec.run_id) or {}).get("error", "?")
                        bar.update(1)
                    else:  # its holder died without a result: ours now
                        todo.append(spec)
                waiting = still
        except BaseException:
            self.close()  # in-flight runs must stop before their locks go
            raise
        finally:
            for lock in locks.values():
                lock.release()
            bar.close()
        return report


def _first_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


# ---------------------------------------------------------------------------------------------------------
# Local pool of long-lived workers
# ---------------------------------------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """GPU ids visible to this process (CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``); [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        text = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(text.splitlines()) if line.startswith("GPU ")]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _die_with_parent() -> None:
    """preexec_fn: the worker gets SIGKILL when the sweep that started it dies (Linux), so a killed sweep
    leaves no orphan training in the tree."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - non-Linux
        pass


class _Worker:
    """One ``python -m runners.worker`` subprocess and the thread that reads its JSON-line answers.

    ``pending`` holds the specs sent and not yet answered, in order (the worker answers in order); the first
    one is the run in progress.
    """

    def __init__(self, index: int, env: dict[str, str], results: queue.Queue, log_dir: Path):
        self.index = index
        self.results = results
        self.pending: collections.deque[tuple[RunSpec, Path]] = collections.deque()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{os.getpid()}-{index}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        from optimizers import plugins

        self.proc = subprocess.Popen(  # every plugin the driver loaded, imported once at the worker's start
            [sys.executable, "-m", "runners.worker", *plugins.command_line_args()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=os.getcwd(),  # relative data/results paths mean what they mean to the caller
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue  # not a protocol line
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.results.put((self, msg))
        self.results.put((self, None))  # EOF: the worker exited

    def send(self, spec: RunSpec, out: Path) -> None:
        self.pending.append((spec, out))
        self.proc.stdin.write(json.dumps({"spec": spec.to_dict(), "out": str(Path(out).resolve())}) + "\n")
        self.proc.stdin.flush()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class LocalPool(Executor):
    """Long-lived ``runners.worker`` processes on this machine, one run at a time each.

    ``workers`` defaults to one per visible GPU (each pinned with CUDA_VISIBLE_DEVICES), else one per
    core; each worker's TF/OpenMP threads default to cores // workers. Each worker gets up to ``depth``
    runs queued on its stdin, so it starts the next run without waiting for the driver. A worker that dies
    is replaced: the run it was in is retried up to ``max_retries`` times, the runs queued behind it are
    resent.
    """

    backend = "local"

    def __init__(self, workers: int | None = None, threads_per_worker: int | None = None, max_retries: int = 1,
                 depth: int = 2):
        self.gpus = visible_gpus()
        self.n = workers or (len(self.gpus) or available_cores())
        if self.n < 1:
            raise ValueError(f"--workers must be >= 1, got {self.n}")
        self.threads = threads_per_worker or max(1, available_cores() // self.n)
        self.max_retries = max_retries
        self.depth = max(1, depth)
        self.workers: list[_Worker] = []
        self.results: queue.Queue = queue.Queue()
        self.tries: dict[str, int] = {}
        self.out: Path | None = None

    def _env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(self.threads)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        return env

    def _spawn(self, index: int) -> _Worker:
        worker = _Worker(index, self._env(index), self.results, state_dir(self.out) / "logs")
        self.workers.append(worker)
        return worker

    def start(self, out: Path) -> None:
        self.out = Path(out)
        for i in range(self.n):
            self._spawn(i)

    def capacity(self) -> int:
        return self.n * self.depth

    def submit(self, spec: RunSpec, out: Path) -> None:
        min(self.workers, key=lambda w: len(w.pending)).send(spec, out)

    def poll(self, timeout: float):
        finished = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                worker, msg = self.results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return finished
            if worker not in self.workers:
                continue  # an answer or EOF of a worker closed earlier
            if msg is None:  # the worker died
                self.workers.remove(worker)
                code = worker.proc.wait()
                worker.close()
                replacement = self._spawn(worker.index)
                if worker.pending:
                    (spec, out), queued = worker.pending[0], list(worker.pending)[1:]
                    tries = self.tries.get(spec.run_id, 0) + 1
                    self.tries[spec.run_id] = tries
                    if tries <= self.max_retries:
                        queued.insert(0, (spec, out))  # same lock, same run: retry
                    else:
                        error = (f"worker process died (exit code {code}) during the run; log tail:\n"
                                 f"{worker.log_tail()}")
                        finished.append((spec, None, error))
                    for item in queued:
                        replacement.send(*item)
            else:
                spec, _ = worker.pending.popleft()
                finished.append(_parse_answer(spec, msg))
            if finished and self.results.empty():
                return finished

    def stop(self) -> None:
        for worker in self.workers:  # EOF first (all at once), so idle workers exit in parallel
            with contextlib.suppress(OSError, ValueError):
                worker.proc.stdin.close()
            if worker.pending:  # an aborted sweep: do not let its runs finish
                worker.proc.kill()
        for worker in self.workers:
            worker.close()
        self.workers.clear()


def _parse_answer(spec: RunSpec, msg: dict[str, Any]) -> tuple[RunSpec, Path | None, str | None]:
    """A worker's reply line (``runners.worker`` protocol: ``{"status": "ok"|"failed", "path", "error",
    "traceback"}``) -> (spec, path, error)."""
    if msg.get("status") == "ok" and msg.get("path"):
        return spec, Path(msg["path"]), None
    error = msg.get("error") or json.dumps(msg)
    if msg.get("traceback"):
        error = f"{error}\n{msg['traceback']}"
    return spec, None, str(error)


def make_executor(backend: str, *, workers: int | None = None, threads_per_worker: int | None = None,
                  address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                  max_retries: int | None = None) -> Executor:
    """The executor of ``--backend``: ``local`` (retries default 1) or ``ray`` (retries default 3)."""
    if backend == "local":
        return LocalPool(workers=workers, threads_per_worker=threads_per_worker,
                         max_retries=1 if max_retries is None else max_retries)
    if backend == "ray":
        from runners.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus,
                           max_retries=3 if max_retries is None else max_retries)
    raise ValueError(f"unknown backend {backend!r}; use 'local' or 'ray'")
