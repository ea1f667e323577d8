"""The Ray backend: one Ray task per run on a local or remote cluster; results travel back to the driver."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import tempfile
import traceback
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from deepobs_tree import parse_result_file_name, provenance_file_name, write_atomic
from optimizers import plugins
from runners.executors.base import (
    FATAL_ERRNOS,
    REPO_ROOT,
    BackendError,
    Executor,
    available_cores,
    fatal_errno,
    first_line,
    parse_answer,
    stop_if_unwritable,
)
from runners.executors.population import execute_population
from runners.ledger import RunLock, clean_partials, clear_failure, record_failure
from runners.run import execute
from runners.spec import RunSpec


def plugin_payload() -> list[dict[str, Any]]:
    """Every plugin loaded in the driver as {module, path, sha256, source}: shipped with each Ray task, so a
    cluster needs neither the plugin files nor a shared filesystem (``py_modules`` is not used)."""

    return [{**p.record(), "source": Path(p.path).read_bytes()} for p in plugins.loaded()]


def ensure_plugins(payload: list[dict[str, Any]]) -> None:
    """Import the driver's plugins in this Ray worker process (each once: ``plugins.load`` is idempotent).

    The driver's file is used where this node has it unchanged (same path, same SHA-256: a local cluster),
    so the provenance names the same path; otherwise the shipped source is written to
    ``$TMPDIR/nlwu-plugins/<sha256>/<module>.py`` and imported from there."""

    for item in payload:
        path = Path(item["path"])
        try:
            same = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
        except OSError:
            same = False
        if not same:
            path = Path(tempfile.gettempdir()) / "nlwu-plugins" / item["sha256"] / f"{item['module']}.py"
            if not path.is_file():
                write_atomic(path, item["source"])
        plugins.load(str(path), validate=False)


def ray_run_one(spec_json: str, plugin_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Ray task: import the driver's plugins (once per worker process), run one spec into a private
    temporary tree on the worker node and return its files (relative path -> bytes), so results need no shared
    filesystem; the driver writes them atomically."""
    spec = RunSpec.from_json(spec_json)
    with tempfile.TemporaryDirectory(prefix="nlwu-ray-") as tmp:
        try:
            ensure_plugins(plugin_files or [])

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
    run, ``max_retries`` the retries when a Ray worker dies. Plugins loaded in the driver travel with the tasks
    (``plugin_payload``) and are imported in each Ray worker process before its first run (``ensure_plugins``). The
    results come back to the driver, which
    writes them into ``out`` (atomically), so the cluster needs no shared filesystem for results.
    """

    backend = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 3,
        max_in_flight: int | None = None,
        memory_gb: float = 0,
    ):
        self.memory = int(memory_gb * 2**30)
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
        import ray  # Ray (optional, ~2 s) only when the ray backend starts

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            threads = str(max(1, int(self.num_cpus)))  # a task's TF/OpenMP threads = the CPUs it reserved
            common = {
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "TF_NUM_INTRAOP_THREADS": threads,
                "TF_NUM_INTEROP_THREADS": threads,
                "OMP_NUM_THREADS": threads,
            }
            env_vars = {"PYTHONPATH": str(REPO_ROOT), **common}
            if self.address:
                kwargs["address"] = self.address
                # ship this checkout's code (not results, data or the venv) to the cluster's workers
                excludes = ["/.venv/", "/.git/", "/.cache/", "/data/", "/reports/", "/deepobs_results_medium_budget/"]
                with contextlib.suppress(ValueError):
                    excludes.append("/" + str(self._out.resolve().relative_to(REPO_ROOT)) + "/")
                kwargs["runtime_env"] = {"working_dir": str(REPO_ROOT), "excludes": excludes, "env_vars": common}
            else:
                kwargs["num_cpus"] = self.workers or available_cores()
                kwargs["runtime_env"] = {"env_vars": env_vars}
            if self.address:
                _check_reachable(self.address)
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise BackendError(
                    f"cannot connect to the Ray cluster at {self.address!r}: "
                    f"{first_line(str(exc))} (start one with `ray start --head`)"
                ) from None
            self._owns_ray = True
        try:  # before any run is submitted: a request no node can meet would wait forever
            check_resources(ray.nodes(), self.num_cpus, self.num_gpus, self.memory)
        except BackendError:
            if self._owns_ray:
                ray.shutdown()
                self._owns_ray = False
            raise
        total = ray.cluster_resources()
        if self.num_gpus:
            cap = int(total.get("GPU", 0) // self.num_gpus)
        else:
            cap = int(total.get("CPU", 1) // max(self.num_cpus, 1e-9))
        self._cap = max(1, self.max_in_flight or (2 * cap))
        self._plugins = ray.put(plugin_payload())  # once per sweep; every task gets the same object
        self._task = ray.remote(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, memory=self.memory or None, max_retries=self.max_retries
        )(ray_run_one)

    def capacity(self) -> int:
        return self._cap

    def submit(self, spec: RunSpec, out: Path) -> None:
        self.refs[self._task.remote(spec.to_json(), self._plugins)] = spec

    def poll(self, timeout: float):
        import ray  # Ray (optional, ~2 s) only when the ray backend runs

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
                finished.append(parse_answer(spec, answer))
                continue
            try:
                finished.append((spec, _install_files(answer["files"], self._out, spec), None))
            except (OSError, RuntimeError) as exc:
                finished.append((spec, None, f"could not write the result: {exc}"))
        return finished

    def stop(self) -> None:
        import ray  # Ray (optional, ~2 s) only when the ray backend runs

        for ref in list(self.refs):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self.refs.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def check_resources(nodes: list[dict[str, Any]], num_cpus: float, num_gpus: float, memory: int) -> None:
    """BackendError naming what was asked and what the cluster has, unless one alive node (``ray.nodes()``)
    offers a run's CPUs, GPUs and memory (bytes) at once. Ray itself would queue such a task forever."""
    alive = [node.get("Resources") or {} for node in nodes if node.get("Alive", True)]
    asks = {"CPU": num_cpus, "GPU": num_gpus, "memory": memory}
    if not alive:
        raise BackendError("the Ray cluster has no alive node: start one with `ray start --head`")

    def show(key: str, value: float) -> str:
        return f"{value / 2**30:.3g} GB memory" if key == "memory" else f"{value:g} {key}s"

    for key, asked in asks.items():
        if asked > 0:
            largest = max(res.get(key, 0.0) for res in alive)
            if largest < asked:
                total = sum(res.get(key, 0.0) for res in alive)
                flag = {"CPU": "--cpus-per-run", "GPU": "--gpus-per-run", "memory": "--memory-per-run"}[key]
                raise BackendError(
                    f"each run asks for {show(key, asked)} ({flag}), but no node of the Ray cluster has that: the "
                    f"largest has {show(key, largest)} ({len(alive)} node(s), {show(key, total)} in all); "
                    f"lower {flag} or add a node that has them"
                )
    if not any(all(res.get(k, 0.0) >= v for k, v in asks.items() if v > 0) for res in alive):
        asked = ", ".join(show(k, v) for k, v in asks.items() if v > 0)
        have = "; ".join(", ".join(show(k, res.get(k, 0.0)) for k, v in asks.items() if v > 0) for res in alive[:4])
        raise BackendError(
            f"each run asks for {asked} on one node, but no node of the Ray cluster has all of them "
            f"(nodes: {have}); lower the request"
        )


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
        raise BackendError(
            f"cannot connect to the Ray cluster at {address!r}: {exc} "
            "(start one with `ray start --head`, or pass --address auto)"
        ) from None


def _install_files(files: dict[str, bytes], out: Path, spec: RunSpec) -> Path:
    """Write a Ray task's files into ``out`` (side files first, the result JSON last, each atomically) and
    return the result JSON's path."""
    result, written = None, []
    try:
        for rel, data in sorted(files.items(), key=lambda kv: parse_result_file_name(Path(kv[0]).name) is not None):
            target = out / rel
            if parse_result_file_name(target.name) is not None:
                result = target
            written.append(write_atomic(target, data))
    except BaseException:
        for path in written:  # a side file without its result would be a partial run
            path.unlink(missing_ok=True)
        raise
    if result is None:
        raise RuntimeError(f"the Ray task for {spec.label()} returned no result file")
    return result


# ---------------------------------------------------------------------------------------------------------
# populations (runners.executors.population_pool): one Ray task trains a population on one device
# ---------------------------------------------------------------------------------------------------------
def ray_run_population(specs_json: list[str], plugin_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Ray task of a population (its worker runs with KERAS_BACKEND=jax): train ``specs_json`` together
    into a private temporary tree and return each member's files (relative path -> bytes), in order."""
    specs = [RunSpec.from_json(s) for s in specs_json]
    with tempfile.TemporaryDirectory(prefix="nlwu-ray-") as tmp:
        try:
            ensure_plugins(plugin_files or [])
            paths = execute_population(specs, tmp, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported to the driver as every member's failure
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        members = []
        for path in paths:
            side = path.parent / provenance_file_name(path.name)
            members.append({str(p.relative_to(tmp)): p.read_bytes() for p in (path, side) if p.is_file()})
    return {"status": "ok", "members": members, "host": socket.gethostname()}


def run_populations(
    executor: RayExecutor,
    populations: list[list[RunSpec]],
    out: Path,
    report,
    leftover: list,
    desc: str,
    progress: bool,
) -> None:
    """Train ``populations`` as Ray tasks (each with the executor's CPUs/GPUs per run, on the jax backend),
    taking every member's lock first (members another sweep holds go to ``leftover``), and write the results
    into ``out``; failures are recorded per member in ``report`` and the ledger."""
    import ray  # on first use: Ray is optional

    executor._ensure_started(out)
    task = ray.remote(
        num_cpus=executor.num_cpus,
        num_gpus=executor.num_gpus,
        max_retries=0,
        runtime_env={"env_vars": {"KERAS_BACKEND": "jax"}},
    )(ray_run_population)
    refs: dict[Any, tuple[list[RunSpec], dict]] = {}
    bar = tqdm(
        total=sum(len(p) for p in populations),
        desc=f"{desc} (populations)",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for population in populations:
            members, locks = [], {}
            for spec in population:
                lock = RunLock.acquire(out, spec.run_id, backend="ray")
                if lock is None:
                    leftover.append(spec)
                    continue
                clean_partials(spec, out)
                locks[spec.run_id], members = lock, members + [spec]
            if members:
                refs[task.remote([s.to_json() for s in members], executor._plugins)] = (members, locks)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                members, locks = refs.pop(ref)
                try:
                    answer = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task died (memory, node lost)
                    answer = {
                        "status": "failed",
                        "error": f"Ray task failed: {type(exc).__name__}: {exc}; use "
                        f"--population {max(1, len(members) // 2)}",
                    }
                for i, spec in enumerate(members):
                    try:
                        if answer.get("status") != "ok":
                            raise RuntimeError(parse_answer(spec, answer)[2])
                        report.done[spec.run_id] = _install_files(answer["members"][i], out, spec)
                        spec.note_written(report.done[spec.run_id])
                        report.ran.append(spec.run_id)
                        clear_failure(out, spec.run_id)
                    except (OSError, RuntimeError) as exc:
                        if fatal_errno(str(exc)) is not None or getattr(exc, "errno", None) in FATAL_ERRNOS:
                            for lock in locks.values():  # the results folder cannot be written: stop cleanly
                                lock.release()
                            locks.clear()
                            stop_if_unwritable(spec, out, f"{exc} [Errno {getattr(exc, 'errno', None)}]")
                        record_failure(out, spec, str(exc), "ray")
                        report.failed[spec.run_id] = str(exc)
                    locks.pop(spec.run_id).release()
                bar.update(len(members))
    finally:
        for _, locks in refs.values():
            for lock in locks.values():
                lock.release()
        bar.close()
