"""The claim-level verdict (analysis.verdict): the paper's claims as data, judged on synthetic DeepOBS trees built
to confirm, contradict and be inconclusive; the per-search outcome equivalence apart from "same setting";
`make reproduce` (smoke) trains, reports, says it cannot judge the paper, exits 0 and resumes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_runs, summarize
from analysis import verdict as V
from deepobs_tree import setting_folder_name

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT.parent / "shared" / "spec" / "protocol.md"
COMMITTED = ROOT / "deepobs_results_medium_budget"
GD, SGD = "PowKernelGradientDescentOptimizer", "GradientDescentOptimizer"
RERUNS = range(43, 52)
NOISE = np.array([0.03, -0.02, 0.01, -0.04, 0.02, 0.0, -0.01, 0.04, -0.03, 0.01])

# the paper's quadratic_deep GD row (protocol §5), as a table of its own: the rules, not the file, under test
PAPER = pd.DataFrame(
    [
        {
            "testproblem": "quadratic_deep",
            "optimizer": GD,
            "learning_rate": 6.8706142826e-03,
            "power": 0.8,
            "weight_decay_opt": None,
            "n": 10,
            "mean": 87.6877,
            "std": 0.09846,
        }
    ]
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def _write(root: Path, optimizer: str, hp: dict, seed: int, final: float, epochs: int) -> None:
    curve = list(np.linspace(353.8, final, epochs + 1))
    data = {
        "testproblem": "quadratic_deep",
        "batch_size": 128,
        "num_epochs": epochs,
        "random_seed": seed,
        "weight_decay": None,
        "optimizer_name": optimizer,
        "optimizer_hyperparams": hp,
        "training_params": {},
        "train_losses": curve,
        "valid_losses": curve,
        "test_losses": curve,
        "minibatch_train_losses": curve[1:],
    }
    folder = root / "quadratic_deep" / optimizer / setting_folder_name(epochs, 128, hp, None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"random_seed__{seed}__2024-01-01-00-00-00.json").write_text(json.dumps(data))


def tree(
    root: Path, gd_final: float, sgd_final: float, *, power: float = 0.8, epochs: int = 100, seeds: int = 10
) -> Path:
    """quadratic_deep, GD φ_p and SGD: two tuning settings each (seed 42), the better rerun with 43..; the
    chosen GD setting has ``power``; finals = the given mean + a fixed zero-mean spread."""
    chosen = {GD: {"learning_rate": 0.01, "power": power}, SGD: {"learning_rate": 0.01}}
    worse = {GD: {"learning_rate": 0.5, "power": 0.4}, SGD: {"learning_rate": 0.5}}
    for opt, mean in ((GD, gd_final), (SGD, sgd_final)):
        _write(root, opt, worse[opt], 42, mean + 50.0, epochs)
        for seed, noise in zip([42, *RERUNS][:seeds], NOISE):
            _write(root, opt, chosen[opt], seed, mean + noise, epochs)
    return root


def judged(root: Path, paper: pd.DataFrame | None = PAPER) -> pd.DataFrame:
    summary = summarize(load_runs([root], progress=False))
    return V.judge(V.paper_claims(paper), summary, paper).set_index("claim")


COMPARE, POWER = "quadratic_deep: GD φ_p vs SGD", "quadratic_deep: GD φ_p power"


def test_claims_are_data_from_protocol_section_5():
    if not PROTOCOL.is_file():
        pytest.skip(f"{PROTOCOL} not found (../shared beside the checkout)")
    paper = V.paper_table(PROTOCOL)
    assert len(paper) == 26
    gd = paper[(paper["testproblem"] == "quadratic_deep") & (paper["optimizer"] == GD)].iloc[0]
    assert (gd["learning_rate"], gd["power"], gd["n"], gd["mean"], gd["std"]) == (
        6.8706142826e-03,
        0.8,
        10,
        87.6877,
        0.09846,
    )
    claims = {c.claim: c for c in V.paper_claims(paper)}
    kinds = pd.Series([c.kind for c in claims.values()]).value_counts().to_dict()
    assert kinds == {"nonlinear_vs_linear": 26, "power": 26, "w_vs_l2": 2}
    w = claims["cifar10_3c3d: GD-W φ_p vs GD φ_p with L2"]
    assert (w.testproblem, w.optimizer, w.other_problem, w.other) == (
        "cifar10_3c3d_nodecay",
        "PowKernelGradientDescentOptimizerW_scaled",
        "cifar10_3c3d",
        GD,
    )
    assert "0.832302" in w.paper and "0.832772" in w.paper
    assert claims["quadratic_deep: MN φ_p vs NAG"].other == "NAGOptimizer"
    assert claims["quadratic_deep: GD φ_p power"].paper_power == 0.8
    assert V.paper_table(ROOT / "no-such-file.md").empty
    # without the paper's table: the comparisons of protocol §1's pairs, no power claims
    assert {c.kind for c in V.paper_claims(None)} == {"nonlinear_vs_linear"} and len(V.paper_claims(None)) == 26


def test_a_tree_built_to_confirm(tmp_path):
    table = judged(tree(tmp_path / "t", gd_final=87.0, sgd_final=87.5))
    row = table.loc[COMPARE]
    assert row["status"] == "confirmed", row["reason"]
    assert row["difference"] == pytest.approx(-0.5) and row["difference_ci_high"] < 0 and row["p_holm"] < 0.05
    assert table.loc[POWER, "reason"] == "too small to judge the paper: 2 samples < 50"
    assert (table.drop(index=[COMPARE, POWER])["status"] == "not run").all()


def test_a_tree_built_to_contradict(tmp_path):
    row = judged(tree(tmp_path / "t", gd_final=87.5, sgd_final=87.0)).loc[COMPARE]
    assert row["status"] == "contradicted" and row["difference_ci_low"] > 0 and "SGD is better" in row["reason"]


def test_a_tree_built_to_be_inconclusive(tmp_path):
    row = judged(tree(tmp_path / "t", gd_final=87.0, sgd_final=87.01)).loc[COMPARE]
    assert row["status"] == "inconclusive" and row["reason"].startswith("no significant difference")
    small = judged(tree(tmp_path / "few", gd_final=87.0, sgd_final=87.5, seeds=3)).loc[COMPARE]
    assert small["status"] == "inconclusive" and "3 seeds < 5" in small["reason"]
    short = judged(tree(tmp_path / "short", gd_final=87.0, sgd_final=87.5, epochs=2))
    assert short.loc[COMPARE, "reason"] == "too small to judge the paper: 2 epochs < 100"
    line = V.headline(short.reset_index(), "short")
    assert line.startswith("CANNOT JUDGE THE PAPER: short is too small a run (2 epochs < 100, 2 samples < 50)")


def test_power_claim_same_tied_or_different(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "PAPER_BUDGET", 2)  # the synthetic searches have 2 samples
    same = judged(tree(tmp_path / "same", gd_final=87.0, sgd_final=87.5)).loc[POWER]
    assert same["status"] == "confirmed" and same["chosen_power"] == 0.8
    tied = judged(tree(tmp_path / "tied", gd_final=87.7, sgd_final=87.5, power=0.9)).loc[POWER]
    assert tied["status"] == "inconclusive" and tied["reason"].startswith("a tied setting won")
    far = judged(tree(tmp_path / "far", gd_final=89.0, sgd_final=87.5, power=0.9)).loc[POWER]
    assert far["status"] == "contradicted" and "differs from the paper's" in far["reason"]


def test_headline_counts_every_claim(tmp_path):
    table = judged(tree(tmp_path / "t", gd_final=87.0, sgd_final=87.5)).reset_index()
    table.loc[table["claim"] == POWER, ["status", "reason"]] = ["inconclusive", "a tied setting won (x)"]
    line = V.headline(table, "res")
    assert line == (
        "VERDICT: 2 of 2 paper claims checked on res: 1 confirmed (quadratic_deep: GD φ_p vs SGD), "
        "1 inconclusive (quadratic_deep: GD φ_p power); 0 not run (not in these results)"
    )


def test_search_table_outcome_apart_from_setting():
    summary = summarize(load_runs([COMMITTED], progress=False))
    same = V.search_table(summary, summary, "committed")
    assert len(same) == 6 and same["outcome_equivalent"].all() and same["same_setting"].all()
    shifted = summary.copy()
    i = shifted.index[shifted["optimizer"] == "PowKernelMomentumOptimizer"][0]
    n, std = int(shifted.loc[i, "n_seeds"]), float(shifted.loc[i, "final_test_std"])
    shifted.loc[i, "final_test_mean"] += 3 * (2**0.5) * V.standard_error(std, n)  # 3 combined SE
    row = V.search_table(shifted, summary, "committed").set_index("optimizer").loc["PowKernelMomentumOptimizer"]
    assert row["same_setting"] and not row["outcome_equivalent"]
    other = summary.copy()
    j = other.index[other["optimizer"] == GD][0]
    other.at[j, "optimizer_hyperparams"] = {**other.loc[j, "optimizer_hyperparams"], "power": 0.4}
    row = V.search_table(other, summary, "committed").set_index("optimizer").loc[GD]
    assert not row["same_setting"] and row["outcome_equivalent"]
    assert V.standard_error(0.1, 1) != V.standard_error(0.1, 1)  # NaN: one seed has no SE


def test_command_on_the_committed_tree(tmp_path, capsys):
    if not PROTOCOL.is_file():
        pytest.skip(f"{PROTOCOL} not found")
    code = V.main(
        [str(COMMITTED), "--reference", str(COMMITTED), "--paper", str(PROTOCOL), "--out", str(tmp_path / "out")]
    )
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # the default study judges what quadratic_deep can: 3 comparisons with the linear twins and 3 chosen powers
    assert last.startswith(f"VERDICT: 6 of 54 paper claims checked on {COMMITTED}: ")
    assert last.endswith("48 not run (not in these results)")
    claims = pd.read_csv(tmp_path / "out" / "verdict.csv").set_index("claim")
    assert claims.loc["quadratic_deep: M φ_p vs Momentum", "status"] == "confirmed"
    assert claims.loc["quadratic_deep: M φ_p power", "status"] == "confirmed"
    searches = pd.read_csv(tmp_path / "out" / "verdict_searches.csv")
    paper_rows = searches[searches["reference"] == V.PAPER_REFERENCE]
    assert len(paper_rows) == 3 and paper_rows["outcome_equivalent"].all()  # all three within 2 SE of the paper
    md = (tmp_path / "out" / "verdict.md").read_text()
    assert md.startswith("# Verdict\n\n**VERDICT: 6 of 54") and "## Per search" in md
    assert V.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: results path")


def _result_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("random_seed__*.json")}


def test_make_reproduce_smoke_trains_reports_verdict_and_resumes(tmp_path):
    results, out = tmp_path / "fresh", tmp_path / "report"
    # -o: never (re)build the venv from a test; RESULTS= a fresh folder as the default one would be
    cmd = ["make", "-s", "-o", ".venv/.installed", "reproduce", "PRESET=smoke", f"RESULTS={results}", f"OUT={out}"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = _result_files(results)
    assert len(files) == 18  # 6 x 2 tuning runs + 6 x 1 rerun
    for name in ("summary.csv", "report.md", "report.html", "budget_curves.csv", "verdict.md", "verdict.csv"):
        assert (out / name).is_file(), name
    # 2 epochs x 2 samples x 2 seeds cannot judge the 100-epoch, 50-sample, 10-seed study: said so, exit 0
    last = first.stdout.splitlines()[-1]
    assert last.startswith(f"CANNOT JUDGE THE PAPER: {results} is too small a run"), last
    claims = pd.read_csv(out / "verdict.csv")
    assert set(claims["status"]) <= {"inconclusive", "not run"}
    assert "cuInit" not in first.stdout + first.stderr
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _result_files(results) == files  # nothing trained twice
