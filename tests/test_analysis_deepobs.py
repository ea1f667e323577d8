"""Our selection ranks settings exactly as DeepOBS' own analyzer does (mode 'final') on seed-42-only folders."""

from __future__ import annotations

import shutil
import warnings

import pytest

from analysis import load_runs, rank_settings
from analysis.deepobs_reference import shared_utils

CASES = [
    ("fmnist_2c2d", "PowKernelGradientDescentOptimizer", "valid_accuracies"),  # accuracy, higher is better
    ("quadratic_deep", "PowKernelMomentumOptimizerN", "valid_losses"),  # no accuracy: DeepOBS falls back to loss
    ("svhn_wrn164_nodecay", "PowKernelGradientDescentOptimizerW_scaled", "valid_accuracies"),  # 3-way tie (Q23)
    ("fmnist_vae", "PowKernelMomentumOptimizerN", "valid_losses"),  # diverged runs (NaN minibatch losses)
]


def _seed42_copy(paper_tree, tmp_path, problem, optimizer):
    source = paper_tree / problem / optimizer
    target = tmp_path / problem / optimizer
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(folder.glob("random_seed__42__*.json"))
        if files:
            (target / folder.name).mkdir(parents=True)
            shutil.copy2(files[-1], target / folder.name / files[-1].name)
    return target


@pytest.mark.parametrize("problem,optimizer,metric", CASES)
def test_ranking_equals_deepobs(paper_tree, tmp_path, monkeypatch, problem, optimizer, metric):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))
    folder = _seed42_copy(paper_tree, tmp_path / "tree", problem, optimizer)
    utils = shared_utils(allow_problems=[problem])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DeepOBS warns when it falls back from accuracy to loss
        theirs = [
            a.path.rsplit("/", 1)[-1]
            for a in utils.create_setting_analyzer_ranking(str(folder), "final", "valid_accuracies")
        ]
    runs = load_runs([tmp_path / "tree"], progress=False)
    ours = list(rank_settings(runs[runs.seed == 42], metric, "final").setting_folder)
    assert len(ours) == len(theirs) >= 50
    assert ours == theirs
