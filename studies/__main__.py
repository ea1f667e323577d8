"""``python -m runners run|sweep|status`` (also ``python -m studies``): the study pipeline's command line.

* ``run``: one training run (``runners.run.main_run``).
* ``sweep CONFIG``: tuning runs, selection (``analysis.select_best``), reruns and a summary, on the local pool
  (default), on Ray (``--backend ray``), or as shell commands (``--emit-commands``).
* ``status CONFIG``: done / running / failed / missing runs of the study in ``--out``.

Bad input (config, options, paths) prints one ``error:`` line and exits with 2 before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from deepobs_tree import NlwuError, UsageError, fail, make_target, provenance_file_name, result_file_name
from deepobs_tree.safe_io import name_problem, os_error_text, short
from optimizers import PluginError, plugins
from runners.commandline import main_run, run_command
from runners.config import load_study
from runners.executors import make_executor, population
from runners.executors.population_pool import wrap
from runners.ledger import STALE_AGE, LockPolicy, pending, state_dir
from runners.run import check_inside, check_out

DEFAULT_OUT = "deepobs_results_medium_budget"
PROG = "python -m runners"


def prog() -> str:
    """The command as typed: ``$NLWU_PROG`` (set by ``nlwu`` and the Makefile), else ``python -m runners``."""
    return os.environ.get("NLWU_PROG", PROG)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; under make, the target typed (not "make reproduce sweep")
        raise UsageError(f"{make_target() or self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short(text)}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {short(text)}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {short(text)}")
    return value


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="study file, e.g. configs/reproduce_default.yaml")
    p.add_argument("--preset", default=None, help="preset of the study file (e.g. smoke, medium)")
    p.add_argument("--out", default=None, help=f"results root (default: {DEFAULT_OUT})")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="plugin module or .py file registering optimizers (repeatable; also `plugins:` in the study)",
    )


def _lock_args(p: argparse.ArgumentParser, sweep: bool) -> None:
    p.add_argument(
        "--stale-lock-age",
        type=_positive_float,
        default=STALE_AGE,
        metavar="SECONDS",
        help="a lock of another host not touched for this long is stale (its holders touch it every "
        f"minute; default {STALE_AGE:g})",
    )
    if sweep:
        p.add_argument(
            "--break-stale-locks",
            action="store_true",
            help="take over the runs of stale locks (another host's sweep that is gone) instead of waiting for them",
        )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {short(text)}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {short(text)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog(), description="Runs, sweeps and their status (DeepOBS result trees).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", help="one training run (python -m runners run --help)", add_help=False)

    sw = sub.add_parser("sweep", help="tune, select and rerun every search of a study file")
    _study_args(sw)
    sw.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: a pool of long-lived worker processes (default); ray: one Ray task per run",
    )
    sw.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="local: worker processes (default: one per GPU, else one per core); "
        "ray: CPUs of the local cluster started when no --address is given",
    )
    sw.add_argument(
        "--threads-per-worker",
        type=_positive_int,
        default=None,
        help="local: TF/OpenMP threads per worker (default: cores // workers)",
    )
    sw.add_argument("--address", default=None, help="ray: address of a running cluster (e.g. auto, ray://host:10001)")
    sw.add_argument("--cpus-per-run", type=_nonneg_float, default=1.0, help="ray: CPUs per run (default 1)")
    sw.add_argument("--gpus-per-run", type=_nonneg_float, default=0.0, help="ray: GPUs per run (default 0)")
    sw.add_argument(
        "--max-retries", type=int, default=None, help="retries of a run whose worker died (default: local 1, ray 3)"
    )
    sw.add_argument(
        "--memory-per-run",
        type=_nonneg_float,
        default=0.0,
        metavar="GB",
        help="ray: memory per run in GB (default 0: not reserved)",
    )
    _lock_args(sw, sweep=True)
    sw.add_argument(
        "--emit-commands",
        action="store_true",
        help="print one `python -m runners run ...` line per pending run instead of running "
        "(tuning runs first; once they are all done, the reruns)",
    )
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")
    sw.add_argument(
        "--population",
        type=_population,
        default=None,
        help="runs trained together as one jitted jax program: N per population (1 = one run at a "
        "time, the per-run path), or auto (default: per problem and device, docs/population.md; "
        "env POPULATION)",
    )

    st = sub.add_parser("status", help="done / running / failed / missing runs of a study")
    _study_args(st)
    st.add_argument("-v", "--verbose", action="store_true", help="list every run that is not done")
    _lock_args(st, sweep=False)
    return parser


def _population(text: str) -> int | None:
    if text.strip() == "auto":
        return None
    return _positive_int(text)


def _load(args):
    out = check_out(Path(args.out or DEFAULT_OUT))  # before the study: a bad --out fails fast
    try:
        plugins.load_all(args.plugin)  # before the study names their optimizers
    except PluginError as exc:
        raise UsageError(f"--plugin: {exc}") from None
    study = load_study(args.config, preset=args.preset)
    state = state_dir(out)
    if os.path.lexists(state) and not state.is_dir():
        raise UsageError(
            f"{state} is not a folder: it is where sweeps keep their locks and failure records; "
            "move that file away (or choose another --out)"
        )
    for folder, spec in sorted(
        {spec.setting_dir(out): spec for spec in study.tuning_specs()}.items(), key=lambda item: str(item[0])
    ):
        # the longest name written there: the provenance file's temp file
        problem = name_problem(folder / f".{provenance_file_name(result_file_name(spec.seed))}.12345678.tmp")
        if problem:
            raise UsageError(
                f"{spec.label()[:200]}: cannot write its results under {short(str(folder), 120)}: "
                f"{problem}; use shorter option values or a shorter --out"
            )
        check_inside(out, folder)  # no result may land outside --out through a symlink
    return study, out


def _sweep(args) -> int:
    from studies.sweep import run_sweep, study_specs  # the sweep imports the analysis (pandas): not for `run`

    if args.address and args.backend != "ray":
        raise UsageError("--address needs --backend ray")
    if args.max_retries is not None and args.max_retries < 0:
        raise UsageError(f"--max-retries must be >= 0, got {args.max_retries}")
    if args.backend == "ray" and not args.emit_commands:
        try:
            import ray  # noqa: F401 - optional: only to report that Ray is missing
        except ImportError:
            raise UsageError("--backend ray needs the ray package (pip install 'ray[default]')") from None
    study, out = _load(args)
    if args.emit_commands:
        tuning, reruns, unselected = study_specs(study, out)
        todo = pending(tuning, out)
        phase = "tuning"
        if not todo:
            todo, phase = pending(reruns, out), "rerun"
        for spec in todo:
            print(run_command(spec, out))
        note = f"# {len(todo)} pending {phase} run(s)"
        if phase == "tuning" and todo:
            note += "; run them, then emit again for the reruns"
        elif unselected:
            note += f"; {unselected} search(es) cannot be selected yet"
        print(note, file=sys.stderr)
        return 0
    executor = make_executor(
        args.backend,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        address=args.address,
        num_cpus=args.cpus_per_run,
        num_gpus=args.gpus_per_run,
        max_retries=args.max_retries,
        memory_gb=args.memory_per_run,
    )
    executor.lock_policy = LockPolicy(stale_age=args.stale_lock_age, break_stale=args.break_stale_locks)
    try:
        executor = wrap(executor, args.population)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return run_sweep(study, out, executor, progress=not args.no_progress)


def _status(args) -> int:
    from studies.status import format_status  # status imports the analysis (pandas): not for `run`

    study, out = _load(args)
    print(format_status(study, out, verbose=args.verbose, policy=LockPolicy(stale_age=args.stale_lock_age)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backend = population.keras_backend_for_device()  # before Keras is imported; workers inherit it
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    if argv and argv[0] == "run":
        return main_run(argv[1:], prog=f"{prog()} run")

    try:
        args = build_parser().parse_args(argv)
        if args.command == "sweep":
            return _sweep(args)
        return _status(args)
    except NlwuError as exc:  # ConfigError, BackendError, RunError, SpecMismatch, UsageError, ...
        return fail(exc)
    except OSError as exc:  # a full disk, a read-only folder, no permission: one line, nothing half-written
        if argv[:1] == ["sweep"]:
            where = f"cannot write {exc.filename}" if exc.filename else "cannot write the results"
            return fail(
                f"{where}: {os_error_text(exc)}; the sweep stopped, every finished result is kept: "
                "fix it and rerun the same command to resume"
            )
        return fail(f"{exc.filename or 'the results tree'}: {os_error_text(exc)}")
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
