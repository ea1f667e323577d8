"""Executors: run a list of ``RunSpec``s into one results tree, each run exactly once, resumably.

``base`` holds the interface and the scheduling loop (``Executor``, ``Report``, ``BackendError``); ``local``
the pool of long-lived worker processes (``LocalPool``); ``ray`` one Ray task per run (``RayExecutor``).
``make_executor`` picks a backend by name and imports only that backend's module.
"""

from __future__ import annotations

import importlib

from runners.executors.base import BackendError, Executor, Report

__all__ = ["BACKENDS", "BackendError", "Executor", "Report", "make_executor"]

# backend name -> (module, class, default retries when a worker dies)
BACKENDS: dict[str, tuple[str, str, int]] = {
    "local": ("runners.executors.local", "LocalPool", 1),
    "ray": ("runners.executors.ray", "RayExecutor", 3),
}


def make_executor(
    backend: str,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int | None = None,
    memory_gb: float = 0,
) -> Executor:
    """The executor of ``--backend``: ``local`` (retries default 1) or ``ray`` (retries default 3)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use {' or '.join(repr(b) for b in BACKENDS)}")
    module, name, default_retries = BACKENDS[backend]
    cls = getattr(importlib.import_module(module), name)  # lazily: Ray is imported only when asked for
    retries = default_retries if max_retries is None else max_retries
    if backend == "local":
        return cls(workers=workers, threads_per_worker=threads_per_worker, max_retries=retries)
    return cls(
        address=address, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=retries, memory_gb=memory_gb
    )
