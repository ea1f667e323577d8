"""Summary and comparison tables (pure functions of the summary) and their CSV / Markdown / LaTeX renderings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

import optimizers

# The standard DeepOBS / Crowded Valley optimizers (and the suite's decoupled-decay twins of them): rows of
# these optimizers count as baselines wherever they come from.
BASELINE_OPTIMIZERS = frozenset(
    {
        "GradientDescentOptimizer",
        "MomentumOptimizer",
        "NAGOptimizer",
        "AdamOptimizer",
        "GradientDescentOptimizerW_scaled",
        "MomentumOptimizerW_momscaled",
        "NAGOptimizerW_momscaled",
    }
)

CSV_COLUMNS = [
    "testproblem",
    "optimizer",
    "learning_rate",
    "power",
    "momentum",
    "weight_decay",
    "weight_decay_opt",
    "n_samples",
    "n_seeds",
    "metric",
    "final_test_mean",
    "final_test_std",
    "final_test_median",
    "final_test_min",
    "final_test_max",
    "final_test_ci_low",
    "final_test_ci_high",
    "tie",
    "selection",
    "tuning_metric",
    "tuning_score",
    "runner_up_score",
    "seeds",
    "setting",
    "search",
    "source",
]

SHORT_NAMES = {
    "PowKernelGradientDescentOptimizer": "GD",
    "PowKernelMomentumOptimizer": "M",
    "PowKernelMomentumOptimizerN": "MN",
    "PowKernelGradientDescentOptimizerW_scaled": "GD-W",
    "PowKernelMomentumOptimizerW_momscaled": "M-W",
    "PowKernelMomentumOptimizerNW_momscaled": "MN-W",
    "GradientDescentOptimizer": "SGD",
    "MomentumOptimizer": "Momentum",
    "NAGOptimizer": "NAG",
    "GradientDescentOptimizerW_scaled": "SGD-W",
    "MomentumOptimizerW_momscaled": "Momentum-W",
    "NAGOptimizerW_momscaled": "NAG-W",
}


def canonical_rank(optimizer: str) -> int:
    """Position in the paper's order (GD, M, MN, GD-W, M-W, MN-W, then the baselines); unknown names last."""
    names = list(SHORT_NAMES)
    return names.index(optimizer) if optimizer in names else len(names)


def _registered(optimizer: str):
    """The optimizer registry's entry (built-in or plugin), None for unregistered folder names."""
    try:
        return optimizers.spec(optimizer)
    except ValueError:
        return None


def short_name(optimizer: str) -> str:
    """The registered display label (the paper's abbreviations for the built-ins, protocol §1; a plugin's
    declared label), else SHORT_NAMES' or the name itself."""
    entry = _registered(optimizer)
    return entry.display_label if entry is not None else SHORT_NAMES.get(optimizer, optimizer)


def label(optimizer: str) -> str:
    """What tables and figures call an optimizer: its short name, with " φ_p" for a non-linear one whose
    label does not already say so ("GD φ_p" against its linear twin "SGD")."""
    name = short_name(optimizer)
    entry = _registered(optimizer)
    nonlinear = (not entry.baseline) if entry is not None else optimizer.startswith("PowKernel")
    return f"{name} φ_p" if nonlinear and "φ" not in name else name


PHI_LEGEND = "φ_p: sign(g)·|g|^p applied to kernel gradients before the step (p < 1); no φ_p: the linear optimizer"


def is_baseline(row) -> bool:
    """A row is a baseline if it came from a BASELINES tree or its optimizer is registered as one (built-in or
    plugin); unregistered folder names count if they are standard DeepOBS ones (BASELINE_OPTIMIZERS)."""
    if row["source"] == "baselines":
        return True
    entry = _registered(row["optimizer"])
    return entry.baseline if entry is not None else row["optimizer"] in BASELINE_OPTIMIZERS


def main_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (source, testproblem, optimizer) the row of the largest search (the protocol's main search)."""
    if summary.empty:
        return summary
    ordered = summary.sort_values(["n_samples", "n_seeds"], ascending=False, kind="stable")
    main = ordered.drop_duplicates(["source", "testproblem", "optimizer"], keep="first")
    main = main.assign(_rank=[canonical_rank(o) for o in main["optimizer"]])
    return main.sort_values(["testproblem", "source", "_rank", "optimizer"], kind="stable").drop(columns="_rank")


def base_problem(testproblem: str) -> str:
    return testproblem[: -len("_nodecay")] if testproblem.endswith("_nodecay") else testproblem


def compare_to_baselines(summary: pd.DataFrame) -> pd.DataFrame:
    """Per problem, each non-baseline optimizer's difference to the best baseline and a Welch t-test over seeds.

    The best baseline is the one with the best mean final test metric (higher accuracy, lower loss) among the
    baseline rows of the same problem, or of its base problem for ``_nodecay`` problems (DeepOBS baselines use
    the standard problems). ``difference`` = optimizer mean - baseline mean; ``p_value`` from
    ``scipy.stats.ttest_ind(equal_var=False)`` (NaN with fewer than two seeds on either side).
    """
    from scipy import stats  # heavy (~0.5 s): loaded only when baselines are compared

    rows = []
    main = main_rows(summary)
    if main.empty:
        return pd.DataFrame()
    flags = main.apply(is_baseline, axis=1)
    baselines, candidates = main[flags], main[~flags]
    for _, row in candidates.iterrows():
        pool = baselines[baselines["testproblem"] == row["testproblem"]]
        if pool.empty:
            pool = baselines[baselines["testproblem"] == base_problem(row["testproblem"])]
        pool = pool[pool["metric"] == row["metric"]]
        if pool.empty:
            continue
        higher_better = "acc" in row["metric"]
        best = pool.sort_values("final_test_mean", ascending=not higher_better, kind="stable").iloc[0]
        a = np.asarray(row["seed_values"], dtype=float)
        b = np.asarray(best["seed_values"], dtype=float)
        if a.size >= 2 and b.size >= 2:
            test = stats.ttest_ind(a, b, equal_var=False)
            t_stat, p_value = float(test.statistic), float(test.pvalue)
        else:
            t_stat = p_value = math.nan
        difference = float(row["final_test_mean"] - best["final_test_mean"])
        rows.append(
            {
                "testproblem": row["testproblem"],
                "optimizer": row["optimizer"],
                "metric": row["metric"],
                "mean": row["final_test_mean"],
                "std": row["final_test_std"],
                "n_seeds": row["n_seeds"],
                "baseline_problem": best["testproblem"],
                "baseline": best["optimizer"],
                "baseline_source": best["source"],
                "baseline_mean": best["final_test_mean"],
                "baseline_std": best["final_test_std"],
                "baseline_n_seeds": best["n_seeds"],
                "difference": difference,
                "better": bool(difference > 0 if higher_better else difference < 0),
                "welch_t": t_stat,
                "p_value": p_value,
                "seed_values": [float(v) for v in a],  # for the difference's CI (analysis.stats); not in the CSV
                "baseline_seed_values": [float(v) for v in b],
            }
        )
    return pd.DataFrame(rows)


def results_matrix(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper-style table: one row per problem, one column per optimizer, cells 'mean ± std (n)'."""
    main = main_rows(summary)
    main = main[main["n_seeds"] > 0]
    if main.empty:
        return pd.DataFrame()
    labels = [
        label(o) + (" (baseline tree)" if s == "baselines" else "") for o, s in zip(main["optimizer"], main["source"])
    ]
    cells = [
        f"{_fmt(m, 6)} ± {_fmt(sd, 4)} ({n})"
        for m, sd, n in zip(main["final_test_mean"], main["final_test_std"], main["n_seeds"])
    ]
    frame = pd.DataFrame(
        {
            "problem": main["testproblem"].to_numpy(),
            "metric": main["metric"].to_numpy(),
            "optimizer": labels,
            "cell": cells,
        }
    )
    rank = {label(o): canonical_rank(o) for o in main["optimizer"]}
    order = sorted(
        dict.fromkeys(labels),
        key=lambda text: (text.endswith("(baseline tree)"), rank.get(text.removesuffix(" (baseline tree)"), len(rank))),
    )
    matrix = frame.pivot_table(index=["problem", "metric"], columns="optimizer", values="cell", aggfunc="first")
    matrix = matrix.reindex(columns=[c for c in order if c in matrix.columns]).reset_index()
    matrix.columns.name = None
    return matrix.fillna("")


def _fmt(value, digits: int = 6) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def summary_csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with the documented columns, in order (extra columns dropped)."""
    frame = summary.copy()
    for column in CSV_COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame[CSV_COLUMNS]


def markdown_table(frame: pd.DataFrame, columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``columns`` (values at 6 significant digits)."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, repl)
    return text


def latex_table(frame: pd.DataFrame, columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A plain ``tabular`` (booktabs rules) of ``columns``; needs no LaTeX to produce."""
    headers = list(headers or columns)
    lines = [
        r"\begin{tabular}{" + "l" * 2 + "r" * (len(columns) - 2) + "}",
        r"\toprule",
        " & ".join(_tex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    for _, row in frame.iterrows():
        lines.append(" & ".join(_tex_escape(_fmt(row[c])) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


SUMMARY_VIEW = [
    ("testproblem", "problem"),
    ("optimizer", "optimizer"),
    ("learning_rate", "lr"),
    ("power", "power"),
    ("momentum", "momentum"),
    ("weight_decay", "L2"),
    ("weight_decay_opt", "decay"),
    ("n_samples", "samples"),
    ("n_seeds", "seeds"),
    ("metric", "metric"),
    ("final_test_mean", "mean"),
    ("final_test_std", "std"),
    ("final_test_ci_low", "95% CI low"),
    ("final_test_ci_high", "95% CI high"),
    ("tie", "tie"),
    ("source", "source"),
]

COMPARISON_VIEW = [
    ("testproblem", "problem"),
    ("optimizer", "optimizer"),
    ("mean", "mean"),
    ("std", "std"),
    ("baseline", "best baseline"),
    ("baseline_mean", "baseline mean"),
    ("difference", "difference"),
    ("difference_ci_low", "diff. 95% CI low"),
    ("difference_ci_high", "diff. 95% CI high"),
    ("p_value", "Welch p"),
    ("p_holm", "Holm p"),
]

# columns of comparison.csv that are not written (lists of per-seed values)
COMPARISON_INTERNAL = ("seed_values", "baseline_seed_values")


def view(frame: pd.DataFrame, spec) -> tuple[pd.DataFrame, list[str], list[str]]:
    shown = frame.copy()
    if "optimizer" in shown:
        shown["optimizer"] = shown["optimizer"].map(label)
    if "baseline" in shown:
        shown["baseline"] = shown["baseline"].map(label)
    columns = [c for c, _ in spec if c in shown]
    headers = [h for c, h in spec if c in shown]
    return shown, columns, headers
