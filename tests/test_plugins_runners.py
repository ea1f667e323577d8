"""Issue 15 part B: plugins in the runners (study files, the CLI, local-pool workers, Ray, provenance)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from runners.config import DEFAULT_SPACE, load_study

ROOT = Path(__file__).resolve().parents[1]

# sha256 of the JSON of configs/reproduce_default.yaml's tuning specs (must never change: same draws, same
# folders). Recomputed once, when log_uniform became correctly rounded (optimizers/distributions.py ``pow10``): the
# digest before, d919b0cd..., held only on CPUs without AVX-512 (NumPy's AVX-512 np.power moved some learning
# rates by 1 ulp); this one is the same on every CPU, and the setting folders are unchanged
# (tests/test_runners_core_sampler.py).
REPRODUCE_DEFAULT_SPECS = "b41dea3a17aae314992e2868c72593ae5985815d5fe708f9dfef8258e27cd8f3"


def test_reproduce_default_gives_exactly_the_run_specs_of_before():
    study = load_study(ROOT / "configs" / "reproduce_default.yaml")
    specs = study.tuning_specs()
    digest = hashlib.sha256(json.dumps([s.to_dict() for s in specs], sort_keys=True).encode()).hexdigest()
    assert len(specs) == 300 and digest == REPRODUCE_DEFAULT_SPECS
    for entry in study.entries:  # the old default space, restricted to what the optimizer records, in order
        assert [n for n, _ in entry.space] == [n for n in DEFAULT_SPACE if n in dict(entry.space)]
        assert {n: d.syntax for n, d in entry.space} == {
            n: d for n, d in DEFAULT_SPACE.items() if n in dict(entry.space)
        }


# ----------------------------------------------------------------------------------------------------------
# the CLI on a plugin file in a temporary folder outside the repository
# ----------------------------------------------------------------------------------------------------------

TIMESTAMP = re.compile(r"__\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d")
PLUGIN = """\
import keras

import optimizers


def sgd(model, learning_rate):
    return keras.optimizers.SGD(learning_rate)


def pow_sgd(model, learning_rate, power, select=None):
    return optimizers.nonlinear(sgd(model, learning_rate), power=power, select=select or "rank>=2")


optimizers.register("TmpSGD", sgd, hyperparams=("learning_rate",), label="SGD (tmp)", baseline=True,
                    search={"learning_rate": {"log_uniform": [1e-3, 1e-1]}})
optimizers.register("TmpPowSGD", pow_sgd, hyperparams=("learning_rate", "power"), options=("select",),
                    search={"learning_rate": {"log_uniform": [1e-3, 1e-1]}, "power": {"uniform": [0.5, 1.0]}},
                    label="SGD+φ (tmp)", twin="TmpSGD")
"""
STUDY = """\
plugins: [{plugin}]
defaults: {{budget: 2, num_epochs: 1, rerun_seeds: [43]}}
problems:
  quadratic_deep:
    optimizers: [TmpPowSGD, TmpSGD]
"""
N_RUNS = 2 * (2 + 1)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLWU_ARG_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _tree(out: Path) -> dict[str, dict]:
    """result path (timestamp removed) -> the result JSON."""
    return {
        TIMESTAMP.sub("", str(p.relative_to(out))): json.loads(p.read_text()) for p in out.rglob("random_seed__*.json")
    }


@pytest.fixture(scope="module")
def plugin_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_plugins")
    assert ROOT not in folder.parents
    plugin = folder / "tmp_sgd_family.py"
    plugin.write_text(PLUGIN)
    study = folder / "study.yaml"
    study.write_text(STUDY.format(plugin=plugin))  # an absolute path
    return plugin, study


@pytest.fixture(scope="module")
def local_sweep(plugin_study, tmp_path_factory):
    _, study = plugin_study
    out = tmp_path_factory.mktemp("local") / "out"
    proc = _cli("runners", "sweep", str(study), "--out", str(out), "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TmpPowSGD" in proc.stdout and "TmpSGD" in proc.stdout
    return out


def test_plugin_sweep_on_the_local_pool_emitted_commands_run_and_status(plugin_study, local_sweep, tmp_path):
    plugin, study = plugin_study
    tree = _tree(local_sweep)
    assert len(tree) == N_RUNS
    assert {k.split("/")[1] for k in tree} == {"TmpPowSGD", "TmpSGD"}  # the registered names are the folders
    pow_runs = [v for k, v in tree.items() if "/TmpPowSGD/" in k]
    assert all(set(r["optimizer_hyperparams"]) == {"learning_rate", "power"} for r in pow_runs)
    prov = next(local_sweep.rglob("*.provenance.yaml"))
    import yaml

    records = yaml.safe_load(prov.read_text())["plugins"]
    assert records == [
        {
            "module": "tmp_sgd_family",
            "path": str(plugin.resolve()),
            "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest(),
            "optimizers": ["TmpSGD", "TmpPowSGD"],
        }
    ]

    # every emitted line carries --plugin and runs in a fresh process into the same file as the sweep's
    out = tmp_path / "emitted"
    emit = _cli("runners", "sweep", str(study), "--out", str(out), "--emit-commands")
    assert emit.returncode == 0, emit.stderr[-2000:]
    lines = emit.stdout.strip().splitlines()
    assert len(lines) == 4 and all(f"--plugin {shlex.quote(str(plugin.resolve()))}" in line for line in lines)
    argv = shlex.split(lines[0])
    assert argv[:3] == ["python", "-m", "runners"]
    proc = _cli(*argv[2:], "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _tree(out).items() <= tree.items() and len(_tree(out)) == 1

    # `run --plugin FILE --optimizer NAME ...` by hand (a relative plugin path) writes the sweep's file too
    key, result = next((k, v) for k, v in tree.items() if "/TmpSGD/" in k and v["random_seed"] == 43)
    by_hand = tmp_path / "by_hand"
    proc = _cli(
        "runners",
        "run",
        "--plugin",
        os.path.relpath(plugin, ROOT),
        "--problem",
        "quadratic_deep",
        "--optimizer",
        "TmpSGD",
        "--hp",
        f"learning_rate={result['optimizer_hyperparams']['learning_rate']!r}",
        "--seed",
        "43",
        "--epochs",
        "1",
        "--out",
        str(by_hand),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _tree(by_hand) == {key: result}

    # status: all done; then the plugin's source changes and every result made with it is flagged
    status = _cli("runners", "status", str(study), "--out", str(local_sweep))
    assert status.returncode == 0, status.stderr[-2000:]
    assert f"total: {N_RUNS} done, 0 running, 0 failed, 0 missing" in status.stdout
    assert "warning:" not in status.stdout
    original = plugin.read_text()
    try:
        plugin.write_text(original + "# edited after the runs\n")
        status = _cli("runners", "status", str(study), "--out", str(local_sweep))
    finally:
        plugin.write_text(original)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "source changed since the run" in status.stdout and f"{N_RUNS} result(s)" in status.stdout


@pytest.mark.slow
def test_plugin_sweep_on_a_local_ray_cluster_gives_the_local_pools_files(plugin_study, local_sweep, tmp_path):
    pytest.importorskip("ray")
    _, study = plugin_study
    out = tmp_path / "ray"
    proc = _cli(
        "runners", "sweep", str(study), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(out) == _tree(local_sweep)  # names and every number


# ----------------------------------------------------------------------------------------------------------
# bad plugins: one `error:` line, exit 2, no traceback, nothing written, before any training
# ----------------------------------------------------------------------------------------------------------
REGISTER = "import optimizers\n\n"
BAD_PLUGINS = {
    "missing_file": (None, "no such file"),
    "import_raises": (
        REGISTER + "raise RuntimeError('boom at import')\n",
        "import failed: RuntimeError: boom at import",
    ),
    "registers_nothing": (REGISTER + "X = 1\n", "registers no optimizer"),
    "already_registered": (
        REGISTER + "optimizers.register('NAGOptimizer', lambda model, learning_rate: None)\n",
        "optimizer NAGOptimizer is already registered (built-in)",
    ),
    "not_keras": (
        REGISTER + "optimizers.register('TmpNotKeras', lambda model, learning_rate: object(),\n"
        "                    search={'learning_rate': {'log_uniform': [1e-3, 1e-1]}})\n",
        "factory returned object, not a keras.optimizers.Optimizer",
    ),
    "no_distribution": (
        REGISTER + "import keras\n"
        "optimizers.register('TmpNoDist', lambda model, learning_rate, beta: keras.optimizers.SGD("
        "learning_rate), hyperparams=('learning_rate', 'beta'),\n"
        "                    search={'learning_rate': {'log_uniform': [1e-3, 1e-1]}})\n",
        "hyperparameter beta has no search distribution",
    ),
}


def _one_error(proc: subprocess.CompletedProcess, prefix: str = "error: ") -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(prefix), proc.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("case", list(BAD_PLUGINS))
def test_bad_plugin_in_a_study_is_one_error_line_and_writes_nothing(case, tmp_path):
    body, message = BAD_PLUGINS[case]
    plugin = tmp_path / f"bad_{case}.py"
    if body is not None:
        plugin.write_text(body)
    optimizer = {"no_distribution": "TmpNoDist", "not_keras": "TmpNotKeras"}.get(case, "NAGOptimizer")
    study = tmp_path / "study.yaml"
    study.write_text(f"plugins: [{plugin.name}]\nproblems:\n  quadratic_deep:\n    optimizers: [{optimizer}]\n")
    out = tmp_path / "out"
    line = _one_error(_cli("runners", "sweep", str(study), "--out", str(out), "--workers", "1"))
    assert message in line and f"bad_{case}" in line, line
    assert not out.exists()


def test_bad_plugin_options_of_sweep_status_and_run(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("problems:\n  quadratic_deep:\n    optimizers: [NAGOptimizer]\n")
    out = tmp_path / "out"
    line = _one_error(_cli("runners", "sweep", str(study), "--out", str(out), "--plugin", "no_such_plugin_mod"))
    assert "--plugin: plugin no_such_plugin_mod: no module named 'no_such_plugin_mod'" in line
    raises = tmp_path / "raises.py"
    raises.write_text("raise ImportError('no dependency')\n")
    line = _one_error(_cli("runners", "status", str(study), "--out", str(out), "--plugin", str(raises)))
    assert "import failed: ImportError: no dependency" in line
    line = _one_error(
        _cli(
            "runners",
            "run",
            "--plugin",
            str(raises),
            "--problem",
            "quadratic_deep",
            "--optimizer",
            "NAGOptimizer",
            "--hp",
            "learning_rate=0.1",
            "--out",
            str(out),
        ),
        prefix="error: runners run: --plugin: ",
    )
    assert "raises" in line
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------
# the examples study
# ----------------------------------------------------------------------------------------------------------
EXAMPLES = ROOT / "configs" / "examples" / "adam_vs_pow_adam.yaml"


def test_examples_study_smoke_preset_runs(tmp_path):
    out = tmp_path / "out"
    proc = _cli(
        "runners", "sweep", str(EXAMPLES), "--preset", "smoke", "--out", str(out), "--workers", "2", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tree = _tree(out)
    assert len(tree) == 2 * (2 + 1)
    assert {k.split("/")[1] for k in tree} == {"PowKernelAdam", "KerasAdam"}
    assert all(r["num_epochs"] == 2 for r in tree.values())


@pytest.mark.slow
def test_examples_study_full_quadratic_search(tmp_path):
    out = tmp_path / "out"
    proc = _cli(
        "runners", "sweep", str(EXAMPLES), "--preset", "quadratic", "--out", str(out), "--no-progress", timeout=7200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tree = _tree(out)
    assert len(tree) == 2 * (50 + 9)
    table = _cli(
        "analysis",
        str(out),
        "--out",
        str(tmp_path / "reports"),
        "--plugin",
        str(ROOT / "examples" / "plugins" / "adam_family.py"),
    )
    assert table.returncode == 0, table.stderr[-3000:]
    with open(tmp_path / "reports" / "summary.csv", newline="") as f:
        rows = {row["optimizer"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"KerasAdam", "PowKernelAdam"}
    readme = _readme_examples_table()
    assert set(readme) == set(rows)
    for name, row in rows.items():
        assert (row["testproblem"], row["n_samples"], row["n_seeds"]) == ("quadratic_deep", "50", "10")
        assert row["seeds"] == " ".join(str(s) for s in range(42, 52))
        mean, low, high = (float(row[k]) for k in ("final_test_mean", "final_test_ci_low", "final_test_ci_high"))
        assert low < mean < high
        # the README's numbers (printed to 6 significant digits) are this run's, up to last-bit float noise
        expected = readme[name]
        assert float(row["learning_rate"]) == pytest.approx(expected["learning_rate"], rel=1e-5)
        beta_1 = float(re.search(r"beta_1__([^_]+)", row["setting"]).group(1))
        assert beta_1 == pytest.approx(expected["beta_1"], rel=1e-5)
        if expected["power"] is not None:
            assert float(row["power"]) == pytest.approx(expected["power"])
        assert mean == pytest.approx(expected["mean"], rel=1e-4)


def _readme_examples_table() -> dict[str, dict]:
    """The table (docs/plugins.md) of the example study's quadratic search: optimizer -> its recorded numbers."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    block = text.split("<!-- examples-quadratic-table -->")[1].split("<!-- /examples-quadratic-table -->")[0]
    table = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = {
            "learning_rate": float(cells[1]),
            "power": None if cells[2] == "–" else float(cells[2]),
            "beta_1": float(cells[3]),
            "mean": float(cells[5]),
        }
    return table


def test_readme_examples_table_parses():
    """The README table the slow test checks against is readable (both optimizers, every number)."""
    table = _readme_examples_table()
    assert set(table) == {"KerasAdam", "PowKernelAdam"}
    assert table["PowKernelAdam"]["power"] is not None and table["KerasAdam"]["power"] is None


# ----------------------------------------------------------------------------------------------------------
# a user's own test problem (testproblems.register in a plugin file): local pool, Ray, provenance, bad ones
# ----------------------------------------------------------------------------------------------------------
PROBLEM_PLUGIN = ROOT / "examples" / "plugins" / "tiny_problem.py"
PROBLEM_STUDY = """\
plugins: [{plugin}]
defaults: {{budget: 2, num_epochs: 1, rerun_seeds: [43]}}
problems:
  blobs_mlp:
    optimizers: [PowKernelGradientDescentOptimizer]
"""


@pytest.fixture(scope="module")
def problem_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_problem")
    plugin = folder / "my_problem.py"  # a copy outside the repository: Ray ships it like an optimizer plugin
    plugin.write_text(PROBLEM_PLUGIN.read_text())
    study = folder / "study.yaml"
    study.write_text(PROBLEM_STUDY.format(plugin=plugin))
    out = folder / "local"
    proc = _cli("runners", "sweep", str(study), "--out", str(out), "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "blobs_mlp" in proc.stdout and "test_accuracies" in proc.stdout
    return plugin, study, out


def test_user_problem_runs_on_the_local_pool_with_its_provenance(problem_study):
    import yaml

    plugin, _, out = problem_study
    tree = _tree(out)
    assert len(tree) == 2 + 1 and all(k.startswith("blobs_mlp/PowKernelGradientDescentOptimizer/") for k in tree)
    for result in tree.values():
        assert result["testproblem"] == "blobs_mlp" and result["batch_size"] == 32 and result["num_epochs"] == 1
        assert len(result["test_accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in result["test_accuracies"])
    prov = yaml.safe_load(next(out.rglob("*.provenance.yaml")).read_text())
    assert prov["plugins"] == [
        {
            "module": "my_problem",
            "path": str(plugin.resolve()),
            "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest(),
            "optimizers": [],
            "testproblems": ["blobs_mlp"],
        }
    ]
    assert prov["problem"]["testproblem"] == "blobs_mlp" and prov["problem"]["data"]["source"] == str(plugin.resolve())


@pytest.mark.slow
def test_user_problem_on_a_local_ray_cluster_gives_the_local_pools_files(problem_study, tmp_path):
    _, study, local = problem_study
    out = tmp_path / "ray"
    proc = _cli(
        "runners", "sweep", str(study), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(out) == _tree(local)  # names and every number


BROKEN_PROBLEMS = {
    "import_error": ("import not_a_module_anywhere\n", "import failed: ModuleNotFoundError"),
    "wrong_shapes": (
        "def model():\n    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])\n",
        "the model does not take a batch of x of shape (32, 2)",
    ),
    "loss_not_per_example": (
        "def loss(y_true, y_pred):\n    return keras.ops.mean(y_pred)\n",
        "loss must give one value per example (shape (32,)), got shape ()",
    ),
    "bad_data": ("def data():\n    return {'train': (np.zeros((8, 2)), np.zeros(7))}\n", "data() must return a dict"),
}


@pytest.mark.parametrize("case", list(BROKEN_PROBLEMS))
def test_a_broken_user_problem_is_one_error_line_naming_its_file(case, tmp_path):
    change, message = BROKEN_PROBLEMS[case]
    source = PROBLEM_PLUGIN.read_text()
    register = source.index("testproblems.register(")
    plugin = tmp_path / f"broken_{case}.py"
    plugin.write_text(source[:register] + change + "\n\n" + source[register:])
    study = tmp_path / "study.yaml"
    study.write_text(PROBLEM_STUDY.format(plugin=plugin))
    out = tmp_path / "out"
    line = _one_error(_cli("runners", "sweep", str(study), "--out", str(out), "--workers", "1"))
    assert message in line and str(plugin) in line, line
    assert not out.exists()
