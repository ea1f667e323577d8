"""Tuning-budget curves (Dodge et al. 2019, "Show your work"): what a search of k < N samples would give.

For a search of N tuning runs, ranked exactly as the selection ranks them (``select.rank_settings``: score,
non-finite last, ties to the first setting folder in name order), write the runs from worst to best as
positions i = 1..N. Drawing k samples with replacement, the selection picks the sample with the highest
position, which is i with probability w_i(k) = (i/N)^k - ((i-1)/N)^k. Then

* ``expected_best_score(k)`` = Σ_i v_i·w_i(k), v_i the tuning score of position i; a diverged run
  (non-finite score) takes the search's worst finite score (and keeps its place below every finite one);
* ``expected_final_test(k)`` = Σ_i t_i·w_i(k), t_i the final test metric of the seed-42 run at position i
  (a non-finite t_i takes the search's worst finite final test value, so one diverged run does not turn
  every expectation into NaN; NaN where no run of the search has a finite value).

*Diverged* samples (``n_diverged``): a non-finite tuning score, or, for a loss, a final validation loss above
the run's own epoch-0 value (worse than the untrained model, e.g. 1e12 on quadratic_deep). The ``*_converged``
columns repeat the two curves with every diverged sample taking the search's worst converged value (its
place kept): the figure draws those, so one sample at 1e12 does not flatten every curve, and names the counts.

At k = 1 the curve is the mean over the search; as k grows it tends to the chosen setting (rank 1). One row per
(search, k), k = 1..N, columns ``BUDGET_COLUMNS``; ``search`` is the search's identity as in summary.csv.
Mode ``best`` ranks by the best validation value over epochs, as the selection does; mode ``most`` (a choice
by seed count, not by score) uses the ``final`` ranking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepobs_tree import TUNING_SEED

from . import figures as figs
from .select import (
    DEFAULT_SEARCHED,
    _apply_filter,
    _fixed_key,
    metric_names,
    problem_has_accuracy,
    rank_settings,
)
from .tables import BASELINE_OPTIMIZERS, main_rows

BUDGET_COLUMNS = [
    "testproblem",
    "optimizer",
    "search",
    "source",
    "n_samples",
    "k",
    "expected_best_score",
    "expected_final_test",
    "tuning_metric",
    "metric",
    "n_diverged",
    "expected_best_score_converged",
    "expected_final_test_converged",
]


def weights(n: int, k: int) -> np.ndarray:
    """w_i(k) for positions i = 1..n (worst to best): the probability that position i is the best of k draws."""
    i = np.arange(1, n + 1, dtype=float)
    return (i / n) ** k - ((i - 1) / n) ** k


def _fill_worst(values: np.ndarray, higher_better: bool) -> np.ndarray:
    values = np.asarray(values, dtype=float).copy()
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(values.shape, math.nan)
    worst = values[finite].min() if higher_better else values[finite].max()
    values[~finite] = worst
    return values


def expected_curve(
    ranked_scores: Sequence[float],
    ranked_tests: Sequence[float],
    higher_better: bool,
    higher_better_test: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(expected best score, expected final test) for k = 1..N, the inputs ranked best first as the
    selection ranks them (``higher_better``: of the score; ``higher_better_test``: of the test metric,
    default the same)."""
    higher_better_test = higher_better if higher_better_test is None else higher_better_test
    scores = _fill_worst(np.asarray(ranked_scores, dtype=float), higher_better)[::-1]  # worst to best
    tests = _fill_worst(np.asarray(ranked_tests, dtype=float), higher_better_test)[::-1]
    n = scores.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    w = np.stack([weights(n, k) for k in range(1, n + 1)])
    return w @ scores, w @ tests


def diverged_samples(ranked: pd.DataFrame, tuning_metric: str) -> np.ndarray:
    """Per ranked tuning run: diverged (non-finite score, or a loss ending above its epoch-0 value)?"""
    score = ranked["score"].to_numpy(dtype=float)
    out = ~np.isfinite(score)
    if "acc" not in tuning_metric and "valid_losses" in ranked:
        start = np.array([float(c[0]) if c is not None and len(c) else math.nan for c in ranked["valid_losses"]])
        with np.errstate(invalid="ignore"):
            out |= np.isfinite(start) & (score > start)
    return out


def budget_curves(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    tuning_seed: int = TUNING_SEED,
    searched: Sequence[str] = DEFAULT_SEARCHED,
    where: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """One row per (search, k) for every summary row with a search of at least one tuning run."""
    rows = []
    runs = _apply_filter(runs, where)
    needed = [
        "setting_key",
        "setting_folder",
        "source",
        "final_valid_accuracies",
        "final_valid_losses",
        "final_test_accuracies",
        "final_test_losses",
        "valid_losses",
    ]  # valid_losses[0]: diverged?
    if "selection" in summary and (summary["selection"] == "best").any():
        needed += ["valid_accuracies"]  # mode best ranks by the curves
    tuning = runs.loc[runs["seed"] == tuning_seed, [c for c in needed if c in runs]]
    tuning.attrs = {}  # pandas deep-copies attrs (the load report) on every operation: keep them out
    sources = tuning["source"] if "source" in tuning else pd.Series("results", index=tuning.index)
    by_search: dict[tuple, list] = {}  # (source, fixed key) -> tuning-run index labels: one pass, not one per row
    for label, source, key in zip(tuning.index, sources, tuning["setting_key"]):
        by_search.setdefault((source, _fixed_key(key, searched)), []).append(label)
    for _, row in summary.iterrows():
        if not row.get("n_samples"):
            continue
        labels = by_search.get((row["source"], _fixed_key(row["setting_key"], searched)), [])
        if not labels:
            continue
        search = tuning.loc[labels]
        tuning_metric, report_metric = metric_names(problem_has_accuracy(runs, row["testproblem"]))
        mode = row.get("selection") if row.get("selection") in ("final", "best") else "final"
        ranked = rank_settings(search, tuning_metric, mode)
        best, test = expected_curve(
            ranked["score"].to_numpy(dtype=float),
            ranked[f"final_{report_metric}"].to_numpy(dtype=float),
            "acc" in tuning_metric,
            "acc" in report_metric,
        )
        diverged = diverged_samples(ranked, tuning_metric)
        scores = ranked["score"].to_numpy(dtype=float).copy()
        tests = ranked[f"final_{report_metric}"].to_numpy(dtype=float).copy()
        scores[diverged], tests[diverged] = np.nan, np.nan  # -> the worst converged value (_fill_worst)
        best_c, test_c = expected_curve(scores, tests, "acc" in tuning_metric, "acc" in report_metric)
        n = best.size
        for k, b, t, bc, tc in zip(range(1, n + 1), best, test, best_c, test_c):
            rows.append(
                {
                    "testproblem": row["testproblem"],
                    "optimizer": row["optimizer"],
                    "search": row["search"],
                    "source": row["source"],
                    "n_samples": n,
                    "k": int(k),
                    "expected_best_score": float(b),
                    "expected_final_test": float(t),
                    "tuning_metric": tuning_metric,
                    "metric": report_metric,
                    "n_diverged": int(diverged.sum()),
                    "expected_best_score_converged": float(bc),
                    "expected_final_test_converged": float(tc),
                }
            )
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def budget_figures(curves: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per problem: expected best tuning score and expected final test metric vs k (main searches only)."""
    if curves.empty:
        return []
    plt = figs._plt()
    written: list[Path] = []
    main = main_rows(summary)
    keys = set(zip(main["source"], main["optimizer"], main["testproblem"], main["search"]))
    for problem, frame in curves.groupby("testproblem", sort=True):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        groups = [
            (key, g)
            for key, g in frame.groupby(["source", "optimizer", "search"], sort=False)
            if (key[0], key[1], problem, key[2]) in keys
        ]
        notes = []
        for (source, optimizer, _search), g in groups:
            label = figs.label(optimizer) + (" (baselines)" if source == "baselines" else "")
            n_div, n_all = int(g["n_diverged"].iloc[0]), int(g["n_samples"].iloc[0])
            if n_div:
                label += f" ({n_div}/{n_all} diverged)"
                notes.append(f"{figs.label(optimizer)} {n_div}/{n_all}")
            dashed = source == "baselines" or optimizer in BASELINE_OPTIMIZERS
            style = {"color": figs.colour(optimizer), "lw": 1.4, "label": label, "linestyle": "--" if dashed else "-"}
            left.plot(g["k"], g["expected_best_score_converged"], **style)
            right.plot(g["k"], g["expected_final_test_converged"], **style)
        for ax, what, col in (
            (left, frame["tuning_metric"].iloc[0], "score"),
            (right, frame["metric"].iloc[0], "test"),
        ):
            ax.set_xscale("log")
            ax.set_xlabel("tuning budget k (random-search samples)")
            ax.set_ylabel(f"expected {'best final' if col == 'score' else 'final'} {what.replace('_', ' ')}")
            ax.grid(alpha=0.3)
        left.set_title("expected best tuning score among k samples", fontsize=9)
        right.set_title("expected final test metric of the setting chosen among k (seed 42)", fontsize=9)
        left.legend(fontsize=7)
        if notes:
            fig.text(
                0.5,
                -0.04,
                "diverged samples (non-finite, or a final loss above the untrained model's) count as "
                "their search's worst converged sample: " + ", ".join(notes),
                ha="center",
                fontsize=7,
            )
        fig.suptitle(f"{problem}: tuning-budget curves (Dodge et al. 2019)", y=1.02)
        fig.tight_layout()
        written += figs.save(fig, out_dir, f"budget_curves_{problem}")
    return written
