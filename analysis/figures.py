"""Figures from the run table and the summary (PNG and PDF, matplotlib's own text rendering: no LaTeX).

* learning curves per problem: test / valid / train loss and accuracy, mean over the reported seeds with a
  +-1 std band, one line per optimizer's chosen setting, baselines dashed;
* learning-rate sensitivity per problem: final validation metric of every tuning run vs learning rate,
  coloured by power, the chosen setting starred;
* power sensitivity: best tuning score per power, one panel per problem;
* W vs L2 (cifar10_3c3d): test accuracy curves and per-seed final accuracies of both variants.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import optimizers
from deepobs_tree import TUNING_SEED, AtomicFile

from .select import metric_names, problem_has_accuracy, search_runs
from .tables import PHI_LEGEND, canonical_rank, is_baseline, label, main_rows

PANEL_CURVES = (
    ("test_losses", "test loss"),
    ("valid_losses", "validation loss"),
    ("train_losses", "train loss"),
    ("test_accuracies", "test accuracy"),
    ("valid_accuracies", "validation accuracy"),
    ("train_accuracies", "train accuracy"),
)


def _plt():
    import matplotlib  # matplotlib (a second) only when figures are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # as above

    plt.rcParams.update({"text.usetex": False, "figure.dpi": 110, "savefig.dpi": 130, "font.size": 9})
    return plt


def grid(n_panels: int, max_cols: int, panel_size: tuple[float, float], **kwargs):
    """A figure with ``n_panels`` axes in rows of at most ``max_cols``; unused axes are hidden."""
    plt = _plt()
    ncols = min(n_panels, max_cols)
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, **kwargs
    )
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, axes


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (atomically) and close the figure."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "pdf"):
        final = out_dir / f"{stem}.{ext}"
        with AtomicFile(final) as handle:
            fig.savefig(handle, format=ext, bbox_inches="tight")
        written.append(final)
    plt.close(fig)
    return written


def _as_float(value) -> float:
    """A hyperparameter value as a float for plotting; NaN for anything non-numeric (a string, a list, None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _stack(curves: Sequence[np.ndarray]) -> np.ndarray:
    """Stack curves of possibly different lengths (Q6), padding with NaN."""
    length = max(len(c) for c in curves)
    out = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        out[i, : len(c)] = c
    return out


def _setting_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
    seeds = [int(s) for s in str(row["seeds"]).split()] if row["seeds"] else []
    chosen = runs[(runs["setting_key"].map(lambda k: k == row["setting_key"])) & runs["seed"].isin(seeds)]
    return chosen


#: one colour per built-in optimizer in every figure: a hue per family, dark with φ_p, light for its linear twin
_FAMILY = [
    "GradientDescentOptimizer",
    "MomentumOptimizer",
    "NAGOptimizer",
    "GradientDescentOptimizerW_scaled",
    "MomentumOptimizerW_momscaled",
    "NAGOptimizerW_momscaled",
]


def colour(optimizer: str):
    """The optimizer's colour (tab20), the same in every figure: built-ins by family (non-linear dark, linear
    twin light), any other name at a fixed place of tab20's last eight (crc32 of the name)."""
    plt = _plt()
    palette = plt.get_cmap("tab20")
    try:
        twin = optimizers.linear_twin(optimizer)
        entry = optimizers.spec(optimizer)
    except ValueError:
        twin, entry = None, None
    if twin in _FAMILY:
        return palette(2 * _FAMILY.index(twin) + (1 if entry is not None and entry.baseline else 0))
    return palette(12 + zlib.crc32(optimizer.encode()) % 8)


def legend_note(fig, y: float = -0.02) -> None:
    """The line saying what φ_p is, under the figure."""
    fig.text(0.5, y, PHI_LEGEND, ha="center", va="top", fontsize=7, color="0.3")


def _styles(rows: pd.DataFrame):
    for _, row in rows.iterrows():
        baseline = is_baseline(row)
        text = label(row["optimizer"]) + (f" ({row['source']})" if row["source"] == "baselines" else "")
        yield row, {"color": colour(row["optimizer"]), "linestyle": "--" if baseline else "-", "label": text}


def _log_if_wide(ax, values: np.ndarray) -> None:
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / max(finite.min(), 1e-12) > 8:
        ax.set_yscale("log")


def learning_curves(runs: pd.DataFrame, summary: pd.DataFrame, testproblem: str, out_dir: Path) -> list[Path]:
    """Mean +- std curves of every optimizer's chosen setting on one problem."""
    rows = main_rows(summary[summary["testproblem"] == testproblem])
    rows = rows[rows["n_seeds"] > 0]
    if rows.empty:
        return []
    has_acc = problem_has_accuracy(runs, testproblem)
    panels = [p for p in PANEL_CURVES if has_acc or "loss" in p[0]]
    fig, axes = grid(len(panels), 3, (4.2, 3.2))
    for row, style in _styles(rows):
        chosen = _setting_runs(runs, row)
        for ax, (curve, _title) in zip(axes.flat, panels):
            series = [c for c in chosen[curve] if isinstance(c, np.ndarray) and c.size]
            if not series:
                continue
            stacked = _stack(series)
            mean = np.nanmean(stacked, axis=0)
            std = np.nanstd(stacked, axis=0)
            epochs = np.arange(mean.size)
            ax.plot(epochs, mean, lw=1.3, **style)
            ax.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.18, lw=0)
    for ax, (curve, title) in zip(axes.flat, panels):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        lines = [line.get_ydata() for line in ax.get_lines()]
        if lines and "loss" not in curve:  # accuracies: zoom on the trained part (epoch 0 is near chance)
            values = np.concatenate([np.asarray(v, dtype=float)[1:] for v in lines])
            finite = values[np.isfinite(values)]
            if finite.size:
                low, high = np.percentile(finite, [3, 100])
                pad = 0.05 * (high - low or 1.0)
                ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
        if "loss" in curve:
            if lines:
                values = np.concatenate([np.asarray(v, dtype=float)[1:] for v in lines])
                _log_if_wide(ax, values)
                finite = values[np.isfinite(values)]
                if finite.size:
                    low, high = np.percentile(finite, [0, 98])
                    pad = 0.05 * (high - low or abs(high) or 1.0)
                    if ax.get_yscale() == "linear":
                        ax.set_ylim(low - pad, high + pad)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False, bbox_to_anchor=(0.5, 1.02))
    fig.suptitle(f"{testproblem}: chosen settings, mean ± std over seeds", y=1.07)
    fig.tight_layout()
    legend_note(fig)
    return save(fig, out_dir, f"learning_curves_{testproblem}")


def _visible_range(values: np.ndarray, higher_better: bool) -> tuple[float, float] | None:
    """y-range that shows the informative part of a search: from the best score to four times its distance
    to the median (runs that diverged or never learned lie far beyond and are drawn clipped at the edge)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    best = finite.max() if higher_better else finite.min()
    median = float(np.median(finite))
    span = 4 * abs(median - best) or abs(best) * 0.1 or 1.0
    low, high = (best - span, best) if higher_better else (best, best + span)
    low, high = max(low, finite.min()), min(high, finite.max())
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


def lr_sensitivity(
    runs: pd.DataFrame, summary: pd.DataFrame, testproblem: str, out_dir: Path, tuning_seed: int = TUNING_SEED
) -> list[Path]:
    """Final validation metric of every tuning run vs its learning rate, coloured by power; runs beyond the
    shown range (diverged, not learning) are drawn as triangles on the axis edge."""
    plt = _plt()
    rows = main_rows(summary[summary["testproblem"] == testproblem])
    rows = rows[rows["n_samples"] > 1]
    if rows.empty:
        return []
    tuning_metric, _ = metric_names(problem_has_accuracy(runs, testproblem))
    higher_better = "acc" in tuning_metric
    searches = [(row, search_runs(runs, row, tuning_seed)) for _, row in rows.iterrows()]
    values_all = np.concatenate([s[f"final_{tuning_metric}"].to_numpy(dtype=float) for _, s in searches])
    shown = _visible_range(values_all, higher_better)
    fig, axes = grid(len(searches), 3, (4.2, 3.3), sharey=True, layout="constrained")
    cmap = plt.get_cmap("viridis")
    scatter = None
    for ax, (row, search) in zip(axes.flat, searches):
        lr = np.array([_as_float(hp.get("learning_rate")) for hp in search["optimizer_hyperparams"]], dtype=float)
        power = np.array([_as_float(hp.get("power")) for hp in search["optimizer_hyperparams"]], dtype=float)
        values = search[f"final_{tuning_metric}"].to_numpy(dtype=float)
        colour = np.where(np.isfinite(power), power, 1.0)
        inside = np.isfinite(values)
        if shown is not None:
            inside &= (values >= shown[0]) & (values <= shown[1])
            edge = shown[0] if higher_better else shown[1]
            ax.scatter(
                lr[~inside],
                np.full((~inside).sum(), edge),
                c=colour[~inside],
                cmap=cmap,
                vmin=0.35,
                vmax=1.0,
                s=26,
                marker="v" if higher_better else "^",
                edgecolors="k",
                linewidths=0.3,
                clip_on=False,
            )
        scatter = ax.scatter(
            lr[inside],
            values[inside],
            c=colour[inside],
            cmap=cmap,
            vmin=0.35,
            vmax=1.0,
            s=22,
            edgecolors="k",
            linewidths=0.3,
        )
        ax.scatter(
            [_as_float(row["learning_rate"])],
            [row["tuning_score"]],
            marker="*",
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=1.2,
            label="chosen",
        )
        ax.set_xscale("log")
        ax.set_title(
            f"{label(row['optimizer'])} ({row['source']})" if row["source"] == "baselines" else label(row["optimizer"])
        )
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"final {tuning_metric.replace('_', ' ')} (tuning seed)")
    if shown is not None:
        axes[0, 0].set_ylim(*shown)
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label("power (1.0 = no map)")
    fig.suptitle(
        f"{testproblem}: learning-rate sensitivity (triangles on the edge: beyond the axis, e.g. diverged)", fontsize=9
    )
    return save(fig, out_dir, f"lr_sensitivity_{testproblem}")


def power_sensitivity(
    runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, tuning_seed: int = TUNING_SEED
) -> list[Path]:
    """Best tuning score per power value, one panel per problem, one line per optimizer."""
    main = main_rows(summary)
    main = main[(main["n_samples"] > 1) & main["power"].notna()]
    problems = sorted(main["testproblem"].unique())
    if not problems:
        return []
    fig, axes = grid(len(problems), 3, (4.2, 3.2))
    for ax, problem in zip(axes.flat, problems):
        tuning_metric, _ = metric_names(problem_has_accuracy(runs, problem))
        higher_better = "acc" in tuning_metric
        for row, style in _styles(main[main["testproblem"] == problem]):
            search = search_runs(runs, row, tuning_seed)
            frame = pd.DataFrame(
                {
                    "power": [round(_as_float(hp.get("power")), 6) for hp in search["optimizer_hyperparams"]],
                    "score": search[f"final_{tuning_metric}"].to_numpy(dtype=float),
                }
            )
            frame = frame[np.isfinite(frame["score"]) & np.isfinite(frame["power"])]
            best = frame.groupby("power")["score"].max() if higher_better else frame.groupby("power")["score"].min()
            ax.plot(best.index, best.values, marker="o", ms=4, **style)
        ax.set_title(problem)
        ax.set_xlabel("power p")
        ax.set_ylabel(f"best final {tuning_metric.replace('_', ' ')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Power sensitivity: best tuning score among the samples with each power", y=1.01)
    fig.tight_layout()
    legend_note(fig)
    return save(fig, out_dir, "power_sensitivity")


def w_vs_l2(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, problem: str = "cifar10_3c3d") -> list[Path]:
    """Decoupled decay (``_nodecay`` + W optimizers) vs L2 in the loss: test accuracy curves and final values."""
    plt = _plt()
    main = main_rows(summary)
    variants = main[main["testproblem"].isin([problem, f"{problem}_nodecay"]) & (main["n_seeds"] > 0)]
    if set(variants["testproblem"]) != {problem, f"{problem}_nodecay"}:
        return []
    metric = variants["metric"].iloc[0]
    curve = metric
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels, data = [], []
    for row, style in _styles(variants):
        variant = "W" if row["testproblem"].endswith("_nodecay") else "L2"
        style = dict(style, label=f"{label(row['optimizer'])} [{variant}]", linestyle="-" if variant == "W" else ":")
        chosen = _setting_runs(runs, row)
        series = [c for c in chosen[curve] if isinstance(c, np.ndarray) and c.size]
        if series:
            stacked = _stack(series)
            mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
            epochs = np.arange(mean.size)
            left.plot(epochs, mean, lw=1.3, **style)
            left.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.15, lw=0)
        labels.append(style["label"])
        data.append(row["seed_values"])
    left.set_title(f"{problem}: {metric.replace('_', ' ')}")
    left.set_xlabel("epoch")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    finite = np.concatenate([np.asarray(d) for d in data]) if data else np.array([])
    if finite.size:
        left.set_ylim(max(0.0, finite.min() - 0.15), min(1.0, finite.max() + 0.03))
    right.boxplot(data, showmeans=True)
    right.set_xticks(range(1, len(labels) + 1), labels, rotation=20, fontsize=8)
    for i, values in enumerate(data, start=1):
        right.scatter(
            np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=10, color="k", alpha=0.6
        )
    right.set_title(f"final {metric.replace('_', ' ')} per seed")
    right.grid(alpha=0.3)
    fig.suptitle("Decoupled weight decay (W, _nodecay problem) vs L2 in the loss (L2)")
    fig.tight_layout()
    return save(fig, out_dir, f"w_vs_l2_{problem}")


def overview(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Final test metric (mean +- std) of every main row, one panel per problem."""
    main = main_rows(summary)
    main = main[main["n_seeds"] > 0]
    problems = sorted(main["testproblem"].unique())
    if not problems:
        return []
    fig, axes = grid(len(problems), 4, (3.4, 2.9))
    for ax, problem in zip(axes.flat, problems):
        rows = main[main["testproblem"] == problem]
        rows = rows.iloc[np.argsort([canonical_rank(o) for o in rows["optimizer"]], kind="stable")]
        names = [label(o) + ("*" if s == "baselines" else "") for o, s in zip(rows["optimizer"], rows["source"])]
        for x, (_, row) in enumerate(rows.iterrows()):
            ax.errorbar(
                [x],
                [row["final_test_mean"]],
                yerr=[row["final_test_std"]],
                fmt="o",
                capsize=4,
                color=colour(row["optimizer"]),
                mfc="white" if is_baseline(row) else None,
            )
            low, high = row.get("final_test_ci_low", np.nan), row.get("final_test_ci_high", np.nan)
            if np.isfinite(low) and np.isfinite(high):  # 95% bootstrap CI of the mean: thick bar
                ax.vlines([x], [low], [high], lw=5, alpha=0.45, color="C3")
        ax.set_xticks(range(len(rows)), names, rotation=30, fontsize=7)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        low = np.nanmin(rows["final_test_mean"] - rows["final_test_std"])
        high = np.nanmax(rows["final_test_mean"] + rows["final_test_std"])
        if np.isfinite(low) and np.isfinite(high) and high > low:
            ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
        ax.set_title(f"{problem}\n{rows['metric'].iloc[0].replace('_', ' ')}", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        "Final test metric of the chosen settings (mean ± std over seeds, red bar: 95% bootstrap CI of "
        "the mean; open marker = linear baseline, * = BASELINES tree)",
        fontsize=9,
    )
    fig.tight_layout()
    legend_note(fig, y=-0.04)
    return save(fig, out_dir, "overview")


def all_figures(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, tuning_seed: int = TUNING_SEED) -> list[Path]:
    """Every figure the report shows."""
    written = overview(summary, out_dir)
    for problem in sorted(summary["testproblem"].unique()):
        written += learning_curves(runs, summary, problem, out_dir)
        written += lr_sensitivity(runs, summary, problem, out_dir, tuning_seed)
    written += power_sensitivity(runs, summary, out_dir, tuning_seed)
    written += w_vs_l2(runs, summary, out_dir)
    return written
