"""Selection and aggregation of the paper's protocol (protocol.md §4-5), as pure functions of the run table.

* A *search* is the set of tuning-seed runs of one (testproblem, optimizer) that share every hyperparameter
  except the searched ones (and share epochs, batch size and L2 factor). Each search gives one summary row.
* ``final`` mode ranks the search's settings by the tuning run's final validation accuracy (higher is better),
  or final validation loss (lower is better) where the problem has no accuracy; non-finite scores rank last;
  exact ties go to the first setting in folder-name order (DeepOBS' stable sort, deepobs-format Q23) and are
  flagged. ``best`` ranks by the best validation value over epochs; ``most`` by the number of seeds.
* The chosen setting is reported with mean, population std (ddof=0), median, min and max of the final test
  accuracy (or loss) over the tuning seed and the rerun seeds (43-51 by default; other seeds are left out).
* A (testproblem, optimizer) with runs but no tuning-seed run gets one row: the setting with the most seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from deepobs_tree import RERUN_SEEDS, TUNING_SEED, format_value
from deepobs_tree.seeds import SEARCHED

from .loader import registry_has_accuracy
from .tables import CSV_COLUMNS

MODES = ("final", "best", "most")
DEFAULT_SEARCHED = SEARCHED  # the protocol's searched hyperparameters (deepobs_tree.seeds)


def problem_has_accuracy(runs: pd.DataFrame, testproblem: str) -> bool:
    """The registry's word where the problem is known, else whether any of its runs stored accuracies."""
    known = registry_has_accuracy(testproblem)
    if known is not None:
        return known
    return bool(runs.loc[runs["testproblem"] == testproblem, "has_accuracy"].any())


def metric_names(has_accuracy: bool) -> tuple[str, str]:
    """(tuning metric, report metric) curve names."""
    return ("valid_accuracies", "test_accuracies") if has_accuracy else ("valid_losses", "test_losses")


def _fixed_key(setting_key: tuple, searched: Sequence[str]) -> tuple:
    testproblem, optimizer, epochs, batch, l2, hp_key = setting_key
    fixed = tuple((k, v) for k, v in hp_key if k not in searched)
    return (testproblem, optimizer, epochs, batch, l2, fixed)


def _filter_token(value) -> str:
    """Folder token of a filter value; strings from the command line count as numbers where they parse."""
    if isinstance(value, str):
        try:
            return format_value(float(value))
        except ValueError:
            return value
    return format_value(value)


def _apply_filter(runs: pd.DataFrame, where: Mapping[str, object] | None) -> pd.DataFrame:
    """Keep runs whose hyperparameters (or L2 factor, ``weight_decay``) match ``where`` at folder-token
    precision (``{'power': 0.5}`` or ``{'learning_rate': '2.4400607091e-02'}``)."""
    if not where:
        return runs
    keep = np.ones(len(runs), dtype=bool)
    for name, wanted in where.items():
        if name == "weight_decay":
            tokens = [key[4] for key in runs["setting_key"]]
        else:
            tokens = [dict(key).get(name) for key in runs["hp_key"]]
        keep &= np.array([t == _filter_token(wanted) for t in tokens], dtype=bool)
    return runs[keep]


def _best(curve, higher_better: bool) -> float:
    """Best value of a curve over its epochs (DeepOBS 'best' mode), NaN if it has no finite value."""
    if not isinstance(curve, np.ndarray) or curve.size == 0:
        return math.nan
    finite = curve[np.isfinite(curve)]
    if finite.size == 0:
        return math.nan
    return float(finite.max() if higher_better else finite.min())


def rank_settings(tuning: pd.DataFrame, metric: str, mode: str = "final") -> pd.DataFrame:
    """Tuning runs (one per setting) ranked best first; adds ``score``. Non-finite scores rank last,
    exact ties keep folder-name order (stable sort, like DeepOBS)."""
    higher_better = "acc" in metric
    tuning = tuning.sort_values("setting_folder", kind="stable").copy()
    if mode == "best":
        tuning["score"] = [_best(curve, higher_better) for curve in tuning[metric]] if metric in tuning else np.nan
    else:
        tuning["score"] = tuning[f"final_{metric}"].astype(float)
    finite = np.isfinite(tuning["score"].to_numpy(dtype=float))
    sort_value = np.where(finite, -tuning["score"] if higher_better else tuning["score"], np.inf)
    tuning["_sort"] = sort_value
    tuning["_nonfinite"] = ~finite
    ranked = tuning.sort_values(["_nonfinite", "_sort"], kind="stable")
    return ranked.drop(columns=["_sort", "_nonfinite"])


def _seed_values(setting_runs: pd.DataFrame, metric: str, seeds: set[int]) -> pd.Series:
    chosen = setting_runs[setting_runs["seed"].isin(seeds)]
    return chosen.set_index("seed")[f"final_{metric}"].sort_index()


def _row(
    testproblem: str,
    optimizer: str,
    setting_runs: pd.DataFrame,
    report_metric: str,
    seeds: set[int],
    **extra,
) -> dict:
    values = _seed_values(setting_runs, report_metric, seeds)
    arr = values.to_numpy(dtype=float)
    first = setting_runs.iloc[0]
    hp = first["optimizer_hyperparams"]
    row = {
        "testproblem": testproblem,
        "optimizer": optimizer,
        "learning_rate": hp.get("learning_rate"),
        "power": hp.get("power"),
        "momentum": hp.get("momentum"),
        "weight_decay": first["weight_decay"],
        "weight_decay_opt": hp.get("weight_decay_opt"),
        "n_seeds": int(arr.size),
        "metric": report_metric,
        "final_test_mean": float(np.mean(arr)) if arr.size else math.nan,
        "final_test_std": float(np.std(arr)) if arr.size else math.nan,
        "final_test_median": float(np.median(arr)) if arr.size else math.nan,
        "final_test_min": float(np.min(arr)) if arr.size else math.nan,
        "final_test_max": float(np.max(arr)) if arr.size else math.nan,
        "seeds": " ".join(str(s) for s in values.index),
        "seed_values": [float(v) for v in arr],
        "optimizer_hyperparams": dict(hp),
        "setting_key": first["setting_key"],
        "num_epochs": first["num_epochs"],
        "batch_size": first["batch_size"],
    }
    row.update(extra)
    return row


def summarize(
    runs: pd.DataFrame,
    *,
    tuning_seed: int = TUNING_SEED,
    rerun_seeds: Iterable[int] = RERUN_SEEDS,
    searched: Sequence[str] = DEFAULT_SEARCHED,
    mode: str = "final",
    where: Mapping[str, object] | None = None,
    source: str = "results",
) -> pd.DataFrame:
    """One row per search (see module docstring), sorted by testproblem, optimizer and search."""
    if mode not in MODES:
        raise ValueError(f"unknown selection mode '{mode}': use one of {', '.join(MODES)}")
    runs = runs.copy(deep=False)
    runs.attrs = {}  # pandas deep-copies attrs on every operation: keep the load report out of the hot path
    runs = _apply_filter(runs, where)
    report_seeds = {int(tuning_seed), *(int(s) for s in rerun_seeds)}
    rows = []
    for (testproblem, optimizer), pair in runs.groupby(["testproblem", "optimizer"], sort=True):
        has_acc = problem_has_accuracy(runs, testproblem)
        tuning_metric, report_metric = metric_names(has_acc)
        by_setting = {key: group for key, group in pair.groupby("setting_key", sort=False)}
        tuning = pair[pair["seed"] == tuning_seed]
        if tuning.empty:
            rows.append(_most_seeds_row(testproblem, optimizer, by_setting, report_metric, report_seeds, source))
            continue
        fixed = pd.Series([_fixed_key(k, searched) for k in tuning["setting_key"]], index=tuning.index)
        for fixed_key, search in tuning.groupby(fixed, sort=True):
            rows.append(
                _search_row(
                    testproblem,
                    optimizer,
                    search,
                    by_setting,
                    tuning_metric,
                    report_metric,
                    report_seeds,
                    mode,
                    fixed_key,
                    source,
                )
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=CSV_COLUMNS)
    return table.reset_index(drop=True)


def _search_row(
    testproblem, optimizer, search, by_setting, tuning_metric, report_metric, seeds, mode, fixed_key, source
) -> dict:
    search_desc = ", ".join(f"{k}={v}" for k, v in fixed_key[5]) or "-"
    ranked = rank_settings(search, tuning_metric, "final" if mode == "most" else mode)
    tie = None  # set here when 'most' ranks by seed count
    if mode == "most":
        # DeepOBS 'most': the setting with the most seeds; if all have as many, rank by the final value.
        counts = np.array([int(by_setting[k]["seed"].isin(seeds).sum()) for k in ranked["setting_key"]])
        if len(set(counts)) > 1:
            by_count = ranked.assign(_n=-counts).sort_values(["_n", "setting_folder"], kind="stable")
            ranked = by_count.drop(columns="_n")
            tie = bool(np.sort(counts)[-1] == np.sort(counts)[-2])
    best = ranked.iloc[0]
    runner_up = math.nan
    if tie is None:
        runner_up = ranked["score"].iloc[1] if len(ranked) > 1 else math.nan
        tie = bool(len(ranked) > 1 and np.isfinite(best["score"]) and runner_up == best["score"])
    return _row(
        testproblem,
        optimizer,
        by_setting[best["setting_key"]],
        report_metric,
        seeds,
        n_samples=len(search),
        tie=tie,
        selection=mode,
        tuning_metric=tuning_metric,
        tuning_score=float(best["score"]),
        runner_up_score=float(runner_up),
        setting=best["setting_folder"],
        search=search_desc,
        source=source,
    )


def _most_seeds_row(testproblem, optimizer, by_setting, report_metric, seeds, source) -> dict:
    def order(item):
        key, group = item
        return (-int(group["seed"].isin(seeds).sum()), sorted(group["setting_folder"])[0])

    (key, group), *rest = sorted(by_setting.items(), key=order)
    tie = bool(rest and order(rest[0])[0] == order((key, group))[0])
    return _row(
        testproblem,
        optimizer,
        group,
        report_metric,
        seeds,
        n_samples=0,
        tie=tie,
        selection="most-seeds (no tuning run)",
        tuning_metric="",
        tuning_score=math.nan,
        runner_up_score=math.nan,
        setting=sorted(group["setting_folder"])[0],
        search="-",
        source=source,
    )


def select_best(
    runs: pd.DataFrame,
    testproblem: str,
    optimizer: str,
    *,
    tuning_seed: int = TUNING_SEED,
    searched: Sequence[str] = DEFAULT_SEARCHED,
    mode: str = "final",
    where: Mapping[str, object] | None = None,
) -> dict | None:
    """The chosen setting of the main search of one (testproblem, optimizer), for rerunning it.

    Returns ``{'optimizer_hyperparams', 'weight_decay', 'num_epochs', 'batch_size', 'setting', 'score',
    'tie', 'n_samples', 'runs'}`` (hyperparameters and ``weight_decay`` as the tuning run stored them; ``runs``:
    the winning tuning run(s) as ``{'path', 'relpath'}`` so a caller needs no folder-name matching), or None
    when there is no tuning run.
    The main search is the largest one (ties: the first in key order).
    """
    pair = runs[(runs["testproblem"] == testproblem) & (runs["optimizer"] == optimizer)]
    if pair.empty or not (pair["seed"] == tuning_seed).any():
        return None
    table = summarize(pair, tuning_seed=tuning_seed, rerun_seeds=(), searched=searched, mode=mode, where=where)
    table = table[table["n_samples"] > 0]
    if table.empty:
        return None
    main = table.sort_values("n_samples", ascending=False, kind="stable").iloc[0]
    tuning_run = pair[(pair["seed"] == tuning_seed) & pair["setting_key"].map(lambda k: k == main["setting_key"])]
    return {
        "optimizer_hyperparams": dict(main["optimizer_hyperparams"]),
        # as the tuning run stored it (null stays None), so a rerun lands in the same setting folder
        "weight_decay": tuning_run["weight_decay_stored"].iloc[0],
        "num_epochs": int(main["num_epochs"]),
        "batch_size": int(main["batch_size"]),
        "setting": main["setting"],
        "score": float(main["tuning_score"]),
        "tie": bool(main["tie"]),
        "n_samples": int(main["n_samples"]),
        "runs": [{"path": p, "relpath": r} for p, r in zip(tuning_run["path"], tuning_run["relpath"])],
    }


def search_runs(
    runs: pd.DataFrame, summary_row: Mapping, tuning_seed: int = TUNING_SEED, searched: Sequence[str] = DEFAULT_SEARCHED
) -> pd.DataFrame:
    """The tuning runs that formed one summary row's search (for sensitivity plots)."""
    pair = runs[(runs["testproblem"] == summary_row["testproblem"]) & (runs["optimizer"] == summary_row["optimizer"])]
    tuning = pair[pair["seed"] == tuning_seed]
    if tuning.empty:
        return tuning
    wanted = _fixed_key(summary_row["setting_key"], searched)
    mask = [_fixed_key(k, searched) == wanted for k in tuning["setting_key"]]
    return tuning[mask]
