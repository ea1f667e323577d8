"""Did a reproduction reproduce? ``python -m analysis.verdict RESULTS --reference TREE [--paper PROTOCOL.md]
--out OUT`` writes ``OUT/verdict.md`` and ``OUT/verdict.csv`` and prints the table and a one-line verdict.

For every search of RESULTS (its main search per (problem, optimizer), ``tables.main_rows``), side by side
with the same (problem, optimizer, search) of the reference tree (by default the committed
``deepobs_results_medium_budget/``) and, where the paper has the pair, with the paper's released numbers
(the reference table of ``protocol.md`` §5, read at run time from ``../shared/spec/protocol.md``; nothing
of the paper's data is stored here):

* ``same_setting``: the chosen hyperparameters (learning_rate, power, momentum, weight_decay_opt) agree at
  folder-token precision (``deepobs_tree.format_value``);
* ``within_2se``: |mean - reference mean| <= 2·sqrt(se² + se_ref²), se = population std / sqrt(n - 1)
  (= the sample std / sqrt(n)); with both se = 0 (or unknown, n = 1) only an equal mean counts as within;
* ``reproduced``: both. The overall verdict: REPRODUCED when every comparison is, otherwise NOT REPRODUCED
  with the counts per reference and what differs. The command exits 0 either way (2 only for bad input).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from deepobs_tree import format_value, write_atomic

from .tables import SHORT_NAMES, main_rows, markdown_table, short_name

COMPARED_HP = ("learning_rate", "power", "momentum", "weight_decay_opt")
COLUMNS = ["testproblem", "optimizer", "search", "reference", "setting", "reference_setting", "same_setting",
           "n_seeds", "mean", "se", "reference_n_seeds", "reference_mean", "reference_se", "difference",
           "combined_se", "within_2se", "reproduced", "note"]


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
            rows.append({"testproblem": problem, "optimizer": by_short[cells[1]], "learning_rate": float(cells[3]),
                         "power": float(cells[4]),
                         "weight_decay_opt": float(cells[5]) if cells[5] not in ("–", "-", "") else None,
                         "n": int(cells[6]), "mean": float(cells[8]), "std": float(cells[9])})
        except ValueError:
            continue
    return pd.DataFrame(rows, columns=columns)


def _compare(ours: pd.Series, reference: str, ref_hp: dict, ref_n: int, ref_mean: float, ref_std: float,
             note: str = "") -> dict:
    hp = dict(ours["optimizer_hyperparams"])
    same = all(_token(hp.get(k)) == _token(ref_hp.get(k)) for k in COMPARED_HP)
    n = int(ours["n_seeds"])
    se, ref_se = standard_error(ours["final_test_std"], n), standard_error(ref_std, ref_n)
    diff = float(ours["final_test_mean"]) - float(ref_mean)
    combined = math.sqrt(se**2 + ref_se**2) if math.isfinite(se) and math.isfinite(ref_se) else math.nan
    if math.isfinite(combined) and combined > 0:
        within = abs(diff) <= 2 * combined
    else:
        within = bool(math.isfinite(diff) and abs(diff) <= 1e-12 * max(1.0, abs(float(ref_mean))))
    return {"testproblem": ours["testproblem"], "optimizer": ours["optimizer"], "search": ours["search"],
            "reference": reference, "setting": setting_text(hp), "reference_setting": setting_text(ref_hp),
            "same_setting": bool(same), "n_seeds": n, "mean": float(ours["final_test_mean"]), "se": se,
            "reference_n_seeds": int(ref_n), "reference_mean": float(ref_mean), "reference_se": ref_se,
            "difference": diff, "combined_se": combined, "within_2se": bool(within),
            "reproduced": bool(same and within), "note": note}


def verdict(summary: pd.DataFrame, reference_summary: pd.DataFrame, reference_name: str,
            paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (search of ``summary``, reference): the committed tree and, where it has the pair, the
    paper. A search the reference tree lacks is a row with reference NaNs, not reproduced."""
    rows = []
    ours_main = main_rows(summary[summary["n_seeds"] > 0])
    ref_main = main_rows(reference_summary[reference_summary["n_seeds"] > 0]) if not reference_summary.empty \
        else reference_summary
    for _, row in ours_main.iterrows():
        match = ref_main[(ref_main["testproblem"] == row["testproblem"]) & (ref_main["optimizer"] == row["optimizer"])
                         & (ref_main["search"] == row["search"])] if not ref_main.empty else ref_main
        if match.empty:
            rows.append({"testproblem": row["testproblem"], "optimizer": row["optimizer"], "search": row["search"],
                         "reference": reference_name, "setting": setting_text(dict(row["optimizer_hyperparams"])),
                         "same_setting": False, "n_seeds": int(row["n_seeds"]), "mean": row["final_test_mean"],
                         "within_2se": False, "reproduced": False, "note": "no such search in the reference"})
        else:
            ref = match.iloc[0]
            note = ""
            if (int(ref["num_epochs"]), int(ref["batch_size"])) != (int(row["num_epochs"]), int(row["batch_size"])):
                note = (f"epochs/batch {row['num_epochs']}/{row['batch_size']} vs reference "
                        f"{ref['num_epochs']}/{ref['batch_size']}")
            rows.append(_compare(row, reference_name, dict(ref["optimizer_hyperparams"]), int(ref["n_seeds"]),
                                 ref["final_test_mean"], ref["final_test_std"], note))
        if paper is not None and not paper.empty:
            pmatch = paper[(paper["testproblem"] == row["testproblem"]) & (paper["optimizer"] == row["optimizer"])]
            if not pmatch.empty:
                p = pmatch.iloc[0]
                hp = {"learning_rate": p["learning_rate"], "power": p["power"]}
                if not _missing(p["weight_decay_opt"]):
                    hp["weight_decay_opt"] = p["weight_decay_opt"]
                rows.append(_compare(row, "paper (protocol.md §5)", hp, int(p["n"]), p["mean"], p["std"],
                                     "paper numbers printed to 4-6 significant digits"))
    return pd.DataFrame(rows, columns=COLUMNS)


def overall(table: pd.DataFrame, results: str) -> str:
    """The one-line verdict."""
    if table.empty:
        return f"NOT REPRODUCED: {results} has no reported search to compare"
    parts = [f"{int(g['reproduced'].sum())}/{len(g)} searches match {ref}"
             for ref, g in table.groupby("reference", sort=False)]
    ok = bool(table["reproduced"].all())
    misses = table[~table["reproduced"]]
    detail = "" if ok else " (differ: " + ", ".join(
        f"{r.testproblem}/{short_name(r.optimizer)} vs {r.reference.split(' ')[0]}"
        f" [{'setting' if not r.same_setting else 'mean beyond 2 SE'}]" for r in misses.itertuples()) + ")"
    return f"{'REPRODUCED' if ok else 'NOT REPRODUCED'}: {results}: " + "; ".join(parts) + detail


VIEW = [("testproblem", "problem"), ("optimizer", "optimizer"), ("reference", "reference"),
        ("setting", "chosen setting"), ("reference_setting", "reference setting"), ("same_setting", "same"),
        ("n_seeds", "n"), ("mean", "mean"), ("reference_n_seeds", "ref. n"), ("reference_mean", "ref. mean"),
        ("difference", "difference"), ("combined_se", "combined SE"), ("within_2se", "within 2 SE"),
        ("reproduced", "reproduced"), ("note", "note")]


def render(table: pd.DataFrame, line: str, results: str, reference: str, protocol: str | None) -> str:
    shown = table.copy()
    shown["optimizer"] = shown["optimizer"].map(short_name)
    for col in ("same_setting", "within_2se", "reproduced"):
        shown[col] = shown[col].map(lambda v: "yes" if v else "no")
    return "\n".join([
        "# Verdict", "", f"**{line}**", "",
        f"Results `{results}` against the committed tree `{reference}`"
        + (f" and the paper's numbers (`{protocol}` §5)" if protocol else "") + ". Same setting: the chosen "
        "hyperparameters agree at folder-token precision; within 2 SE: |difference| <= 2·sqrt(SE² + SE_ref²), "
        "SE = population std / sqrt(n - 1).", "",
        markdown_table(shown, [c for c, _ in VIEW], [h for _, h in VIEW])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.verdict", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the reproduction's DeepOBS tree")
    parser.add_argument("--reference", default="deepobs_results_medium_budget", help="the committed tree")
    parser.add_argument("--paper", default=None, metavar="PROTOCOL_MD",
                        help="protocol.md holding the paper's §5 table (e.g. ../shared/spec/protocol.md)")
    parser.add_argument("--out", default="reports", help="folder for verdict.md / verdict.csv")
    args = parser.parse_args(argv)
    from .loader import AnalysisError
    from .report import analyse

    try:
        ours = analyse([args.results], progress=False).summary
        ref = analyse([args.reference], progress=False).summary
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paper = paper_table(Path(args.paper)) if args.paper else None
    if args.paper and (paper is None or paper.empty):
        print(f"note: no paper table found in {args.paper}; comparing with {args.reference} only", file=sys.stderr)
        paper = None
    table = verdict(ours, ref, args.reference, paper)
    line = overall(table, args.results)
    out = Path(args.out)
    write_atomic(out / "verdict.csv", table.to_csv(index=False, float_format="%.17g"))
    write_atomic(out / "verdict.md", render(table, line, args.results, args.reference,
                                            args.paper if paper is not None else None))
    shown = table.assign(optimizer=table["optimizer"].map(short_name))
    cols = ["testproblem", "optimizer", "reference", "same_setting", "mean", "reference_mean", "within_2se",
            "reproduced"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(shown[cols].to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"wrote {out / 'verdict.md'} and {out / 'verdict.csv'}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
