"""The sweep's population path (runners.executors.population_pool): planning never mixes problems, optimizers,
batch sizes or epochs; what it cannot batch falls back to the per-run path with one line saying why; the choice
rule; ``--population``/``POPULATION``; and configs/smoke.yaml end to end through populations (resumable)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runners.executors.base import Executor, Report
from runners.executors.population import choose, population_key, split
from runners.executors.population_pool import PopulationExecutor, wrap
from runners.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


class _Recorder(Executor):
    backend = "local"

    def __init__(self):
        self.ran = []

    def run(self, specs, out, *, desc="runs", progress=True):
        self.ran += list(specs)
        return Report()

    def close(self):
        pass


def _spec(problem="quadratic_deep", optimizer="GradientDescentOptimizer", lr=0.01, seed=42, **kw):
    return RunSpec(problem, optimizer, (("learning_rate", lr),), seed=seed, **kw)


def test_split_never_mixes_and_cuts_to_size():
    specs = (
        [_spec(lr=0.01 * (i + 1)) for i in range(5)]
        + [_spec(lr=0.5, num_epochs=3)]
        + [_spec(lr=0.5, batch_size=64)]
        + [_spec(optimizer="MomentumOptimizer")]
        + [_spec(seed=43)]
    )
    groups = split(specs, 2)
    for group in groups:
        assert len(group) <= 2
        assert len({population_key(s) for s in group}) == 1
    assert sorted(s.run_id for g in groups for s in g) == sorted(s.run_id for s in specs)
    assert [len(g) for g in groups][:3] == [2, 2, 2]  # the 5 lr values + seed 43 share a key: 6 -> 2+2+2
    with pytest.raises(ValueError, match="population size"):
        split(specs, 0)


def test_plan_falls_back_with_one_line_each(tmp_path):
    import optimizers

    optimizers.register("PlainKerasSGD", lambda model, learning_rate: None, hyperparams=("learning_rate",))
    try:
        log = io.StringIO()
        ex = PopulationExecutor(_Recorder(), size=4, kind="cpu", log=log)
        specs = (
            [_spec(lr=0.01 * (i + 1)) for i in range(6)]
            + [_spec("tolstoi_char_rnn", lr=0.1 * (i + 1)) for i in range(3)]
            + [_spec(optimizer="PlainKerasSGD", lr=0.1 * (i + 1)) for i in range(3)]
            + [_spec(optimizer="PlainKerasSGD", lr=0.9)]
        )
        populations, per_run = ex.plan(specs, tmp_path)
        assert [len(p) for p in populations] == [4, 2]
        assert {s.testproblem for s in per_run} == {"tolstoi_char_rnn", "quadratic_deep"}
        assert len(per_run) == 7
        lines = log.getvalue().splitlines()
        assert len(lines) == 2, lines  # one line per reason, not one per run
        assert any("tolstoi_char_rnn" in line and "recurrent state" in line for line in lines)
        assert any("PlainKerasSGD" in line and "plugin" in line for line in lines)
    finally:
        optimizers.unregister("PlainKerasSGD")


def test_choice_rule_and_size_option(tmp_path, monkeypatch):
    assert choose("quadratic_deep", "cpu")[0] and not choose("fmnist_2c2d", "cpu")[0]
    assert choose("fmnist_2c2d", "gpu")[0] and not choose("tolstoi_char_rnn", "gpu")[0]
    log = io.StringIO()
    auto = PopulationExecutor(_Recorder(), kind="cpu", log=log)
    specs = [_spec("fmnist_2c2d", lr=0.01 * (i + 1)) for i in range(3)] + [_spec(lr=0.01 * (i + 1)) for i in range(3)]
    populations, per_run = auto.plan(specs, tmp_path)
    assert [len(p) for p in populations] == [3] and {s.testproblem for s in per_run} == {"fmnist_2c2d"}
    assert "fmnist_2c2d on cpu: per-run path" in log.getvalue()
    inner = _Recorder()
    assert wrap(inner, 1) is inner  # --population 1: today's path, untouched
    assert isinstance(wrap(inner, 8), PopulationExecutor) and wrap(inner, 8).size == 8
    monkeypatch.setenv("POPULATION", "1")
    assert wrap(inner, None) is inner
    monkeypatch.setenv("POPULATION", "lots")
    with pytest.raises(ValueError, match="POPULATION"):
        wrap(inner, None)


def test_bad_population_option_is_one_error_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "runners", "sweep", "configs/smoke.yaml", "--out", str(tmp_path), "--population", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--population" in lines[0], proc.stderr


def test_smoke_study_through_populations_resumes(tmp_path):
    """configs/smoke.yaml (quadratic_deep, 2 optimizers x 3 samples, 2 rerun seeds) with --population 3: every
    run trained in a population on the jax backend, one DeepOBS file each; a second sweep trains nothing."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [
        sys.executable,
        "-m",
        "runners",
        "sweep",
        "configs/smoke.yaml",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--population",
        "3",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.rglob("random_seed__*.json"))
    assert len(results) == 10
    from deepobs_tree import provenance_file_name

    for path in results:
        prov = yaml.safe_load((path.parent / provenance_file_name(path.name)).read_text())
        assert prov["population"]["backend"] == "jax" and prov["problem"]["keras_backend"] == "jax"
        assert prov["population"]["size"] in (2, 3)
    mtimes = {p: p.stat().st_mtime for p in results}
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in sorted(tmp_path.rglob("random_seed__*.json"))} == mtimes


OOM_SITE = r"""
import os
if os.environ.get("KERAS_BACKEND") == "jax":  # population workers only
    from runners.executors import population

    _run = population.Population.run

    def run(self, on_epoch=None):
        if self.size == 3 and self.specs[0].optimizer == "GradientDescentOptimizer":
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")
        return _run(self, on_epoch)

    population.Population.run = run
"""


def test_out_of_memory_names_the_size_to_use_and_keeps_finished_members(tmp_path):
    """A population that runs out of memory (XLA's RESOURCE_EXHAUSTED, planted in the jax workers for one
    search's population of 3) fails its members with one line naming the size to use; the other search's
    population finishes and its files stay; the sweep exits 1; rerun with that size, it completes without
    touching what was written."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(OOM_SITE)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "runners", "sweep", "configs/smoke.yaml", "--out", str(out), "--no-progress"]
    proc = subprocess.run([*cmd, "--population", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("population failed")]
    assert "3 runs of quadratic_deep/GradientDescentOptimizer" in line and "use --population 1" in line, line
    assert "ran out of memory" in line and "finished results are kept" in line, line
    kept = sorted(out.rglob("random_seed__*.json"))
    assert len(kept) == 3 + 2 and all("PowKernelGradientDescentOptimizer" in str(p) for p in kept)  # + its reruns
    mtimes = {p: p.stat().st_mtime for p in kept}
    proc = subprocess.run([*cmd, "--population", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(sorted(out.rglob("random_seed__*.json"))) == 10
    assert {p: p.stat().st_mtime for p in kept} == mtimes


GPU_SITE = r"""
from runners.executors import population

population.device_kind = lambda: "gpu"  # as where jax's CUDA plugin is installed and a GPU is visible
"""


def test_the_per_run_path_trains_with_jax_where_jax_has_the_gpu(tmp_path):
    """On a GPU machine set up with ``make setup GPU=cuda12`` (faked here: ``device_kind`` says 'gpu'), ``runners
    run`` with no KERAS_BACKEND trains with jax (TensorFlow is the CPU build) and records it; a backend the
    user set is kept; on a CPU machine the default stays TensorFlow."""
    from runners.executors.population import keras_backend_for_device

    assert keras_backend_for_device({}) in (None, "jax")
    assert keras_backend_for_device({"KERAS_BACKEND": "torch"}) is None
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GPU_SITE)
    base = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run = ["-m", "runners", "run", "--problem", "quadratic_deep", "--optimizer", "GradientDescentOptimizer"]
    run += ["--hp", "learning_rate=0.01", "--epochs", "1", "--no-progress"]
    backends = {}
    for name, extra in (
        ("gpu", {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}),
        ("gpu, user chose tensorflow", {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "KERAS_BACKEND": "tensorflow"}),
        ("cpu", {"PYTHONPATH": str(ROOT)}),
    ):
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        proc = subprocess.run(
            [sys.executable, *run, "--out", str(out)],
            cwd=ROOT,
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        [prov] = out.rglob("*.provenance.yaml")
        backends[name] = yaml.safe_load(prov.read_text())["problem"]["keras_backend"]
    assert backends == {"gpu": "jax", "gpu, user chose tensorflow": "tensorflow", "cpu": "tensorflow"}
