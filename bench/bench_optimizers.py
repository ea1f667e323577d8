"""Benchmark: train-step time of each non-linear optimizer against its linear twin on fmnist_2c2d.

One interleaved run (order reshuffled every round) of ``train_on_batch`` steps, exactly as the trainer runs
them (problem loss and metrics, ``jit_compile='auto'``: Keras turns XLA off on a CPU-only TensorFlow
machine, so there it is a graph step too; ``--modes`` adds the explicit graph step and ``xla``), batch 128
of random data. Printed per pair: median step times and the ratio
PowKernel* / linear twin (target <= 1.10 on CPU, <= 1.02 on GPU with the jax backend), and our linear twins
against Keras' own SGD. Where the time goes:
the optimizer update alone (``apply`` compiled the same way) and the map φ alone over the 3.4M selected
gradient values, for the fast ``exp(p·log|g|)`` form and the literal ``pow`` form.

Usage: ``.venv/bin/python bench/bench_optimizers.py [--rounds 7 --steps 10 --modes auto,graph]``;
``KERAS_BACKEND=jax`` for the jax backend.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":  # one tf.function per compiled model is intended here
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import optimizers  # noqa: E402
from optimizers import maps  # noqa: E402

BACKEND = keras.backend.backend()
PAIRS = [(n, optimizers.linear_twin(n)) for n in optimizers.BUILTIN if n.startswith("PowKernel")]
# our linear twins against Keras' own SGD: shows the twins are not slow (which would flatter the ratios)
KERAS_REFERENCE = {
    "keras.SGD": {},
    "keras.SGD(momentum=0.9)": {"momentum": 0.9},
    "keras.SGD(momentum=0.9,nesterov)": {"momentum": 0.9, "nesterov": True},
}
TWIN_VS_KERAS = [
    ("GradientDescentOptimizer", "keras.SGD"),
    ("MomentumOptimizer", "keras.SGD(momentum=0.9)"),
    ("NAGOptimizer", "keras.SGD(momentum=0.9,nesterov)"),
]


def build_optimizer(name: str, model):
    if name in KERAS_REFERENCE:
        return keras.optimizers.SGD(1e-3, **KERAS_REFERENCE[name])
    return optimizers.make(name, model, **hyperparams(name))


MODES = {"auto": "auto", "graph": False, "xla": True}


def hyperparams(name: str) -> dict:
    hp = {"learning_rate": 1e-3}
    if name.startswith("PowKernel"):
        hp["power"] = 0.6
    if "W_" in name:
        hp["weight_decay_opt"] = 5e-4
    return hp


def build_network():
    """fmnist_2c2d from testproblems, else an identical local definition (DeepOBS _2c2d)."""
    try:
        import testproblems

        problem = testproblems.get("fmnist_2c2d")
        return problem.build_model(), problem.loss(), problem.metrics(), "testproblems.fmnist_2c2d"
    except ImportError:
        from keras import layers

        keras.utils.set_random_seed(42)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 5, padding="same", activation="relu"),
                layers.MaxPooling2D(2, 2, padding="same"),
                layers.Conv2D(64, 5, padding="same", activation="relu"),
                layers.MaxPooling2D(2, 2, padding="same"),
                layers.Flatten(),
                layers.Dense(1024, activation="relu"),
                layers.Dense(10),
            ]
        )
        return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"], "local 2c2d"


def block(x):
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(x)
    else:
        ops.convert_to_numpy(ops.reshape(x[0] if isinstance(x, list | tuple) else x, (-1,))[:1])


def compile_fn(fn, xla: bool):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=xla)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


def time_call(fn, *args, repeat: int = 20) -> float:
    """Minimum wall time over ``repeat`` calls (the least-disturbed call on a shared machine)."""
    for _ in range(3):
        block(fn(*args))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def step_benchmark(mode_names, pairs, rounds, steps, batch):
    """Per (mode, pair): per-round step times of both twins, run back to back in random order each round."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    models = {}
    for mode in mode_names:
        for pair in pairs:
            for name in pair:
                model, loss, metrics, source = build_network()
                opt = build_optimizer(name, model)
                model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=MODES[mode])
                for _ in range(3):
                    model.train_on_batch(x, y)
                models[(mode, name)] = model
    times = {key: [] for key in models}
    cpu = {key: [] for key in models}
    ratios = {(mode, pair): [] for mode in mode_names for pair in pairs}
    cpu_ratios = {(mode, pair): [] for mode in mode_names for pair in pairs}
    units = list(ratios)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(units)
        for mode, pair in units:
            wall, proc = {}, {}
            for name in shuffle.sample(pair, 2):
                model = models[(mode, name)]
                t, c = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    model.train_on_batch(x, y)
                wall[name] = (time.perf_counter() - t) / steps
                proc[name] = (time.process_time() - c) / steps
                times[(mode, name)].append(wall[name])
                cpu[(mode, name)].append(proc[name])
            ratios[(mode, pair)].append(wall[pair[0]] / wall[pair[1]])
            cpu_ratios[(mode, pair)].append(proc[pair[0]] / proc[pair[1]])
    return times, cpu, ratios, cpu_ratios, source


def update_and_map_benchmark(xla: bool, pairs):
    """Seconds for the optimizer update alone (per optimizer) and for φ alone over the selected grads."""
    model, *_ = build_network()
    rng = np.random.default_rng(1)
    grads = [
        ops.convert_to_tensor(rng.normal(size=tuple(v.shape)).astype("float32") * 1e-2)
        for v in model.trainable_variables
    ]
    selected = [g for g, v in zip(grads, model.trainable_variables) if len(v.shape) >= 2]
    n_selected = sum(int(np.prod(g.shape)) for g in selected)
    results = {}
    for name in [n for pair in pairs for n in pair]:
        opt = optimizers.make(name, model, **hyperparams(name))
        opt.build(model.trainable_variables)
        if BACKEND == "jax":
            import jax

            fn = jax.jit(lambda ov, g, tv, opt=opt: opt.stateless_apply(ov, g, tv))
            ov = [v.value for v in opt.variables]
            tv = [v.value for v in model.trainable_variables]
            results[name] = time_call(fn, ov, grads, tv)
        else:
            fn = compile_fn(lambda g, opt=opt: opt.apply(g, model.trainable_variables), xla)
            results[name] = time_call(lambda g, fn=fn: (fn(g), model.trainable_variables[-1].value)[1], grads)
    map_times = {}
    for label, phi in (("exp_log", maps.signed_power(0.6)), ("pow", maps.PowSignedPower(0.6))):
        fn = compile_fn(lambda gs, phi=phi: [phi(g) for g in gs], xla)
        map_times[label] = time_call(fn, selected)
    return results, map_times, n_selected


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--modes", default="auto,graph", help="comma list of auto (trainer default), graph, xla")
    parser.add_argument("--only", default="", help="comma list of PowKernel optimizers to time (default: all 6)")
    parser.add_argument(
        "--no-keras-reference",
        action="store_true",
        help="skip the rows timing our linear twins against keras.optimizers.SGD",
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the update-alone / map-alone timings")
    args = parser.parse_args(argv)
    mode_names = [m for m in args.modes.split(",") if m]
    bad = [m for m in mode_names if m not in MODES]
    if bad:
        print(f"error: unknown mode(s) {bad}; allowed: {', '.join(MODES)}", file=sys.stderr)
        return 2
    if BACKEND != "tensorflow":
        mode_names = ["auto"]  # jax always jit-compiles the step
    import platform

    device = "cpu"
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0].platform
    print(
        f"backend {BACKEND} ({device}), {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"batch {args.batch}; {args.rounds} interleaved rounds x {args.steps} steps per optimizer and mode"
    )
    t0 = time.perf_counter()
    pairs = [p for p in PAIRS if not args.only or p[0] in args.only.split(",")]
    if not args.no_keras_reference:
        pairs += [p for p in TWIN_VS_KERAS if any(p[0] == twin for _, twin in pairs)]
    times, cpu, ratios, cpu_ratios, source = step_benchmark(mode_names, pairs, args.rounds, args.steps, args.batch)
    print(
        f"network: {source}; step benchmark took {time.perf_counter() - t0:.0f} s; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        "ratio = median over rounds of (non-linear / twin), the two measured back to back; wall-clock time "
        "and this process' CPU time (robust to other jobs on the machine)\n"
    )
    print(
        f"{'mode':5} {'non-linear optimizer':39} {'linear twin (or Keras)':29} {'wall ms':>8} {'twin':>7} {'ratio':>6} "
        f"{'q25-q75':>11} {'cpu ms':>7} {'twin':>7} {'ratio':>6} {'q25-q75':>11}"
    )

    def quartiles(r):
        return statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3

    worst = worst_cpu = 0.0
    for mode in mode_names:
        for nl, twin in pairs:
            a, b = statistics.median(times[(mode, nl)]), statistics.median(times[(mode, twin)])
            ca, cb = statistics.median(cpu[(mode, nl)]), statistics.median(cpu[(mode, twin)])
            r, cr = ratios[(mode, (nl, twin))], cpu_ratios[(mode, (nl, twin))]
            q, cq = quartiles(r), quartiles(cr)
            if nl.startswith("PowKernel"):
                worst, worst_cpu = max(worst, statistics.median(r)), max(worst_cpu, statistics.median(cr))
            print(
                f"{mode:5} {nl:39} {twin:29} {a * 1e3:8.2f} {b * 1e3:7.2f} {statistics.median(r):6.3f} "
                f"{q[0]:5.3f}-{q[2]:5.3f} {ca * 1e3:7.2f} {cb * 1e3:7.2f} {statistics.median(cr):6.3f} "
                f"{cq[0]:5.3f}-{cq[2]:5.3f}"
            )
    target = 1.02 if device == "gpu" else 1.10
    print(
        f"\nworst ratio: wall {worst:.3f}, CPU time {worst_cpu:.3f} (target <= {target:.2f}): "
        f"{'OK' if max(worst, worst_cpu) <= target else 'MISSED'}"
    )

    if args.no_breakdown:
        return 0
    print("\nwhere the time goes (minimum over 20 calls):")
    for xla in [False, True] if BACKEND == "tensorflow" else [True]:
        pairs = [p for p in pairs if p[0].startswith("PowKernel")]
        updates, map_times, n = update_and_map_benchmark(xla, pairs)
        label = "XLA" if xla else "graph"
        print(
            f"  [{label}] map φ alone over the {n / 1e6:.2f}M selected gradient values: "
            f"exp(p·log|g|) {map_times['exp_log'] * 1e3:.2f} ms, pow {map_times['pow'] * 1e3:.2f} ms"
        )
        for nl, twin in pairs:
            print(
                f"  [{label}] update alone {nl:40} {updates[nl] * 1e3:7.2f} ms vs {twin:30} "
                f"{updates[twin] * 1e3:7.2f} ms (+{(updates[nl] - updates[twin]) * 1e3:.2f} ms)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
