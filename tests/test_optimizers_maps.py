"""The element-wise maps: exact at zero, accurate, finite in float16/bfloat16; mixed-precision training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import optimizers
from optimizers import maps


def phi64(g, p):
    g = np.asarray(g, np.float64)
    return np.sign(g) * np.abs(g) ** p


@pytest.mark.parametrize("p", [0.4, 0.5, 0.6000000000000001, 0.9, 1.0])
def test_signed_power_float32_accuracy_and_exact_zero(p):
    rng = np.random.default_rng(0)
    g = (10 ** rng.uniform(-30, 3, 20000) * rng.choice([-1, 1], 20000)).astype("float32")
    g[::10] = 0.0
    g[1::10] = -0.0
    out = ops.convert_to_numpy(maps.signed_power(p)(ops.convert_to_tensor(g)))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.all(out[g == 0] == 0)
    ref = phi64(g, p)
    # documented bound of exp(p·log|g|): 2·(|p·ln|g|| + 1)·eps32 relative (p = 0.5 and 1 are ~exact)
    bound = 2 * (np.abs(p * np.log(np.abs(g.astype(np.float64)) + 1e-300)) + 1) * np.finfo(np.float32).eps
    nonzero = g != 0
    assert np.all(np.abs(out - ref)[nonzero] <= bound[nonzero] * np.abs(ref)[nonzero])
    if p == 1.0:
        np.testing.assert_array_equal(out, g)


def test_signed_power_matches_pow_form_and_known_values():
    g = ops.convert_to_tensor(np.array([-4.0, -1.0, 0.0, 0.25, 9.0], "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(maps.signed_power(0.5)(g)), [-2, -1, 0, 0.5, 3], rtol=1e-7)
    a = ops.convert_to_numpy(maps.signed_power(0.7)(g))
    b = ops.convert_to_numpy(maps.PowSignedPower(0.7)(g))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    g = ops.convert_to_tensor(np.array([1e-3, 0.5, 2.0, 1e3], "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(maps.signed_power(0.9)(g)), phi64(g, 0.9), rtol=1e-6)


def test_other_maps_and_resolution():
    g = ops.convert_to_tensor(np.array([-3.0, 0.0, 2.0], "float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(maps.sign()(g)), [-1, 0, 1])
    np.testing.assert_array_equal(ops.convert_to_numpy(maps.identity()(g)), [-3, 0, 2])
    assert isinstance(maps.resolve_map(None, 0.5), maps.SignedPower)
    assert isinstance(maps.resolve_map("sign"), maps.Sign)
    with pytest.raises(ValueError, match="unknown element-wise map 'cube'; allowed"):
        maps.resolve_map("cube")
    with pytest.raises(ValueError, match="power must be a number > 0"):
        maps.signed_power(-0.5)


@pytest.mark.parametrize("dtype,rtol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
def test_half_precision_map_is_finite_and_exact_at_zero(dtype, rtol):
    """Mapped in float32 and cast back: zeros stay zero, subnormals and the largest values stay finite."""
    finfo = {"float16": (6e-8, 65504.0), "bfloat16": (2e-38, 3.3e38)}[dtype]  # float32 FTZ: no subnormals
    values = np.array([0.0, -0.0, finfo[0], -finfo[0], 1e-4, -0.3, 1.0, 7.5, finfo[1], -finfo[1]], "float32")
    for p in (0.4, 0.6, 0.9):
        out = ops.convert_to_numpy(ops.cast(maps.signed_power(p)(ops.cast(values, dtype)), "float32"))
        assert np.isfinite(out).all(), (dtype, p, out)
        assert np.all(out[:2] == 0)
        half = ops.convert_to_numpy(ops.cast(ops.cast(values, dtype), "float32"))
        nonzero = half != 0
        # results in the float16 subnormal range are rounded to its spacing (6e-8)
        np.testing.assert_allclose(out[nonzero], phi64(half[nonzero], p), rtol=rtol, atol=finfo[0])
    assert maps.signed_power(0.6)(ops.cast(values, dtype)).dtype == ops.cast(values, dtype).dtype


@pytest.mark.parametrize("name", ["PowKernelMomentumOptimizerNW_momscaled", "PowKernelGradientDescentOptimizer"])
def test_float16_variables_and_gradients_step_finitely(name):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), layers.Dense(4, dtype="float16"), layers.Dense(2, dtype="float16")])
    assert all(v.dtype == "float16" for v in model.trainable_variables)
    hp = {"learning_rate": 0.01, "power": 0.6} | ({"weight_decay_opt": 0.002} if "W_" in name else {})
    opt = optimizers.make(name, model, **hp)
    rng = np.random.default_rng(1)
    for _ in range(3):
        grads = []
        for v in model.trainable_variables:
            g = rng.normal(size=tuple(v.shape)).astype("float16")
            g.flat[0], g.flat[-1] = 0.0, np.float16(6e-8)
            grads.append(ops.convert_to_tensor(g))
        opt.apply(grads, model.trainable_variables)
    for v in model.trainable_variables:
        assert np.isfinite(ops.convert_to_numpy(ops.cast(v, "float32"))).all()


def test_mixed_float16_fit_with_loss_scaling_stays_finite():
    """mixed_float16 layers + LossScaleOptimizer(our optimizer): finite losses and weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            layers.Conv2D(4, 3, dtype="mixed_float16"),
            layers.BatchNormalization(dtype="mixed_float16"),
            layers.Flatten(),
            layers.Dense(3, dtype="mixed_float16"),
        ]
    )
    inner = optimizers.make("PowKernelMomentumOptimizerN", model, learning_rate=0.01, power=0.5)
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(inner), loss="mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 5, 5, 2)).astype("float32")
    y = np.zeros((32, 3), "float32")  # tiny gradients late in training: many |g| underflow in float16
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(ops.convert_to_numpy(v)).all() for v in model.trainable_variables)
    assert int(ops.convert_to_numpy(inner.iterations)) > 0


def test_map_is_exact_at_zero_when_compiled():
    """Under XLA (tf.function(jit_compile=True) / jax.jit) log(0) = -inf must still give φ(0) = 0."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        compile_ = lambda f: tf.function(f, jit_compile=True)  # noqa: E731
    elif backend == "jax":
        import jax

        compile_ = jax.jit
    else:
        pytest.skip(f"no XLA compile for {backend}")
    g = np.array([0.0, -0.0, 1e-38, 1e-45, -2.5, 3.0] * 1000, "float32")
    for p in (0.4, 0.6, 0.9):
        out = ops.convert_to_numpy(compile_(maps.signed_power(p))(ops.convert_to_tensor(g)))
        assert np.isfinite(out).all() and np.all(out[g == 0] == 0)
        big = np.abs(g) > 1e-30
        np.testing.assert_allclose(out[big], phi64(g[big], p), rtol=2e-6)
