"""The analysis on other DeepOBS trees (Crowded Valley, synthetic ones), its CLI and its handling of bad input."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tree_helpers import deepobs_result

from analysis import load_runs, select_best, summarize
from deepobs_tree import setting_folder_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def write_run(
    root: Path,
    problem: str,
    optimizer: str,
    hp: dict,
    seed: int,
    stamp: str,
    valid: list,
    test: list,
    *,
    folder: str | None = None,
    extra: dict | None = None,
    **fields,
) -> Path:
    """One DeepOBS 1.2 result file, laid out and serialised as DeepOBS writes it (``fields``: weight_decay, key,
    accuracy, minibatch of :func:`tree_helpers.deepobs_result`; ``extra`` keys added last)."""
    data = {**deepobs_result(problem, optimizer, hp, seed, valid, test, **fields), **(extra or {})}
    folder = folder or setting_folder_name(len(valid) - 1, 128, hp, fields.get("weight_decay"))
    path = root / problem / optimizer / folder / f"random_seed__{seed}__{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))
    return path


def one_run(root: Path) -> Path:
    """One quadratic_deep result without accuracies (final test loss 2.5), for tests that need just a tree."""
    return write_run(
        root,
        "quadratic_deep",
        "Opt",
        {"learning_rate": 0.1},
        42,
        "2024-01-01-00-00-00",
        [3.0, 2.0],
        [3.0, 2.5],
        accuracy=False,
    )


def tree_digest(root: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path}{stat.st_mtime_ns}".encode() + path.read_bytes())
    return digest.hexdigest()


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args), "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---- Crowded Valley tree: l2_reg, [] schedules, NAG files saying MomentumOptimizer, reruns only ----


def test_crowded_valley_tree(crowded_valley_tree):
    runs = load_runs([crowded_valley_tree], progress=False)
    assert len(runs) == 28
    assert set(runs.optimizer) == {"GradientDescentOptimizer", "MomentumOptimizer", "NAGOptimizer"}
    nag = runs[runs.optimizer == "NAGOptimizer"]
    assert set(nag.optimizer_name) == {"MomentumOptimizer"}  # the folder is the optimizer, as in DeepOBS
    assert set(runs.weight_decay) == {0.0}  # l2_reg null -> quadratic_deep's default (no L2)
    summary = summarize(runs).set_index("optimizer")
    expected = {  # the tree's README
        "GradientDescentOptimizer": (0, 9, 89.3118, 5.4299),
        "MomentumOptimizer": (0, 9, 96.8989, 6.1642),
        "NAGOptimizer": (1, 10, 85.2343, 6.6317),
    }
    for optimizer, (n_samples, n_seeds, mean, std) in expected.items():
        row = summary.loc[optimizer]
        assert (row.n_samples, row.n_seeds) == (n_samples, n_seeds)
        assert row.final_test_mean == pytest.approx(mean, abs=5e-5)
        assert row.final_test_std == pytest.approx(std, abs=5e-5)
    assert summary.loc["GradientDescentOptimizer", "selection"].startswith("most-seeds")


def test_figures_with_baselines_and_caveat(paper_tree, crowded_valley_tree, tmp_path):
    small = tmp_path / "paper_quadratic"
    small.mkdir()
    (small / "quadratic_deep").symlink_to(paper_tree / "quadratic_deep")
    out = tmp_path / "out"
    result = run_cli(small, "--baselines", crowded_valley_tree, "--out", out)
    assert result.returncode == 0, result.stderr
    comparison = (out / "comparison.csv").read_text()
    assert len(comparison.splitlines()) == 1 + 3 and "NAGOptimizer" in comparison
    report = (out / "report.md").read_text()
    assert "Caveat of the baseline tree" in report and "earlier DeepOBS" in report
    for stem in ("learning_curves_quadratic_deep", "lr_sensitivity_quadratic_deep", "power_sensitivity", "overview"):
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{stem}.{ext}"
            assert path.stat().st_size > 5000, path
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("testproblem,optimizer,learning_rate,power")
    assert len(summary) == 1 + 6
    tex = (out / "summary.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "quadratic\\_deep" in tex


# ---- synthetic trees: tolerance ----


def test_tolerant_loading_and_ranking(tmp_path):
    root = tmp_path / "tree"
    opt = "PowKernelGradientDescentOptimizer"
    two = {"num_epochs": 2}
    good = write_run(
        root,
        "fmnist_2c2d",
        opt,
        {"learning_rate": 0.1, "power": 0.5},
        42,
        "2024-01-01-00-00-00",
        [0.1, 0.5, 0.55],
        [0.1, 0.6, 0.7],
        extra={"some_new_key": [1, 2], **two},
    )
    # NaN/Infinity literals in the epoch curves: ranks last
    write_run(
        root,
        "fmnist_2c2d",
        opt,
        {"learning_rate": 0.2, "power": 0.5},
        42,
        "2024-01-01-00-00-01",
        [0.1, 0.2, float("nan")],
        [0.1, 0.2, float("inf")],
        minibatch=(1.0, float("inf")),
        extra=two,
    )
    # no accuracy keys and no minibatch losses in an accuracy problem: ranks last, still loads
    write_run(
        root,
        "fmnist_2c2d",
        opt,
        {"learning_rate": 0.3, "power": 0.5},
        42,
        "2024-01-01-00-00-02",
        [0.2, 0.1, 0.1],
        [0.3, 0.2, 0.2],
        accuracy=False,
        minibatch=None,
        extra=two,
    )
    # curves shorter than num_epochs + 1 (an early stop): the last entry is the final value
    write_run(
        root,
        "fmnist_2c2d",
        opt,
        {"learning_rate": 0.4, "power": 0.6000000000000001},
        42,
        "2024-01-01-00-00-03",
        [0.1, 0.6],
        [0.1, 0.55],
        extra=two,
    )
    # non-result files anywhere are ignored
    (root / ".DS_Store").write_bytes(b"\0\1")
    (good.parent / "notes.txt").write_text("hello")
    (root / "fmnist_2c2d" / "README.json").write_text("{}")
    before = tree_digest(root)
    runs = load_runs([root], progress=False)
    assert len(runs) == 4
    assert runs.diverged.sum() == 1
    summary = summarize(runs)
    row = summary.iloc[0]
    assert row.learning_rate == 0.4 and row.tuning_score == 0.6  # final value of the short curve
    assert row.n_samples == 4
    assert tree_digest(root) == before  # inputs never modified


def test_unknown_problem_and_duplicates_across_sibling_folders(tmp_path):
    root = tmp_path / "tree"
    hp = {"learning_rate": 0.01, "power": 0.7000000000000001}
    first = write_run(
        root,
        "my_problem",
        "Opt",
        hp,
        43,
        "2024-01-01-00-00-00",
        [3.0, 2.0],
        [3.0, 2.5],
        accuracy=False,
        weight_decay=None,
    )
    # a byte-identical copy in a sibling folder (DeepOBS rerun quirk Q9) counts once
    sibling = first.parent.parent / (first.parent.name + "_copy") / first.name
    sibling.parent.mkdir()
    sibling.write_bytes(first.read_bytes())
    # the same run stored twice with different content: the later file wins
    for stamp, last in (("2024-01-01-00-00-00", 9.0), ("2024-01-02-00-00-00", 2.7)):
        hp = {"learning_rate": 0.01, "power": 0.7}
        write_run(root, "my_problem", "Opt", hp, 44, stamp, [3.0, 2.0], [3.0, last], accuracy=False)
    runs = load_runs([root], progress=False)
    assert len(runs) == 2 and runs.attrs["report"].n_duplicates == 1 and runs.attrs["report"].n_superseded == 1
    assert math.isnan(runs.weight_decay.iloc[0])  # unknown problem: default L2 unknown -> as stored (null)
    summary = summarize(runs, rerun_seeds=[43, 44])
    assert summary.iloc[0].n_seeds == 2 and summary.iloc[0].final_test_mean == pytest.approx(2.6)
    assert summary.iloc[0].metric == "test_losses"


def test_searches_split_by_non_searched_hyperparameters_and_modes(tmp_path):
    root = tmp_path / "tree"
    opt = "PowKernelGradientDescentOptimizerW_scaled"
    for i, lr in enumerate([0.1, 0.2, 0.3]):
        write_run(
            root,
            "cifar10_3c3d_nodecay",
            opt,
            {"learning_rate": lr, "power": 0.5, "weight_decay_opt": 0.002},
            42,
            f"2024-01-01-00-00-0{i}",
            [0.1, 0.5 + i / 10, 0.4 + i / 10],
            [0.1, 0.5, 0.5],
            weight_decay=0.0,
        )
    # a later probe of weight_decay_opt at the first setting forms its own search
    write_run(
        root,
        "cifar10_3c3d_nodecay",
        opt,
        {"learning_rate": 0.1, "power": 0.5, "weight_decay_opt": 0.001},
        42,
        "2024-02-01-00-00-00",
        [0.1, 0.99, 0.99],
        [0.1, 0.5, 0.5],
        weight_decay=0.0,
    )
    # reruns of the first setting (written without weight_decay, as DeepOBS reruns are)
    for seed in (43, 44, 45):
        write_run(
            root,
            "cifar10_3c3d_nodecay",
            opt,
            {"learning_rate": 0.1, "power": 0.5, "weight_decay_opt": 0.002},
            seed,
            "2024-03-01-00-00-00",
            [0.1, 0.4, 0.3],
            [0.1, 0.6, 0.6],
        )
    runs = load_runs([root], progress=False)
    final = summarize(runs).sort_values("n_samples")
    assert list(final.n_samples) == [1, 3]
    main = final.iloc[1]
    assert main.learning_rate == 0.3 and main.n_seeds == 1 and main.weight_decay_opt == 0.002
    best = summarize(runs, mode="best").sort_values("n_samples").iloc[1]
    assert best.learning_rate == 0.3 and best.tuning_score == pytest.approx(0.7)
    most = summarize(runs, mode="most").sort_values("n_samples").iloc[1]
    assert most.learning_rate == 0.1 and most.n_seeds == 4
    filtered = summarize(runs, where={"learning_rate": "0.2"})
    assert list(filtered.learning_rate) == [0.2]
    assert len(summarize(runs, where={"weight_decay": "0"})) == 2  # the L2 factor, null and 0.0 alike here
    assert summarize(runs, where={"weight_decay": 0.002}).empty
    searched_decay = summarize(runs, searched=("learning_rate", "power", "weight_decay_opt"))
    assert len(searched_decay) == 1 and searched_decay.iloc[0].weight_decay_opt == 0.001
    with pytest.raises(ValueError, match="unknown selection mode"):
        summarize(runs, mode="median")


def test_cache_is_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "tree"
    path = one_run(root)
    assert load_runs([root], progress=False).final_test_losses.iloc[0] == 2.5
    assert load_runs([root], progress=False).final_test_losses.iloc[0] == 2.5  # warm
    data = json.loads(path.read_text())
    data["test_losses"][-1] = 1.5
    path.write_text(json.dumps(data, indent=4))
    assert load_runs([root], progress=False).final_test_losses.iloc[0] == 1.5


# ---- bad input: one clear line, exit code 2, never a traceback, inputs never modified ----


def test_missing_and_empty_paths(tmp_path):
    result = run_cli(tmp_path / "nope", "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_cli(tmp_path / "empty", "--out", tmp_path / "out")
    assert result.returncode == 2 and "no DeepOBS result files" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_unknown_mode_and_bad_filter(tmp_path):
    root = tmp_path / "tree"
    one_run(root)
    for args in (("--mode", "median"), ("--filter", "power"), ("--rerun-seeds", "a-b")):
        result = run_cli(root, "--out", tmp_path / "out", *args)
        assert result.returncode == 2, args
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:"), result.stderr


def test_unreadable_files_are_skipped_with_one_warning_each(tmp_path):
    root = tmp_path / "tree"
    good = one_run(root)
    truncated = good.parent / "random_seed__43__2024-01-01-00-00-01.json"
    truncated.write_text(good.read_text()[:150])
    not_json = good.parent / "random_seed__44__2024-01-01-00-00-02.json"
    not_json.write_bytes(b"\x89PNG\r\n\x1a\n binary")
    before = tree_digest(root)
    out = tmp_path / "out"
    result = run_cli(root, "--out", out, "--no-figures")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any(str(truncated) in w for w in warnings) and any(str(not_json) in w for w in warnings)
    assert "Traceback" not in result.stderr
    assert "2 unreadable files or folders skipped" in (out / "report.md").read_text()
    assert tree_digest(root) == before


def test_only_unreadable_files(tmp_path):
    path = tmp_path / "tree" / "p" / "o" / "s" / "random_seed__42__2024-01-01-00-00-00.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = run_cli(tmp_path / "tree", "--out", tmp_path / "out")
    assert result.returncode == 2 and "could be read" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_help():
    result = subprocess.run([sys.executable, "-m", "analysis", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "--baselines" in result.stdout and "--mode" in result.stdout


def test_select_best_returns_the_stored_setting(tmp_path):
    root = tmp_path / "tree"
    for lr, final in ((0.1, 2.0), (0.2, 1.0)):
        write_run(
            root,
            "quadratic_deep",
            "PowKernelGradientDescentOptimizer",
            {"learning_rate": lr, "power": 0.5},
            42,
            "2024-01-01-00-00-00",
            [3.0, final],
            [3.0, final],
            accuracy=False,
        )
    runs = load_runs([root], progress=False)
    chosen = select_best(runs, "quadratic_deep", "PowKernelGradientDescentOptimizer")
    assert chosen["optimizer_hyperparams"] == {"learning_rate": 0.2, "power": 0.5}
    assert chosen["weight_decay"] is None  # stored null: a rerun must land in the same folder (no __weight_decay__)
    assert (
        setting_folder_name(
            chosen["num_epochs"], chosen["batch_size"], chosen["optimizer_hyperparams"], chosen["weight_decay"]
        )
        == chosen["setting"]
    )
    assert select_best(runs, "quadratic_deep", "Unknown") is None
