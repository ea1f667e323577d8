"""Every registered optimizer against a NumPy reference written from protocol.md §1.1-1.2 (three steps).

The reference below reads the optimizer's behaviour off its folder name with the protocol's grammar
(``PowKernel`` -> φ_p on rank >= 2 tensors, ``Momentum``/``NAG`` -> TF1 momentum, ``N``/``NAG`` -> Nesterov,
``W_scaled`` -> d = λη, ``W_momscaled`` -> d = λη/(1-μ)); it shares no code with ``optimizers``.
The same tests run under the jax backend through ``test_reference_under_jax_backend`` (subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers, ops

import optimizers

ROOT = Path(__file__).resolve().parents[1]
LR = 0.05
RTOL = 1e-6


# ------------------------------------------------------------------ NumPy reference (protocol §1.1)


class Reference:
    """protocol §1.1 in float64: ĝ = sign(g)|g|^p on S; a ← μa + ĝ; w ← w − d·w − η·dir (TF1 momentum)."""

    def __init__(self, name, hp, select="rank>=2", decay_on="selected"):
        pow_kernel = name.startswith("PowKernel")
        self.nesterov = "MomentumOptimizerN" in name or name.startswith("NAG")
        self.momentum = self.nesterov or "MomentumOptimizer" in name
        self.p = hp.get("power", 1.0) if pow_kernel else 1.0
        self.mu = hp.get("momentum", 0.9) if self.momentum else 0.0
        self.lr = hp["learning_rate"]
        lam = hp.get("weight_decay_opt", 0.0)
        if name.endswith("W_scaled"):
            self.d = lam * self.lr
        elif name.endswith("W_momscaled"):
            self.d = lam * self.lr / (1.0 - self.mu)
        else:
            self.d = 0.0
        rule = {"rank>=2": lambda w: w.ndim >= 2, "all": lambda w: True, "none": lambda w: False}[select]
        self.in_s = lambda w: pow_kernel and rule(w)
        self.decayed = lambda w: rule(w) or decay_on == "all"
        self.a = None

    def step(self, w, grads):
        w = [np.asarray(x, np.float64) for x in w]
        if self.a is None:
            self.a = [np.zeros_like(x) for x in w]
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            g_hat = np.sign(g) * np.abs(g) ** self.p if self.in_s(w[i]) else g
            self.a[i] = self.mu * self.a[i] + g_hat
            if self.nesterov:
                direction = g_hat + self.mu * self.a[i]
            else:
                direction = self.a[i] if self.momentum else g_hat
            w[i] = w[i] - (self.d * w[i] if self.decayed(w[i]) else 0.0) - self.lr * direction
        return w


def reference_run(name, hp, params, grads_seq, select="rank>=2", decay_on="selected"):
    """Weights after applying ``grads_seq`` step by step with the reference."""
    ref = Reference(name, hp, select, decay_on)
    w = params
    for grads in grads_seq:
        w = ref.step(w, grads)
    return [np.asarray(x, np.float64) for x in w]


# ------------------------------------------------------------------ fixtures


def small_model(seed=0):
    """Conv (kernel + bias) -> batch norm (gamma, beta) -> dense (kernel + bias)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((5, 5, 2)), layers.Conv2D(4, 3), layers.BatchNormalization(), layers.Flatten(), layers.Dense(3)]
    )
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:  # nonzero biases/beta so decay_on='all' is visible
        if len(v.shape) == 1:
            v.assign(rng.uniform(0.2, 1.0, v.shape).astype("float32") * rng.choice([-1, 1], v.shape))
    return model


def gradient_sequence(model, steps=3, seed=1):
    """Per step, per variable: magnitudes log-uniform on [1e-4, 2], random signs, ~10% exact zeros."""
    rng = np.random.default_rng(seed)
    seq = []
    for _ in range(steps):
        grads = []
        for v in model.trainable_variables:
            shape = tuple(v.shape)
            g = 10 ** rng.uniform(-4, np.log10(2), shape) * rng.choice([-1.0, 1.0], shape)
            g[rng.random(shape) < 0.1] = 0.0
            grads.append(g.astype("float32"))
        seq.append(grads)
    return seq


def run_keras(optimizer, model, grads_seq):
    for grads in grads_seq:
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
    return [ops.convert_to_numpy(v) for v in model.trainable_variables]


def hyperparams_for(name, **over):
    hp = {"learning_rate": LR}
    if name.startswith("PowKernel"):
        hp["power"] = 0.6
    if "W_" in name:
        hp["weight_decay_opt"] = 0.02
    if name.startswith(("MomentumOptimizer", "NAGOptimizer")):
        hp["momentum"] = 0.7  # baselines: momentum is recorded and searched
    hp.update(over)
    return hp


def assert_close(actual, reference, rtol=RTOL):
    """|x − ref| ≤ rtol·|ref| + rtol·max|ref| per tensor: relative to 1e-6, with the floor float32 needs
    where an update cancels a weight to near zero (float32 eps·|w| ≈ 6e-8·|w| per operation)."""
    for x, ref in zip(actual, reference):
        np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * float(np.abs(ref).max()))


CASES = [(name, {}) for name in optimizers.BUILTIN] + [
    ("PowKernelMomentumOptimizer", {"momentum": 0.5}),
    ("PowKernelMomentumOptimizerNW_momscaled", {"decay_on": "all"}),
    ("PowKernelGradientDescentOptimizerW_scaled", {"select": "all"}),
    ("PowKernelGradientDescentOptimizer", {"select": "none"}),
    ("MomentumOptimizer", {"momentum": 0.0}),
    ("PowKernelGradientDescentOptimizer", {"power": 0.5}),
]


@pytest.mark.parametrize("name,extra", CASES, ids=[f"{n}-{e}" if e else n for n, e in CASES])
def test_three_steps_match_numpy_reference(name, extra):
    model = small_model()
    params = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    grads_seq = gradient_sequence(model)
    options = {k: extra[k] for k in ("select", "decay_on") if k in extra}
    hp = hyperparams_for(name, **{k: v for k, v in extra.items() if k not in options})
    opt = optimizers.make(name, model, **hp, **options)
    actual = run_keras(opt, model, grads_seq)
    expected = reference_run(name, hp, params, grads_seq, **options)
    assert_close(actual, expected)
    # every tensor moved, and the batch-norm moving statistics (non-trainable) were left alone
    assert all(not np.array_equal(a, p) for a, p in zip(actual, params))
    assert all(
        np.all(ops.convert_to_numpy(v) == (0.0 if "mean" in v.path else 1.0)) for v in model.non_trainable_variables
    )


@pytest.mark.parametrize("name", [n for n in optimizers.BUILTIN if n.startswith("PowKernel")])
def test_power_one_reproduces_linear_twin_exactly(name):
    twin = optimizers.linear_twin(name)
    grads_seq = gradient_sequence(small_model())
    hp = hyperparams_for(name, power=1.0)
    twin_hp = {k: v for k, v in hp.items() if k != "power"}
    if twin.startswith(("MomentumOptimizer", "NAGOptimizer")):
        twin_hp["momentum"] = optimizers.DEFAULT_MOMENTUM  # the PowKernel default
    m1, m2 = small_model(), small_model()
    nonlinear = run_keras(optimizers.make(name, m1, **hp), m1, grads_seq)
    linear = run_keras(optimizers.make(twin, m2, **twin_hp), m2, grads_seq)
    for x, y in zip(nonlinear, linear):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["MomentumOptimizer", "NAGOptimizer"])
def test_tf1_momentum_equals_keras_sgd(name):
    """TF1 a ← μa + g; w ← w − η·a equals Keras' v ← μv − ηg; w ← w + v for constant η (protocol §1.1)."""
    grads_seq = gradient_sequence(small_model())
    m1, m2 = small_model(), small_model()
    ours = run_keras(optimizers.make(name, m1, learning_rate=LR, momentum=0.9), m1, grads_seq)
    sgd = keras.optimizers.SGD(LR, momentum=0.9, nesterov=name == "NAGOptimizer")
    theirs = run_keras(sgd, m2, grads_seq)
    assert_close(ours, theirs)


@pytest.mark.parametrize("name", optimizers.BUILTIN)
def test_zero_gradients_stay_zero(name):
    """φ(0) = 0: zero gradients move only decayed tensors (by exactly d·w), never to NaN."""
    model = small_model()
    params = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    zeros = [[np.zeros(p.shape, "float32") for p in params]] * 3
    hp = hyperparams_for(name)
    opt = optimizers.make(name, model, **hp)
    actual = run_keras(opt, model, zeros)
    assert all(np.isfinite(x).all() for x in actual)
    assert_close(actual, reference_run(name, hp, params, zeros))
    if "W_" not in name:
        for x, p in zip(actual, params):
            np.testing.assert_array_equal(x, p)
    if opt.variables[2:]:  # momentum buffers stay exactly zero
        assert all(not ops.convert_to_numpy(a).any() for a in opt._accumulators)


def test_wrapped_adam_power_one_matches_adam_step_for_step():
    grads_seq = gradient_sequence(small_model())
    m1, m2 = small_model(), small_model()
    wrapped = optimizers.nonlinear(keras.optimizers.Adam(1e-2), power=1.0)
    plain = keras.optimizers.Adam(1e-2)
    for grads in grads_seq:
        wrapped.apply([ops.convert_to_tensor(g) for g in grads], m1.trainable_variables)
        plain.apply([ops.convert_to_tensor(g) for g in grads], m2.trainable_variables)
        for v1, v2 in zip(m1.trainable_variables, m2.trainable_variables):
            np.testing.assert_array_equal(ops.convert_to_numpy(v1), ops.convert_to_numpy(v2))
    assert int(ops.convert_to_numpy(wrapped.iterations)) == 3


def test_wrapped_adam_feeds_mapped_gradients_to_selected_tensors_only():
    grads_seq = gradient_sequence(small_model())
    m1, m2 = small_model(), small_model()
    wrapped = optimizers.nonlinear(keras.optimizers.Adam(1e-2), power=0.6)
    plain = keras.optimizers.Adam(1e-2)
    for grads in grads_seq:
        wrapped.apply_gradients(zip([ops.convert_to_tensor(g) for g in grads], m1.trainable_variables))
        mapped = [np.sign(g) * np.abs(g.astype(np.float64)) ** 0.6 if g.ndim >= 2 else g for g in grads]
        plain.apply([ops.convert_to_tensor(np.float32(g)) for g in mapped], m2.trainable_variables)
    assert_close(
        [ops.convert_to_numpy(v) for v in m1.trainable_variables],
        [ops.convert_to_numpy(v) for v in m2.trainable_variables],
        rtol=1e-5,
    )
    assert wrapped.nlwu_provenance["selected"] == [v.path for v in m1.trainable_variables if len(v.shape) >= 2]


# ------------------------------------------------------------------ inside model.fit (real gradients)


def _gradients(model, x, y, loss_fn):
    """d loss / d trainable variables at the model's current weights (training mode), as NumPy."""
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(tv):
            out, _ = model.stateless_call(tv, non_trainable, x, training=True)
            return loss_fn(y, out)

        return [np.asarray(g) for g in jax.grad(loss)(trainable)]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("name", ["PowKernelMomentumOptimizerNW_momscaled", "PowKernelGradientDescentOptimizer"])
def test_model_fit_follows_reference_with_real_gradients(name):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 5, 5, 2)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    loss_fn = keras.losses.MeanSquaredError()
    hp = hyperparams_for(name)
    model = small_model()
    params = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    model.compile(optimizer=optimizers.make(name, model, **hp), loss=loss_fn)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    fitted = [ops.convert_to_numpy(v) for v in model.trainable_variables]

    probe, ref = small_model(), Reference(name, hp)
    w = [np.float64(p) for p in params]
    for _ in range(3):  # reference step by step, gradients taken at the reference weights
        for v, wi in zip(probe.trainable_variables, w):
            v.assign(wi.astype("float32"))
        w = ref.step(w, _gradients(probe, x, y, loss_fn))
    assert_close(fitted, w, rtol=1e-5)


def test_wrapped_optimizer_inside_model_fit_matches_base():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 5, 5, 2)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    fitted = []
    for opt in (optimizers.nonlinear(keras.optimizers.Adam(1e-2), power=1.0), keras.optimizers.Adam(1e-2)):
        model = small_model()
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        fitted.append([ops.convert_to_numpy(v) for v in model.trainable_variables])
    for a, b in zip(*fitted):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ the same tests under jax


def _run_under(backend, selection, files=(Path(__file__),)):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        *map(str, files),
        "-k",
        selection,
        "-W",
        "ignore::DeprecationWarning",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="spawned from the tensorflow run")
def test_reference_under_jax_backend():
    maps_tests = Path(__file__).with_name("test_optimizers_maps.py")
    _run_under(
        "jax",
        "three_steps or power_one or adam or fit or backend_is or compiled or half_precision",
        files=(Path(__file__), maps_tests),
    )


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="spawned from the tensorflow run")
def test_reference_under_torch_backend():
    pytest.importorskip("torch")
    _run_under("torch", "(three_steps or power_one or adam or zero or backend_is) and not fit")


def test_backend_is_the_requested_one():
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")
