"""Training / evaluation loop of one problem, written once for every Keras backend.

The model is compiled with the problem's loss (per-example losses, batch mean) and metrics; Keras adds
the L2 terms (``model.losses``) to the loss, so every reported loss is mean(losses) + regulariser, as in
DeepOBS' runner. Steps go through ``train_on_batch`` / ``test_on_batch``, whose step functions Keras
traces (tf.function) or jit-compiles (jax) once per input shape and reuses. Batches come from the data
pipeline as it serves them (it prefetches the augmented ones itself).
"""

from __future__ import annotations

import math

import numpy as np

PHASES = ("train_eval", "valid", "test")
# Evaluation passes whose whole input has at most this many values run as one call (quadratic_deep's
# 896 x 100): the mean over equal-size batches of batch means equals the mean over their union, and one
# call instead of 7 saves most of the per-call overhead of a tiny problem.
_MERGE_EVAL_MAX_VALUES = 1 << 18


def _all_layers(model):
    """Every layer below ``model`` (nested models included), depth first."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)


class Trainer:
    """Runs training epochs and evaluation passes of ``problem`` with ``model`` and ``optimizer``."""

    def __init__(self, problem, model, optimizer, *, jit_compile="auto"):
        self.problem = problem
        self.model = model
        self.optimizer = optimizer
        self.data = problem.dataset()
        model.compile(optimizer=optimizer, loss=problem.loss(), metrics=problem.metrics(), jit_compile=jit_compile)
        self._has_accuracy = problem.spec.has_accuracy
        # the problem's row says whether its network carries state; those layers are reset per phase
        self._stateful_layers = (
            [layer for layer in _all_layers(model) if getattr(layer, "stateful", False)]
            if problem.spec.stateful
            else []
        )
        self._eval_epoch = 0  # epoch index handed to the data for evaluation passes (= epochs trained)

    def _example_size(self) -> int:
        """Number of input values per example (from the model's input shape)."""
        shape = self.model.inputs[0].shape[1:]
        return int(np.prod([d or 1 for d in shape]))

    @property
    def steps_per_epoch(self) -> int:
        return self.data.num_batches("train")

    def _start_phase(self):
        """Phase start: zero the carried recurrent state (DeepOBS' init ops do the same)."""
        for layer in self._stateful_layers:
            layer.reset_state()

    def train_epoch(self, epoch: int, log_interval: int = 10, on_step=None) -> list[float]:
        """One training epoch; returns the loss of every step s with s % log_interval == 0 (once each)."""
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        self._start_phase()
        problem, model = self.problem, self.model
        logged = []
        for step, (x, y) in enumerate(self.data.batches("train", epoch=epoch)):
            logs = model.train_on_batch(x, problem.targets(x, y), return_dict=True)
            self.last_loss = logs["loss"]  # for progress bars (on_step), read only when shown
            if step % log_interval == 0:
                logged.append(float(logs["loss"]))
            if on_step is not None:
                on_step(step)
        self._eval_epoch = epoch + 1
        return logged

    def eval_batches(self, phase: str):
        """The (x, target) inputs of ``phase``'s evaluation, one per ``test_on_batch`` call (``eval_batches``)."""
        return eval_batches(self.problem, self.data, phase, self._eval_epoch, self._example_size())

    def evaluate(self, phase: str) -> dict:
        """Mean loss (incl. L2) and accuracy over all full batches of ``phase``, model in inference mode."""
        batches = self.eval_batches(phase)
        self._start_phase()
        losses, accs = [], []
        for x, y in batches:
            logs = self.model.test_on_batch(x, y, return_dict=True)
            losses.append(float(logs["loss"]))
            if self._has_accuracy:
                accs.append(float(logs["accuracy"]))
        return mean_logs(losses, accs if self._has_accuracy else None)


def eval_batches(problem, data, phase: str, epoch: int, example_size: int):
    """The (x, target) inputs of ``phase``'s evaluation after ``epoch`` epochs, one per ``test_on_batch``
    call: all full batches merged into one when the phase is small (``_MERGE_EVAL_MAX_VALUES``), else batch
    by batch (an iterator). ``Trainer.evaluate`` and population training (``runners.executors.population``) both use
    it, so a population member's evaluation makes exactly the per-run path's calls."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; use one of: {', '.join(PHASES)}")
    batches = data.batches(phase, epoch=epoch)
    nb = data.num_batches(phase)
    if not problem.spec.stateful and nb * problem.batch_size * example_size <= _MERGE_EVAL_MAX_VALUES:
        batches = list(batches)
        if batches:
            x = np.concatenate([b[0] for b in batches])
            y = np.concatenate([problem.targets(bx, by) for bx, by in batches])
            return iter([(x, y)])
    return ((x, problem.targets(x, y)) for x, y in batches)


def mean_logs(losses: list[float], accs: list[float] | None) -> dict:
    """An evaluation's result from its calls' losses/accuracies (NaN when there was no batch): the mean of
    one call is that call's value exactly."""
    if not losses:
        return {"loss": math.nan, "accuracy": None if accs is None else math.nan}
    return {"loss": float(np.mean(losses)), "accuracy": None if accs is None else float(np.mean(accs))}
