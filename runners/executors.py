"""Executors: run a list of RunSpecs into one results tree, each run exactly once, resumably.

The results tree is the only state that matters: a run whose ``random_seed__<seed>__*.json`` exists is
done, whoever wrote it (any backend, any earlier or concurrent sweep). Book-keeping lives beside the
results under ``<out>/.nlwu/``:

* ``locks/<run_id>.lock`` -- created with O_EXCL by the process that dispatches the run and removed when it
  ends, so two sweeps on one tree never run the same run twice. A lock records host, pid and the pid's
  start time; a lock of this host whose process is gone (or whose pid was reused) is stale and is broken
  under a short global mutex (flock), re-checked there so two breakers cannot both win.
* ``failed/<run_id>.json`` -- the spec and error of a run that raised (not a result file; removed when the
  run later succeeds).
* ``logs/`` -- stderr of the local pool's workers.

Backends: ``LocalPool`` (long-lived ``runners.worker`` processes, one run at a time each, so TensorFlow starts
once per worker and not once per run) and ``RayExecutor`` (the same unit of work as one Ray task per run,
resources and retries configurable, local or remote cluster). ``emit_commands`` prints shell commands
instead. Each executor's ``run`` returns a ``Report``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from runners.run import write_atomic
from runners.spec import RunSpec

STATE = ".nlwu"
REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.5


# ---------------------------------------------------------------------------------------------------------
# Book-keeping paths, atomic writes
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
        return time.time() - _mtime(path) >= 10
    return not _holder_alive(info)


def _mtime(path: Path, default: float | None = None) -> float:
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


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------
def _hp_token(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def run_command(spec: RunSpec, out: str | Path, python: str = "python") -> str:
    """The shell command that performs one run with ``python -m runners run`` (SLURM arrays, GNU parallel)."""
    import shlex

    parts = [python, "-m", "runners", "run", "--problem", spec.testproblem, "--optimizer", spec.optimizer]
    for name, value in spec.hyperparams:
        parts += ["--hp", f"{name}={_hp_token(value)}"]
    for name, value in spec.options:  # the run CLI routes option names (select, decay_on) to options
        parts += ["--hp", f"{name}={_hp_token(value)}"]
    parts += ["--seed", str(spec.seed)]
    if spec.num_epochs is not None:
        parts += ["--epochs", str(spec.num_epochs)]
    if spec.batch_size is not None:
        parts += ["--batch-size", str(spec.batch_size)]
    if spec.weight_decay is not None:
        parts += ["--weight-decay", repr(float(spec.weight_decay))]
    if spec.fidelity != "deepobs":
        parts += ["--fidelity", spec.fidelity]
    if spec.train_log_interval != 10:
        parts += ["--train-log-interval", str(spec.train_log_interval)]
    if spec.data_dir is not None:
        parts += ["--data-dir", str(spec.data_dir)]
    parts += ["--out", str(out)]
    return shlex.join(parts)


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
                    elif _mtime(failure_path(out, spec.run_id), default=0.0) >= waiting_since[spec.run_id]:
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
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runners.worker"],
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


# ---------------------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------------------
def ray_run_one(spec_json: str) -> dict[str, Any]:
    """The Ray task: run one spec into a private temporary tree on the worker node and return its files
    (relative path -> bytes), so results need no shared filesystem; the driver writes them atomically."""
    spec = RunSpec.from_json(spec_json)
    with tempfile.TemporaryDirectory(prefix="nlwu-ray-") as tmp:
        try:
            from runners.run import execute

            execute(spec, tmp, progress=False)  # fresh Keras state and reseed inside
        except Exception as exc:  # noqa: BLE001 - reported to the driver as the run's failure
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        files = {}
        for path in Path(tmp).rglob("*"):
            if path.is_file():
                files[str(path.relative_to(tmp))] = path.read_bytes()
    return {"status": "ok", "files": files, "host": socket.gethostname()}


class RayExecutor(Executor):
    """One Ray task per run (``ray_run_one``) on a local or remote cluster.

    ``address`` None starts a local cluster (``ray.init(num_cpus=workers)``) unless Ray is already
    initialised in this process; with an address (``auto``, ``ray://head:10001``) this checkout's code is
    shipped as the job's working_dir (the cluster's Python needs the same pinned packages, and data for the
    problems that read files, under each run's ``data_dir``). ``num_cpus``/``num_gpus`` are the resources per
    run, ``max_retries`` the retries when a Ray worker dies. The results come back to the driver, which
    writes them into ``out`` (atomically), so the cluster needs no shared filesystem for results.
    """

    backend = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, max_retries: int = 3, max_in_flight: int | None = None):
        self.address = address
        self.workers = workers
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self.refs: dict[Any, RunSpec] = {}
        self._owns_ray = False
        self._cap = 1

    def start(self, out: Path) -> None:
        self._out = Path(out)
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            threads = str(max(1, int(self.num_cpus)))  # a task's TF/OpenMP threads = the CPUs it reserved
            common = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": threads,
                      "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}
            env_vars = {"PYTHONPATH": str(REPO_ROOT), **common}
            if self.address:
                kwargs["address"] = self.address
                # ship this checkout's code (not results, data or the venv) to the cluster's workers
                excludes = ["/.venv/", "/.git/", "/.cache/", "/data/", "/reports/", "/deepobs_results_medium_budget/"]
                with contextlib.suppress(ValueError):
                    excludes.append("/" + str(self._out.resolve().relative_to(REPO_ROOT)) + "/")
                kwargs["runtime_env"] = {"working_dir": str(REPO_ROOT), "excludes": excludes,
                                         "env_vars": common}
            else:
                kwargs["num_cpus"] = self.workers or available_cores()
                kwargs["runtime_env"] = {"env_vars": env_vars}
            if self.address:
                _check_reachable(self.address)
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise BackendError(f"cannot connect to the Ray cluster at {self.address!r}: "
                                   f"{_first_line(str(exc))} (start one with `ray start --head`)") from None
            self._owns_ray = True
        total = ray.cluster_resources()
        if self.num_gpus:
            cap = int(total.get("GPU", 0) // self.num_gpus)
        else:
            cap = int(total.get("CPU", 1) // max(self.num_cpus, 1e-9))
        self._cap = max(1, self.max_in_flight or (2 * cap))
        self._task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                max_retries=self.max_retries)(ray_run_one)

    def capacity(self) -> int:
        return self._cap

    def submit(self, spec: RunSpec, out: Path) -> None:
        self.refs[self._task.remote(spec.to_json())] = spec

    def poll(self, timeout: float):
        import ray

        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        finished = []
        for ref in ready:
            spec = self.refs.pop(ref)
            try:
                answer = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - task died beyond its retries, or the cluster went away
                finished.append((spec, None, f"Ray task failed: {type(exc).__name__}: {exc}"))
                continue
            if answer.get("status") != "ok":
                finished.append(_parse_answer(spec, answer))
                continue
            try:
                finished.append((spec, _install_files(answer["files"], self._out, spec), None))
            except (OSError, RuntimeError) as exc:
                finished.append((spec, None, f"could not write the result: {exc}"))
        return finished

    def stop(self) -> None:
        import ray

        for ref in list(self.refs):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self.refs.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (ray.init retries for minutes) when a ``host:port`` / ``ray://host:port`` address does not
    accept connections; ``auto`` and other forms are left to Ray."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(f"cannot connect to the Ray cluster at {address!r}: {exc} "
                           "(start one with `ray start --head`, or pass --address auto)") from None


def _install_files(files: dict[str, bytes], out: Path, spec: RunSpec) -> Path:
    """Write a Ray task's files into ``out`` (side files first, the result JSON last, each atomically) and
    return the result JSON's path."""
    from analysis.naming import parse_result_file_name

    result = None
    for rel, data in sorted(files.items(), key=lambda kv: parse_result_file_name(Path(kv[0]).name) is not None):
        target = out / rel
        if parse_result_file_name(target.name) is not None:
            result = target
        write_atomic(target, data)
    if result is None:
        raise RuntimeError(f"the Ray task for {spec.label()} returned no result file")
    return result


# ---------------------------------------------------------------------------------------------------------
# Emitting commands
# ---------------------------------------------------------------------------------------------------------
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


def emit_commands(specs: Iterable[RunSpec], out: str | Path, file=None) -> int:
    """Print one ``python -m runners run ...`` line per pending run; returns how many."""
    file = file or sys.stdout
    todo = pending(specs, out)
    for spec in todo:
        print(run_command(spec, out), file=file)
    return len(todo)


def make_executor(backend: str, *, workers: int | None = None, address: str | None = None,
                  num_cpus: float = 1, num_gpus: float = 0, max_retries: int | None = None) -> Executor:
    if backend == "local":
        return LocalPool(workers=workers, max_retries=1 if max_retries is None else max_retries)
    if backend == "ray":
        return RayExecutor(address=address, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus,
                           max_retries=3 if max_retries is None else max_retries)
    raise ValueError(f"unknown backend {backend!r}; use 'local' or 'ray'")


__all__ = [
    "Executor", "LocalPool", "RayExecutor", "Report", "RunLock", "emit_commands", "make_executor", "pending",
    "run_command", "ray_run_one", "record_failure", "read_failure", "live_lock", "state_dir",
]
