"""``python -m analysis RESULTS... --out OUT [--baselines TREE...]``: tables and figures from DeepOBS trees."""

from __future__ import annotations

import argparse
import sys

from .loader import AnalysisError
from .select import DEFAULT_SEARCHED, MODES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, no usage dump
        print(f"error: {message} (see python -m analysis --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m analysis",
        description="Rebuild the paper's tables and figures from one or more DeepOBS results trees.",
    )
    parser.add_argument("results", nargs="+", help="root folder(s) of DeepOBS results trees")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--baselines", nargs="*", default=[], metavar="TREE",
                        help="DeepOBS trees of baseline runs (e.g. Crowded Valley's), compared with a Welch t-test")
    parser.add_argument("--tuning-seed", type=int, default=42, help="seed of the search runs (default 42)")
    parser.add_argument("--rerun-seeds", default="43-51", help="seeds of the reruns, e.g. 43-51 or 43,44 (default 43-51)")
    parser.add_argument("--searched", default=",".join(DEFAULT_SEARCHED),
                        help="hyperparameters a search varies (default learning_rate,power,momentum)")
    parser.add_argument("--mode", default="final",
                        help=f"selection: {', '.join(MODES)} (default final: the tuning run's final validation metric)")
    parser.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                        help="keep only runs with this hyperparameter value (folder-token precision); repeatable")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the parsed-table cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
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
    from .report import analyse, parse_seeds, write_report

    try:
        rerun_seeds = parse_seeds(args.rerun_seeds)
    except ValueError:
        parser.error(f"bad --rerun-seeds '{args.rerun_seeds}': write e.g. 43-51 or 43,44,45")
    searched = tuple(s.strip() for s in args.searched.split(",") if s.strip())
    try:
        analysis = analyse(args.results, args.baselines, tuning_seed=args.tuning_seed, rerun_seeds=rerun_seeds,
                           searched=searched, mode=args.mode, where=where, progress=not args.quiet,
                           cache=not args.no_cache)
        if analysis.summary.empty:
            raise AnalysisError("no run matches the given filters: relax --filter")
        written = write_report(analysis, args.out, figures=not args.no_figures, tuning_seed=args.tuning_seed)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write the report under '{args.out}': {err.strerror or err}", file=sys.stderr)
        return 2
    n_rows = len(analysis.summary)
    n_figs = sum(1 for p in written if p.suffix == ".png")
    print(f"wrote {args.out}/summary.csv, summary.md, summary.tex ({n_rows} rows), {n_figs} figures "
          f"(PNG+PDF), budget_curves.csv, performance_profile.csv, report.md and report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
