"""One training run, written exactly as a DeepOBS 1.2 result file (deepobs-format §1-2).

``execute(spec, out)`` builds the test problem, its model, the optimizer and the trainer, evaluates
train-eval, validation and test at epoch 0 and after every epoch (in that order, as DeepOBS' TF runner's
``evaluate_all``), logs the minibatch loss every ``train_log_interval`` steps (once; the TF runner appended it
twice), aborts a diverged run as DeepOBS does (§2.5) and writes the JSON atomically under
``<out>/<testproblem>/<optimizer>/<setting folder>/random_seed__<seed>__<start time>.json``, with a small
``...provenance.yaml`` beside it. A run whose seed already has a file there is not repeated.

The training loop (``train_curves``) and the output assembly (``deepobs_tree.deepobs_output``) are pure, so they
are tested without TensorFlow; only ``execute`` touches Keras, the disk and the clock. The command line of a
run (both directions) is ``runners.commandline``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

import optimizers
import testproblems
from deepobs_tree import (
    ACCURACY_KEYS,
    CURVE_KEYS,
    NlwuError,
    deepobs_output,
    dump_deepobs_json,
    provenance_file_name,
    result_file_name,
    write_atomic,
)
from deepobs_tree.safe_io import name_problem, short
from optimizers import plugins
from runners.quarantine import quarantine
from runners.spec import RunSpec
from testproblems.quiet import import_keras  # re-exported: runners.run.import_keras (workers call it)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the evaluations after each epoch, in DeepOBS' evaluate_all order (TRAIN, VALID, TEST); not the data
#: package's ``PHASES``, which are the splits a dataset provides
EVAL_PHASES = ("train_eval", "valid", "test")


class RunError(NlwuError, ValueError):
    """Bad input to a run (unknown name, bad value, missing data): one line, exit code 2 on the CLI."""


# ---------------------------------------------------------------------------------------------------------
# pure part: the DeepOBS training loop and output dict
# ---------------------------------------------------------------------------------------------------------
def train_curves(
    trainer: Any,
    num_epochs: int,
    train_log_interval: int = 10,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run DeepOBS' StandardRunner loop on ``trainer`` and return the seven curves plus ``diverged_epoch``.

    For n in 0..num_epochs: evaluate TRAIN, VALID, TEST; stop after the evaluation of n == num_epochs;
    otherwise train epoch n. If the last logged minibatch loss of epoch n is not finite, stop and append
    element [0] of every list ``num_epochs - n`` times (AR ``_abort_routine``), so the epoch curves keep
    ``num_epochs + 1`` entries and ``minibatch_train_losses`` gets ``num_epochs - n`` copies of its first entry.
    ``on_epoch(n, last_eval)`` is called after each evaluation, ``on_step(step)`` after each training step
    (progress bars).
    """
    curves: dict[str, list[float]] = {k: [] for k in (*CURVE_KEYS, *ACCURACY_KEYS, "minibatch_train_losses")}
    diverged_epoch = None
    for n in range(num_epochs + 1):
        last = {}
        for phase, loss_key, acc_key in zip(EVAL_PHASES, CURVE_KEYS, ACCURACY_KEYS):
            result = trainer.evaluate(phase)
            curves[loss_key].append(float(result["loss"]))
            acc = result.get("accuracy")
            curves[acc_key].append(0.0 if acc is None else float(acc))  # DeepOBS: 0.0 when no accuracy
            last[phase] = result
        if on_epoch is not None:
            on_epoch(n, last)
        if n == num_epochs:
            break
        step_hook = {} if on_step is None else {"on_step": on_step}
        logged = [float(x) for x in trainer.train_epoch(n, log_interval=train_log_interval, **step_hook)]
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


# ---------------------------------------------------------------------------------------------------------
# side effects: provenance, Keras state
def _plugin_provenance() -> list[dict]:
    """Every plugin loaded in this process (module, path, sha256, optimizers): ``runners status`` compares them."""

    return plugins.provenance()


# ---------------------------------------------------------------------------------------------------------
_GIT: dict[str, Any] = {}


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the working tree this code runs from (None when not a git checkout)."""
    if not _GIT:
        try:
            commit = (
                subprocess.run(
                    ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
                or None
            )
            status = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            _GIT.update(commit=commit, dirty=bool(status.strip()) if commit else None)
        except (OSError, subprocess.SubprocessError):
            _GIT.update(commit=None, dirty=None)
    return dict(_GIT)


_VERSIONS: dict[str, str | None] = {}


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on; read once per process (reading package metadata took
    ~5 ms, once per written result, and installed versions do not change under a running process)."""
    if not _VERSIONS:
        _VERSIONS["python"] = platform.python_version()
        for name in ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy", "scipy", "nlwu-bench"):
            try:
                _VERSIONS[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
    return dict(_VERSIONS)


def _dump_yaml(value: Any) -> str:
    """``yaml.safe_dump(value, sort_keys=False)``, through libyaml's emitter where PyYAML has it (same text,
    about 4x faster: one provenance file per result)."""
    return yaml.dump(value, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


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
    keras = import_keras()

    keras.backend.clear_session(free_memory=free_memory)
    keras.utils.set_random_seed(seed)


def _large_model(testproblem: str) -> bool:
    params = getattr(testproblems.spec(testproblem), "trainable_params", None)
    return params is None or params > 10_000


def _bar(spec: RunSpec, num_epochs: int, enabled: bool, steps_per_epoch: int | None = None):
    """A bar over the run's training steps (over its epochs when the trainer does not say its steps)."""
    steps = int(steps_per_epoch) if isinstance(steps_per_epoch, int) and steps_per_epoch > 0 else None
    return tqdm(
        total=num_epochs * steps if steps else num_epochs,
        unit="step" if steps else "epoch",
        desc=f"{spec.testproblem}/{spec.optimizer} seed {spec.seed}",
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _progress(bar, trainer, num_epochs: int, per_step: bool):
    """(on_epoch, on_step) hooks: the bar advances per step with the running training loss; after each
    evaluation it shows that evaluation's losses (never the previous epoch's)."""
    shown: dict[str, str] = {}

    def on_epoch(n, last):
        shown.clear()
        shown["epoch"] = f"{n}/{num_epochs}"
        for phase, key in (("valid", "valid_loss"), ("test", "test_loss")):
            if phase in last:
                shown[key] = f"{float(last[phase]['loss']):.4g}"
        acc = last.get("test", {}).get("accuracy")
        if acc is not None:
            shown["test_acc"] = f"{float(acc):.4f}"
        if n and not per_step:
            bar.update(1)
        bar.set_postfix(shown, refresh=True)

    def on_step(step):
        bar.update(1)
        if step % 10 == 0 and getattr(trainer, "last_loss", None) is not None:
            bar.set_postfix({**shown, "loss": f"{float(trainer.last_loss):.4g}"}, refresh=False)

    return on_epoch, (on_step if per_step else None)


def check_names(testproblem: str, optimizer: str) -> None:
    """RunError (one line listing what is known) for an unregistered problem or optimizer."""

    try:
        testproblems.spec(testproblem)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if optimizer not in optimizers.names():
        raise RunError(f"unknown optimizer {short(optimizer)}; known: {', '.join(optimizers.names())}")


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """RunError unless ``out`` is a folder (or can be made one) this process can write to; creates nothing.
    Called before any training, so a bad ``--out`` never costs the compute of a run."""
    out = Path(out)
    problem_name = name_problem(out)
    if problem_name:
        raise RunError(f"{flag} {short(str(out), 120)}: {problem_name}")
    if out.exists() and not out.is_dir():
        raise RunError(f"{flag} {out} exists and is not a folder; pass a results folder")
    probe = out
    while not probe.exists():
        if probe.is_symlink():
            raise RunError(f"{flag} {out}: {probe} is a dangling symlink")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"{flag} {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"{flag} {out} is not writable ({probe} denies write access)")
    return out


def check_inside(out: str | Path, folder: str | Path) -> Path:
    """RunError unless ``folder`` resolves (symlinks followed) to a place inside ``out``: results never
    land outside ``--out`` through a symlink."""
    root, target = Path(out).resolve(), Path(folder).resolve()
    if not target.is_relative_to(root):
        raise RunError(
            f"{folder} resolves to {target}, outside --out {root} (a symlink?); results stay inside "
            "--out: remove the link or choose another --out"
        )
    return Path(folder)


def load_problem(spec: RunSpec):
    """The test problem ``spec`` names, with its data folder, batch size, L2, seed and fidelity (ValueError if bad)."""
    return testproblems.get(
        spec.testproblem,
        data_dir=spec.data_dir,
        batch_size=spec.batch_size,
        l2=spec.weight_decay,
        seed=spec.seed,
        fidelity=spec.fidelity,
    )


def check_data(spec: RunSpec) -> None:
    """RunError (one line, naming the file and the fix) unless the run's data load and give at least one
    training batch; NumPy only, so it runs before TensorFlow is imported. The readers cache what they read."""

    try:
        with warnings.catch_warnings():  # build() warns about an ignored l2 once, not here
            warnings.simplefilter("ignore")
            problem = load_problem(spec)
        dataset = problem.dataset()
        if dataset.num_batches("train") < 1:
            raise RunError(
                f"batch_size {problem.batch_size} is larger than the training set of {spec.testproblem} "
                f"in {problem.data_dir} ({dataset.sizes.get('train', '?')} examples)"
            )
    except ValueError as exc:  # includes testproblems.data.DataError
        raise RunError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None


def build(spec: RunSpec):
    """(problem, model, optimizer, trainer) for ``spec``; bad names/values raise RunError with one line."""

    check_names(spec.testproblem, spec.optimizer)
    try:
        problem = load_problem(spec)
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
    try:
        spec.validate()
        existing, rejected = spec.result_files(out)
        if existing is not None:
            return existing
        num_epochs = spec.effective_num_epochs()
        spec.effective_batch_size(), spec.recorded_hyperparams()  # validated before any training
        folder = spec.setting_dir(out)
    except ValueError as exc:  # includes SpecMismatch
        raise RunError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
    check_out(out)
    problem_name = name_problem(folder / (".x" + provenance_file_name(result_file_name(spec.seed)) + ".12345678.tmp"))
    if problem_name:
        raise RunError(
            f"cannot write the result under {short(str(folder), 120)}: {problem_name}; use shorter "
            "option values or a shorter --out"
        )
    check_inside(out, folder)
    for bad in rejected:  # never reused: moved aside (not deleted), the run is trained again
        moved = quarantine(out, bad.path)
        print(f"warning: {bad.path}: {bad.reason}; moved to {moved}", file=sys.stderr)
    check_data(spec)  # before TensorFlow loads: bad data fail in a second, without TF's log lines
    start = time.time()
    t0 = time.perf_counter()
    fresh_keras_state(spec.seed, free_memory=_large_model(spec.testproblem))
    problem, model, optimizer, trainer = build(spec)

    steps = getattr(trainer, "steps_per_epoch", None) if progress else None
    steps = steps() if callable(steps) else steps
    bar = _bar(spec, num_epochs, progress, steps)
    on_epoch, on_step = _progress(
        bar, trainer, num_epochs, per_step=bool(progress and isinstance(steps, int) and steps > 0)
    )

    try:
        curves = train_curves(trainer, num_epochs, spec.train_log_interval, on_epoch=on_epoch, on_step=on_step)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    return write_result(
        spec,
        out,
        problem,
        optimizer,
        curves,
        start=start,
        wall=wall,
        steps_per_epoch=getattr(trainer, "steps_per_epoch", None),
    )


def write_result(
    spec: RunSpec,
    out: str | Path,
    problem: Any,
    optimizer: Any,
    curves: dict[str, Any],
    *,
    start: float,
    wall: float,
    steps_per_epoch: int | None,
    extra: dict | None = None,
) -> Path:
    """Write one finished run: its provenance YAML, then its DeepOBS JSON (atomically, JSON last), under the
    spec's setting folder; the per-run path and population training (``runners.executors.population``) share it.

    If another process finished the same run meanwhile, its file is kept and returned (never two files per
    seed). ``extra`` adds provenance entries (a population member records its population).
    """
    out = Path(out)
    num_epochs, batch_size = spec.effective_num_epochs(), spec.effective_batch_size()
    recorded = spec.recorded_hyperparams()
    folder = spec.setting_dir(out)
    has_accuracy = bool(problem.spec.has_accuracy)
    output = deepobs_output(
        testproblem=spec.testproblem,
        batch_size=batch_size,
        num_epochs=num_epochs,
        random_seed=spec.seed,
        weight_decay=spec.weight_decay,
        optimizer_name=spec.optimizer,
        optimizer_hyperparams=recorded,
        curves=curves,
        has_accuracy=has_accuracy,
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
            "steps_per_epoch": steps_per_epoch,
            "optimizer_hyperparams": recorded,
            "diverged_epoch": curves["diverged_epoch"],
        },
        "problem": problem.provenance() if hasattr(problem, "provenance") else None,
        "optimizer": getattr(optimizer, "nlwu_provenance", None),
        "plugins": _plugin_provenance(),
        "versions": package_versions(),
        "git": git_state(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
        "wall_seconds": round(wall, 3),
        **(extra or {}),
    }

    # another process may have finished the same run meanwhile: keep theirs, never two files per seed
    try:
        existing = spec.existing_result(out)
    except ValueError as exc:
        raise RunError(str(exc).splitlines()[0]) from None
    if existing is not None:
        return existing
    check_inside(out, folder)  # again: a link may have appeared while training
    prov = write_atomic(folder / provenance_file_name(name), _dump_yaml(_plain(provenance)))
    try:
        write_atomic(path, dump_deepobs_json(output))
    except BaseException:
        prov.unlink(missing_ok=True)  # a provenance without its result would be a partial run
        raise
    return path
