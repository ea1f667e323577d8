"""Confidence intervals, Holm, tuning-budget curves and performance profiles (issue 18), against scipy
called directly, brute-force enumeration and hand-computed values."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from tree_helpers import write_run

from analysis import load_runs, summarize
from analysis import stats as st
from analysis.budget import budget_curves, expected_curve, weights
from analysis.profiles import costs, performance_profile
from analysis.report import analyse, write_report
from deepobs_tree import setting_folder_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def scipy_ci(values):
    res = sps.bootstrap(
        (np.asarray(values, dtype=float),),
        np.mean,
        n_resamples=10_000,
        confidence_level=0.95,
        method="BCa",
        random_state=0,
    )
    return res.confidence_interval.low, res.confidence_interval.high


# ---- bootstrap ----


def test_bootstrap_ci_is_scipys_bca_and_vectorised_rows_match_single_calls():
    rng = np.random.default_rng(1)
    lists = [
        list(rng.normal(87.0, 0.1, 10)),
        list(rng.normal(0.9, 0.01, 10)),
        list(rng.normal(5, 2, 7)),
        list(rng.normal(23.5, 0.2, 9)) + [67.99],
    ]  # an outlier as in fmnist_vae/M
    for values in lists:
        low, high = st.bootstrap_ci(values)
        ref = scipy_ci(values)
        assert (low, high) == pytest.approx(ref, rel=1e-12)
        assert low < np.mean(values) < high
    batched = st.bootstrap_cis(lists)
    for values, got in zip(lists, batched):
        assert got == pytest.approx(st.bootstrap_ci(values), rel=1e-12)
    # a different random_state gives a different interval: the test can tell
    other = sps.bootstrap((np.asarray(lists[0]),), np.mean, n_resamples=10_000, method="BCa", random_state=1)
    assert other.confidence_interval.low != pytest.approx(st.bootstrap_ci(lists[0])[0], rel=1e-12)


def test_bootstrap_degenerate_cases_do_not_crash():
    assert all(math.isnan(v) for v in st.bootstrap_ci([]))
    assert all(math.isnan(v) for v in st.bootstrap_ci([0.5]))  # n = 1: no interval
    assert st.bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)  # all equal: the point
    assert all(math.isnan(v) for v in st.bootstrap_ci([1.0, float("nan"), 2.0]))
    out = st.bootstrap_cis([[0.5], [1.0, 1.0], [1.0, 2.0, 4.0], []])
    assert math.isnan(out[0][0]) and out[1] == (1.0, 1.0) and math.isnan(out[3][1])
    assert out[2] == pytest.approx(scipy_ci([1.0, 2.0, 4.0]))
    d = st.difference_ci([1.0, 1.0], [0.5, 0.5])
    assert d == (0.5, 0.5)
    assert all(math.isnan(v) for v in st.difference_ci([1.0], [0.5, 0.6]))
    low, high = st.difference_ci([1.0, 1.0, 1.0], [0.4, 0.5, 0.6])  # one side constant: still an interval
    assert low <= 0.5 <= high


def test_difference_ci_is_scipys_two_sample_bca():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.92, 0.002, 10), rng.normal(0.918, 0.002, 10)
    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=10_000,
        method="BCa",
        random_state=0,
        vectorized=True,
    )
    assert st.difference_ci(a, b) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_holm_against_hand_computed_values():
    # m = 3 (NaN is no test): sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    got = st.holm([0.01, 0.04, 0.03, float("nan")])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(got[3])
    assert st.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert st.holm([]).size == 0


def test_summary_ci_uses_seeds_in_ascending_order(tmp_path):
    hp = {"learning_rate": 0.1, "power": 0.5}
    values = {42: 0.90, 43: 0.80, 44: 0.95, 45: 0.70, 46: 0.85}
    seeds = list(values)
    random.Random(0).shuffle(seeds)
    for i, seed in enumerate(seeds):  # files written in shuffled order
        write_run(
            tmp_path,
            "fmnist_2c2d",
            "PowKernelGradientDescentOptimizer",
            hp,
            seed,
            [0.1, 0.5],
            [0.1, values[seed]],
            stamp=f"2022-01-01-00-00-0{i}",
        )
    analysis = analyse([tmp_path], rerun_seeds=range(43, 47), progress=False)
    row = analysis.summary.iloc[0]
    assert row["seed_values"] == [values[s] for s in sorted(values)]
    assert (row["final_test_ci_low"], row["final_test_ci_high"]) == pytest.approx(
        scipy_ci([values[s] for s in sorted(values)])
    )


# ---- tuning-budget curves ----


def brute_force(ranked_scores, ranked_tests, higher_better, k):
    """Every ordered k-tuple of draws with replacement, equally likely; the selection picks the draw of the
    best rank (ranked lists: best first, ties already ordered as the selection orders them)."""
    scores = np.asarray(ranked_scores, dtype=float)
    finite = scores[np.isfinite(scores)]
    worst = finite.min() if higher_better else finite.max()
    scores = np.where(np.isfinite(scores), scores, worst)
    n = len(scores)
    best_sum = test_sum = 0.0
    for draw in itertools.product(range(n), repeat=k):
        chosen = min(draw)  # rank 0 is the best
        best_sum += scores[chosen]
        test_sum += ranked_tests[chosen]
    return best_sum / n**k, test_sum / n**k


@pytest.mark.parametrize("higher_better", [True, False])
def test_expected_maximum_formula_matches_brute_force(higher_better):
    # ranked best first: a tie (equal scores, different tests) and a diverged run (NaN score) last
    if higher_better:
        scores, tests = [0.9, 0.9, 0.7, 0.4, float("nan")], [0.88, 0.86, 0.69, 0.41, 0.1]
    else:
        scores, tests = [1.0, 1.0, 2.5, 4.0, float("nan")], [1.1, 1.3, 2.4, 4.2, 9.0]
    best, test = expected_curve(scores, tests, higher_better)
    assert len(best) == 5
    for k in range(1, 5):
        assert (best[k - 1], test[k - 1]) == pytest.approx(brute_force(scores, tests, higher_better, k), rel=1e-12)
    assert best[0] == pytest.approx(np.mean([s if np.isfinite(s) else scores[3] for s in scores]))
    assert weights(5, 3).sum() == pytest.approx(1.0)


def test_budget_curves_on_a_tree_follow_the_selection_and_its_ties(tmp_path):
    opt = "PowKernelGradientDescentOptimizer"
    # quadratic_deep: loss, lower is better. Two settings tie at the top; the first in folder-name order wins.
    settings = [
        ({"learning_rate": 0.01, "power": 0.5}, 86.0, 87.5),
        ({"learning_rate": 0.02, "power": 0.5}, 86.0, 87.9),
        ({"learning_rate": 0.1, "power": 0.7}, 90.0, 91.0),
        ({"learning_rate": 0.5, "power": 0.9}, float("nan"), float("nan")),
    ]
    for hp, valid, test in settings:
        write_run(tmp_path, "quadratic_deep", opt, hp, 42, [100.0, valid], [100.0, test])
    runs = load_runs([tmp_path], progress=False).assign(source="results")
    summary = summarize(runs)
    curves = budget_curves(runs, summary)
    assert list(curves["k"]) == [1, 2, 3, 4] and set(curves["n_samples"]) == {4}
    folders = sorted(setting_folder_name(1, 128, hp, None) for hp, _, _ in settings[:2])
    first = folders[0] == setting_folder_name(1, 128, settings[0][0], None)
    ranked_tests = [87.5, 87.9] if first else [87.9, 87.5]
    # the diverged run's test loss takes the worst finite test loss (91.0)
    expect = [brute_force([86.0, 86.0, 90.0, float("nan")], ranked_tests + [91.0, 91.0], False, k) for k in (1, 2, 3)]
    got = curves[["expected_best_score", "expected_final_test"]].to_numpy()[:3]
    assert got == pytest.approx(np.array(expect), rel=1e-12)
    assert summary.iloc[0]["search"] in set(curves["search"])


# ---- performance profiles ----


def _summary(rows):
    base = {"source": "results", "n_samples": 50, "n_seeds": 10}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_performance_profile_against_hand_computed_values():
    summary = _summary(
        [
            {"testproblem": "p_loss", "optimizer": "A", "metric": "test_losses", "final_test_mean": 2.0},
            {"testproblem": "p_loss", "optimizer": "B", "metric": "test_losses", "final_test_mean": 3.0},
            {"testproblem": "p_loss", "optimizer": "C", "metric": "test_losses", "final_test_mean": 10.0},
            {"testproblem": "p_acc", "optimizer": "A", "metric": "test_accuracies", "final_test_mean": 0.90},
            {"testproblem": "p_acc", "optimizer": "B", "metric": "test_accuracies", "final_test_mean": 0.95},
        ]
    )
    # ratios: p_loss A 1, B 1.5, C 5; p_acc (error rates 0.10, 0.05) A 2, B 1, C missing (inf)
    ratio = costs(summary).set_index(["testproblem", "solver"])["ratio"]
    assert ratio[("p_acc", "A")] == pytest.approx(2.0) and ratio[("p_loss", "C")] == pytest.approx(5.0)
    table = performance_profile(summary, taus=(1.0, 1.5, 2.0, 4.0)).set_index("solver")
    assert table.loc["A", ["rho_1", "rho_1.5", "rho_2", "rho_4"]].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert table.loc["B", ["rho_1", "rho_1.5", "rho_2", "rho_4"]].tolist() == [0.5, 1.0, 1.0, 1.0]
    assert table.loc["C", ["rho_1", "rho_1.5", "rho_2", "rho_4"]].tolist() == [0.0, 0.0, 0.0, 0.0]
    # score = mean over problems of max(0, 4 - r) / 3
    assert table.loc["A", "score"] == pytest.approx((3 / 3 + 2 / 3) / 2)
    assert table.loc["B", "score"] == pytest.approx((2.5 / 3 + 3 / 3) / 2)
    assert table.loc["C", "score"] == 0.0
    assert table.loc["B", "n_best"] == 1 and table.index[0] == "B"


def test_profile_merges_w_variants_and_leaves_out_problems_without_a_positive_best():
    summary = _summary(
        [
            {
                "testproblem": "a",
                "optimizer": "PowKernelGradientDescentOptimizer",
                "metric": "test_losses",
                "final_test_mean": 1.0,
            },
            {
                "testproblem": "b_nodecay",
                "optimizer": "PowKernelGradientDescentOptimizerW_scaled",
                "metric": "test_accuracies",
                "final_test_mean": 0.8,
            },
            {
                "testproblem": "c",
                "optimizer": "PowKernelGradientDescentOptimizer",
                "metric": "test_accuracies",
                "final_test_mean": 1.0,
            },  # perfect accuracy: error 0, no ratio
        ]
    )
    table = performance_profile(summary)
    assert list(table["solver"]) == ["GD"] and table.loc[0, "rho_1"] == 1.0
    assert table.attrs["excluded"] == ["c"] and table.attrs["problems"] == ["a", "b_nodecay"]
    apart = performance_profile(summary, families=False)
    assert sorted(apart["solver"]) == ["GD", "GD-W"] and apart.set_index("solver").loc["GD", "rho_4"] == 0.5


# ---- report outputs ----


def test_report_writes_ci_columns_comparison_statistics_budget_profile_and_html(tmp_path, crowded_valley_tree):
    tree = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for i, lr in enumerate((0.01, 0.02, 0.05)):
        hp = {"learning_rate": lr, "power": 0.5}
        write_run(tree, "quadratic_deep", "PowKernelGradientDescentOptimizer", hp, 42, [100.0, 86 + i], [100.0, 87 + i])
    best = {"learning_rate": 0.01, "power": 0.5}
    for seed in range(43, 52):
        write_run(
            tree,
            "quadratic_deep",
            "PowKernelGradientDescentOptimizer",
            best,
            seed,
            [100.0, 86.0],
            [100.0, 87 + rng.normal(0, 0.1)],
        )
    analysis = analyse([tree], [crowded_valley_tree], progress=False)
    out = tmp_path / "out"
    write_report(analysis, out, figures=False)
    summary = pd.read_csv(out / "summary.csv")
    assert {"final_test_ci_low", "final_test_ci_high"} <= set(summary.columns)
    ours = summary[summary["source"] == "results"].iloc[0]
    assert ours["final_test_ci_low"] < ours["final_test_mean"] < ours["final_test_ci_high"]
    comparison = pd.read_csv(out / "comparison.csv")
    assert {"difference_ci_low", "difference_ci_high", "p_holm"} <= set(comparison.columns)
    assert "seed_values" not in comparison.columns
    assert (comparison["p_holm"] >= comparison["p_value"]).all()
    for name in ("summary.md", "summary.tex", "comparison.md"):
        assert "CI" in (out / name).read_text()
    curves = pd.read_csv(out / "budget_curves.csv")
    assert list(curves.columns[:6]) == ["testproblem", "optimizer", "search", "source", "n_samples", "k"]
    assert {"expected_best_score", "expected_final_test"} <= set(curves.columns)
    # one problem: no profile (a flat line), a line in the report saying why (issue 27)
    assert not (out / "performance_profile.csv").is_file()
    assert (
        "Performance profile omitted: it compares optimizers across problems and needs at least 2; these "
        "results have 1." in (out / "report.md").read_text()
    )
    page = (out / "report.html").read_text()
    assert "Provenance" in page and "table-summary" in page and "table-comparison" in page
    assert "http://" not in page and "https://" not in page
    assert "Holm" in (out / "report.md").read_text()


# ---- the paper's released results (what `make paper-figures` writes, tables only here) ----


def test_paper_tree_ci_columns_budget_curves_profile_and_html(paper_tree, l2_tree, tmp_path):
    analysis = analyse([paper_tree, l2_tree], progress=False)
    out = tmp_path / "paper"
    write_report(analysis, out, figures=False)
    summary = pd.read_csv(out / "summary.csv")
    full = summary[summary["n_seeds"] >= 2]
    assert len(full) >= 26 and full["final_test_ci_low"].notna().all()
    assert (full["final_test_ci_low"] <= full["final_test_mean"]).all()
    assert (full["final_test_mean"] <= full["final_test_ci_high"]).all()
    assert summary.loc[summary["n_seeds"] == 1, "final_test_ci_low"].isna().all()  # single-seed searches
    row = analysis.summary[
        (analysis.summary["testproblem"] == "quadratic_deep")
        & (analysis.summary["optimizer"] == "PowKernelGradientDescentOptimizer")
    ].iloc[0]
    assert (row["final_test_ci_low"], row["final_test_ci_high"]) == pytest.approx(scipy_ci(row["seed_values"]))
    curves = pd.read_csv(out / "budget_curves.csv")
    searched = summary[summary["n_samples"] > 0]
    assert len(curves) == searched["n_samples"].sum()
    last = curves.groupby(["testproblem", "optimizer", "search"]).tail(1)
    assert (last["k"] == last["n_samples"]).all()
    profile = pd.read_csv(out / "performance_profile.csv")
    assert set(profile["solver"]) == {"GD", "M", "MN"} and (profile["n_problems"] == 9).all()
    assert (profile["rho_4"] >= profile["rho_1"]).all()
    assert profile["n_best"].sum() == 9
    page = (out / "report.html").read_text()
    assert "1741 result files" in page and "table-budget" in page and "table-profile" in page
