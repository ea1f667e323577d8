"""Do the paper's claims hold in these results? ``python -m analysis.verdict RESULTS [--reference TREE]
[--paper PROTOCOL.md] --out OUT`` writes ``OUT/verdict.md``, ``OUT/verdict.csv`` (one row per claim) and
``OUT/verdict_searches.csv`` (one row per search and reference) and prints the judged claims and, last, a
one-line headline.

**Claims** (``paper_claims``), built from the paper's released numbers (the reference table of
``protocol.md`` §5, read at run time; nothing of the paper's data is stored here):

* ``nonlinear_vs_linear``: on each problem the paper ran, its non-linear optimizer (e.g. "GD φ_p") ends with a
  better final test metric than its linear twin (``optimizers.linear_twin``: GD -> SGD, M -> Momentum,
  MN -> NAG, the W variants -> their W baselines);
* ``w_vs_l2``: on cifar10_3c3d, the decoupled-decay variant (GD-W, M-W on ``cifar10_3c3d_nodecay``) ends
  better than the same optimizer with L2 in the loss (the paper's L2 tree);
* ``power``: the search picks the paper's power p* for that (problem, optimizer).

**Judgement** (``judge``), on the results at hand only:

* *not run*: a side of the claim has no search with reruns in these results;
* *inconclusive (too few seeds / epochs / samples)*: a side has fewer than ``MIN_SEEDS`` seeds or fewer epochs
  than the problem's DeepOBS default (the paper's), or (power) a smaller search than the paper's 50 samples;
* comparisons: Welch's t-test over seeds, Holm-adjusted over all comparisons judged, and the BCa 95% interval
  of the difference (``analysis.stats``). *confirmed*: adjusted p < ``ALPHA`` and the interval excludes 0 in
  the claimed direction; *contradicted*: the same in the opposite direction; otherwise *inconclusive (no
  significant difference)*;
* power: *confirmed* when the chosen power is p* (folder-token precision); when another power won,
  *inconclusive* if the chosen setting's outcome is equivalent to the paper's (below), else *contradicted*.

**Per search** (``search_table``), reported apart from the claims: *outcome equivalent*: |mean - reference
mean| <= ``K_SE``·sqrt(SE² + SE_ref²), SE = population std / sqrt(n - 1) (= the sample std / sqrt(n)); *same
setting*: the chosen hyperparameters agree at folder-token precision. A different (statistically tied)
setting winning the random search is informative, not a failure. References: the committed tree (``--reference``)
and the paper. The command exits 0 whatever the verdict (2 only for bad input).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from deepobs_tree import NlwuError, UsageError, fail, format_value, help_hint, write_atomic
from optimizers import decoupled_variant, linear_twin
from testproblems import registry

from .loader import load_runs
from .select import summarize
from .stats import difference_ci, holm
from .tables import SHORT_NAMES, label, main_rows, markdown_table

#: significance level of the comparison claims (Holm-adjusted Welch p-value)
ALPHA = 0.05
#: outcome equivalence: within the reference mean ± K_SE combined standard errors
K_SE = 2.0
#: fewer seeds than this on either side of a claim: inconclusive
MIN_SEEDS = 5
#: the paper's random-search budget (protocol §3): a smaller search cannot judge the chosen power
PAPER_BUDGET = 50

COMPARED_HP = ("learning_rate", "power", "momentum", "weight_decay_opt")
SEARCH_COLUMNS = [
    "testproblem",
    "optimizer",
    "search",
    "reference",
    "setting",
    "reference_setting",
    "same_setting",
    "n_seeds",
    "mean",
    "se",
    "reference_n_seeds",
    "reference_mean",
    "reference_se",
    "difference",
    "combined_se",
    "outcome_equivalent",
    "note",
]
CLAIM_COLUMNS = [
    "claim",
    "kind",
    "statement",
    "paper",
    "status",
    "reason",
    "testproblem",
    "optimizer",
    "other_problem",
    "other",
    "n_seeds",
    "mean",
    "other_n_seeds",
    "other_mean",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "p_value",
    "p_holm",
    "chosen_power",
    "paper_power",
]
STATUSES = ("confirmed", "contradicted", "inconclusive", "not run")
PAPER_REFERENCE = "paper (protocol.md §5)"
#: the problems of each paper optimizer (protocol §1 "Used on"): what the claims are about even without §5's numbers
PAPER_PAIRS = {
    **{
        (p, o): None
        for p in ("fmnist_2c2d", "fmnist_vae", "mnist_vae", "quadratic_deep", "tolstoi_char_rnn")
        for o in ("PowKernelGradientDescentOptimizer", "PowKernelMomentumOptimizer", "PowKernelMomentumOptimizerN")
    },
    **{
        (p, o): None
        for p in ("cifar10_3c3d_nodecay", "cifar100_allcnnc_nodecay", "svhn_wrn164_nodecay")
        for o in (
            "PowKernelGradientDescentOptimizerW_scaled",
            "PowKernelMomentumOptimizerW_momscaled",
            "PowKernelMomentumOptimizerNW_momscaled",
        )
    },
    ("cifar10_3c3d", "PowKernelGradientDescentOptimizer"): None,
    ("cifar10_3c3d", "PowKernelMomentumOptimizer"): None,
}


def default_protocol() -> Path | None:
    """``$NLWU_PROTOCOL``, else ``../shared/spec/protocol.md`` beside the checkout, if it exists."""
    env = os.environ.get("NLWU_PROTOCOL")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2] / "shared" / "spec" / "protocol.md"]
    return next((p for p in candidates if p.is_file()), None)


def standard_error(std: float, n: int) -> float:
    """SE of the mean from the population std (ddof 0) over n seeds; NaN for n < 2."""
    return float(std) / math.sqrt(n - 1) if n and n >= 2 and math.isfinite(std) else math.nan


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _token(value) -> str:
    if _missing(value):
        return "–"
    try:
        return format_value(float(value))
    except (TypeError, ValueError):
        return str(value)


def setting_text(hp: dict) -> str:
    return " ".join(f"{k}={_token(hp.get(k))}" for k in COMPARED_HP if not _missing(hp.get(k))) or "–"


def paper_table(protocol: Path) -> pd.DataFrame:
    """The reference table of protocol.md §5 (problem, optimizer, learning_rate, power, weight_decay_opt, n,
    mean, std); empty if the file or the table is missing."""
    columns = ["testproblem", "optimizer", "learning_rate", "power", "weight_decay_opt", "n", "mean", "std"]
    try:
        text = Path(protocol).read_text(encoding="utf-8")
    except OSError:
        return pd.DataFrame(columns=columns)
    section = re.search(r"^## 5\..*?(?=^## 6\.|\Z)", text, flags=re.S | re.M)
    by_short = {v: k for k, v in SHORT_NAMES.items() if k.startswith("PowKernel")}
    rows = []
    for line in (section.group(0) if section else "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 10 or cells[1] not in by_short:
            continue
        problem = cells[0].replace("L2 tree ", "")
        try:
            rows.append(
                {
                    "testproblem": problem,
                    "optimizer": by_short[cells[1]],
                    "learning_rate": float(cells[3]),
                    "power": float(cells[4]),
                    "weight_decay_opt": float(cells[5]) if cells[5] not in ("–", "-", "") else None,
                    "n": int(cells[6]),
                    "mean": float(cells[8]),
                    "std": float(cells[9]),
                }
            )
        except ValueError:
            continue
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: A (testproblem, optimizer) vs B (other_problem, other), or A's chosen power."""

    claim: str
    kind: str  # nonlinear_vs_linear | w_vs_l2 | power
    statement: str
    testproblem: str
    optimizer: str
    other_problem: str | None = None
    other: str | None = None
    paper_power: float | None = None
    paper: str = ""  # the paper's numbers, as text


def _paper_text(row) -> str:
    return f"{row['mean']:.6g} ± {row['std']:.4g} (n={int(row['n'])})"


def paper_claims(paper: pd.DataFrame | None = None) -> list[Claim]:
    """The paper's claims as data: one comparison with the linear twin per (problem, optimizer) the paper ran,
    the two W-vs-L2 comparisons on cifar10_3c3d, and one chosen-power claim per row of §5 (these need
    ``paper``; without it only the comparisons, with no numbers)."""
    paper = paper if paper is not None else pd.DataFrame(columns=["testproblem", "optimizer"])
    by_pair = {(r["testproblem"], r["optimizer"]): r for _, r in paper.iterrows()}
    pairs = list(by_pair) if by_pair else list(PAPER_PAIRS)
    claims: list[Claim] = []
    for problem, opt in pairs:
        row = by_pair.get((problem, opt))
        twin = linear_twin(opt)
        a, b = label(opt), label(twin)
        claims.append(
            Claim(
                f"{problem}: {a} vs {b}",
                "nonlinear_vs_linear",
                f"{a} ends better than its linear twin {b} on {problem}",
                problem,
                opt,
                problem,
                twin,
                paper=(f"{a}: {_paper_text(row)}; {b}: not in the released results" if row is not None else ""),
            )
        )
    for problem, opt in pairs:
        if problem.endswith("_nodecay") or (problem + "_nodecay", decoupled_variant(opt)) not in by_pair:
            continue
        w_problem, w_opt = problem + "_nodecay", decoupled_variant(opt)
        a, b = label(w_opt), label(opt)
        claims.append(
            Claim(
                f"{problem}: {a} vs {b} with L2",
                "w_vs_l2",
                f"{a} (decoupled decay, {w_problem}) ends better than {b} with L2 in the loss ({problem})",
                w_problem,
                w_opt,
                problem,
                opt,
                paper=f"{a}: {_paper_text(by_pair[(w_problem, w_opt)])}; "
                f"{b} (L2): {_paper_text(by_pair[(problem, opt)])}",
            )
        )
    for (problem, opt), row in by_pair.items():
        a = label(opt)
        claims.append(
            Claim(
                f"{problem}: {a} power",
                "power",
                f"the search picks p = {row['power']:g} for {a} on {problem}",
                problem,
                opt,
                paper_power=float(row["power"]),
                paper=f"p = {row['power']:g}, learning_rate = {row['learning_rate']:.4g}: {_paper_text(row)}",
            )
        )
    return claims


def _problem_epochs(problem: str) -> int | None:
    try:
        return int(registry.spec(problem).num_epochs)
    except ValueError:
        return None


def _scale_problems(row, samples: bool = False) -> list[str]:
    """Why ``row`` (a summary row) is too small to judge the paper: too few seeds, epochs (or samples)."""
    why = []
    if int(row["n_seeds"]) < MIN_SEEDS:
        why.append(f"{int(row['n_seeds'])} seeds < {MIN_SEEDS}")
    epochs = _problem_epochs(row["testproblem"])
    if epochs is not None and int(row["num_epochs"]) < epochs:
        why.append(f"{int(row['num_epochs'])} epochs < {epochs}")
    if samples and int(row["n_samples"]) < PAPER_BUDGET:
        why.append(f"{int(row['n_samples'])} samples < {PAPER_BUDGET}")
    return why


def _lookup(main: pd.DataFrame, problem: str | None, optimizer: str | None):
    if main.empty or problem is None:
        return None
    match = main[(main["testproblem"] == problem) & (main["optimizer"] == optimizer)]
    if match.empty:
        return None
    return match.sort_values("source", key=lambda s: s != "results", kind="stable").iloc[0]


def _better(metric: str) -> int:
    """+1 when higher is better (accuracies), -1 for losses."""
    return 1 if "acc" in str(metric) else -1


def judge(claims: Sequence[Claim], summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim with its status (``STATUSES``), the reason, and the numbers it rests on."""
    from scipy import stats as sps  # scipy (a second) only when claims are judged

    main = main_rows(summary[summary["n_seeds"] > 0]) if not summary.empty else summary
    paper = paper if paper is not None else pd.DataFrame(columns=["testproblem", "optimizer"])
    rows = []
    for claim in claims:
        out = {**asdict(claim), "status": "not run", "reason": "", "p_value": math.nan, "_direction": 0}
        a = _lookup(main, claim.testproblem, claim.optimizer)
        b = _lookup(main, claim.other_problem, claim.other) if claim.kind != "power" else None
        absent = [f"{claim.testproblem}/{label(claim.optimizer)}"] if a is None else []
        if claim.kind != "power" and b is None:
            absent.append(f"{claim.other_problem}/{label(claim.other)}")
        if absent:
            out["reason"] = "no search with reruns for " + " and ".join(absent)
            rows.append(out)
            continue
        out.update(n_seeds=int(a["n_seeds"]), mean=float(a["final_test_mean"]))
        scale = _scale_problems(a, samples=claim.kind == "power")
        if b is not None:
            out.update(other_n_seeds=int(b["n_seeds"]), other_mean=float(b["final_test_mean"]))
            scale += [w for w in _scale_problems(b) if w not in scale]
        if claim.kind == "power":
            out["chosen_power"] = float(a["power"]) if not _missing(a["power"]) else math.nan
        if scale:
            out.update(status="inconclusive", reason="too small to judge the paper: " + ", ".join(scale))
            rows.append(out)
            continue
        if claim.kind == "power":
            out.update(_judge_power(claim, a, paper))
        else:
            x, y = (np.asarray(r["seed_values"], dtype=float) for r in (a, b))
            out["difference"] = float(x.mean() - y.mean())
            out["difference_ci_low"], out["difference_ci_high"] = difference_ci(x, y)
            with np.errstate(all="ignore"):
                out["p_value"] = float(sps.ttest_ind(x, y, equal_var=False).pvalue)
            out.update(status="pending", _direction=_better(a["metric"]))
        rows.append(out)
    table = pd.DataFrame(rows)
    for column in CLAIM_COLUMNS:
        if column not in table:
            table[column] = np.nan
    pending = table["status"].eq("pending")
    table["p_holm"] = np.nan
    if pending.any():
        table.loc[pending, "p_holm"] = holm(table.loc[pending, "p_value"].to_numpy(dtype=float))
    for i in table.index[pending]:
        table.loc[i, ["status", "reason"]] = _judge_comparison(table.loc[i])
    return table[CLAIM_COLUMNS]


def _judge_comparison(row) -> tuple[str, str]:
    direction = row["_direction"]
    low, high, p = row["difference_ci_low"], row["difference_ci_high"], row["p_holm"]
    ci = f"difference {row['difference']:.4g}, 95% CI [{low:.4g}, {high:.4g}], Holm p = {p:.2g}"
    if math.isfinite(p) and p < ALPHA and math.isfinite(low) and math.isfinite(high):
        if direction * low > 0 and direction * high > 0:
            return "confirmed", f"better beyond chance: {ci}"
        if direction * low < 0 and direction * high < 0:
            return "contradicted", f"{label(row['other'])} is better beyond chance: {ci}"
    return "inconclusive", f"no significant difference: {ci}"


def _judge_power(claim: Claim, a, paper: pd.DataFrame) -> dict:
    chosen = a["power"]
    if _token(chosen) == _token(claim.paper_power):
        return {"status": "confirmed", "reason": f"p = {float(chosen):g} chosen, as in the paper"}
    setting = setting_text(dict(a["optimizer_hyperparams"]))
    p = paper[(paper["testproblem"] == claim.testproblem) & (paper["optimizer"] == claim.optimizer)]
    if p.empty:
        return {"status": "inconclusive", "reason": f"another setting won ({setting}); no paper mean to compare"}
    p = p.iloc[0]
    equivalent, diff, combined = _equivalent(
        float(a["final_test_mean"]),
        float(a["final_test_std"]),
        int(a["n_seeds"]),
        float(p["mean"]),
        float(p["std"]),
        int(p["n"]),
    )
    if equivalent:
        return {
            "status": "inconclusive",
            "reason": f"a tied setting won ({setting}): its outcome is within the paper's mean ± {K_SE:g} SE",
        }
    return {
        "status": "contradicted",
        "reason": f"another setting won ({setting}) and its outcome differs from "
        f"the paper's by {diff:.4g} (> {K_SE:g} x {combined:.3g} SE)",
    }


def _equivalent(mean, std, n, ref_mean, ref_std, ref_n) -> tuple[bool, float, float]:
    se, ref_se = standard_error(std, n), standard_error(ref_std, ref_n)
    diff = mean - ref_mean
    combined = math.sqrt(se**2 + ref_se**2) if math.isfinite(se) and math.isfinite(ref_se) else math.nan
    if math.isfinite(combined) and combined > 0:
        return bool(abs(diff) <= K_SE * combined), diff, combined
    return bool(math.isfinite(diff) and abs(diff) <= 1e-12 * max(1.0, abs(ref_mean))), diff, combined


# ----------------------------------------------------------------------------------------------- per search


def _compare(
    ours: pd.Series, reference: str, ref_hp: dict, ref_n: int, ref_mean: float, ref_std: float, note: str = ""
) -> dict:
    hp = dict(ours["optimizer_hyperparams"])
    same = all(_token(hp.get(k)) == _token(ref_hp.get(k)) for k in COMPARED_HP)
    n = int(ours["n_seeds"])
    equivalent, diff, combined = _equivalent(
        float(ours["final_test_mean"]), float(ours["final_test_std"]), n, float(ref_mean), float(ref_std), int(ref_n)
    )
    return {
        "testproblem": ours["testproblem"],
        "optimizer": ours["optimizer"],
        "search": ours["search"],
        "reference": reference,
        "setting": setting_text(hp),
        "reference_setting": setting_text(ref_hp),
        "same_setting": bool(same),
        "n_seeds": n,
        "mean": float(ours["final_test_mean"]),
        "se": standard_error(ours["final_test_std"], n),
        "reference_n_seeds": int(ref_n),
        "reference_mean": float(ref_mean),
        "reference_se": standard_error(ref_std, ref_n),
        "difference": diff,
        "combined_se": combined,
        "outcome_equivalent": equivalent,
        "note": note,
    }


def search_table(
    summary: pd.DataFrame,
    reference_summary: pd.DataFrame | None = None,
    reference_name: str = "",
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (search of ``summary``, reference): the reference tree (if given) and, where it has the
    pair, the paper. A search the reference tree lacks is a row with reference NaNs, not equivalent."""
    rows = []
    ours_main = main_rows(summary[summary["n_seeds"] > 0]) if not summary.empty else summary
    ours_main = ours_main[ours_main["source"] == "results"] if "source" in ours_main else ours_main
    ref_main = None
    if reference_summary is not None:
        ref_main = (
            main_rows(reference_summary[reference_summary["n_seeds"] > 0])
            if not reference_summary.empty
            else reference_summary
        )
    for _, row in ours_main.iterrows():
        if ref_main is not None:
            match = (
                ref_main[
                    (ref_main["testproblem"] == row["testproblem"])
                    & (ref_main["optimizer"] == row["optimizer"])
                    & (ref_main["search"] == row["search"])
                ]
                if not ref_main.empty
                else ref_main
            )
            if match.empty:
                rows.append(
                    {
                        "testproblem": row["testproblem"],
                        "optimizer": row["optimizer"],
                        "search": row["search"],
                        "reference": reference_name,
                        "setting": setting_text(dict(row["optimizer_hyperparams"])),
                        "same_setting": False,
                        "n_seeds": int(row["n_seeds"]),
                        "mean": row["final_test_mean"],
                        "outcome_equivalent": False,
                        "note": "no such search in the reference",
                    }
                )
            else:
                ref = match.iloc[0]
                note = ""
                if (int(ref["num_epochs"]), int(ref["batch_size"])) != (int(row["num_epochs"]), int(row["batch_size"])):
                    note = (
                        f"epochs/batch {row['num_epochs']}/{row['batch_size']} vs reference "
                        f"{ref['num_epochs']}/{ref['batch_size']}"
                    )
                rows.append(
                    _compare(
                        row,
                        reference_name,
                        dict(ref["optimizer_hyperparams"]),
                        int(ref["n_seeds"]),
                        ref["final_test_mean"],
                        ref["final_test_std"],
                        note,
                    )
                )
        if paper is not None and not paper.empty:
            pmatch = paper[(paper["testproblem"] == row["testproblem"]) & (paper["optimizer"] == row["optimizer"])]
            if not pmatch.empty:
                p = pmatch.iloc[0]
                hp = {"learning_rate": p["learning_rate"], "power": p["power"]}
                if not _missing(p["weight_decay_opt"]):
                    hp["weight_decay_opt"] = p["weight_decay_opt"]
                rows.append(
                    _compare(
                        row,
                        PAPER_REFERENCE,
                        hp,
                        int(p["n"]),
                        p["mean"],
                        p["std"],
                        "paper numbers printed to 4-6 significant digits",
                    )
                )
    return pd.DataFrame(rows, columns=SEARCH_COLUMNS)


# ----------------------------------------------------------------------------------------------- headline


def headline(claims: pd.DataFrame, results: str) -> str:
    """The one-line verdict: how many claims were checked and what became of each."""
    total = len(claims)
    counts = {s: int((claims["status"] == s).sum()) for s in STATUSES} if total else dict.fromkeys(STATUSES, 0)
    checked = total - counts["not run"]
    not_run = f"{counts['not run']} not run (not in these results)"
    if checked == 0:
        return f"NOTHING TO JUDGE: {results} holds none of the paper's {total} claims' searches; {not_run}"
    judged = claims[claims["status"] != "not run"]
    small = judged["reason"].astype(str).str.startswith("too small")
    if small.all():
        why = sorted({w for r in judged["reason"] for w in str(r).split(": ", 1)[1].split(", ")})
        return (
            f"CANNOT JUDGE THE PAPER: {results} is too small a run ({', '.join(why)}): {checked} of {total} "
            f"claims inconclusive, {not_run}"
        )
    parts = []
    for status in ("confirmed", "contradicted", "inconclusive"):
        rows = judged[judged["status"] == status]
        if rows.empty:
            continue
        names = "; ".join(rows["claim"]) if len(rows) <= 4 else f"{len(rows)} claims, see verdict.md"
        parts.append(f"{len(rows)} {status} ({names})")
    return f"VERDICT: {checked} of {total} paper claims checked on {results}: " + ", ".join(parts) + f"; {not_run}"


CLAIM_VIEW = [
    ("claim", "claim"),
    ("statement", "the paper says"),
    ("paper", "paper's numbers"),
    ("status", "verdict"),
    ("reason", "why"),
    ("n_seeds", "n"),
    ("mean", "mean"),
    ("other_n_seeds", "other n"),
    ("other_mean", "other mean"),
    ("p_holm", "Holm p"),
]
SEARCH_VIEW = [
    ("testproblem", "problem"),
    ("optimizer", "optimizer"),
    ("reference", "reference"),
    ("setting", "chosen setting"),
    ("reference_setting", "reference setting"),
    ("n_seeds", "n"),
    ("mean", "mean"),
    ("reference_n_seeds", "ref. n"),
    ("reference_mean", "ref. mean"),
    ("difference", "difference"),
    ("combined_se", "combined SE"),
    ("outcome_equivalent", f"outcome within {K_SE:g} SE"),
    ("same_setting", "same setting"),
    ("note", "note"),
]


def _yes_no(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    frame = frame.copy()
    for col in columns:
        frame[col] = frame[col].map(lambda v: "yes" if v is True or v == 1 else "no")
    return frame


RULES = (
    f"Comparisons: Welch's t-test over seeds, Holm-adjusted over the comparisons judged, and the BCa 95% "
    f"interval of the difference; confirmed / contradicted when the adjusted p < {ALPHA:g} and the interval "
    f"excludes 0 (in / against the claimed direction), else inconclusive. Too small to judge: fewer than "
    f"{MIN_SEEDS} seeds or fewer epochs than the paper's (the problem's DeepOBS default), and for the power "
    f"claims fewer than {PAPER_BUDGET} search samples. Power: confirmed when the paper's p* is chosen; "
    f"another power is inconclusive when its outcome is within the paper's mean ± {K_SE:g} SE (a tie), "
    "contradicted otherwise."
)


def claims_markdown(claims: pd.DataFrame) -> str:
    """The judged claims (those not run only counted) as Markdown."""
    judged = claims[claims["status"] != "not run"].copy()
    lines = [RULES, ""]
    if not judged.empty:
        lines.append(markdown_table(judged, [c for c, _ in CLAIM_VIEW], [h for _, h in CLAIM_VIEW]))
    not_run = claims[claims["status"] == "not run"]
    if not not_run.empty:
        problems = sorted(set(not_run["testproblem"]))
        lines.append(
            f"{len(not_run)} claims not run (no search with reruns in these results), on: {', '.join(problems)}."
        )
    return "\n".join(lines) + "\n"


def render(
    claims: pd.DataFrame, searches: pd.DataFrame, line: str, results: str, reference: str | None, protocol: str | None
) -> str:
    shown = _yes_no(searches.assign(optimizer=searches["optimizer"].map(label)), ("same_setting", "outcome_equivalent"))
    refs = ([f"the tree `{reference}`"] if reference else []) + (
        [f"the paper's numbers (`{protocol}` §5)"] if protocol else []
    )
    return "\n".join(
        [
            "# Verdict",
            "",
            f"**{line}**",
            "",
            f"Results `{results}`.",
            "",
            "## The paper's claims",
            "",
            claims_markdown(claims),
            "## Per search: outcome and chosen setting",
            "",
            f"Against {' and '.join(refs) or 'no reference'}. Outcome within {K_SE:g} SE: |difference| <= "
            f"{K_SE:g}·sqrt(SE² + SE_ref²), SE = population std / sqrt(n - 1). Same setting: the chosen "
            "hyperparameters agree at folder-token precision; a different, statistically tied setting winning the "
            "random search is informative, not a failure.",
            "",
            markdown_table(shown, [c for c, _ in SEARCH_VIEW], [h for _, h in SEARCH_VIEW]),
        ]
    )


def write_verdict(
    out: Path,
    claims: pd.DataFrame,
    searches: pd.DataFrame,
    line: str,
    results: str,
    reference: str | None,
    protocol: str | None,
) -> list[Path]:
    """verdict.csv (claims), verdict_searches.csv and verdict.md under ``out`` (each written atomically)."""
    out = Path(out)
    write_atomic(out / "verdict.csv", claims.to_csv(index=False, float_format="%.17g"))
    write_atomic(out / "verdict_searches.csv", searches.to_csv(index=False, float_format="%.17g"))
    write_atomic(out / "verdict.md", render(claims, searches, line, results, reference, protocol))
    return [out / "verdict.csv", out / "verdict_searches.csv", out / "verdict.md"]


def evaluate(
    summary: pd.DataFrame,
    protocol: Path | None,
    reference_summary: pd.DataFrame | None = None,
    reference_name: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(claims judged, per-search table, the paper table or None) for a summary."""
    paper = paper_table(protocol) if protocol is not None else None
    if paper is not None and paper.empty:
        paper = None
    claims = judge(paper_claims(paper), summary, paper)
    searches = search_table(summary, reference_summary, reference_name, paper)
    return claims, searches, paper


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line (reported by main through fail), no usage dump
        raise UsageError(f"{message} {help_hint(self.prog)}")


def main(argv: list[str] | None = None) -> int:
    """0 with the verdict written; 2 with one ``error:`` line (``deepobs_tree.fail``) on bad input."""
    try:
        return _main(argv)
    except NlwuError as err:  # UsageError, AnalysisError, ...
        return fail(err)


def _main(argv: list[str] | None) -> int:
    parser = _Parser(
        prog=os.environ.get("NLWU_PROG", "python -m analysis.verdict"), description=__doc__.splitlines()[0]
    )
    parser.add_argument("results", help="the reproduction's DeepOBS tree")
    parser.add_argument(
        "--reference",
        default=None,
        help="a DeepOBS tree to compare each search with (e.g. deepobs_results_medium_budget)",
    )
    parser.add_argument(
        "--paper",
        default=None,
        metavar="PROTOCOL_MD",
        help="protocol.md holding the paper's §5 table (default: $NLWU_PROTOCOL or "
        "../shared/spec/protocol.md beside the checkout)",
    )
    parser.add_argument("--out", default="reports", help="folder for verdict.md / verdict.csv")
    args = parser.parse_args(argv)
    for root in [args.results] + ([args.reference] if args.reference else []):
        if not Path(root).is_dir():
            what = "is not a folder" if Path(root).exists() else "does not exist"
            return fail(f"results path '{root}' {what}: pass the root of a DeepOBS results tree")
    ours = summarize(load_runs([args.results], progress=False))
    ref = summarize(load_runs([args.reference], progress=False)) if args.reference else None
    protocol = Path(args.paper) if args.paper else default_protocol()
    claims, searches, paper = evaluate(ours, protocol, ref, args.reference or "")
    if paper is None:
        print(
            f"note: no paper table found{f' in {protocol}' if protocol else ''}; the claims are listed without "
            "the paper's numbers and no chosen power is judged",
            file=sys.stderr,
        )
    line = headline(claims, args.results)
    try:
        write_verdict(
            Path(args.out),
            claims,
            searches,
            line,
            args.results,
            args.reference,
            str(protocol) if paper is not None else None,
        )
    except OSError as err:
        return fail(f"cannot write the verdict under '{args.out}': {err.strerror or err}")
    judged = claims[claims["status"] != "not run"]
    if not judged.empty:
        with pd.option_context("display.width", 220, "display.max_columns", 10, "display.max_colwidth", 90):
            print(judged[["claim", "status", "reason"]].to_string(index=False))
    print(f"wrote {args.out}/verdict.md, verdict.csv and verdict_searches.csv")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
