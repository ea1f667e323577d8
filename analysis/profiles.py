"""Performance profiles (Dolan and Moré 2002, as AlgoPerf scores them) over the problems of a tree.

Per problem p and optimizer o, the cost m_{p,o} is the mean final test metric of o's chosen setting (main
search of ``tables.main_rows``): losses as they are, accuracies as error rates 1 - accuracy. The ratio
r_{p,o} = m_{p,o} / min_o' m_{p,o'} (infinite where o has no reported seed on p), and the profile

    ρ_o(τ) = |{p : r_{p,o} <= τ}| / |P|,   τ in [1, 4].

``score`` is AlgoPerf's summary, the normalised area under the profile, (1/3)∫_1^4 ρ_o(τ) dτ, computed
exactly: mean over p of max(0, 4 - r_{p,o}) / 3 (1 = best on every problem, 0 = never within 4x).

Solvers: the paper runs the decoupled-decay variants (GD-W, M-W, MN-W) on the ``_nodecay`` problems in
place of GD, M, MN, so by default a W optimizer counts as its base optimizer (``families=True``: one
solver "GD" covers GD and GD-W); ``families=False`` keeps every optimizer name apart. A problem whose best
cost is not positive (a loss <= 0 or a perfect accuracy) admits no ratio and is left out (listed in the
``excluded`` attribute). Rows of a BASELINES tree are solvers of their own ("SGD (baselines)").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as figs
from .tables import main_rows, short_name

TAUS = (1.0, 1.01, 1.02, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
TAU_MAX = 4.0
#: a profile over fewer problems says nothing (one problem: a flat line at 1 for the best)
MIN_PROBLEMS = 2


def solver_name(optimizer: str, source: str = "results", families: bool = True) -> str:
    name = short_name(optimizer)
    if families:
        for suffix in ("-W",):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
    return name + (" (baselines)" if source == "baselines" else "")


def costs(summary: pd.DataFrame, families: bool = True) -> pd.DataFrame:
    """One row per (problem, solver): cost (loss or error rate), the ratio to the problem's best, or
    NaN ratio for excluded problems."""
    main = main_rows(summary)
    main = main[main["n_seeds"] > 0]
    rows = []
    for _, row in main.iterrows():
        mean = float(row["final_test_mean"])
        is_acc = "acc" in str(row["metric"])
        rows.append(
            {
                "testproblem": row["testproblem"],
                "solver": solver_name(row["optimizer"], row["source"], families),
                "optimizer": row["optimizer"],
                "metric": row["metric"],
                "cost": 1.0 - mean if is_acc else mean,
                "cost_kind": "error rate" if is_acc else "loss",
            }
        )
    frame = pd.DataFrame(rows, columns=["testproblem", "solver", "optimizer", "metric", "cost", "cost_kind"])
    if frame.empty:
        frame["ratio"] = []
        return frame
    best = frame.groupby("testproblem")["cost"].transform(
        lambda c: np.nanmin(c.to_numpy(dtype=float)) if np.isfinite(c).any() else math.nan
    )
    ok = np.isfinite(best) & (best > 0)
    ratio = np.where(ok & np.isfinite(frame["cost"]), frame["cost"] / np.where(ok, best, 1.0), np.inf)
    frame["ratio"] = np.where(ok, ratio, np.nan)
    return frame


def performance_profile(summary: pd.DataFrame, taus: Sequence[float] = TAUS, families: bool = True) -> pd.DataFrame:
    """One row per solver: ``rho_<τ>`` for each τ, ``score`` (normalised area, see module docstring),
    ``n_problems`` (the problems of the profile) and ``n_best`` (problems where its ratio is 1)."""
    frame = costs(summary, families)
    excluded = sorted(set(frame.loc[frame["ratio"].isna(), "testproblem"])) if not frame.empty else []
    frame = frame[frame["ratio"].notna()] if not frame.empty else frame
    problems = sorted(set(frame["testproblem"])) if not frame.empty else []
    solvers = sorted(set(frame["solver"])) if not frame.empty else []
    out = []
    for solver in solvers:
        mine = frame[frame["solver"] == solver].groupby("testproblem")["ratio"].min()
        ratios = np.array([mine.get(p, np.inf) for p in problems], dtype=float)
        row = {"solver": solver, "n_problems": len(problems), "n_best": int(np.sum(ratios == 1.0))}
        for tau in taus:
            row[f"rho_{tau:g}"] = float(np.mean(ratios <= tau)) if problems else math.nan
        row["score"] = float(np.mean(np.maximum(0.0, TAU_MAX - np.maximum(ratios, 1.0)) / (TAU_MAX - 1.0)))
        out.append(row)
    table = pd.DataFrame(out)
    if not table.empty:
        table = table.sort_values(["score", "solver"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.attrs["excluded"] = excluded
    table.attrs["problems"] = problems
    return table


def profile_figure(summary: pd.DataFrame, out_dir: Path, families: bool = True) -> list[Path]:
    """ρ_o(τ) for τ in [1, 4] (step functions, log τ axis)."""
    frame = costs(summary, families)
    frame = frame[frame["ratio"].notna()] if not frame.empty else frame
    if frame.empty:
        return []
    plt = figs._plt()
    problems = sorted(set(frame["testproblem"]))
    if len(problems) < MIN_PROBLEMS:  # a profile over one problem is a flat line: the report says why it is absent
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for solver in sorted(set(frame["solver"])):
        optimizer = frame.loc[frame["solver"] == solver, "optimizer"].iloc[0]
        mine = frame[frame["solver"] == solver].groupby("testproblem")["ratio"].min()
        ratios = np.sort(np.array([mine.get(p, np.inf) for p in problems], dtype=float))
        taus = np.concatenate(
            [[1.0], np.clip(ratios[np.isfinite(ratios) & (ratios <= TAU_MAX)], 1.0, TAU_MAX), [TAU_MAX]]
        )
        rho = [np.mean(ratios <= t) for t in taus]
        shown = solver.replace(short_name(optimizer).removesuffix("-W"), figs.label(optimizer).replace("-W", ""), 1)
        ax.step(
            taus,
            rho,
            where="post",
            lw=1.5,
            color=figs.colour(optimizer),
            label=shown,
            linestyle="--" if "baselines" in solver else "-",
        )
    ax.set_xscale("log")
    ax.set_xlim(1.0, TAU_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (ratio to the best optimizer's final test loss / error rate)")
    ax.set_ylabel("fraction of problems within τ of the best")
    ax.set_title(f"Performance profiles over {len(problems)} problems (Dolan and Moré)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs.legend_note(fig, y=-0.01)
    return figs.save(fig, out_dir, "performance_profile")


def omitted_reason(profile: pd.DataFrame) -> str | None:
    """Why the report shows no performance profile (fewer than ``MIN_PROBLEMS`` problems), or None."""
    n = len(profile.attrs.get("problems", [])) if profile is not None else 0
    if n >= MIN_PROBLEMS:
        return None
    return (
        f"Performance profile omitted: it compares optimizers across problems and needs at least "
        f"{MIN_PROBLEMS}; these results have {n}."
    )
