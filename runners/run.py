"""One training run, written exactly as a DeepOBS 1.2 result file (deepobs-format §1-2).

``execute(spec, out)`` builds the test problem, its model, the optimizer and the trainer, evaluates
train-eval, validation and test at epoch 0 and after every epoch (in that order, as DeepOBS' TF runner's
``evaluate_all``), logs the minibatch loss every ``train_log_interval`` steps (once; the TF runner appended it
twice), aborts a diverged run as DeepOBS does (§2.5) and writes the JSON atomically under
``<out>/<testproblem>/<optimizer>/<setting folder>/random_seed__<seed>__<start time>.json``, with a small
``...provenance.yaml`` beside it. A run whose seed already has a file there is not repeated.

The training loop (``train_curves``) and the output assembly (``deepobs_output``) are pure functions of a
trainer object, so they are tested without TensorFlow; only ``execute`` touches Keras, the disk and the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analysis.naming import result_file_name
from runners.spec import RunSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
CURVE_KEYS = ("train_losses", "valid_losses", "test_losses")
ACCURACY_KEYS = ("train_accuracies", "valid_accuracies", "test_accuracies")
PHASES = ("train_eval", "valid", "test")  # DeepOBS evaluate_all order: TRAIN, VALID, TEST
PROVENANCE_SUFFIX = ".provenance.yaml"  # never ends in .json: DeepOBS' reader takes every *.json


class RunError(ValueError):
    """Bad input to a run (unknown name, bad value, missing data): one line, exit code 2 on the CLI."""


# ---------------------------------------------------------------------------------------------------------
# pure part: the DeepOBS training loop and output dict
# ---------------------------------------------------------------------------------------------------------
def train_curves(
    trainer: Any,
    num_epochs: int,
    train_log_interval: int = 10,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Run DeepOBS' StandardRunner loop on ``trainer`` and return the seven curves plus ``diverged_epoch``.

    For n in 0..num_epochs: evaluate TRAIN, VALID, TEST; stop after the evaluation of n == num_epochs;
    otherwise train epoch n. If the last logged minibatch loss of epoch n is not finite, stop and append
    element [0] of every list ``num_epochs - n`` times (AR ``_abort_routine``), so the epoch curves keep
    ``num_epochs + 1`` entries and ``minibatch_train_losses`` gets ``num_epochs - n`` copies of its first entry.
    ``on_epoch(n, last_eval)`` is called after each evaluation (progress bars).
    """
    curves: dict[str, list[float]] = {k: [] for k in (*CURVE_KEYS, *ACCURACY_KEYS, "minibatch_train_losses")}
    diverged_epoch = None
    for n in range(num_epochs + 1):
        last = {}
        for phase, loss_key, acc_key in zip(PHASES, CURVE_KEYS, ACCURACY_KEYS):
            result = trainer.evaluate(phase)
            curves[loss_key].append(float(result["loss"]))
            acc = result.get("accuracy")
            curves[acc_key].append(0.0 if acc is None else float(acc))  # DeepOBS: 0.0 when no accuracy
            last[phase] = result
        if on_epoch is not None:
            on_epoch(n, last)
        if n == num_epochs:
            break
        logged = [float(x) for x in trainer.train_epoch(n, log_interval=train_log_interval)]
        if not logged:
            raise RuntimeError(f"trainer.train_epoch({n}) logged no minibatch loss (empty epoch?)")
        curves["minibatch_train_losses"].extend(logged)
        if not math.isfinite(logged[-1]):
            diverged_epoch = n
            for _ in range(n, num_epochs):
                for values in curves.values():
                    values.append(values[0])
            break
    curves["diverged_epoch"] = diverged_epoch
    return curves


def deepobs_output(
    *,
    testproblem: str,
    batch_size: int,
    num_epochs: int,
    random_seed: int,
    weight_decay: float | None,
    optimizer_name: str,
    optimizer_hyperparams: dict,
    curves: dict[str, Any],
    has_accuracy: bool,
    training_params: dict | None = None,
) -> dict[str, Any]:
    """The DeepOBS 1.2 result dict, keys in file order (deepobs-format §2.1). Accuracy keys only when the
    problem has an accuracy (§2.4: DeepOBS drops them for problems that report 0.0 accuracies)."""
    output: dict[str, Any] = {
        "testproblem": testproblem,
        "batch_size": int(batch_size),
        "num_epochs": int(num_epochs),
        "random_seed": int(random_seed),
        "weight_decay": weight_decay,
        "optimizer_name": optimizer_name,
        "optimizer_hyperparams": dict(optimizer_hyperparams),
        "training_params": dict(training_params or {}),
    }
    for key in CURVE_KEYS:
        output[key] = list(curves[key])
    if has_accuracy:
        for key in ACCURACY_KEYS:
            output[key] = list(curves[key])
    output["minibatch_train_losses"] = list(curves["minibatch_train_losses"])
    return output


# ---------------------------------------------------------------------------------------------------------
# side effects: atomic writes, provenance, Keras state
# ---------------------------------------------------------------------------------------------------------
def write_atomic(path: Path, content: str | bytes) -> Path:
    """Write ``content`` to ``path`` via a temp file in the same folder (name starts with '.', ends in '.tmp',
    so no reader ever globs it as a result), fsync and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def dump_deepobs_json(output: dict) -> str:
    """``json.dump(output, f, indent=4)`` as DeepOBS' ``write_output`` (no trailing newline; NaN literals)."""
    import json

    return json.dumps(output, indent=4)


_GIT: dict[str, Any] = {}


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the working tree this code runs from (None when not a git checkout)."""
    if not _GIT:
        try:
            commit = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip() or None
            status = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            _GIT.update(commit=commit, dirty=bool(status.strip()) if commit else None)
        except (OSError, subprocess.SubprocessError):
            _GIT.update(commit=None, dirty=None)
    return dict(_GIT)


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy", "scipy", "nlwu-bench"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _plain(value: Any) -> Any:
    """YAML-safe copy (tuples -> lists, numpy scalars -> Python, unknown objects -> str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        with contextlib.suppress(Exception):
            return _plain(value.item())
    return str(value)


def fresh_keras_state(seed: int, free_memory: bool = True) -> None:
    """Clear Keras' global state and reseed Python, NumPy and the backend (fresh state per run).
    ``free_memory`` runs Python's garbage collector (about 0.4 s here: skipped for tiny models)."""
    import keras

    keras.backend.clear_session(free_memory=free_memory)
    keras.utils.set_random_seed(seed)


def _large_model(testproblem: str) -> bool:
    import testproblems

    params = getattr(testproblems.spec(testproblem), "trainable_params", None)
    return params is None or params > 10_000


def _bar(spec: RunSpec, num_epochs: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=num_epochs, desc=f"{spec.testproblem}/{spec.optimizer} seed {spec.seed}",
                unit="epoch", disable=not enabled, leave=False, dynamic_ncols=True)


def check_names(testproblem: str, optimizer: str) -> None:
    """RunError (one line listing what is known) for an unregistered problem or optimizer."""
    import optimizers
    import testproblems

    try:
        testproblems.spec(testproblem)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if optimizer not in optimizers.names():
        raise RunError(f"unknown optimizer {optimizer!r}; known: {', '.join(optimizers.names())}")


def build(spec: RunSpec):
    """(problem, model, optimizer, trainer) for ``spec``; bad names/values raise RunError with one line."""
    import optimizers
    import testproblems

    check_names(spec.testproblem, spec.optimizer)
    try:
        problem = testproblems.get(
            spec.testproblem, data_dir=spec.data_dir, batch_size=spec.batch_size, l2=spec.weight_decay,
            seed=spec.seed, fidelity=spec.fidelity,
        )
        model = problem.build_model()
        optimizer = optimizers.make(spec.optimizer, model, **spec.hyperparams_dict, **spec.options_dict)
        trainer = problem.trainer(model, optimizer)
    except ValueError as exc:  # includes testproblems.data.DataError
        raise RunError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
    return problem, model, optimizer, trainer


def execute(spec: RunSpec, out: str | Path, progress: bool = True) -> Path:
    """Train ``spec`` and write its DeepOBS JSON under ``out``; return the file's path.

    Returns the existing file without training if the seed's file is already there (resume). The JSON is
    written last and atomically, after its provenance file, so a result file is always complete.
    """
    out = Path(out)
    existing = spec.existing_result(out)
    if existing is not None:
        return existing
    try:
        num_epochs, batch_size = spec.effective_num_epochs(), spec.effective_batch_size()
        recorded = spec.recorded_hyperparams()
        folder = spec.setting_dir(out)
    except ValueError as exc:
        raise RunError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
    start = time.time()
    t0 = time.perf_counter()
    fresh_keras_state(spec.seed, free_memory=_large_model(spec.testproblem))
    problem, model, optimizer, trainer = build(spec)

    bar = _bar(spec, num_epochs, progress)

    def on_epoch(n, last):
        if n:
            bar.update(1)
        bar.set_postfix(valid_loss=f"{last['valid']['loss']:.4g}", refresh=False)

    try:
        curves = train_curves(trainer, num_epochs, spec.train_log_interval, on_epoch=on_epoch)
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    has_accuracy = bool(problem.spec.has_accuracy)
    output = deepobs_output(
        testproblem=spec.testproblem, batch_size=batch_size, num_epochs=num_epochs, random_seed=spec.seed,
        weight_decay=spec.weight_decay, optimizer_name=spec.optimizer, optimizer_hyperparams=recorded,
        curves=curves, has_accuracy=has_accuracy,
    )
    name = result_file_name(spec.seed, start)
    path = folder / name
    provenance = {
        "run_id": spec.run_id,
        "result_file": name,
        "spec": {**spec.to_dict(), "hyperparams": spec.hyperparams_dict, "options": spec.options_dict},
        "resolved": {
            "num_epochs": num_epochs,
            "batch_size": batch_size,
            "l2": getattr(problem, "l2", None),
            "steps_per_epoch": getattr(trainer, "steps_per_epoch", None),
            "optimizer_hyperparams": recorded,
            "diverged_epoch": curves["diverged_epoch"],
        },
        "problem": problem.provenance() if hasattr(problem, "provenance") else None,
        "optimizer": getattr(optimizer, "nlwu_provenance", None),
        "versions": package_versions(),
        "git": git_state(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
        "wall_seconds": round(wall, 3),
    }
    import yaml

    # another process may have finished the same run meanwhile: keep theirs, never two files per seed
    existing = spec.existing_result(out)
    if existing is not None:
        return existing
    write_atomic(folder / (name[: -len(".json")] + PROVENANCE_SUFFIX),
                 yaml.safe_dump(_plain(provenance), sort_keys=False))
    write_atomic(path, dump_deepobs_json(output))
    return path


# ---------------------------------------------------------------------------------------------------------
# CLI: python -m runners run ...
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
        raise RunError(f"value {text!r} is not finite")
    return value


def parse_hp(items: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise RunError(f"--hp {item!r}: expected name=value, e.g. --hp learning_rate=0.01")
        if name.strip() in result:
            raise RunError(f"--hp {name.strip()!r} given twice")
        result[name.strip()] = parse_value(value)
    return result


def split_hyperparams(optimizer: str, values: dict[str, Any]) -> tuple[dict, dict]:
    """(hyperparams, options): names the optimizer records or declares go to hyperparams, the rest
    (select rule, decay_on, ...) to options; both are passed to ``optimizers.make``."""
    import optimizers

    ospec = optimizers.spec(optimizer)
    declared = set(ospec.hyperparams) | set(getattr(ospec, "defaults", {}) or {})
    option_names = {"select", "decay_on"}
    hp = {k: v for k, v in values.items() if k in declared and k not in option_names}
    opts = {k: v for k, v in values.items() if k not in hp}
    return hp, opts


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise _ArgError(message)


def build_parser(prog: str = "python -m runners run", parser_class=argparse.ArgumentParser):
    p = parser_class(prog=prog, description="Train one test problem with one optimizer and write "
                                "its DeepOBS result file.")
    p.add_argument("--problem", required=True, help="test problem name (python -m testproblems info)")
    p.add_argument("--optimizer", required=True, help="optimizer name (folder name, e.g. PowKernelMomentumOptimizer)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="optimizer hyperparameter or option (repeatable), e.g. --hp learning_rate=0.01 --hp power=0.5")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the problem's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the problem's)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 factor in the loss (default: the problem's; recorded as passed)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $NLWU_DATA_DIR or ./data)")
    p.add_argument("--out", default="results", help="results root (default ./results)")
    p.add_argument("--fidelity", default="deepobs", help="data/model fidelity (default deepobs)")
    p.add_argument("--train-log-interval", type=int, default=10, help="minibatch-loss logging interval (10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    import optimizers

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
        return RunSpec(args.problem, args.optimizer, hp, seed=args.seed, num_epochs=args.epochs,
                       batch_size=args.batch_size, weight_decay=args.weight_decay, data_dir=args.data_dir,
                       fidelity=args.fidelity, train_log_interval=args.train_log_interval, options=opts)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def main_run(argv: Sequence[str] | None = None, prog: str = "python -m runners run") -> int:
    """``run`` subcommand: 0 on success (prints the result path), 2 with one error line on bad input."""
    parser = build_parser(prog, parser_class=_Parser)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        spec = spec_from_args(args)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        existed = spec.existing_result(args.out)
        path = execute(spec, args.out, progress=not args.no_progress)
    except (_ArgError, RunError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(("exists: " if existed else "") + str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main_run())
