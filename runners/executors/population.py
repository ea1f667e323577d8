"""Population training: runs that differ only in hyperparameter values and seed train as ONE jitted program.

A population is a list of ``RunSpec`` that share problem, optimizer, options, epochs, batch size, L2, data
and log interval (``population_key``). On the jax backend every member's state (weights, non-trainable
state such as dropout seeds and batch-norm statistics, optimizer variables, which hold η, p, μ and the decay
coefficient as data) is stacked on a leading axis and the suite's own Keras step, ``model.train_step`` /
``model.test_step`` (``model.stateless_call`` + ``optimizer.stateless_apply`` inside), runs under
``jax.jit(jax.vmap(...))``; the steps of an epoch are compiled as chunks (``lax.scan``) for small problems,
or one vmapped step per call for convolutional ones (XLA:CPU runs convolutions in a scan far slower).

Each member gets what the per-run path (``runners.run.execute``) gives its seed: the model built from its
seed, its seed's data order (datasets are loaded once per distinct seed), the same dropout/noise draws
(the seed-generator state travels in the non-trainable state, evaluations included) and the same
evaluation calls (``testproblems.trainer.eval_batches``). Its curves go through ``train_curves`` (a replay
of the recorded values), so divergence is handled exactly as DeepOBS does, and it is written by
``runners.run.write_result`` (same names, provenance, resume rules). A diverged member (NaN/inf) is
recorded as diverged; vmapped members never mix values, so it cannot poison the others.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import optimizers
import testproblems
from optimizers import registry
from runners.executors.local import visible_gpus
from runners.malloc import keep_freed_memory
from runners.run import (
    EVAL_PHASES,
    RunError,
    check_data,
    check_inside,
    check_out,
    load_problem,
    train_curves,
    write_result,
)
from runners.spec import RunSpec
from testproblems.trainer import eval_batches, mean_logs

#: problems whose population path is faster than the per-run path, per device kind (the choice rule of
#: ``choose``; measured by bench/bench_population.py, see docs/population.md). On CPU only the quadratic
#: problem gains: vmapped convolutions become grouped convolutions, slower per model than TF's per-run path.
FASTER_AS_POPULATION = {
    "cpu": frozenset({"quadratic_deep"}),
    "gpu": frozenset(
        {
            "quadratic_deep",
            "mnist_vae",
            "fmnist_vae",
            "fmnist_2c2d",
            "cifar10_3c3d",
            "cifar10_3c3d_nodecay",
            "cifar100_allcnnc",
            "cifar100_allcnnc_nodecay",
            "svhn_wrn164",
            "svhn_wrn164_nodecay",
        }
    ),
}
#: largest population the memory rule picks (compile time grows with it; 64 members keep a CPU busy)
MAX_SIZE = 64
#: problems whose epoch is compiled as one ``lax.scan`` (small dense problems; convolutions run per step)
SCAN_PROBLEMS = frozenset({"quadratic_deep"})
#: bytes of epoch-invariant inputs (``Dataset.epoch_invariant``) a population prepares once and keeps on its
#: device instead of rebuilding every epoch (quadratic_deep: 0.7 MB per seed and phase)
INPUT_CACHE_BYTES = 256 << 20


class PopulationUnsupported(RunError):
    """A spec the population path cannot run; the message (one line) says why, the caller runs it per run."""


class PopulationOutOfMemory(RunError):
    """The population did not fit in memory; the message names the size to use instead."""


def population_key(spec: RunSpec) -> tuple:
    """What the members of one population share; specs with different keys are never trained together."""
    return (
        spec.testproblem,
        spec.optimizer,
        spec.options,
        spec.effective_num_epochs(),
        spec.effective_batch_size(),
        spec.weight_decay,
        spec.data_dir,
        spec.fidelity,
        spec.train_log_interval,
    )


def split(specs: Sequence[RunSpec], size: int) -> list[list[RunSpec]]:
    """``specs`` grouped by ``population_key`` (first-seen order kept), each group cut into populations of at
    most ``size`` members: problems, optimizers, batch sizes and epochs are never mixed."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"population size must be an integer >= 1, got {size!r}")
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(population_key(spec), []).append(spec)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def device_kind() -> str:
    """'gpu' when a GPU is visible and the jax CUDA plugin is installed (``make setup GPU=cuda12``), else
    'cpu'; without importing jax (the sweep's driver stays light and forks no jax threads)."""

    def found(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    has_plugin = found("jax_cuda12_plugin") or found("jax_plugins.xla_cuda12")
    return "gpu" if has_plugin and visible_gpus() else "cpu"


def keras_backend_for_device(environ=os.environ) -> str | None:
    """'jax' when ``KERAS_BACKEND`` is unset and ``device_kind()`` is 'gpu' (jax's CUDA plugin installed by
    ``make setup GPU=cuda12``, a GPU visible): the per-run path (``make run``, and the runs a sweep trains one at
    a time) then trains on the GPU with jax, as populations do, since the pinned TensorFlow is its CPU build.
    None otherwise: TensorFlow stays the default, and a backend the user chose is kept."""
    if environ.get("KERAS_BACKEND"):
        return None
    return "jax" if device_kind() == "gpu" else None


def unsupported_reason(spec: RunSpec) -> str | None:
    """Why ``spec`` cannot train in a population (one line), or None. Needs no Keras."""
    problem = testproblems.spec(spec.testproblem)
    if problem.stateful:
        return f"{spec.testproblem} carries recurrent state across batches (stateful layers)"
    if registry.origin(spec.optimizer) != "built-in":
        return (
            f"optimizer {spec.optimizer} is a plugin: its hyperparameters are Python constants in its "
            "update, not optimizer variables"
        )
    return None


def choose(testproblem: str, kind: str | None = None) -> tuple[bool, str]:
    """(population?, one-line reason) for ``testproblem`` on device ``kind`` (default: what jax sees)."""
    kind = kind or device_kind()
    if testproblem in FASTER_AS_POPULATION.get(kind, frozenset()):
        return True, f"{testproblem} on {kind}: population path (faster there, docs/population.md)"
    return False, (
        f"{testproblem} on {kind}: per-run path (the population path is not faster there, docs/population.md)"
    )


def bytes_per_member(testproblem: str, batch_size: int) -> int:
    """Estimated memory of one member: weights, gradients, optimizer buffers and step temporaries (4 copies
    of the parameters, float32) plus its batch's activations (estimated as 64 values per input value)."""
    spec = testproblems.spec(testproblem)
    example = {"quadratic": 100, "mnist": 784, "fmnist": 784, "cifar10": 3072, "cifar100": 3072, "svhn": 3072}.get(
        spec.dataset, 1000
    )
    return 4 * (4 * spec.trainable_params + 64 * batch_size * example)


def available_bytes(kind: str = "cpu") -> int:
    """Free memory for a population, without importing jax (the sweep's driver stays light): on 'gpu' the
    first GPU's free memory (``nvidia-smi``), else the host's available memory."""
    if kind == "gpu":
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                text = subprocess.run(
                    [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout.split()
                return int(float(text[0])) << 20
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def size_from_memory(testproblem: str, batch_size: int, kind: str = "cpu") -> int:
    """Population size that uses at most half the free memory (at least 1, at most ``MAX_SIZE``)."""
    return max(1, min(MAX_SIZE, available_bytes(kind) // 2 // bytes_per_member(testproblem, batch_size)))


# ------------------------------------------------------------------------------------------------ training
class _Replay:
    """A trainer for ``train_curves`` that hands back one member's recorded evaluations and logged losses,
    so a member's curves and divergence handling are exactly the per-run path's code."""

    def __init__(self, evals: list[dict], logged: list[list[float]]):
        self._evals, self._logged, self._epoch = evals, logged, 0

    def evaluate(self, phase: str) -> dict:
        return self._evals[self._epoch][phase]

    def train_epoch(self, epoch: int, log_interval: int = 10, on_step=None) -> list[float]:
        self._epoch = epoch + 1
        return self._logged[epoch]


def _is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or "RESOURCE_EXHAUSTED" in text
        or "Out of memory" in text
        or "out of memory" in text
    )


class Population:
    """The members' stacked state and the compiled vmapped steps of one population (jax backend).

    ``specs`` must share ``population_key``; raises PopulationUnsupported (one line) for what the path
    cannot batch. ``run(on_epoch)`` trains every epoch and returns each member's curves (``train_curves``).
    """

    def __init__(self, specs: Sequence[RunSpec], *, scan: bool | None = None):
        import jax  # jax and Keras (~2 s): only a worker that trains a population imports them
        import jax.numpy as jnp  # (as above)
        import keras  # (as above)

        from optimizers.kernel_map import KernelMapOptimizer  # imports Keras (as above)

        specs = list(specs)
        if not specs:
            raise ValueError("a population needs at least one run")
        keys = {population_key(s) for s in specs}
        if len(keys) != 1:
            raise ValueError(
                f"a population shares problem, optimizer, epochs, batch size, L2 and data; got "
                f"{len(keys)} different ones (use population.split)"
            )
        if keras.backend.backend() != "jax":
            raise PopulationUnsupported(
                f"population training needs KERAS_BACKEND=jax (this process runs {keras.backend.backend()})"
            )
        for spec in specs:
            reason = unsupported_reason(spec)
            if reason:
                raise PopulationUnsupported(reason)
        self.specs = specs
        first = specs[0]
        self.num_epochs = first.effective_num_epochs()
        self.log_interval = first.train_log_interval
        self.scan = first.testproblem in SCAN_PROBLEMS if scan is None else bool(scan)
        seeds = sorted({s.seed for s in specs})
        self.seed_index = jnp.asarray([seeds.index(s.seed) for s in specs], dtype=jnp.int32)
        self.shared_data = len(seeds) == 1  # a search's tuning runs: one seed, one data order for all
        # a setting's reruns: member i has the i-th distinct seed (seed_index is 0, 1, 2, ...)
        self.one_seed_each = [seeds.index(s.seed) for s in specs] == list(range(len(specs)))
        self.problems, models = {}, {}
        for seed in seeds:  # one problem (data) and one model (initial weights) per distinct seed
            keras.backend.clear_session(free_memory=False)
            problem = load_problem(next(s for s in specs if s.seed == seed))  # the per-run path's loader
            self.problems[seed], models[seed] = problem, problem.build_model()
        self.member_problems = [self.problems[s.seed] for s in specs]
        self.optimizers = []
        for spec in specs:
            try:
                opt = optimizers.make(spec.optimizer, models[spec.seed], **spec.hyperparams_dict, **spec.options_dict)
            except ValueError as exc:
                raise RunError(str(exc).splitlines()[0]) from None
            if not isinstance(opt, KernelMapOptimizer) or not isinstance(opt.learning_rate, keras.Variable):
                raise PopulationUnsupported(
                    f"optimizer {spec.optimizer} does not keep its hyperparameters as optimizer variables"
                )
            opt.build(models[spec.seed].trainable_variables)
            self.optimizers.append(opt)
        if len({o.structure() for o in self.optimizers}) != 1:
            # e.g. momentum 0 for some members and > 0 for others: rebuild all with a momentum buffer
            self.optimizers = [self._with_buffer(spec, models[spec.seed]) for spec in specs]
        template_problem, self.model = self.problems[seeds[0]], models[seeds[0]]
        template_opt = optimizers.make(first.optimizer, self.model, **first.hyperparams_dict, **first.options_dict)
        if template_opt.structure() != self.optimizers[0].structure():
            template_opt = self._with_buffer(first, self.model)
        self.template = template_problem.trainer(self.model, template_opt)
        x, y = next(iter(template_problem.dataset().batches("train", epoch=0)))
        self.model._symbolic_build(data_batch=(x, template_problem.targets(x, y), None))
        if not template_opt.built:
            template_opt.build(self.model.trainable_variables)
        self.model.reset_metrics()
        self._metrics0 = [v.value for v in self.model.metrics_variables]
        self.example_size = self.template._example_size()
        self.has_accuracy = bool(template_problem.spec.has_accuracy)

        def stack(per_member):
            return [jnp.stack(leaves) for leaves in zip(*per_member)]

        self._inputs: dict[tuple, list] = {}  # (phase, layout) -> prepared device inputs (epoch-invariant)
        self._input_bytes = 0
        self.trainable = stack([[v.value for v in models[s.seed].trainable_variables] for s in specs])
        self.non_trainable = stack([[v.value for v in models[s.seed].non_trainable_variables] for s in specs])
        self.optimizer_state = stack([[v.value for v in o.variables] for o in self.optimizers])
        self._compile(jax)

    @staticmethod
    def _with_buffer(spec: RunSpec, model):
        from optimizers.kernel_map import KernelMapOptimizer  # imports Keras: only where a population trains

        opt = optimizers.make(spec.optimizer, model, **spec.hyperparams_dict, **spec.options_dict)
        rebuilt = KernelMapOptimizer(
            learning_rate=float(opt.learning_rate.numpy()),
            elementwise_map=opt.elementwise_map,
            power=opt.power,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay_opt=opt.weight_decay_opt,
            decay_scaling=opt.decay_scaling,
            select=opt.select,
            decay_on=opt.decay_on,
            momentum_buffer=True,
        )
        rebuilt.nlwu_provenance = dict(opt.nlwu_provenance)
        rebuilt.build(model.trainable_variables)
        return rebuilt

    @property
    def size(self) -> int:
        return len(self.specs)

    def _compile(self, jax) -> None:
        model, metrics0 = self.model, self._metrics0

        def train_step(state, x, y):
            trainable, non_trainable, opt_vars = state
            logs, (trainable, non_trainable, opt_vars, _) = model.train_step(
                (trainable, non_trainable, opt_vars, metrics0), (x, y)
            )
            return (trainable, non_trainable, opt_vars), logs["loss"]

        def member_chunk(state, xs, ys):  # xs: (steps, batch, ...)
            return jax.lax.scan(lambda st, xy: train_step(st, *xy), state, (xs, ys))

        def eval_step(trainable, non_trainable, x, y):
            logs, (_, non_trainable, _) = model.test_step((trainable, non_trainable, metrics0), (x, y))
            return non_trainable, logs

        step = member_chunk if self.scan else train_step
        if self.shared_data:
            # one seed: every member reads the same batch, broadcast to them (in_axes None), not gathered into
            # one copy per member (the copies cost as much memory traffic as a quadratic_deep step's arithmetic)
            self._train = jax.jit(
                lambda state, xs, ys, idx: jax.vmap(step, in_axes=(0, None, None))(state, xs[0], ys[0]),
                donate_argnums=0,
            )
            self._eval = jax.jit(
                lambda tv, ntv, x, y, idx: jax.vmap(eval_step, in_axes=(0, 0, None, None))(tv, ntv, x[0], y[0])
            )
            return
        if self.one_seed_each:  # member i reads seed i's batch: no gather (a copy) needed
            self._train = jax.jit(lambda state, xs, ys, idx: jax.vmap(step)(state, xs, ys), donate_argnums=0)
            self._eval = jax.jit(lambda tv, ntv, x, y, idx: jax.vmap(eval_step)(tv, ntv, x, y))
            return
        self._train = jax.jit(lambda state, xs, ys, idx: jax.vmap(step)(state, xs[idx], ys[idx]), donate_argnums=0)
        self._eval = jax.jit(lambda tv, ntv, x, y, idx: jax.vmap(eval_step)(tv, ntv, x[idx], y[idx]))

    # -- one epoch / one evaluation of every member -----------------------------------------------------
    def _per_seed(self, iterators):
        items = [next(it, None) for it in iterators]
        if any(item is None for item in items):
            return None
        return np.stack([item[0] for item in items]), np.stack([item[1] for item in items])

    def _prepared(self, phase: str, make, layout: Any = None):
        """The inputs ``make()`` builds for ``phase`` (an iterable of array tuples; ``layout``: what else shapes
        them, e.g. the steps per chunk): built once and kept on the device when every member's data set serves
        the same ``phase`` batches at every epoch (``Dataset.epoch_invariant``) and they fit
        ``INPUT_CACHE_BYTES``; else built anew (streamed)."""
        import jax.numpy as jnp  # jax: only a worker that trains a population imports it

        key = (phase, layout)
        if key in self._inputs:
            return self._inputs[key]
        datasets = [p.dataset() for p in self.problems.values()]
        first = datasets[0]
        estimate = 4 * len(datasets) * first.num_batches(phase) * first.batch_size * (self.example_size + 1) * 2
        if not all(d.epoch_invariant(phase) for d in datasets) or self._input_bytes + estimate > INPUT_CACHE_BYTES:
            return make()
        prepared = [tuple(jnp.asarray(a) for a in item) for item in make()]
        self._input_bytes += sum(a.nbytes for item in prepared for a in item)
        self._inputs[key] = prepared
        return prepared

    def evaluate(self, phase: str, epoch: int) -> list[dict]:
        """Every member's ``Trainer.evaluate(phase)`` after ``epoch`` trained epochs."""

        def batches():
            iterators = [eval_batches(p, p.dataset(), phase, epoch, self.example_size) for p in self.problems.values()]
            while (batch := self._per_seed(iterators)) is not None:
                yield batch

        losses, accs = [[] for _ in self.specs], [[] for _ in self.specs]
        for batch in self._prepared(phase, batches):
            self.non_trainable, logs = self._eval(self.trainable, self.non_trainable, *batch, self.seed_index)
            loss = np.asarray(logs["loss"])
            acc = np.asarray(logs["accuracy"]) if self.has_accuracy else None
            for i in range(self.size):
                losses[i].append(float(loss[i]))
                if acc is not None:
                    accs[i].append(float(acc[i]))
        return [mean_logs(losses[i], accs[i] if self.has_accuracy else None) for i in range(self.size)]

    def train_epoch(self, epoch: int, chunk_steps: int = 64) -> list[list[float]]:
        """One training epoch of every member; each member's losses of steps s with s % log_interval == 0."""
        targets = self.member_problems[0].targets

        def chunks():  # (x, y) per call: (seeds, steps, batch, ...) for a scanned chunk, else (seeds, batch, ...)
            iterators = [iter(p.dataset().batches("train", epoch=epoch)) for p in self.problems.values()]
            while True:
                xs, ys = [], []
                for _ in range(chunk_steps if self.scan else 1):
                    batch = self._per_seed(iterators)
                    if batch is None:
                        break
                    xs.append(batch[0])
                    ys.append(np.stack([targets(x, y) for x, y in zip(*batch)]))
                if not xs:
                    return
                yield (np.stack(xs, axis=1), np.stack(ys, axis=1)) if self.scan else (xs[0], ys[0])

        losses = []
        for xs, ys in self._prepared("train", chunks, layout=chunk_steps if self.scan else 1):
            state = (self.trainable, self.non_trainable, self.optimizer_state)
            state, loss = self._train(state, xs, ys, self.seed_index)
            losses.append(np.asarray(loss) if self.scan else np.asarray(loss)[:, None])  # (members, steps)
            self.trainable, self.non_trainable, self.optimizer_state = state
        steps = np.concatenate(losses, axis=1)
        return [[float(v) for v in steps[i, :: self.log_interval]] for i in range(self.size)]

    def run(self, on_epoch=None) -> list[dict[str, Any]]:
        """Train all epochs (DeepOBS' loop, as ``train_curves``) and return each member's curves. Members that
        diverged stop being recorded after their epoch, as the per-run path stops; when all have, training
        stops."""
        evals: list[list[dict]] = [[] for _ in self.specs]
        logged: list[list[list[float]]] = [[] for _ in self.specs]
        done = [False] * self.size
        for n in range(self.num_epochs + 1):
            results = {phase: self.evaluate(phase, n) for phase in EVAL_PHASES}
            for i in range(self.size):
                if not done[i]:
                    evals[i].append({phase: results[phase][i] for phase in EVAL_PHASES})
            if on_epoch is not None:
                on_epoch(n, results)
            if n == self.num_epochs:
                break
            epoch_losses = self.train_epoch(n)
            for i in range(self.size):
                if not done[i]:
                    logged[i].append(epoch_losses[i])
                    done[i] = not math.isfinite(epoch_losses[i][-1])
            if all(done):
                break
        return [
            train_curves(_Replay(evals[i], logged[i]), self.num_epochs, self.log_interval) for i in range(self.size)
        ]


def execute_population(
    specs: Sequence[RunSpec], out: str | Path, progress: bool = True, scan: bool | None = None
) -> list[Path]:
    """Train ``specs`` (one population_key) as one population and write each member's DeepOBS JSON; return
    the result paths in ``specs`` order. Members whose result exists are not trained again (resume)."""
    keep_freed_memory()  # the compiled steps' temporaries are reused, not page-faulted in at every call
    out = Path(out)
    specs = list(specs)
    paths: list[Path | None] = [None] * len(specs)
    pending = []
    for i, spec in enumerate(specs):
        try:
            spec.validate()
            paths[i] = spec.existing_result(out)
            folder = spec.setting_dir(out)
            spec.effective_batch_size(), spec.recorded_hyperparams()
        except ValueError as exc:
            raise RunError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
        if paths[i] is None:
            check_out(out)
            check_inside(out, folder)
            pending.append(i)
    if not pending:
        return paths
    check_data(specs[pending[0]])
    for i in pending:  # one data check per distinct seed
        if specs[i].seed != specs[pending[0]].seed:
            check_data(specs[i])
    start = time.time()
    t0 = time.perf_counter()
    members = [specs[i] for i in pending]
    try:
        population = Population(members, scan=scan)
        first = members[0]
        bar = tqdm(
            total=population.num_epochs,
            desc=f"{first.testproblem}/{first.optimizer} x{len(members)}",
            unit="epoch",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            curves = population.run(on_epoch=lambda n, _: bar.update(1) if n else None)
        finally:
            bar.close()
    except RunError:
        raise
    except Exception as exc:
        if _is_oom(exc):
            raise PopulationOutOfMemory(
                f"a population of {len(members)} {members[0].testproblem} runs ran out of memory; use "
                f"--population {max(1, len(members) // 2)} (finished results are kept)"
            ) from None
        raise
    wall = time.perf_counter() - t0
    steps = population.template.steps_per_epoch
    for j, i in enumerate(pending):
        extra = {
            "population": {
                "size": len(members),
                "member": j,
                "backend": "jax",
                "scan": population.scan,
                "wall_seconds_shared": round(wall, 3),
            }
        }
        paths[i] = write_result(
            specs[i],
            out,
            population.member_problems[j],
            population.optimizers[j],
            curves[j],
            start=start,
            wall=wall / len(members),
            steps_per_epoch=steps,
            extra=extra,
        )
    return paths
