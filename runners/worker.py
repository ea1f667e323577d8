"""A long-lived worker: runs RunSpecs read as JSON lines on stdin, one at a time, in fresh Keras state.

Why: TensorFlow/Keras start-up costs seconds, more than a whole quadratic_deep run; a worker pays it once.
Each run starts with ``keras.backend.clear_session()`` and a reseed (``runners.run.fresh_keras_state``), so
its result does not depend on what ran before in the same process.

Protocol (``python -m runners.worker [--out DIR] [--progress] [--plugin FILE ...]``; each plugin is imported once, at
start-up):

* request, one JSON object per line: a RunSpec dict (``RunSpec.to_dict()``; the results root is ``--out``), or
  ``{"spec": {...RunSpec...}, "out": "DIR"}``, or ``{"population": [{...RunSpec...}, ...], "out": "DIR"}``
  (one population, trained together: ``runners.executors.population``; needs KERAS_BACKEND=jax). Blank lines are
  ignored; EOF ends the worker (exit 0).
* reply, one JSON line per request on stdout, in order:
  ``{"run_id": str|null, "status": "ok"|"failed", "path": str|null, "error": str|null, "seconds": float}``
  (failed replies also carry ``"traceback"``; a population's reply has ``"paths"``, one per member, and
  ``"run_ids"``). A failing run never kills the worker.

Everything else the run prints (Keras, TF, progress bars) goes to stderr: the worker moves file descriptor 1
to stderr at start-up and keeps a private copy of the real stdout for replies only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import runners.run
from optimizers import plugins
from runners.executors.population import execute_population
from runners.run import execute
from runners.spec import RunSpec


def handle(line: str, default_out: str | Path | None, progress: bool = False) -> dict[str, Any]:
    """Run one request line; return its reply dict (never raises for a bad request or a failed run)."""

    t0 = time.perf_counter()
    run_id = None
    try:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed request JSON: {exc}") from None
        if isinstance(request, dict) and "population" in request:
            return _population(request, default_out, t0)
        if isinstance(request, dict) and "spec" in request:
            extra = sorted(set(request) - {"spec", "out"})
            if extra:
                raise ValueError(f"unknown request key(s) {extra}; allowed: spec, out")
            out = request.get("out", default_out)
            spec = RunSpec.from_dict(request["spec"])
        else:
            out = default_out
            spec = RunSpec.from_dict(request)
        run_id = spec.run_id
        if out is None:
            raise ValueError("no results root: start the worker with --out DIR or send {'spec': ..., 'out': DIR}")
        path = execute(spec, out, progress=progress)
        return {
            "run_id": run_id,
            "status": "ok",
            "path": str(path),
            "error": None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    except Exception as exc:  # a failed run is a reply, not the end of the worker
        message = str(exc).splitlines()[0] if str(exc) else ""
        return {
            "run_id": run_id,
            "status": "failed",
            "path": None,
            "error": f"{type(exc).__name__}: {message}",
            "seconds": round(time.perf_counter() - t0, 3),
            "traceback": traceback.format_exc(),
        }


def _population(request: dict, default_out, t0: float) -> dict[str, Any]:
    extra = sorted(set(request) - {"population", "out"})
    if extra:
        raise ValueError(f"unknown request key(s) {extra}; allowed: population, out")
    specs = [RunSpec.from_dict(s) for s in request["population"]]
    out = request.get("out", default_out)
    if out is None:
        raise ValueError("no results root: start the worker with --out DIR or send {'population': ..., 'out': DIR}")
    paths = execute_population(specs, out, progress=False)
    return {
        "run_id": None,
        "run_ids": [s.run_id for s in specs],
        "status": "ok",
        "path": str(paths[0]),
        "paths": [str(p) for p in paths],
        "error": None,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def serve(lines: Iterable[str], reply: IO[str], default_out: str | Path | None = None, progress: bool = False) -> int:
    """Answer every request in ``lines`` with one JSON line on ``reply`` (flushed). Returns 0 at EOF."""
    for line in lines:
        if not line.strip():
            continue
        result = handle(line, default_out, progress)
        reply.write(json.dumps(result) + "\n")
        reply.flush()
    return 0


def _private_stdout() -> IO[str]:
    """A handle on the real stdout for replies; fd 1 and sys.stdout then point at stderr."""
    sys.stdout.flush()
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.worker", description="Run RunSpec JSON lines from stdin; one JSON reply line each."
    )
    parser.add_argument("--out", default=None, help="results root for requests that do not name one")
    parser.add_argument("--progress", action="store_true", help="show a progress bar per run on stderr")
    parser.add_argument("--plugin", action="append", default=[], help="plugin file/module to import at start-up")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    reply = _private_stdout()
    # pay the imports once, before the first request

    plugins.load_all(args.plugin, validate=False)  # once per worker; the driver validated them

    runners.run.import_keras()  # without TF's start-up lines on stderr

    return serve(sys.stdin, reply, args.out, args.progress)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # every result is written and fsynced before its reply: skip the interpreter's teardown of TF/jax
    # (about half a second per worker at the end of every sweep)
    os._exit(code)
