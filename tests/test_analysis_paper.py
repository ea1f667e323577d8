"""The analysis on the paper's released results reproduces protocol.md §5 and handles every quirk Q1-Q24."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis import load_runs, summarize
from deepobs_tree import float2str

P = "PowKernel"
GD, M, MN = f"{P}GradientDescentOptimizer", f"{P}MomentumOptimizer", f"{P}MomentumOptimizerN"
GDW, MW, MNW = (
    f"{P}GradientDescentOptimizerW_scaled",
    f"{P}MomentumOptimizerW_momscaled",
    f"{P}MomentumOptimizerNW_momscaled",
)

# protocol.md §5, as printed: problem, optimizer, learning_rate token, power, weight_decay_opt, n, mean, std
TABLE_5 = [
    ("cifar100_allcnnc_nodecay", GDW, "2.5378155083e-02", 0.6, 5e-4, 10, "0.550541", "0.009156"),
    ("cifar100_allcnnc_nodecay", MW, "2.4637685959e-02", 0.9, 5e-4, 10, "0.583183", "0.007998"),
    ("cifar100_allcnnc_nodecay", MNW, "6.8706142826e-03", 0.8, 5e-4, 10, "0.574359", "0.006477"),
    ("cifar10_3c3d_nodecay", GDW, "5.7624872165e-03", 0.7, 2e-3, 10, "0.832302", "0.007509"),
    ("cifar10_3c3d_nodecay", MW, "8.3863947804e-04", 0.7, 2e-3, 10, "0.838321", "0.003304"),
    ("cifar10_3c3d_nodecay", MNW, "8.3863947804e-04", 0.7, 2e-3, 10, "0.842638", "0.005340"),
    ("fmnist_2c2d", GD, "2.4400607091e-02", 0.5, None, 10, "0.920363", "0.001983"),
    ("fmnist_2c2d", M, "5.7624872165e-03", 0.7, None, 10, "0.921575", "0.001599"),
    ("fmnist_2c2d", MN, "5.7624872165e-03", 0.7, None, 10, "0.921965", "0.001728"),
    ("fmnist_vae", GD, "2.9204338472e-03", 0.9, None, 10, "23.7234", "0.1588"),
    ("fmnist_vae", M, "5.4167545832e-04", 0.8, None, 10, "28.1702", "13.28"),
    ("fmnist_vae", MN, "1.9777828512e-04", 0.5, None, 10, "23.5674", "0.1815"),
    ("mnist_vae", GD, "1.4926318309e-03", 0.6, None, 10, "28.3445", "0.1099"),
    ("mnist_vae", M, "1.2087541473e-04", 0.5, None, 10, "28.4905", "0.09586"),
    ("mnist_vae", MN, "1.2087541473e-04", 0.5, None, 10, "28.4205", "0.1713"),
    ("quadratic_deep", GD, "6.8706142826e-03", 0.8, None, 10, "87.6877", "0.09846"),
    ("quadratic_deep", M, "2.9204338472e-03", 0.9, None, 10, "87.1431", "0.05760"),
    ("quadratic_deep", MN, "1.7654048052e-03", 0.9, None, 10, "87.1726", "0.05669"),
    ("svhn_wrn164_nodecay", GDW, "1.2563152774e-02", 0.5, 5e-4, 10, "0.962966", "0.001516"),
    ("svhn_wrn164_nodecay", MW, "2.9072088907e-04", 0.4, 5e-4, 10, "0.962885", "0.000708"),
    ("svhn_wrn164_nodecay", MNW, "6.0803901903e-04", 0.4, 5e-4, 10, "0.964032", "0.000832"),
    ("tolstoi_char_rnn", GD, "6.2451395747e-01", 0.7, None, 10, "0.618637", "0.000796"),
    ("tolstoi_char_rnn", M, "2.3423849847e-02", 0.6, None, 10, "0.614166", "0.001287"),
    ("tolstoi_char_rnn", MN, "2.5378155083e-02", 0.6, None, 10, "0.615793", "0.000674"),
    ("cifar10_3c3d", GD, "2.4637685959e-02", 0.9, None, 10, "0.832772", "0.01224"),
    ("cifar10_3c3d", M, "6.2906442946e-04", 0.7, None, 10, "0.835507", "0.007228"),
]


def printed_tolerance(text: str) -> float:
    """Half a unit in the last printed digit (e.g. '0.009156' -> 5e-7, '13.28' -> 5e-3)."""
    digits = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** (-digits) * (1 + 1e-9)


@pytest.fixture(scope="module")
def runs(paper_tree, l2_tree, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("NLWU_CACHE", str(tmp_path_factory.mktemp("cache")))
    return load_runs([paper_tree, l2_tree], progress=False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def summary(runs):
    return summarize(runs)


def main_row(summary, problem, optimizer):
    rows = summary[(summary.testproblem == problem) & (summary.optimizer == optimizer)]
    return rows.sort_values("n_samples", ascending=False).iloc[0]


def test_every_search_has_a_row(summary):
    main = summary[summary.n_samples == 50]
    assert len(main) == 26  # 24 (problem, non-linear optimizer) folders + the 2 of the L2 tree
    probes = summary[
        (summary.testproblem == "cifar10_3c3d_nodecay") & (summary.optimizer == MNW) & (summary.n_samples == 1)
    ]
    assert sorted(probes.weight_decay_opt) == [5e-4, 1e-3, 4e-3, 8e-3]  # Q18: the post-hoc decay sweep
    assert len(summary) == 30
    for column in (
        "testproblem",
        "optimizer",
        "learning_rate",
        "power",
        "weight_decay",
        "weight_decay_opt",
        "n_samples",
        "n_seeds",
        "metric",
        "final_test_mean",
        "final_test_std",
        "tie",
    ):
        assert column in summary.columns


@pytest.mark.parametrize("problem,optimizer,lr,power,decay,n,mean,std", TABLE_5)
def test_table_5(summary, problem, optimizer, lr, power, decay, n, mean, std):
    row = main_row(summary, problem, optimizer)
    assert float2str(row.learning_rate) == lr
    assert row.power == pytest.approx(power, abs=1e-9)
    if decay is None:
        assert row.weight_decay_opt is None or math.isnan(row.weight_decay_opt)
    else:
        assert row.weight_decay_opt == pytest.approx(decay)
    assert row.n_seeds == n
    assert row.seeds == "42 43 44 45 46 47 48 49 50 51"
    assert abs(row.final_test_mean - float(mean)) <= printed_tolerance(mean)
    assert abs(row.final_test_std - float(std)) <= printed_tolerance(std)
    assert row.metric == ("test_losses" if "vae" in problem or "quadratic" in problem else "test_accuracies")


def _independent_final_values(
    root: Path, problem: str, optimizer: str, lr_token: str, decay, metric: str
) -> list[float]:
    """Straight from the files: every folder of the setting, identical bytes once, latest file per seed 42-51."""
    per_seed = {}
    seen = set()
    for folder in sorted((root / problem / optimizer).iterdir()):
        if not folder.is_dir() or f"learning_rate__{lr_token}__" not in folder.name + "__":
            continue
        if decay is not None and not folder.name.endswith(f"weight_decay_opt__{float2str(decay)}"):
            continue
        for path in sorted(folder.glob("random_seed__*.json")):
            raw = path.read_bytes()
            digest = hashlib.sha1(raw).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            seed, stamp = int(path.name.split("__")[1]), path.name.split("__")[2]
            if 42 <= seed <= 51 and (seed not in per_seed or stamp > per_seed[seed][0]):
                per_seed[seed] = (stamp, json.loads(raw)[metric][-1])
    return [value for _, value in per_seed.values()]


@pytest.mark.parametrize("problem,optimizer,lr,decay", [(p, o, lr, d) for p, o, lr, _, d, *_ in TABLE_5])
def test_means_match_an_independent_computation(summary, paper_tree, l2_tree, problem, optimizer, lr, decay):
    row = main_row(summary, problem, optimizer)
    root = l2_tree if problem == "cifar10_3c3d" else paper_tree
    values = _independent_final_values(root, problem, optimizer, lr, decay, row.metric)
    assert len(values) == row.n_seeds
    assert row.final_test_mean == pytest.approx(np.mean(values), rel=1e-9)
    assert row.final_test_std == pytest.approx(np.std(values), rel=1e-9, abs=1e-15)
    assert row.final_test_median == pytest.approx(np.median(values), rel=1e-9)
    assert (row.final_test_min, row.final_test_max) == (min(values), max(values))


def test_only_the_svhn_gdw_tie_is_flagged(summary):
    flagged = summary[summary.tie.astype(bool)]
    assert list(zip(flagged.testproblem, flagged.optimizer)) == [("svhn_wrn164_nodecay", GDW)]
    row = main_row(summary, "svhn_wrn164_nodecay", GDW)
    assert row.tuning_score == row.runner_up_score == pytest.approx(0.9998075738916257, abs=0)


# ---- quirks (deepobs-format.md §4) ----


def test_q1_q12_only_result_files_are_read_and_folders_name_the_run(runs):
    report = runs.attrs["report"]
    assert report.n_files == 1623 + 118  # .DS_Store files ignored
    assert report.skipped == []
    assert (runs.optimizer == runs.optimizer_name).all()
    assert (runs.testproblem == runs.json_testproblem).all()


def test_q2_no_accuracy_problems(runs):
    for problem in ("quadratic_deep", "mnist_vae", "fmnist_vae"):
        assert not runs[runs.testproblem == problem].has_accuracy.any()
    assert runs[runs.testproblem == "fmnist_2c2d"].has_accuracy.all()


def test_q4_q5_diverged_runs_are_flagged_and_score_their_epoch_0_value(paper_tree, l2_tree, runs):
    nan_bytes = [
        p.read_bytes() for root in (paper_tree, l2_tree) for p in root.glob("*/*/*/*.json") if b"NaN" in p.read_bytes()
    ]
    assert len(nan_bytes) == 155 + 12
    nan_files = {hashlib.sha1(raw).hexdigest() for raw in nan_bytes}
    assert set(runs[runs.diverged].sha1) == nan_files & set(runs.sha1)
    diverged = runs[runs.diverged]
    for curve in ("final_valid_losses", "final_test_losses"):
        assert (diverged[curve] == [c[0] for c in diverged[curve.removeprefix("final_")]]).all()
    example = diverged[
        diverged.relpath.str.contains("learning_rate__4.3379206975e-01__power__7.e-01")
        & (diverged.testproblem == "cifar100_allcnnc_nodecay")
        & (diverged.optimizer == GDW)
    ].iloc[0]
    assert example.minibatch_len == 599
    assert example.final_valid_accuracies == example.valid_accuracies[0]


def test_q6_q7_short_curves_are_kept(runs):
    cifar100 = runs[runs.testproblem == "cifar100_allcnnc_nodecay"]
    assert sorted(set(cifar100.n_evals)) == [51, 101, 351]
    mixed = cifar100[
        cifar100.setting_folder.str.contains("learning_rate__1.2273800988e-01__power__7.e-01")
        & (cifar100.optimizer == MW)
    ]
    assert len(mixed) == 1 and mixed.iloc[0].n_evals == 351  # the later of the two seed-42 files (Q7, Q13)
    assert mixed.iloc[0].timestamp == "2022-06-08-16-17-57"


def test_q8_q9_identical_copies_count_once(runs):
    report = runs.attrs["report"]
    # 80 groups of 161 identical files -> 81 extra copies
    assert report.n_duplicates == 81
    quad_m = runs[(runs.testproblem == "quadratic_deep") & (runs.optimizer == M)]
    assert (quad_m.seed == 42).sum() == 50
    assert len(quad_m) == 59


def test_q9_reverse_case_joins_its_search(summary, runs):
    tuning = runs[(runs.testproblem == "cifar10_3c3d_nodecay") & (runs.optimizer == MNW) & (runs.seed == 42)]
    moved = tuning[tuning.relpath.str.endswith("random_seed__42__2022-05-28-06-36-55.json")]
    assert len(moved) == 1 and "__weight_decay__" not in moved.iloc[0].setting_folder
    assert main_row(summary, "cifar10_3c3d_nodecay", MNW).n_samples == 50


def test_q10_weight_decay_normalised(runs):
    nodecay = runs[runs.testproblem.str.endswith("_nodecay")]
    assert set(nodecay.weight_decay) == {0.0}
    assert {type(v).__name__ for v in nodecay.weight_decay_stored} >= {"NoneType", "float", "int"}
    assert set(runs[runs.testproblem == "cifar10_3c3d"].weight_decay) == {0.002}


def test_q11_training_params_do_not_split_settings(runs):
    forms = {json.dumps(tp, sort_keys=True) for tp in runs.training_params}
    assert len(forms) >= 5
    assert runs.groupby("setting_key").seed.apply(lambda s: s.duplicated().any()).sum() == 0


def test_q13_latest_seed_42_file_is_scored(runs, summary):
    mnist_m = runs[
        (runs.testproblem == "mnist_vae")
        & (runs.optimizer == M)
        & runs.setting_folder.str.contains("learning_rate__1.5369603111e-04")
        & (runs.seed == 42)
    ]
    assert len(mnist_m) == 1
    assert mnist_m.iloc[0].final_valid_losses == pytest.approx(28.567, abs=5e-4)
    assert float2str(main_row(summary, "mnist_vae", M).learning_rate) == "1.2087541473e-04"


def test_q15_seed_52_is_left_out(summary, runs):
    assert (runs.seed == 52).sum() == 1
    assert "52" not in main_row(summary, "mnist_vae", M).seeds.split()


def test_q19_power_float_noise_is_one_setting(runs):
    folder = runs[
        runs.setting_folder.str.contains("learning_rate__8.3863947804e-04__power__7.e-01__weight_decay_opt__1.e-03")
    ]
    powers = {hp["power"] for hp in folder.optimizer_hyperparams}
    assert powers == {0.7}
    keys = runs[
        (runs.testproblem == "cifar10_3c3d_nodecay")
        & (runs.optimizer == MNW)
        & runs.setting_folder.str.contains("learning_rate__8.3863947804e-04__power__7.e-01__weight_decay_opt__2.e-03")
    ]
    assert {round(hp["power"], 12) for hp in keys.optimizer_hyperparams} == {0.7}
    assert keys.setting_key.nunique() == 1


def test_q22_outlier_sets_the_std(summary):
    row = main_row(summary, "fmnist_vae", M)
    assert row.final_test_max == pytest.approx(67.99, abs=0.01)


def test_secondary_rerun_sets(runs):
    """protocol §5: the rank-2 reruns, selected with a hyperparameter filter."""
    gd = summarize(runs[runs.testproblem == "fmnist_vae"], where={"learning_rate": "1.6536937183e-03"})
    row = gd[gd.optimizer == GD].iloc[0]
    assert (round(row.final_test_mean, 4), round(row.final_test_std, 5)) == (23.6348, 0.04902)
    mn = summarize(runs[runs.testproblem == "mnist_vae"], where={"learning_rate": "1.5369603111e-04"})
    row = mn[mn.optimizer == MN].iloc[0]
    assert (round(row.final_test_mean, 4), round(row.final_test_std, 4)) == (28.3367, 0.1286)
