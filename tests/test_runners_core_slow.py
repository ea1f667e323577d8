"""Slow end-to-end checks of runners.run against the paper's released results (make test-slow)."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from runners.run import execute
from runners.spec import RunSpec

pytestmark = pytest.mark.slow

FMNIST_SOURCE = Path(os.environ.get("NLWU_FMNIST_SOURCE", "/usr/share/datasets/fashion-mnist"))

# protocol §4/§5: the paper's chosen quadratic_deep settings and their stored 10-seed mean/std final test loss
QUADRATIC = {
    "PowKernelGradientDescentOptimizer": ("6.8706142826e-03", "8.e-01", 87.6877, 0.09846),
    "PowKernelMomentumOptimizer": ("2.9204338472e-03", "9.e-01", 87.1431, 0.05760),
    "PowKernelMomentumOptimizerN": ("1.7654048052e-03", "9.e-01", 87.1726, 0.05669),
}
# protocol §4: the paper's chosen fmnist_2c2d settings (GD #3, M #25, MN #25)
FMNIST = {
    "PowKernelGradientDescentOptimizer": ("2.4400607091e-02", "5.e-01"),
    "PowKernelMomentumOptimizer": ("5.7624872165e-03", "7.e-01"),
    "PowKernelMomentumOptimizerN": ("5.7624872165e-03", "7.e-01"),
}


def stored_seeds(folder: Path) -> dict[int, dict]:
    """Seed -> run of a paper setting folder (latest file per seed, seeds 42-51; protocol §5)."""
    runs = {}
    for f in sorted(folder.glob("random_seed__*.json")):
        data = json.loads(f.read_text())
        if 42 <= data["random_seed"] <= 51:
            runs[data["random_seed"]] = data
    assert sorted(runs) == list(range(42, 52)), folder
    return runs


@pytest.mark.parametrize("optimizer", list(QUADRATIC))
def test_quadratic_deep_reruns_match_the_papers_means(optimizer, paper_tree, tmp_path_factory):
    lr, power, mean, std = QUADRATIC[optimizer]
    folder = (
        paper_tree
        / "quadratic_deep"
        / optimizer
        / (f"num_epochs__100__batch_size__128__learning_rate__{lr}__power__{power}")
    )
    paper = stored_seeds(folder)
    theirs = np.array([paper[s]["test_losses"][-1] for s in range(42, 52)])
    assert theirs.mean() == pytest.approx(mean, abs=1e-4) and theirs.std() == pytest.approx(std, abs=1e-5)
    out = tmp_path_factory.mktemp("quadratic")
    hp = paper[42]["optimizer_hyperparams"]  # exact stored floats -> same setting folder
    ours = []
    for seed in range(42, 52):
        path = execute(RunSpec("quadratic_deep", optimizer, hp, seed=seed), out, progress=False)
        assert path.parent.name == folder.name
        ours.append(json.loads(path.read_text())["test_losses"][-1])
    ours = np.array(ours)
    # two standard errors of the difference of the two 10-seed means
    se = np.sqrt(theirs.var(ddof=1) / 10 + ours.var(ddof=1) / 10)
    print(
        f"{optimizer}: ours {ours.mean():.4f} ± {ours.std():.5f}, paper {theirs.mean():.4f} ± {theirs.std():.5f}, "
        f"diff {ours.mean() - theirs.mean():+.4f}, 2 SE {2 * se:.4f}"
    )
    assert abs(ours.mean() - theirs.mean()) <= 2 * se


@pytest.fixture(scope="module")
def fmnist_data(tmp_path_factory):
    if not (FMNIST_SOURCE / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST source files not found in {FMNIST_SOURCE} (set NLWU_FMNIST_SOURCE)")
    from testproblems.data import prepare

    data_dir = tmp_path_factory.mktemp("data")
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    args = parser.parse_args(
        ["--data-dir", str(data_dir), "--only", "fmnist", "--source", str(FMNIST_SOURCE), "--quiet"]
    )
    assert prepare.run(args) == 0
    return data_dir


@pytest.mark.parametrize("optimizer", list(FMNIST))
def test_fmnist_2c2d_first_epoch_accuracy_in_the_papers_range(optimizer, fmnist_data, paper_tree, tmp_path):
    lr, power = FMNIST[optimizer]
    folder = (
        paper_tree
        / "fmnist_2c2d"
        / optimizer
        / (f"num_epochs__100__batch_size__128__learning_rate__{lr}__power__{power}")
    )
    paper = stored_seeds(folder)
    epoch1 = np.array([paper[s]["test_accuracies"][1] for s in range(42, 52)])
    low, high = epoch1.min() - 3 * epoch1.std(), epoch1.max() + 3 * epoch1.std()
    spec = RunSpec(
        "fmnist_2c2d", optimizer, paper[42]["optimizer_hyperparams"], seed=42, num_epochs=1, data_dir=str(fmnist_data)
    )
    data = json.loads(execute(spec, tmp_path, progress=False).read_text())
    ours = data["test_accuracies"][1]
    print(
        f"{optimizer}: epoch-1 test accuracy {ours:.4f}, paper range [{epoch1.min():.4f}, {epoch1.max():.4f}], "
        f"widened [{low:.4f}, {high:.4f}]"
    )
    assert data["test_accuracies"][0] < 0.2  # untrained: about chance (0.1)
    assert low <= ours <= high
