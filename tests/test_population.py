"""Population training (runners.executors.population) against the per-run path, both on the jax backend (subprocesses
with KERAS_BACKEND=jax): every member's per-epoch losses/accuracies and logged minibatch losses equal its own
per-run result, its file lands where the per-run file lands, and diverged members are flagged alike.

Tolerance: relative 2e-5 per value (|a - b| <= 2e-5·|b| + 1e-7). Measured (this CPU, float32): at most
1.5e-7 on quadratic_deep, 1.0e-6 on fmnist_2c2d, 4.2e-6 on fmnist_vae over 2 epochs: vmapping the step lets
XLA fuse and order the float32 reductions differently, so values agree to a few float32 ulps, amplified a
little by the training steps (bit-equal in the first evaluations). Swapping two members' hyperparameters or
seeds moves the values by 1e-3 or more, far outside it (``test_a_swap_fails_the_comparison``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tree_helpers import CURVE_KEYS

from testproblems.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
REL_TOL, ABS_TOL = 2e-5, 1e-7
KEYS = CURVE_KEYS

SCRIPT = r"""
import json, sys
from pathlib import Path
from runners.spec import RunSpec
from runners import run
from runners.executors.population import execute_population
cases, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
result = []
for population in cases:
    specs = [RunSpec.from_dict(s) for s in population]
    pop = execute_population(specs, out / "pop", progress=False)
    ref = [run.execute(s, out / "run", progress=False) for s in specs]
    for s, a, b in zip(specs, pop, ref):
        result.append({"spec": s.to_dict(), "pop": str(a.relative_to(out / "pop")),
                       "run": str(b.relative_to(out / "run")), "pop_json": json.loads(a.read_text()),
                       "run_json": json.loads(b.read_text())})
print("RESULT " + json.dumps(result))
"""


def _spec(problem, optimizer, seed=42, epochs=2, data_dir=None, **hp):
    return {
        "testproblem": problem,
        "optimizer": optimizer,
        "hyperparams": hp,
        "seed": seed,
        "num_epochs": epochs,
        "data_dir": data_dir,
    }


def _run(tmp_path, cases):
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "script.py").write_text(SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "cases.json"), str(tmp_path / "out")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _close(a, b) -> bool:
    if math.isnan(b) or math.isinf(b):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return abs(a - b) <= REL_TOL * abs(b) + ABS_TOL


def mismatches(pop: dict, ref: dict) -> list[str]:
    """Where a member's DeepOBS JSON differs from the per-run one (beyond the tolerance)."""
    bad = [
        k
        for k in ("testproblem", "optimizer", "optimizer_hyperparams", "random_seed", "num_epochs", "batch_size")
        if pop.get(k) != ref.get(k)
    ]
    for key in KEYS:
        if key not in ref:
            continue
        if len(pop[key]) != len(ref[key]):
            bad.append(f"{key}: {len(pop[key])} values, per-run {len(ref[key])}")
            continue
        worst = [(i, a, b) for i, (a, b) in enumerate(zip(pop[key], ref[key])) if not _close(a, b)]
        if worst:
            bad.append(f"{key}[{worst[0][0]}]: {worst[0][1]} vs per-run {worst[0][2]}")
    return bad


def _hp(row) -> dict:
    return dict(row["spec"]["hyperparams"])


def _check(rows):
    assert rows
    for row in rows:
        pop, ref = row["pop_json"], row["run_json"]
        assert Path(row["pop"]).parent == Path(row["run"]).parent, row["spec"]  # same setting folder
        assert Path(row["pop"]).name.split("__")[:2] == Path(row["run"]).name.split("__")[:2]  # random_seed__N
        assert not mismatches(pop, ref), (row["spec"], mismatches(pop, ref))


OPTIMIZERS = {  # the default study's 6 and their W variants, with stable settings
    "PowKernelGradientDescentOptimizer": {"learning_rate": 0.05, "power": 0.6},
    "PowKernelMomentumOptimizer": {"learning_rate": 0.01, "power": 0.5},
    "PowKernelMomentumOptimizerN": {"learning_rate": 0.01, "power": 0.8},
    "GradientDescentOptimizer": {"learning_rate": 0.05},
    "MomentumOptimizer": {"learning_rate": 0.02, "momentum": 0.5},
    "NAGOptimizer": {"learning_rate": 0.02, "momentum": 0.3},
    "PowKernelGradientDescentOptimizerW_scaled": {"learning_rate": 0.05, "power": 0.7, "weight_decay_opt": 0.01},
    "PowKernelMomentumOptimizerW_momscaled": {"learning_rate": 0.01, "power": 0.5, "weight_decay_opt": 0.01},
    "PowKernelMomentumOptimizerNW_momscaled": {"learning_rate": 0.01, "power": 0.9, "weight_decay_opt": 0.01},
    "GradientDescentOptimizerW_scaled": {"learning_rate": 0.05, "weight_decay_opt": 0.01},
    "MomentumOptimizerW_momscaled": {"learning_rate": 0.02, "momentum": 0.5, "weight_decay_opt": 0.01},
    "NAGOptimizerW_momscaled": {"learning_rate": 0.02, "momentum": 0.3, "weight_decay_opt": 0.01},
}


@pytest.fixture(scope="module")
def quadratic_rows(tmp_path_factory):
    """Populations of 3 for each of the 12 optimizers (members differ in seed, or in one hyperparameter),
    1 (power = 1, the special case), 4 (one seed) and 3 (one seed each), 3 under fidelity 'corrected',
    7 (MomentumOptimizer, incl. a diverging member) and 50 (PowKernelMomentumOptimizer: learning rates,
    powers and seeds)."""
    cases = []
    for name, hp in OPTIMIZERS.items():
        cases.append([_spec("quadratic_deep", name, seed=42, **hp), _spec("quadratic_deep", name, seed=43, **hp)])
        varied = dict(hp, learning_rate=hp["learning_rate"] / 2)
        cases[-1].append(_spec("quadratic_deep", name, seed=42, **varied))
    cases.append([_spec("quadratic_deep", "PowKernelMomentumOptimizer", seed=44, learning_rate=0.01, power=1.0)])
    # one seed for all (a search's tuning runs: the batch is broadcast) and one seed each (a setting's reruns)
    cases.append(
        [
            _spec("quadratic_deep", "PowKernelGradientDescentOptimizer", seed=42, learning_rate=lr, power=0.7)
            for lr in (0.01, 0.02, 0.04, 0.08)
        ]
    )
    cases.append(
        [_spec("quadratic_deep", "GradientDescentOptimizer", seed=s, learning_rate=0.03) for s in (43, 44, 45)]
    )
    # 'corrected' reshuffles train and train_eval every epoch: those inputs are rebuilt per epoch, not kept
    cases.append(
        [
            dict(_spec("quadratic_deep", "GradientDescentOptimizer", seed=s, learning_rate=lr), fidelity="corrected")
            for s, lr in ((42, 0.03), (42, 0.01), (43, 0.03))
        ]
    )
    cases.append(
        [
            _spec("quadratic_deep", "MomentumOptimizer", seed=42 + i % 3, learning_rate=lr, momentum=mu)
            for i, (lr, mu) in enumerate(
                [(0.01, 0.9), (0.02, 0.5), (0.005, 0.99), (0.03, 0.1), (50.0, 0.9), (0.01, 0.001), (0.04, 0.7)]
            )
        ]
    )
    cases.append(
        [
            _spec(
                "quadratic_deep",
                "PowKernelMomentumOptimizer",
                seed=42 + i % 5,
                learning_rate=round(0.002 * (1 + i % 10), 4),
                power=round(0.4 + 0.1 * (i % 6), 1),
            )
            for i in range(50)
        ]
    )
    return _run(tmp_path_factory.mktemp("pop_quadratic"), cases)


def test_quadratic_every_optimizer_matches_per_run(quadratic_rows):
    names = {row["spec"]["optimizer"] for row in quadratic_rows}
    assert names == set(OPTIMIZERS)
    _check(quadratic_rows)


def test_quadratic_population_sizes_and_divergence(quadratic_rows):
    sizes = {}
    for row in quadratic_rows:
        sizes.setdefault(row["spec"]["optimizer"], []).append(row)
    assert len(sizes["PowKernelMomentumOptimizer"]) == 3 + 1 + 50
    diverged = [r for r in quadratic_rows if _hp(r).get("learning_rate") == 50.0]
    assert len(diverged) == 1
    pop, ref = diverged[0]["pop_json"], diverged[0]["run_json"]
    # DeepOBS' abort routine on both paths: epoch 1's logged loss is NaN, so the curves stop there and are
    # padded with their first entry (quadratic_deep logs step 0 of each 7-step epoch only)
    for result in (pop, ref):
        assert math.isnan(result["train_losses"][1]) and result["train_losses"][2] == result["train_losses"][0]
        assert math.isnan(result["minibatch_train_losses"][1])
    assert not mismatches(pop, ref)
    # the other members of that population trained normally
    peers = [
        r for r in quadratic_rows if r["spec"]["optimizer"] == "MomentumOptimizer" and _hp(r)["learning_rate"] != 50.0
    ]
    assert all(math.isfinite(r["pop_json"]["train_losses"][-1]) for r in peers)


def test_a_swap_fails_the_comparison(quadratic_rows):
    """The comparison has power: pairing a member with the per-run result of a member that differs only in
    seed, or only in learning rate, fails it."""
    by_key = {
        (r["spec"]["optimizer"], r["spec"]["seed"], json.dumps(_hp(r), sort_keys=True)): r for r in quadratic_rows
    }
    hp = OPTIMIZERS["MomentumOptimizer"]
    base = by_key[("MomentumOptimizer", 42, json.dumps(hp, sort_keys=True))]
    other_seed = by_key[("MomentumOptimizer", 43, json.dumps(hp, sort_keys=True))]
    other_lr = by_key[("MomentumOptimizer", 42, json.dumps(dict(hp, learning_rate=0.01), sort_keys=True))]
    assert not mismatches(base["pop_json"], base["run_json"])
    assert mismatches(base["pop_json"], other_seed["run_json"])
    assert mismatches(base["pop_json"], other_lr["run_json"])
    # a power swapped inside the 50-member population would show too
    p = [r for r in quadratic_rows if r["spec"]["optimizer"] == "PowKernelMomentumOptimizer"][-50:]
    a, b = p[0], p[10]  # same seed and learning rate, power 0.4 vs 0.8
    assert a["spec"]["seed"] == b["spec"]["seed"] and _hp(a)["power"] != _hp(b)["power"]
    assert mismatches(a["pop_json"], b["run_json"])


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pop_data")
    synthetic.write_prepared("fmnist", d, n_train=600, n_test=300, seed=2)  # 300 train examples: 2 steps
    return str(d)


def test_fmnist_2c2d_population_matches_per_run(tmp_path, fmnist_dir):
    hp = {"learning_rate": 0.05, "momentum": 0.9}
    rows = _run(
        tmp_path,
        [
            [
                _spec("fmnist_2c2d", "MomentumOptimizer", seed=42, data_dir=fmnist_dir, **hp),
                _spec(
                    "fmnist_2c2d", "MomentumOptimizer", seed=43, data_dir=fmnist_dir, learning_rate=0.02, momentum=0.5
                ),
            ]
        ],
    )
    _check(rows)
    assert (
        rows[0]["pop_json"]["test_accuracies"] != rows[1]["pop_json"]["test_accuracies"]
        or rows[0]["pop_json"]["train_losses"] != rows[1]["pop_json"]["train_losses"]
    )


@pytest.mark.slow
def test_fmnist_vae_population_matches_per_run(tmp_path, fmnist_dir):
    """Dropout and the latent noise draw from each member's seed-generator state, evaluations included."""
    rows = _run(
        tmp_path,
        [
            [
                _spec(
                    "fmnist_vae",
                    "PowKernelMomentumOptimizer",
                    seed=42,
                    data_dir=fmnist_dir,
                    learning_rate=0.01,
                    power=0.5,
                ),
                _spec(
                    "fmnist_vae",
                    "PowKernelMomentumOptimizer",
                    seed=43,
                    data_dir=fmnist_dir,
                    learning_rate=0.01,
                    power=0.5,
                ),
            ]
        ],
    )
    _check(rows)
