"""``python -m analysis RESULTS... --out OUT [--baselines TREE...]``: tables and figures from DeepOBS trees."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

import optimizers
from deepobs_tree import RERUN_SEEDS, TUNING_SEED, NlwuError, UsageError, fail, help_hint
from deepobs_tree.safe_io import name_problem, os_error_text, short
from optimizers import plugins

from .loader import AnalysisError
from .report import analyse, parse_seeds, write_report
from .select import DEFAULT_SEARCHED, MODES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line (reported by main through fail), no usage dump
        message = message if len(message) <= 600 else message[:600] + "... (cut)"  # a user value is unbounded
        raise UsageError(f"{message} {help_hint(self.prog)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=os.environ.get("NLWU_PROG", "python -m analysis"),
        description="Rebuild the paper's tables and figures from one or more DeepOBS results trees.",
    )
    parser.add_argument("results", nargs="+", help="root folder(s) of DeepOBS results trees")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=[],
        metavar="TREE",
        help="DeepOBS trees of baseline runs (e.g. Crowded Valley's), compared with a Welch t-test",
    )
    reruns = f"{RERUN_SEEDS[0]}-{RERUN_SEEDS[-1]}"
    parser.add_argument(
        "--tuning-seed", type=int, default=TUNING_SEED, help=f"seed of the search runs (default {TUNING_SEED})"
    )
    parser.add_argument(
        "--rerun-seeds", default=reruns, help=f"seeds of the reruns, e.g. 43-51 or 43,44 (default {reruns})"
    )
    parser.add_argument(
        "--searched",
        default=None,
        help="hyperparameters a search varies (default learning_rate,power,momentum and what "
        "the plugins' optimizers search)",
    )
    parser.add_argument(
        "--mode",
        default="final",
        help=f"selection: {', '.join(MODES)} (default final: the tuning run's final validation metric)",
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keep only runs with this hyperparameter value (folder-token precision); repeatable",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import an optimizer plugin (dotted module or .py path) for its labels and baseline flags; repeatable",
    )
    parser.add_argument(
        "--paper",
        default=None,
        metavar="PROTOCOL_MD",
        help="protocol.md with the paper's §5 table, for the verdict section (default: $NLWU_PROTOCOL "
        "or ../shared/spec/protocol.md beside the checkout, if present)",
    )
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the caches (parsed runs, derived tables, figures)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def out_problem(out: str) -> str | None:
    """Why the report cannot be written under ``out`` (checked before any work), or None."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        return f"--out '{out}' is a file, not a folder: pass a folder for the report"
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            return f"--out '{out}': '{existing}' is a dangling symlink"
        existing = existing.parent
    if not existing.is_dir():
        return f"--out '{out}': '{existing}' is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out '{out}': folder '{existing}' is not writable"
    return None


def _searched(text: str | None, plugin_refs: list[str]) -> tuple[str, ...]:
    """--searched, or the default plus every hyperparameter the loaded plugins' optimizers search by default;
    a bad plugin raises its ``PluginError`` (one error line, exit code 2, from main)."""
    names = list(DEFAULT_SEARCHED)
    if plugin_refs:
        loaded = plugins.load_all(plugin_refs, validate=False)
        names += [n for p in loaded for o in p.optimizers for n in optimizers.spec(o).search if n not in names]
    if text is not None:
        return tuple(s.strip() for s in text.split(",") if s.strip())
    return tuple(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    """0 with the report written; 2 with one ``error:`` line (``deepobs_tree.fail``) on bad input."""
    try:
        return _main(argv)
    except NlwuError as err:  # UsageError, AnalysisError, PluginError, ...
        return fail(err)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode not in MODES:
        parser.error(f"unknown mode '{args.mode}': use one of {', '.join(MODES)}")
    where = {}
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            parser.error(f"bad --filter '{item}': write NAME=VALUE, e.g. --filter power=0.5")
        where[name.strip()] = value.strip()
    try:
        rerun_seeds = parse_seeds(args.rerun_seeds)
    except ValueError:
        parser.error(
            f"bad --rerun-seeds '{args.rerun_seeds}': write an increasing range or a list, e.g. 43-51 or 43,44,45"
        )
    for path, what in ((args.out, "--out"), *((r, "results path") for r in [*args.results, *args.baselines])):
        if (problem := name_problem(path)) is not None:  # before any stat could fail with ENAMETOOLONG
            return fail(f"{what} {short(str(path), 120)}: {problem}")
    problem = out_problem(args.out)
    if problem:
        parser.error(problem)
    for root in [*args.results, *args.baselines]:  # all of them before any parsing (and cache writing)
        if not Path(root).is_dir():
            what = "is not a folder" if Path(root).exists() else "does not exist"
            return fail(f"results path '{str(root)[:300]}' {what}: pass the root of a DeepOBS results tree")
    searched = _searched(args.searched, args.plugin)
    try:
        analysis = analyse(
            args.results,
            args.baselines,
            tuning_seed=args.tuning_seed,
            rerun_seeds=rerun_seeds,
            searched=searched,
            mode=args.mode,
            where=where,
            progress=not args.quiet,
            cache=not args.no_cache,
        )
        if analysis.summary.empty:
            raise AnalysisError("no run matches the given filters: relax --filter")
        written = write_report(
            analysis,
            args.out,
            figures=not args.no_figures,
            tuning_seed=args.tuning_seed,
            protocol=Path(args.paper) if args.paper else "default",
        )
    except OSError as err:  # a full disk, a read-only folder, no permission: the report is left as it was
        where = f" ({err.filename})" if err.filename else ""
        return fail(f"cannot write the report under '{args.out}'{where}: {os_error_text(err)}")
    n_rows = len(analysis.summary)
    n_figs = sum(1 for p in written if p.suffix == ".png")
    names = {p.name for p in written}
    extra = [n for n in ("comparison.csv", "budget_curves.csv", "performance_profile.csv") if n in names]
    print(
        f"wrote {args.out}/summary.csv, summary.md, summary.tex ({n_rows} rows), {n_figs} figures "
        f"(PNG+PDF), {', '.join(extra + ['verdict.md'])}, report.md and report.html"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
