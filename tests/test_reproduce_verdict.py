"""`make reproduce` trains into a fresh folder, writes the report and a verdict, exits 0 either way and
resumes; the verdict's rules (same setting, within 2 combined SE) and the paper table it reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_runs, summarize
from analysis.verdict import overall, paper_table, standard_error, verdict

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT.parent / "shared" / "spec" / "protocol.md"
COMMITTED = ROOT / "deepobs_results_medium_budget"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def test_paper_table_is_read_from_protocol_section_5():
    if not PROTOCOL.is_file():
        pytest.skip(f"{PROTOCOL} not found (../shared beside the checkout)")
    table = paper_table(PROTOCOL)
    assert len(table) == 26
    gd = table[(table["testproblem"] == "quadratic_deep")
               & (table["optimizer"] == "PowKernelGradientDescentOptimizer")].iloc[0]
    assert (gd["learning_rate"], gd["power"], gd["n"], gd["mean"], gd["std"]) == (6.8706142826e-03, 0.8, 10,
                                                                                  87.6877, 0.09846)
    l2 = table[(table["testproblem"] == "cifar10_3c3d")]
    assert len(l2) == 2 and l2["weight_decay_opt"].isna().all()
    assert paper_table(ROOT / "no-such-file.md").empty


def test_verdict_rules_on_the_committed_tree():
    summary = summarize(load_runs([COMMITTED], progress=False))
    same = verdict(summary, summary, "committed")
    assert len(same) == 6 and same["reproduced"].all() and (same["difference"] == 0).all()
    assert overall(same, "x").startswith("REPRODUCED: x: 6/6 searches match committed")
    # shift one mean by 3 combined SE: same setting, not within 2 SE
    shifted = summary.copy()
    i = shifted.index[shifted["optimizer"] == "PowKernelMomentumOptimizer"][0]
    n, std = int(shifted.loc[i, "n_seeds"]), float(shifted.loc[i, "final_test_std"])
    shifted.loc[i, "final_test_mean"] += 3 * (2 ** 0.5) * standard_error(std, n)
    table = verdict(shifted, summary, "committed").set_index("optimizer")
    row = table.loc["PowKernelMomentumOptimizer"]
    assert row["same_setting"] and not row["within_2se"] and not row["reproduced"]
    assert table.drop(index="PowKernelMomentumOptimizer")["reproduced"].all()
    line = overall(table.reset_index(), "x")
    assert line.startswith("NOT REPRODUCED: x: 5/6") and "M vs committed [mean beyond 2 SE]" in line
    # a different chosen setting is caught even with an equal mean
    other = summary.copy()
    j = other.index[other["optimizer"] == "PowKernelGradientDescentOptimizer"][0]
    other.at[j, "optimizer_hyperparams"] = {**other.loc[j, "optimizer_hyperparams"], "power": 0.4}
    row = verdict(other, summary, "committed").set_index("optimizer").loc["PowKernelGradientDescentOptimizer"]
    assert not row["same_setting"] and row["within_2se"] and not row["reproduced"]
    assert standard_error(0.1, 1) != standard_error(0.1, 1)  # NaN: one seed has no SE


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
    table = pd.read_csv(out / "verdict.csv")
    assert set(table["reference"]) == {"deepobs_results_medium_budget"} | (
        {"paper (protocol.md §5)"} if PROTOCOL.is_file() else set())
    # 2 epochs x 2 samples cannot match the 100-epoch, 50-sample study: said so, and still exit 0
    assert not table["reproduced"].any()
    assert "NOT REPRODUCED" in first.stdout.splitlines()[-1]
    assert (out / "verdict.md").read_text().startswith("# Verdict\n\n**NOT REPRODUCED")
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _result_files(results) == files  # nothing trained twice
