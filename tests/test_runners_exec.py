"""Executors: run locks (O_EXCL, stale-lock breaking), emitted commands, partial-file clean-up, failures.

The sweep-level behaviour (local pool vs Ray, SIGKILL and resume, concurrent sweeps, bad configs) is in
test_runners_sweep.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runners import ledger
from runners.commandline import run_command
from runners.executors.local import LocalPool
from runners.ledger import RunLock, clean_partials, live_lock, lock_path, read_failure
from runners.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _spec(**kw) -> RunSpec:
    base = dict(
        testproblem="quadratic_deep",
        optimizer="PowKernelGradientDescentOptimizer",
        hyperparams={"learning_rate": 0.0031489116479, "power": 0.8},
        seed=42,
        num_epochs=1,
    )
    base.update(kw)
    return RunSpec(**base)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- locks ---------------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_released(tmp_path):
    first = RunLock.acquire(tmp_path, "abc")
    assert first is not None and lock_path(tmp_path, "abc").exists()
    assert RunLock.acquire(tmp_path, "abc") is None  # held by this live process
    assert live_lock(tmp_path, "abc")["pid"] == os.getpid()
    first.release()
    assert not lock_path(tmp_path, "abc").exists()
    second = RunLock.acquire(tmp_path, "abc")
    assert second is not None
    second.release()


@pytest.mark.parametrize("kind", ["dead_pid", "reused_pid", "empty_old"])
def test_stale_lock_is_broken(tmp_path, kind):
    path = lock_path(tmp_path, "r1")
    path.parent.mkdir(parents=True)
    if kind == "dead_pid":
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": None}))
    elif kind == "reused_pid":  # our pid, but a different process start time: the holder is gone
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "1"}))
    else:  # crashed between open and write, long ago
        path.write_text("")
        os.utime(path, (0, 0))
    assert live_lock(tmp_path, "r1") is None
    lock = RunLock.acquire(tmp_path, "r1")
    assert lock is not None and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_live_and_foreign_locks_are_respected(tmp_path):
    path = lock_path(tmp_path, "r2")
    path.parent.mkdir(parents=True)
    parent = os.getppid()
    path.write_text(
        json.dumps({"host": socket.gethostname(), "pid": parent, "started": ledger._proc_start_time(parent)})
    )
    assert RunLock.acquire(tmp_path, "r2") is None
    path.write_text(json.dumps({"host": "another-host", "pid": _dead_pid(), "started": None}))
    assert RunLock.acquire(tmp_path, "r2") is None  # cannot check another host's pid: treated as live
    path.write_text("")  # being written right now
    assert RunLock.acquire(tmp_path, "r2") is None


def _race(args):
    out, run_id, barrier = args
    barrier.wait()
    lock = RunLock.acquire(out, run_id)
    if lock is None:
        return 0
    # hold it long enough for the others to see it
    import time

    time.sleep(0.5)
    lock.release()
    return 1


def test_only_one_of_many_breakers_wins_a_stale_lock(tmp_path):
    """Eight processes find the same stale lock at once: exactly one of them gets it."""
    path = lock_path(tmp_path, "r3")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": None}))
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            wins = pool.map(_race, [(str(tmp_path), "r3", barrier)] * 8)
    assert sum(wins) == 1


# -- commands, partial files -------------------------------------------------------------------------------
def test_emitted_command_reproduces_the_spec(tmp_path):
    """`python -m runners run ...` as emitted parses back to the very same run (same run id)."""
    from runners.commandline import build_parser, spec_from_args

    spec = _spec(options={"select": "rank>=2"}, weight_decay=0.002, batch_size=64, train_log_interval=5)
    command = run_command(spec, tmp_path / "out dir")
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "runners", "run"]
    args = build_parser().parse_args(argv[4:])
    again = spec_from_args(args)
    assert again.run_id == spec.run_id
    assert args.out == str(tmp_path / "out dir")


def test_clean_partials_removes_only_this_seeds_temp_files(tmp_path):
    spec = _spec()
    folder = spec.setting_dir(tmp_path)
    folder.mkdir(parents=True)
    mine = folder / ".random_seed__42__2026-01-01-00-00-00.json.abc123.tmp"
    other_seed = folder / ".random_seed__43__2026-01-01-00-00-00.json.def456.tmp"
    result = folder / "random_seed__42__2026-01-01-00-00-00.json"
    for p in (mine, other_seed, result):
        p.write_text("{}")
    assert clean_partials(spec, tmp_path) == [mine]
    assert not mine.exists() and other_seed.exists() and result.exists()


# -- failures -------------------------------------------------------------------------------------------------
def test_failed_run_is_recorded_not_written(tmp_path):
    """A run that raises (missing data) is recorded under .nlwu/failed with its error and command, leaves no
    result file and no lock; a good run in the same batch still completes on the same worker."""
    out = tmp_path / "out"
    bad = RunSpec(
        "fmnist_2c2d",
        "PowKernelGradientDescentOptimizer",
        {"learning_rate": 0.01, "power": 0.5},
        num_epochs=1,
        data_dir=str(tmp_path / "no-data"),
    )
    good = _spec()
    with LocalPool(workers=1) as pool:
        report = pool.run([bad, good], out, progress=False)
    assert set(report.failed) == {bad.run_id}
    assert set(report.done) == {good.run_id} and good.existing_result(out) is not None
    record = read_failure(out, bad.run_id)
    assert record["spec"] == bad.to_dict() and "prepare-data" in record["error"]
    assert record["command"].startswith("python -m runners run --problem fmnist_2c2d")
    assert not list(out.glob("fmnist_2c2d/**/*.json"))
    assert not list((out / ".nlwu" / "locks").glob("*.lock"))


def test_worker_killed_mid_run_is_replaced_and_the_run_retried(tmp_path):
    """A worker that dies (SIGKILL) with a run in progress is replaced; the run is retried on the new
    worker and written once."""
    import signal
    import time

    out = tmp_path / "out"
    spec = _spec(num_epochs=2)
    pool = LocalPool(workers=1, max_retries=1)
    try:
        pool._ensure_started(out)
        pool.submit(spec, out)
        first = pool.workers[0].proc
        os.kill(first.pid, signal.SIGKILL)
        finished, deadline = [], time.monotonic() + 240
        while not finished and time.monotonic() < deadline:
            finished = pool.poll(0.5)
        assert [(s.run_id, err) for s, _, err in finished] == [(spec.run_id, None)]
        assert pool.workers[0].proc.pid != first.pid and pool.tries[spec.run_id] == 1
    finally:
        pool.close()
    assert len(list(out.rglob("random_seed__42__*.json"))) == 1
