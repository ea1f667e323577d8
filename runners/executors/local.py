"""The local pool: long-lived ``runners.worker`` processes on this machine, one run at a time each, so
TensorFlow starts once per worker and not once per run."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from optimizers import plugins
from runners.executors.base import REPO_ROOT, Executor, available_cores, parse_answer
from runners.ledger import state_dir
from runners.spec import RunSpec


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


def _die_with_parent() -> None:
    """preexec_fn: the worker gets SIGKILL when the sweep that started it dies (Linux), so a killed sweep
    leaves no orphan training in the tree."""
    try:
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

    def __init__(
        self, workers: int | None = None, threads_per_worker: int | None = None, max_retries: int = 1, depth: int = 2
    ):
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
        for var in (
            "OMP_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
        ):
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
                        error = f"worker process died (exit code {code}) during the run; log tail:\n{worker.log_tail()}"
                        finished.append((spec, None, error))
                    for item in queued:
                        replacement.send(*item)
            else:
                spec, _ = worker.pending.popleft()
                finished.append(parse_answer(spec, msg))
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
