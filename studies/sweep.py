"""A sweep: the paper's protocol for every search of a study file (protocol.md §3-5).

1. plan: every tuning run of every search (``Study.tuning_specs``), each with a stable run id;
2. run the pending tuning runs on an executor (results already in the tree are skipped);
3. select the best setting of each search with ``analysis.select_best`` on exactly that search's tuning runs;
4. rerun the chosen setting with the rerun seeds (the tuning spec with only the seed changed, so the reruns
   land in the chosen setting's folder);
5. print the summary (``analysis.summarize``) of the study's runs.

Everything is recomputed from the results tree, so an interrupted sweep resumes where it stopped, on any
backend. Functions here are pure apart from ``run_sweep`` (executes) and the printing helpers.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from analysis import AnalysisError, load_runs, select_best, summarize
from deepobs_tree import NlwuError, extra_tokens
from runners.config import Search, Study
from runners.spec import RunSpec

SUMMARY_COLUMNS = (
    "testproblem",
    "optimizer",
    "learning_rate",
    "power",
    "momentum",
    "weight_decay_opt",
    "n_samples",
    "n_seeds",
    "metric",
    "final_test_mean",
    "final_test_std",
    "tie",
)


class SweepError(NlwuError, RuntimeError):
    """The sweep could not complete (failed runs); the message says which and where the errors are."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """A search's selected setting: the tuning spec that won and the ``select_best`` result."""

    entry: Search
    spec: RunSpec
    chosen: dict[str, Any]

    def rerun_specs(self) -> list[RunSpec]:
        return [self.spec.replace(seed=seed) for seed in self.entry.rerun_seeds if seed != self.spec.seed]


def search_label(entry: Search) -> str:
    return f"{entry.problem}/{entry.optimizer}"


def load_results(out: str | Path, warn: bool = True):
    """The results tree as ``analysis.load_runs`` reads it, or None when it holds no result yet. ``warn``:
    one warning line per file or folder it skips (the sweep warns once, on its first read)."""
    try:
        return load_runs([out], progress=False, cache=False, warn=warn)
    except AnalysisError:
        return None


def _relpaths(specs: Sequence[RunSpec], out: Path) -> dict[str, RunSpec]:
    """relpath (as load_runs reports it) -> spec, for the specs that have a result."""
    found = {}
    for spec in specs:
        path = spec.existing_result(out)
        if path is not None:
            found[str(path.relative_to(out))] = spec
    return found


def choose(entry: Search, runs, out: str | Path) -> Choice | None:
    """Select the best setting of one search (None until every tuning run has a result).

    ``analysis.select_best`` sees only this search's tuning runs, so other runs in the same tree (other
    presets, other searches of the same pair, foreign files) never influence the choice.
    """
    out = Path(out)
    specs = entry.tuning_specs()
    by_rel = _relpaths(specs, out)
    if runs is None or len(by_rel) < len(specs):
        return None
    mine = runs[runs["relpath"].isin(list(by_rel))]
    chosen = select_best(mine, entry.problem, entry.optimizer, tuning_seed=entry.tuning_seed, searched=entry.searched)
    if chosen is None:
        return None
    winners = [by_rel[run["relpath"]] for run in chosen["runs"]]
    if len(winners) != 1:
        raise SweepError(
            f"{search_label(entry)}: the chosen setting {chosen['setting']} matches {len(winners)} "
            "tuning runs of this search (expected 1)"
        )
    return Choice(entry=entry, spec=winners[0], chosen=chosen)


def selections(study: Study, out: str | Path, runs=None) -> dict[int, Choice | None]:
    """entry index -> Choice (None where the search's tuning runs are not all there)."""
    if runs is None:
        runs = load_results(out)
    return {i: choose(entry, runs, out) for i, entry in enumerate(study.entries)}


def study_specs(study: Study, out: str | Path, runs=None) -> tuple[list[RunSpec], list[RunSpec], int]:
    """(tuning specs, rerun specs of the searches selected so far, number of searches not yet selectable)."""
    tuning = study.tuning_specs()
    choices = selections(study, out, runs)
    reruns = [spec for choice in choices.values() if choice is not None for spec in choice.rerun_specs()]
    return tuning, reruns, sum(choice is None for choice in choices.values())


def summary_table(study: Study, out: str | Path, choices: dict[int, Choice | None] | None = None):
    """``analysis.summarize`` of the study's runs only (one row per search); ``choices`` (from
    ``selections``) saves selecting each search again."""
    out = Path(out)
    runs = load_results(out, warn=False)  # the sweep warned on its first read
    if runs is None:
        return pd.DataFrame()
    tables = []
    for i, entry in enumerate(study.entries):
        choice = choose(entry, runs, out) if choices is None else choices[i]
        specs = entry.tuning_specs() + (choice.rerun_specs() if choice else [])
        rel = _relpaths(specs, out)
        mine = runs[runs["relpath"].isin(list(rel))]
        if mine.empty:
            continue
        table = summarize(mine, tuning_seed=entry.tuning_seed, rerun_seeds=entry.rerun_seeds, searched=entry.searched)
        tables.append(table.assign(search_index=i))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def format_summary(table) -> str:
    if table is None or table.empty:
        return "(no results yet)"
    table = table.assign(folder_tokens=[_folder_tokens(row) for _, row in table.iterrows()])
    cols = [c for c in (*SUMMARY_COLUMNS, "folder_tokens") if c in table.columns and not table[c].isna().all()]
    return tabulate(table[cols], headers="keys", showindex=False, floatfmt=".6g")


def _folder_tokens(row) -> str | None:
    """The setting folder's tokens that no column shows (a PowKernel run's provenance-only momentum,
    ``select``, ``fidelity``, ...), as ``name=value``: without them two searches of a momentum axis print
    identical rows. None when there are none."""
    shown = {c: True for c in row.index if c in SUMMARY_COLUMNS and pd.notna(row[c])}
    extras = extra_tokens(str(row.get("setting", "")), shown)
    return " ".join(f"{k}={v}" for k, v in extras.items()) or None


def run_sweep(study: Study, out: str | Path, executor, *, progress: bool = True, log=None) -> int:
    """Tuning runs -> selection -> reruns -> summary. Returns 0, or 1 if some run failed (the others are
    complete; failures are recorded under ``<out>/.nlwu/failed`` and listed by ``python -m runners status``)."""
    out = Path(out)
    log = log or sys.stderr
    tuning = study.tuning_specs()
    print(
        f"sweep {study.name}{f' (preset {study.preset})' if study.preset else ''}: "
        f"{len(study.entries)} searches, {len(tuning)} tuning runs -> {out}",
        flush=True,
    )
    with executor:
        return _run_sweep(study, out, executor, tuning, progress, log)


def _run_sweep(study, out, executor, tuning, progress, log) -> int:
    report = executor.run(tuning, out, desc="tuning", progress=progress)
    failed = dict(report.failed)

    runs = load_results(out)
    choices = selections(study, out, runs)
    reruns: list[RunSpec] = []
    for i, entry in enumerate(study.entries):
        choice = choices[i]
        if choice is None:
            print(f"  {search_label(entry)}: not selected (tuning runs missing or failed)", file=log)
            continue
        tie = " (tie: first in folder order)" if choice.chosen.get("tie") else ""
        print(
            f"  {search_label(entry)}: chose {choice.chosen['setting']} (score {choice.chosen['score']:.6g}){tie}",
            file=log,
        )
        reruns += choice.rerun_specs()
    if reruns:
        report = executor.run(reruns, out, desc="reruns", progress=progress)
        failed.update(report.failed)

    print(format_summary(summary_table(study, out, choices)))
    if failed:
        print(
            f"{len(failed)} run(s) failed; details in {out / '.nlwu' / 'failed'} "
            f"(python -m runners status {study.path} --out {out})",
            file=log,
        )
        return 1
    return 0
