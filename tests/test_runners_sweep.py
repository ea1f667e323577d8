"""Sweeps end to end on a tiny study (quadratic_deep, 1 epoch): local pool vs a real local Ray cluster,
SIGKILL part way and resume, two sweeps at once on one tree, bad configs, emitted commands, status."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.config import load_study
from studies.sweep import selections

ROOT = Path(__file__).resolve().parents[1]
TIMESTAMP = re.compile(r"__\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")

STUDY = """\
name: tiny
defaults:
  budget: {budget}
  num_epochs: 1
  rerun_seeds: [43]
presets:
  smoke: {{}}
problems:
  quadratic_deep:
    optimizers: [PowKernelGradientDescentOptimizer, GradientDescentOptimizer]
"""


def _study(tmp_path: Path, budget: int = 2) -> Path:
    path = tmp_path / f"tiny{budget}.yaml"
    path.write_text(STUDY.format(budget=budget))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _sweep_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runners",
        "sweep",
        str(config),
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _tree(out: Path) -> list[str]:
    """Relative paths of the results tree (book-keeping excluded), timestamps removed."""
    return sorted(
        TIMESTAMP.sub("", str(p.relative_to(out)))
        for p in out.rglob("*")
        if p.is_file() and ".nlwu" not in p.relative_to(out).parts
    )


def _results(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("random_seed__*.json") if ".nlwu" not in p.parts)


def _expected(config: Path, out: Path) -> set[tuple[str, int]]:
    """(setting folder relative to out, seed) of every run of the study, reruns from the tree's selection."""
    study = load_study(config, preset="smoke")
    choices = selections(study, out)
    specs = study.tuning_specs() + [s for c in choices.values() if c is not None for s in c.rerun_specs()]
    assert all(c is not None for c in choices.values())
    return {(str(s.setting_dir(out).relative_to(out)), s.seed) for s in specs}


def _assert_complete(config: Path, out: Path) -> None:
    """Every run of the study present exactly once, nothing else, no partial file, no lock left."""
    expected = _expected(config, out)
    found = []
    for path in _results(out):
        seed = int(path.name.split("__")[1])
        found.append((str(path.parent.relative_to(out)), seed))
    assert sorted(found) == sorted(expected), "each run exactly once"
    partial = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not partial
    for path in _results(out):
        json.loads(path.read_text())  # complete JSON
        assert path.with_name(path.name[:-5] + ".provenance.yaml").exists()
    assert not list((out / ".nlwu" / "locks").glob("*.lock"))


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (st := _stat(int(p.name))) is not None and st[1] == str(pid)
    ]


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _final_test(out: Path) -> dict[str, float]:
    return {
        TIMESTAMP.sub("", str(p.relative_to(out))): json.loads(p.read_text())["test_losses"][-1] for p in _results(out)
    }


def _local_sweep(config: Path, out: Path, population: str) -> subprocess.CompletedProcess:
    """The smoke sweep on the local pool (subprocess CLI, 2 workers) with ``--population``; it must succeed."""
    proc = subprocess.run(
        _sweep_cmd(config, out, "--workers", "2", "--population", population),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _ray_sweep(ray, config: Path, out: Path, executor) -> int:
    """The smoke sweep through ``executor`` on a fresh local Ray cluster bound to 127.0.0.1; its exit code."""
    from studies.sweep import run_sweep

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}},
    )
    try:
        return run_sweep(load_study(config, preset="smoke"), out, executor, progress=False)
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_hands_out_populations_like_the_local_pool(tmp_path):
    """The population path on a real local Ray cluster (one Ray task per population, on the jax backend) writes
    the same tree as the local pool's population workers, with the same numbers (both jax populations: the same
    compiled program per member), and `status` reports everything done."""
    ray = pytest.importorskip("ray")
    config = _study(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "ray"
    _local_sweep(config, local, population="auto")

    from runners.executors.population_pool import PopulationExecutor, wrap
    from runners.executors.ray import RayExecutor

    executor = wrap(RayExecutor(num_cpus=1), None)
    assert isinstance(executor, PopulationExecutor)
    assert _ray_sweep(ray, config, remote, executor) == 0
    assert _tree(local) == _tree(remote)
    assert len(_results(local)) == 2 * 2 + 2 * 1
    a, b = _final_test(local), _final_test(remote)
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=2e-5) for k in a)
    for tree in (local, remote):  # the tuning runs (2 per search) trained as populations; a lone rerun per run
        members = [p.name for p in sorted(tree.rglob("*.provenance.yaml")) if "population:" in p.read_text()]
        assert len(members) == 4 and all(name.startswith("random_seed__42__") for name in members), (tree, members)
    _assert_complete(config, local)
    _assert_complete(config, remote)


# ----------------------------------------------------------------------------------------------------------
def test_local_pool_and_ray_produce_the_same_files(tmp_path):
    """One smoke sweep on the local pool (subprocess CLI) and one on a real local Ray cluster give the same
    tree (paths minus timestamps) and the same numbers; then `status` reports everything done."""
    ray = pytest.importorskip("ray")
    config = _study(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "ray"
    # --population 1: the per-run path on both executors (the default trains quadratic_deep as jax populations)
    proc = _local_sweep(config, local, population="1")
    assert "PowKernelGradientDescentOptimizer" in proc.stdout and "final_test_mean" in proc.stdout

    from runners.executors.ray import RayExecutor

    assert _ray_sweep(ray, config, remote, RayExecutor(num_cpus=1)) == 0
    assert _tree(local) == _tree(remote)
    assert len(_results(local)) == 2 * 2 + 2 * 1
    a, b = _final_test(local), _final_test(remote)
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-9) for k in a)
    _assert_complete(config, local)
    _assert_complete(config, remote)

    status = subprocess.run(
        [sys.executable, "-m", "runners", "status", str(config), "--preset", "smoke", "--out", str(remote)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "total: 6 done, 0 running, 0 failed, 0 missing" in status.stdout


def test_sigkill_part_way_then_resume(tmp_path):
    """SIGKILL the sweep after its first results: its workers die with it, and the same command started
    again ends with every run present exactly once and no partial file."""
    config = _study(tmp_path, budget=3)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _sweep_cmd(config, out, "--workers", "1"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while len(_results(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    workers = _children(proc.pid)
    assert workers, "the local pool's worker process was not found"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(_results(out))
    assert 2 <= n_before < 8
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its killed sweep"
    again = subprocess.run(
        _sweep_cmd(config, out, "--workers", "1"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_complete(config, out)
    assert len(_results(out)) == 2 * 3 + 2 * 1


def test_two_sweeps_at_once_share_the_tree(tmp_path):
    """Two sweeps started together on one output tree split the work, never run a run twice, and both
    finish with the same summary."""
    config = _study(tmp_path, budget=3)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            _sweep_cmd(config, out, "--workers", "1"),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    _assert_complete(config, out)
    assert len(_results(out)) == 2 * 3 + 2 * 1
    assert outputs[0][0] == outputs[1][0]  # same summary table
    assert "final_test_mean" in outputs[0][0]


# ----------------------------------------------------------------------------------------------------------
BAD = {
    "unknown key": (
        "defaults:\n  budgett: 2\nproblems:\n  quadratic_deep:\n    optimizers: [NAGOptimizer]\n",
        "budgett",
    ),
    "wrong type": (
        "defaults:\n  budget: ten\nproblems:\n  quadratic_deep:\n    optimizers: [NAGOptimizer]\n",
        "budget",
    ),
    "unknown problem": ("problems:\n  quadratic_deeep:\n    optimizers: [NAGOptimizer]\n", "quadratic_deeep"),
    "unknown optimizer": ("problems:\n  quadratic_deep:\n    optimizers: [NAGOptimiser]\n", "NAGOptimiser"),
    "empty search space": (
        "defaults:\n  search_space: {}\nproblems:\n  quadratic_deep:\n    optimizers: [NAGOptimizer]\n",
        "search_space",
    ),
    "malformed yaml": ("problems: [quadratic_deep\n", "YAML"),
}


@pytest.mark.parametrize("command", ["sweep", "status"])
@pytest.mark.parametrize("case", [*BAD, "unreadable file", "missing file"])
def test_bad_config_one_error_exit_2_nothing_written(tmp_path, capsys, case, command):
    from runners.__main__ import main

    if case == "unreadable file":
        config = tmp_path / "a_folder.yaml"
        config.mkdir()
        needle = "a_folder.yaml"
    elif case == "missing file":
        config, needle = tmp_path / "nope.yaml", "nope.yaml"
    else:
        text, needle = BAD[case]
        config = tmp_path / "bad.yaml"
        config.write_text(text)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    rc = main([command, str(config), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0] and str(config) in lines[0]
    assert "Traceback" not in captured.err and not captured.out
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--workers", "0"], "--workers"),
        (["--address", "auto"], "--address needs --backend ray"),
        (["--backend", "slurm"], "--backend"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot connect to the Ray cluster"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, argv, needle):
    from runners.__main__ import main

    config = _study(tmp_path)
    out = tmp_path / "out"
    rc = main(["sweep", str(config), "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_emit_commands_lists_pending_runs_and_writes_nothing(tmp_path, capsys):
    from runners.__main__ import main
    from runners.commandline import build_parser, spec_from_args

    config = _study(tmp_path, budget=3)
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--preset", "smoke", "--out", str(out), "--emit-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    study = load_study(config, preset="smoke")
    wanted = {s.run_id for s in study.tuning_specs()}
    assert len(lines) == len(wanted) == 6
    got = {spec_from_args(build_parser().parse_args(shlex.split(line)[4:])).run_id for line in lines}
    assert got == wanted
    assert not out.exists()


def test_failed_runs_exit_1_and_show_in_status(tmp_path, capsys):
    """Runs that raise (here: no data) make the sweep finish with exit code 1 and no result file; `status`
    lists them as failed with their error, and nothing else in the tree changes."""
    from runners.__main__ import main

    config = tmp_path / "nodata.yaml"
    config.write_text(
        f"defaults:\n  budget: 2\n  num_epochs: 1\n  data_dir: {tmp_path / 'no-data'}\n"
        "problems:\n  fmnist_2c2d:\n    optimizers: [PowKernelGradientDescentOptimizer]\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 run(s) failed" in captured.err and "not selected" in captured.err
    assert not _results(out) and len(list((out / ".nlwu" / "failed").glob("*.json"))) == 2
    assert main(["status", str(config), "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert "total: 0 done, 0 running, 2 failed, 9 missing" in status
    assert status.count("failed   tuning") == 2 and "prepare-data" in status
