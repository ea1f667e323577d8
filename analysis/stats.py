"""Confidence intervals over seeds and multiple-testing correction (pure functions of the summary).

* ``bootstrap_ci``: the 95% interval of the mean of one setting's final test values by
  ``scipy.stats.bootstrap`` (BCa, 10,000 resamples, ``random_state=0``), the values in ascending seed order
  (``summarize`` stores ``seed_values`` that way), so every interval is reproducible bit for bit.
* Degenerate cases never raise: with fewer than 2 values, or any non-finite value, both bounds are NaN (no
  interval can be estimated); when every value is equal the bootstrap distribution is a point and both
  bounds are that value (BCa itself is undefined there).
* Rows with the same number of seeds are bootstrapped in one vectorised call: scipy draws one index array
  of shape (n_resamples, n) per call, so each row gets exactly the interval a call of its own would give
  (tested), at a fraction of the cost.
* ``difference_ci``: the interval of mean(a) - mean(b) for two independent seed sets (each resampled on its
  own, BCa); ``holm``: Holm's step-down adjusted p-values over a family of tests (NaNs stay NaN and do not
  count as tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
RANDOM_STATE = 0
METHOD = "BCa"


def _degenerate(arr: np.ndarray) -> tuple[float, float] | None:
    """The interval of a case the bootstrap cannot handle, or None for a regular one."""
    if arr.size < 2 or not np.all(np.isfinite(arr)):
        return (math.nan, math.nan)
    if np.all(arr == arr[0]):
        return (float(arr[0]), float(arr[0]))
    return None


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _bootstrap(data: tuple, statistic, vectorized=True):
    from scipy import stats  # heavy (~0.5 s): loaded on the first interval, not by every analysis import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the callers
        res = stats.bootstrap(
            data,
            statistic,
            n_resamples=N_RESAMPLES,
            confidence_level=CONFIDENCE,
            method=METHOD,
            random_state=RANDOM_STATE,
            vectorized=vectorized,
            axis=-1,
        )
    return res.confidence_interval


def bootstrap_ci(values: Sequence[float]) -> tuple[float, float]:
    """95% BCa interval of the mean of ``values`` (in ascending seed order); see the module docstring."""
    arr = np.asarray(values, dtype=float)
    special = _degenerate(arr)
    if special is not None:
        return special
    ci = _bootstrap((arr,), _mean)
    return float(ci.low), float(ci.high)


def bootstrap_cis(value_lists: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """``bootstrap_ci`` of each list, rows of equal length in one vectorised call (identical results)."""
    out: list[tuple[float, float] | None] = [None] * len(value_lists)
    by_size: dict[int, list[int]] = {}
    arrays = [np.asarray(v, dtype=float) for v in value_lists]
    for i, arr in enumerate(arrays):
        special = _degenerate(arr)
        if special is not None:
            out[i] = special
        else:
            by_size.setdefault(arr.size, []).append(i)
    for idx in by_size.values():
        ci = _bootstrap((np.stack([arrays[i] for i in idx]),), _mean)
        for j, i in enumerate(idx):
            low, high = float(ci.low[j]), float(ci.high[j])
            if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined (e.g. one outlier): per row
                low, high = bootstrap_ci(arrays[i])
            out[i] = (low, high)
    return out  # type: ignore[return-value]


def _diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def difference_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """95% BCa interval of mean(a) - mean(b), a and b independent (resampled separately).

    NaN bounds with fewer than 2 values on either side or non-finite values; a point interval when both
    sides are constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return (math.nan, math.nan)
    if np.all(x == x[0]) and np.all(y == y[0]):
        d = float(x[0] - y[0])
        return (d, d)
    ci = _bootstrap((x, y), _diff)
    low, high = float(ci.low), float(ci.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        # BCa undefined (one side constant makes its jackknife degenerate): percentile interval instead
        from scipy import stats  # heavy: see _bootstrap

        res = stats.bootstrap(
            (x, y),
            _diff,
            n_resamples=N_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            random_state=RANDOM_STATE,
            vectorized=True,
            axis=-1,
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return low, high


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN entries stay NaN and are
    not counted among the m tests."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def add_confidence_intervals(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with ``final_test_ci_low`` / ``final_test_ci_high`` (see the module docstring)."""
    summary = summary.copy()
    if summary.empty or "seed_values" not in summary:
        summary["final_test_ci_low"] = np.nan
        summary["final_test_ci_high"] = np.nan
        return summary
    cis = bootstrap_cis(list(summary["seed_values"]))
    summary["final_test_ci_low"] = [c[0] for c in cis]
    summary["final_test_ci_high"] = [c[1] for c in cis]
    return summary


def add_comparison_statistics(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison with the CI of each mean, the CI of the difference to the best baseline
    (``difference_ci_low/high``) and the Holm-adjusted Welch p-value over the table's tests (``p_holm``)."""
    comparison = comparison.copy()
    if comparison.empty:
        return comparison
    a_lists = list(comparison.get("seed_values", [[]] * len(comparison)))
    b_lists = list(comparison.get("baseline_seed_values", [[]] * len(comparison)))
    diffs = [difference_ci(a, b) for a, b in zip(a_lists, b_lists)]
    comparison["difference_ci_low"] = [d[0] for d in diffs]
    comparison["difference_ci_high"] = [d[1] for d in diffs]
    comparison["p_holm"] = holm(comparison["p_value"].to_numpy(dtype=float))
    return comparison
