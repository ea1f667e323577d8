"""Our optimizers replay the paper's released quadratic_deep runs (protocol §1.2-1.3), on real data.

quadratic_deep with seed 42 is the paper's problem exactly (same Hessian, data, init and shuffling), so the
train-loss curve of a stored seed-42 run is reproduced by the right update rule and missed by the wrong
ones: TF1 heavy-ball vs Nesterov momentum, μ = 0.9 vs 0.99, and φ applied to theta (1x100) or not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import optimizers
import testproblems  # noqa: E402

EPOCHS = 30
MATCH, MISS = 0.002, 0.01  # RMS of log(ours / paper) over epochs 1..EPOCHS
M15 = ("PowKernelMomentumOptimizer", "2.9204338472e-03")  # protocol §1.3: sample #15, p = 0.9
MN29 = ("PowKernelMomentumOptimizerN", "1.7654048052e-03")  # sample #29, p = 0.9
GD5 = ("PowKernelGradientDescentOptimizer", "6.8706142826e-03")  # sample #5, p = 0.8


def paper_run(paper_tree, folder_opt, lr_token):
    folder = paper_tree / "quadratic_deep" / folder_opt
    matches = list(folder.glob(f"*learning_rate__{lr_token}__power__*/random_seed__42__*.json"))
    assert matches, f"no seed-42 run under {folder} for learning_rate {lr_token}"
    return json.loads(sorted(matches)[-1].read_text())


def replay_error(paper, optimizer, **options):
    problem = testproblems.get("quadratic_deep", seed=42)
    model = problem.build_model()
    opt = optimizers.make(optimizer, model, **paper["optimizer_hyperparams"], **options)
    trainer = problem.trainer(model, opt)
    losses = []
    for epoch in range(EPOCHS):
        trainer.train_epoch(epoch)
        losses.append(trainer.evaluate("train_eval")["loss"])
    stored = np.asarray(paper["train_losses"][1 : EPOCHS + 1])
    return float(np.sqrt(np.mean(np.log(np.asarray(losses) / stored) ** 2)))


@pytest.mark.parametrize(
    "data,optimizer,options,fits",
    [
        (M15, "PowKernelMomentumOptimizer", {}, True),  # μ = 0.9 default
        (M15, "PowKernelMomentumOptimizer", {"momentum": 0.99}, False),
        (M15, "PowKernelMomentumOptimizerN", {}, False),  # Nesterov on heavy-ball data
        (MN29, "PowKernelMomentumOptimizerN", {}, True),
        (MN29, "PowKernelMomentumOptimizer", {}, False),  # heavy-ball on Nesterov data
        (GD5, "PowKernelGradientDescentOptimizer", {}, True),  # φ on theta (rank >= 2)
        (GD5, "PowKernelGradientDescentOptimizer", {"select": "none"}, False),  # theta left linear
    ],
    ids=[
        "M-mu0.9",
        "M-mu0.99",
        "M-data-nesterov",
        "MN-mu0.9",
        "MN-data-heavyball",
        "GD-theta-mapped",
        "GD-theta-linear",
    ],
)
def test_replay_of_paper_quadratic_deep_runs(paper_tree, data, optimizer, options, fits):
    error = replay_error(paper_run(paper_tree, *data), optimizer, **options)
    if fits:
        assert error < MATCH, f"{optimizer} {options}: RMS log error {error:.4f} against the paper's run"
    else:
        assert error > MISS, f"{optimizer} {options} should not fit the paper's run (error {error:.4f})"
