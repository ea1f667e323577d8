"""``PopulationExecutor``: hands out populations (``runners.executors.population``) where they are faster, and
every other run to the executor it wraps (local pool or Ray), unchanged.

``run(specs, out)`` plans first (``plan``): runs whose result exists are done; the rest are grouped by
``population_key`` (never mixing problems, optimizers, batch sizes, epochs, L2 or data) and each group goes
to the population path when the choice rule says so (``population.choose``, or ``size`` given), in
populations of ``size`` (default: from memory, ``population.size_from_memory``); what the path cannot batch
(a stateful problem, a plugin optimizer) goes to the per-run path with ONE line saying which and why.
Populations run in ``runners.worker`` processes started with KERAS_BACKEND=jax (one per GPU, else one per
core with one thread each), or as Ray tasks; every member's lock is taken first (members another sweep
holds go to the per-run path, which waits for them), a failed population records each member's failure,
and an out-of-memory failure names the size to use. Finished members are written as they finish, so
nothing that finished is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from runners.executors.base import (
    POLL_S,
    Executor,
    Report,
    available_cores,
    claim,
    fatal_errno,
    first_line,
    stop_if_unwritable,
    trusted_result,
)
from runners.executors.local import LocalPool, _Worker, visible_gpus
from runners.executors.population import (
    choose,
    device_kind,
    population_key,
    size_from_memory,
    split,
    unsupported_reason,
)
from runners.ledger import RunLock, clear_failure, lock_path, record_failure, state_dir
from runners.spec import RunSpec


class PopulationExecutor(Executor):
    """Populations where the choice rule (or ``size``) says so, the wrapped executor for the rest.

    Args:
        inner: the per-run executor (``LocalPool`` or ``RayExecutor``); its backend name is this one's.
        size: members per population; None chooses per problem and device (``population.choose``) with the
            size from memory; an integer > 1 uses the population path wherever it can.
        kind: 'cpu' or 'gpu' (default: ``population.device_kind``).
        log: where the one-line choice/fallback notes go (stderr).
    """

    def __init__(self, inner: Executor, size: int | None = None, kind: str | None = None, log=None):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
            raise ValueError(f"population size must be an integer >= 2 (1 is the per-run path), got {size!r}")
        self.inner, self.size, self.kind = inner, size, kind
        self.backend = inner.backend
        self.log = log or sys.stderr
        self._workers: list = []  # population workers (started on first use, kept between calls)
        self._idle: list = []  # those not training a population now
        self._results: queue.Queue = queue.Queue()
        self._said: set[str] = set()

    # -- planning (pure apart from reading the results tree) ------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            print(f"population: {text}", file=self.log, flush=True)

    def plan(self, specs: Sequence[RunSpec], out: str | Path) -> tuple[list[list[RunSpec]], list[RunSpec]]:
        """(populations, per-run specs) of the runs of ``specs`` that have no result yet."""
        kind = self.kind or device_kind()
        populations, per_run = [], []
        todo = {}
        for spec in specs:
            if trusted_result(spec, Path(out)) is None:  # untrusted files are moved aside first
                todo.setdefault(spec.run_id, spec)
            elif lock_path(out, spec.run_id).exists():
                # a done run whose lock outlived its sweep (killed after the population wrote its members):
                # taken (only when its holder is gone) and released, so no lock is left behind
                lock = RunLock.acquire(out, spec.run_id, self.lock_policy, backend=self.backend)
                if lock is not None:
                    lock.release()
        groups: dict[tuple, list[RunSpec]] = {}
        for spec in todo.values():
            groups.setdefault(population_key(spec), []).append(spec)
        for group in groups.values():
            first = group[0]
            label = f"{first.testproblem}/{first.optimizer}"
            reason = unsupported_reason(first)
            if reason is not None:
                self._note(f"{label}: per-run path ({reason})")
                per_run += group
                continue
            if self.size is None:
                chosen, why = choose(first.testproblem, kind)
                if not chosen:
                    self._note(why)
                    per_run += group
                    continue
                size = size_from_memory(first.testproblem, first.effective_batch_size(), kind)
            else:
                size = self.size
            if len(group) == 1:
                per_run += group  # one run: the per-run path (no compile of a vmapped program)
                continue
            populations += split(group, size)
        return populations, per_run

    # -- the population workers -----------------------------------------------------------------------
    def _spawn(self, index: int, results: queue.Queue, out: Path):
        n = max(1, self._n_workers())
        base = self.inner if isinstance(self.inner, LocalPool) else LocalPool(workers=n)
        env = base._env(index)
        threads = max(1, available_cores() // n)
        env["KERAS_BACKEND"] = "jax"
        if not base.gpus:
            env["XLA_FLAGS"] = (
                env.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                f" intra_op_parallelism_threads={threads}"
            ).strip()
        worker = _Worker(index, env, results, state_dir(out) / "logs")
        self._workers.append(worker)
        return worker

    def _n_workers(self) -> int:
        if isinstance(self.inner, LocalPool):
            return self.inner.n
        return len(visible_gpus()) or available_cores()

    def _run_populations(
        self,
        populations: list[list[RunSpec]],
        out: Path,
        report: Report,
        leftover: list[RunSpec],
        desc: str,
        progress: bool,
    ) -> None:
        total = sum(len(p) for p in populations)
        bar = tqdm(
            total=total,
            desc=f"{desc} (populations)",
            unit="run",
            disable=not progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        results, idle = self._results, self._idle
        pending = list(populations)
        busy: dict[int, tuple[list[RunSpec], dict[str, RunLock]]] = {}
        try:
            while pending or busy:
                while pending and (idle or len(self._workers) < self._n_workers()):
                    population = pending.pop(0)
                    locks = {}
                    members = []
                    for spec in population:
                        lock = claim(spec, out, self.lock_policy, self.backend)
                        if lock is None:  # another sweep runs it: the per-run loop waits for it
                            leftover.append(spec)
                            continue
                        if isinstance(lock, Path):  # another sweep finished it since planning
                            report.done[spec.run_id] = lock
                            bar.update(1)
                            continue
                        locks[spec.run_id] = lock
                        members.append(spec)
                    if not members:
                        continue
                    worker = idle.pop(0) if idle else self._spawn(len(self._workers), results, out)
                    worker.proc.stdin.write(
                        json.dumps({"population": [s.to_dict() for s in members], "out": str(out.resolve())}) + "\n"
                    )
                    worker.proc.stdin.flush()
                    busy[id(worker)] = (members, locks)
                try:
                    worker, msg = results.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if id(worker) not in busy:
                    continue
                members, locks = busy.pop(id(worker))
                if msg is None:  # the worker died (killed for memory, say): its members failed
                    self._workers.remove(worker)
                    code = worker.proc.wait()
                    error = (
                        f"population worker died (exit code {code}) training {len(members)} runs; use "
                        f"--population {max(1, len(members) // 2)}; log tail:\n{worker.log_tail()}"
                    )
                    worker.close()
                else:
                    idle.append(worker)
                    error = None if msg.get("status") == "ok" else (msg.get("error") or json.dumps(msg))
                    if error and msg.get("traceback"):
                        error = f"{error}\n{msg['traceback']}"
                if fatal_errno(error) is not None:  # the results folder cannot be written: stop, keep nothing half
                    for lock in locks.values():
                        lock.release()
                    stop_if_unwritable(members[0], out, error)
                for i, spec in enumerate(members):
                    if error is None:
                        clear_failure(out, spec.run_id)
                        report.done[spec.run_id] = Path(msg["paths"][i])
                        spec.note_written(report.done[spec.run_id])
                        report.ran.append(spec.run_id)
                    else:
                        record_failure(out, spec, error, self.backend)
                        report.failed[spec.run_id] = error
                    locks.pop(spec.run_id).release()
                if error is not None:
                    bar.write(
                        f"population failed ({len(members)} runs of {members[0].label()}): {first_line(error)}",
                        file=sys.stderr,
                    )
                bar.update(len(members))
        finally:
            for _, locks in busy.values():
                for lock in locks.values():
                    lock.release()
            bar.close()

    # -- Executor interface -------------------------------------------------------------------------------
    def run(self, specs: Sequence[RunSpec], out: str | Path, *, desc: str = "runs", progress: bool = True):
        out = Path(out)
        populations, _ = self.plan(specs, out)
        report, leftover = Report(), []  # leftover: members another sweep holds (the per-run loop waits)
        if populations:
            if self.inner.backend == "ray":
                from runners.executors.ray import run_populations  # Ray (optional): only when asked for

                run_populations(self.inner, populations, out, report, leftover, desc, progress)
            else:
                self._run_populations(populations, out, report, leftover, desc, progress)
        planned = {s.run_id for p in populations for s in p}
        rest = [s for s in specs if s.run_id not in planned] + leftover
        inner = self.inner.run(rest, out, desc=desc, progress=progress) if rest else Report()
        report.done.update(inner.done)
        report.ran += inner.ran
        for run_id, error in inner.failed.items():
            report.failed[run_id] = error
        for run_id in report.done:
            report.failed.pop(run_id, None)
        return report

    def start(self, out: Path) -> None:
        self.inner._ensure_started(out)

    def capacity(self) -> int:
        return self.inner.capacity()

    def submit(self, spec: RunSpec, out: Path) -> None:
        self.inner.submit(spec, out)

    def poll(self, timeout: float):
        return self.inner.poll(timeout)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        for worker in self._workers:  # EOF to all first, so they exit in parallel
            with contextlib.suppress(OSError, ValueError):
                worker.proc.stdin.close()
        for worker in self._workers:
            worker.close()
        self._workers.clear()
        self._idle.clear()
        self.inner.close()


def wrap(executor: Executor, population: int | None) -> Executor:
    """The sweep's executor for ``--population``: 1 -> ``executor`` itself (today's per-run path); None (auto)
    or N > 1 -> a ``PopulationExecutor`` around it. ``POPULATION`` in the environment is the default."""
    if population is None and os.environ.get("POPULATION", "").strip():
        text = os.environ["POPULATION"].strip()
        population = None if text == "auto" else int(text) if text.isdigit() else -1
        if population == -1:
            raise ValueError(f"POPULATION must be a positive integer or 'auto', got {text!r}")
    if population is not None and population < 1:
        raise ValueError(f"--population must be a positive integer, got {population}")
    if population == 1:
        return executor
    wrapped = PopulationExecutor(executor, size=population)
    wrapped.lock_policy = getattr(executor, "lock_policy", wrapped.lock_policy)
    return wrapped


__all__ = ["PopulationExecutor", "wrap"]
