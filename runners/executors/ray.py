"""The Ray backend: one Ray task per run on a local or remote cluster; results travel back to the driver."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import tempfile
import traceback
from pathlib import Path
from typing import Any

from deepobs_tree import parse_result_file_name, write_atomic
from optimizers import plugins
from runners.executors.base import (
    REPO_ROOT,
    BackendError,
    Executor,
    available_cores,
    first_line,
    parse_answer,
)
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
    (``plugin_payload``) and are imported in each Ray worker process before its first run (``ensure_plugins``). The results come back to the driver, which
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
        import ray  # Ray (optional, ~2 s) only when the ray backend starts

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
                                   f"{first_line(str(exc))} (start one with `ray start --head`)") from None
            self._owns_ray = True
        total = ray.cluster_resources()
        if self.num_gpus:
            cap = int(total.get("GPU", 0) // self.num_gpus)
        else:
            cap = int(total.get("CPU", 1) // max(self.num_cpus, 1e-9))
        self._cap = max(1, self.max_in_flight or (2 * cap))
        self._plugins = ray.put(plugin_payload())  # once per sweep; every task gets the same object
        self._task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                max_retries=self.max_retries)(ray_run_one)

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
    result = None
    for rel, data in sorted(files.items(), key=lambda kv: parse_result_file_name(Path(kv[0]).name) is not None):
        target = out / rel
        if parse_result_file_name(target.name) is not None:
            result = target
        write_atomic(target, data)
    if result is None:
        raise RuntimeError(f"the Ray task for {spec.label()} returned no result file")
    return result
