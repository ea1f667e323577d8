"""The run-spec <-> command line mapping, both directions: ``run_command`` writes the
``python -m runners run ...`` line of a RunSpec (emitted commands, failure records), ``spec_from_args``
reads one back into a RunSpec, and ``main_run`` is the ``run`` subcommand. No TensorFlow at import.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optimizers
from deepobs_tree import TUNING_SEED, NlwuError, UsageError, fail
from deepobs_tree.safe_io import os_error_text, short
from optimizers import PluginError, plugins
from runners.run import RunError, check_names, check_out, execute
from runners.spec import RunSpec


# ---------------------------------------------------------------------------------------------------------
# RunSpec -> command line
# ---------------------------------------------------------------------------------------------------------
def cli_token(value: Any) -> str:
    """A value as ``--hp name=<token>`` text that ``parse_value`` reads back (strings bare, else JSON)."""
    return json.dumps(value) if not isinstance(value, str) else value


def run_command(spec: RunSpec, out: str | Path, python: str = "python") -> str:
    """The shell command that performs one run with ``python -m runners run`` (SLURM arrays, GNU parallel)."""

    parts = [
        python,
        "-m",
        "runners",
        "run",
        *plugins.command_line_args(),
        "--problem",
        spec.testproblem,
        "--optimizer",
        spec.optimizer,
    ]
    for name, value in spec.hyperparams:
        parts += ["--hp", f"{name}={cli_token(value)}"]
    for name, value in spec.options:  # the run CLI routes option names (select, decay_on) to options
        parts += ["--hp", f"{name}={cli_token(value)}"]
    parts += ["--seed", str(spec.seed)]
    if spec.num_epochs is not None:
        parts += ["--epochs", str(spec.num_epochs)]
    if spec.batch_size is not None:
        parts += ["--batch-size", str(spec.batch_size)]
    if spec.weight_decay is not None:
        parts += ["--weight-decay", repr(float(spec.weight_decay))]
    if spec.fidelity != "deepobs":
        parts += ["--fidelity", spec.fidelity]
    if spec.train_log_interval != 10:
        parts += ["--train-log-interval", str(spec.train_log_interval)]
    if spec.data_dir is not None:
        parts += ["--data-dir", str(spec.data_dir)]
    parts += ["--out", str(out)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------------------------
# command line -> RunSpec: python -m runners run ...
# ---------------------------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """Command-line value: numbers as floats (DeepOBS' declared type; keeps folder tokens like '1.e+00'),
    true/false as bools, none/null as None, anything else as a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        raise RunError(f"value {short(text)} is not finite")
    return value


def parse_hp(items: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise RunError(f"--hp {short(item)}: expected name=value, e.g. --hp learning_rate=0.01")
        if name.strip() in result:
            raise RunError(f"--hp {short(name.strip())} given twice")
        result[name.strip()] = parse_value(value)
    return result


def split_hyperparams(optimizer: str, values: dict[str, Any]) -> tuple[dict, dict]:
    """(hyperparams, options): names the optimizer records or declares go to hyperparams, the rest
    (select rule, decay_on, ...) to options; both are passed to ``optimizers.make``."""

    ospec = optimizers.spec(optimizer)
    declared = set(ospec.hyperparams) | set(getattr(ospec, "defaults", {}) or {})
    hp = {k: v for k, v in values.items() if k in declared and k not in optimizers.OPTIONS}
    opts = {k: v for k, v in values.items() if k not in hp}
    return hp, opts


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def build_parser(prog: str = "python -m runners run", parser_class=argparse.ArgumentParser):
    p = parser_class(
        prog=prog, description="Train one test problem with one optimizer and write its DeepOBS result file."
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="plugin module or .py file registering optimizers (repeatable), imported before --optimizer is checked",
    )
    p.add_argument("--problem", required=True, help="test problem name (python -m testproblems info)")
    p.add_argument("--optimizer", required=True, help="optimizer name (folder name, e.g. PowKernelMomentumOptimizer)")
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="optimizer hyperparameter or option (repeatable), e.g. --hp learning_rate=0.01 --hp power=0.5",
    )
    p.add_argument("--seed", type=int, default=TUNING_SEED, help=f"random seed (default {TUNING_SEED})")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the problem's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the problem's)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="L2 factor in the loss (default: the problem's; recorded as passed)",
    )
    p.add_argument("--data-dir", default=None, help="data folder (default: $NLWU_DATA_DIR or ./data)")
    p.add_argument("--out", default="results", help="results root (default ./results)")
    p.add_argument("--fidelity", default="deepobs", help="data/model fidelity (default deepobs)")
    p.add_argument("--train-log-interval", type=int, default=10, help="minibatch-loss logging interval (10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    check_names(args.problem, args.optimizer)
    for name in ("epochs", "batch_size", "train_log_interval"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RunError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.weight_decay is not None and (not math.isfinite(args.weight_decay) or args.weight_decay < 0):
        raise RunError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise RunError(f"--data-dir {args.data_dir}: is a file, expected the data folder")
    hp, opts = split_hyperparams(args.optimizer, parse_hp(args.hp))
    if "learning_rate" not in hp:
        raise RunError("missing --hp learning_rate=VALUE (every optimizer needs a learning rate)")
    try:
        optimizers.resolve_hyperparams(args.optimizer, {**hp, **opts})
    except ValueError as exc:
        raise RunError(f"--hp: {exc}") from None
    try:
        return RunSpec(
            args.problem,
            args.optimizer,
            hp,
            seed=args.seed,
            num_epochs=args.epochs,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            data_dir=args.data_dir,
            fidelity=args.fidelity,
            train_log_interval=args.train_log_interval,
            options=opts,
        ).validate()
    except ValueError as exc:
        raise RunError(str(exc).splitlines()[0]) from None


def _load_plugins(refs: Sequence[str]) -> None:
    """``--plugin`` options: import each (once), build its optimizers once; a bad one is a RunError."""

    try:
        plugins.load_all(refs)
    except PluginError as exc:
        raise RunError(f"--plugin: {exc}") from None


#: longest error line a command prints (values inside are cut shorter by ``safe_io.short``)
MAX_ERROR = 1000


def main_run(argv: Sequence[str] | None = None, prog: str = "python -m runners run") -> int:
    """``run`` subcommand: 0 on success (prints the result path), 2 with one error line on bad input."""
    parser = build_parser(prog, parser_class=_Parser)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        _load_plugins(args.plugin)
        spec = spec_from_args(args)
        check_out(args.out)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        existed = spec.existing_result(args.out)

        t0 = time.perf_counter()
        path = execute(spec, args.out, progress=not args.no_progress)
        wall = time.perf_counter() - t0
    except ValueError as exc:  # RunError, SpecMismatch, a hyperparameter out of its range
        return fail(f"{prog.removeprefix('python -m ')}: {(str(exc).strip() or repr(exc))[:MAX_ERROR]}")
    except NlwuError as exc:  # UsageError, ...
        return fail(f"{prog.removeprefix('python -m ')}: {str(exc)[:MAX_ERROR]}")
    except OSError as exc:  # disk full, read-only or non-folder parent, permissions: nothing half-written stays
        where = f"cannot write {exc.filename}" if exc.filename else "cannot write the result"
        return fail(f"{prog.removeprefix('python -m ')}: {where}: {os_error_text(exc)}")
    if not args.no_progress:
        print(run_summary(path, None if existed else wall), file=sys.stderr)
    print(("exists: " if existed else "") + str(path))  # stdout: the file alone, for scripts
    return 0


def run_summary(path: Path, wall: float | None) -> str:
    """One line: the run's final test loss (and accuracy), epochs, wall time and file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        text = f"final test loss {float(data['test_losses'][-1]):.6g}"
        if data.get("test_accuracies"):
            text += f", test accuracy {float(data['test_accuracies'][-1]):.4f}"
        text += f" after {data['num_epochs']} epochs"
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        text = "result file unreadable"
    took = f"{wall:.1f} s" if wall is not None else "already there, not trained again"
    return f"done: {text} ({took}) -> {path}"
