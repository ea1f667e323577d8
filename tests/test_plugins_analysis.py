"""Analysis treats plugin optimizers like built-ins: the registry's label and baseline flag in the comparison
table (Welch p-values), the Markdown views and the figures' colours; ``python -m analysis --plugin``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import optimizers
from analysis import load_runs, summarize
from analysis.tables import COMPARISON_VIEW, compare_to_baselines, is_baseline, short_name, view
from deepobs_tree import setting_folder_name
from optimizers import plugins

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = """
import optimizers

def base(model, learning_rate):
    import keras
    return keras.optimizers.SGD(learning_rate)

def pow_base(model, learning_rate, power, beta=0.5):
    import keras
    return optimizers.nonlinear(keras.optimizers.SGD(learning_rate, momentum=beta), power=power)

optimizers.register("TmpBaseOpt", base, search={"learning_rate": {"log_uniform": [1e-3, 1.0]}},
                    label="Base", baseline=True)
optimizers.register("PowKernelTmpBaseOpt", pow_base, hyperparams=("learning_rate", "power", "beta"),
                    defaults={"beta": 0.5}, search={"learning_rate": {"log_uniform": [1e-3, 1.0]},
                    "power": {"randint": [4, 9], "scale": 0.1}, "beta": {"uniform": [0.1, 0.9]}},
                    ranges={"beta": "[0, 1)"}, label="Base+φ", twin="TmpBaseOpt")
"""
BASE_FINALS = [0.60, 0.62, 0.58, 0.61]  # test accuracy of the chosen setting, seeds 42-45
POW_FINALS = [0.70, 0.73, 0.69, 0.72]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "plugin_src" / "tmp_analysis_plugin.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PLUGIN))
    return path


@pytest.fixture
def loaded(plugin_file):
    plugin = plugins.load(str(plugin_file), validate=False)
    yield plugin
    plugins.forget(plugin)
    assert "TmpBaseOpt" not in optimizers.names()


def write_run(root: Path, optimizer: str, hp: dict, seed: int, final: float) -> None:
    valid = [0.1, final - 0.01, final]
    data = {
        "testproblem": "fmnist_2c2d",
        "batch_size": 128,
        "num_epochs": 2,
        "random_seed": seed,
        "weight_decay": None,
        "optimizer_name": optimizer,
        "optimizer_hyperparams": hp,
        "training_params": {},
        "train_losses": [2.0, 1.0, 0.5],
        "valid_losses": [2.0, 1.0, 0.5],
        "test_losses": [2.0, 1.0, 0.5],
        "train_accuracies": valid,
        "valid_accuracies": valid,
        "test_accuracies": valid,
        "minibatch_train_losses": [2.0, 0.5],
    }
    folder = root / "fmnist_2c2d" / optimizer / setting_folder_name(2, 128, hp, None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"random_seed__{seed}__2024-01-01-00-00-00.json").write_text(json.dumps(data))


def synthetic_tree(root: Path) -> Path:
    """Two tuning settings each (seed 42), the better one rerun with seeds 43-45; the non-linear optimizer's
    two settings differ in beta (a hyperparameter only the plugin knows to be searched)."""
    for lr, offset in ((0.1, 0.0), (0.01, -0.2)):
        hp = {"learning_rate": lr}
        for seed, final in zip((42, 43, 44, 45), BASE_FINALS):
            if seed == 42 or offset == 0.0:
                write_run(root, "TmpBaseOpt", hp, seed, final + offset)
    for beta, offset in ((0.3, 0.0), (0.8, -0.2)):
        hp = {"learning_rate": 0.1, "power": 0.5, "beta": beta}
        for seed, final in zip((42, 43, 44, 45), POW_FINALS):
            if seed == 42 or offset == 0.0:
                write_run(root, "PowKernelTmpBaseOpt", hp, seed, final + offset)
    return root


def test_plugin_baseline_and_nonlinear_in_tables_and_figures(loaded, tmp_path, monkeypatch):
    runs = load_runs([synthetic_tree(tmp_path / "tree")], progress=False)
    summary = summarize(runs, rerun_seeds=(43, 44, 45), searched=("learning_rate", "power", "beta"))
    assert sorted(summary.optimizer) == ["PowKernelTmpBaseOpt", "TmpBaseOpt"]
    assert set(summary.n_samples) == {2}  # beta searched: one search per optimizer
    flags = {row.optimizer: is_baseline(row) for _, row in summary.iterrows()}
    assert flags == {"TmpBaseOpt": True, "PowKernelTmpBaseOpt": False}
    assert short_name("PowKernelTmpBaseOpt") == "Base+φ" and short_name("TmpBaseOpt") == "Base"

    comparison = compare_to_baselines(summary)
    assert len(comparison) == 1
    row = comparison.iloc[0]
    assert (row.optimizer, row.baseline, row.metric) == ("PowKernelTmpBaseOpt", "TmpBaseOpt", "test_accuracies")
    expected = stats.ttest_ind(POW_FINALS, BASE_FINALS, equal_var=False)
    assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert row.difference == pytest.approx(np.mean(POW_FINALS) - np.mean(BASE_FINALS)) and row.better
    shown, _, _ = view(comparison, COMPARISON_VIEW)
    assert (shown.iloc[0].optimizer, shown.iloc[0].baseline) == ("Base+φ", "Base")

    from analysis import figures

    captured = {}

    def keep(fig, out_dir, stem):
        captured[stem] = fig
        return []

    monkeypatch.setattr(figures, "save", keep)
    figures.overview(summary, tmp_path / "figs")
    ax = captured["overview"].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    markers = [line for line in ax.lines if line.get_marker() == "o"]
    colours = dict(zip(ticks, (m.get_color() for m in markers)))
    # one colour per optimizer, the same in every figure (analysis.figures.colour); baselines open markers
    assert colours == {"Base+φ": figures.colour("PowKernelTmpBaseOpt"), "Base": figures.colour("TmpBaseOpt")}
    assert colours["Base+φ"] != colours["Base"]
    assert {t: m.get_markerfacecolor() == "white" for t, m in zip(ticks, markers)} == {"Base+φ": False, "Base": True}
    figures.learning_curves(runs, summary, "fmnist_2c2d", tmp_path / "figs")
    legend = {line.get_label(): line.get_linestyle() for line in captured["learning_curves_fmnist_2c2d"].axes[0].lines}
    assert legend == {"Base+φ": "-", "Base": "--"}  # baselines dashed


def test_unregistered_folder_names_keep_working():
    row = pd.Series({"optimizer": "AdamOptimizer", "source": "results"})
    assert is_baseline(row) and short_name("AdamOptimizer") == "AdamOptimizer"  # Crowded Valley's TF1 Adam
    assert not is_baseline(pd.Series({"optimizer": "SomethingElse", "source": "results"}))
    assert short_name("PowKernelMomentumOptimizerN") == "MN"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args), "--quiet", "--no-figures"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_plugin_labels_and_searched_hyperparameters(plugin_file, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    out = tmp_path / "out"
    result = run_cli(tree, "--plugin", plugin_file, "--rerun-seeds", "43-45", "--out", out)
    assert result.returncode == 0, result.stderr
    comparison = pd.read_csv(out / "comparison.csv")
    assert list(comparison.optimizer) == ["PowKernelTmpBaseOpt"] and list(comparison.baseline) == ["TmpBaseOpt"]
    summary_md = (out / "summary.md").read_text()
    assert "| Base+φ |" in summary_md and "| Base |" in summary_md
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.n_samples) == {2}  # the plugin's beta counts as searched without --searched
    bad = run_cli(tree, "--plugin", tmp_path / "missing.py", "--out", tmp_path / "out2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: plugin ") and "missing.py" in bad.stderr and "no such file" in bad.stderr
    assert not (tmp_path / "out2").exists()
