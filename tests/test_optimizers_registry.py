"""Registry, recorded hyperparameters, validation, selection rules, provenance and user registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers, ops

import optimizers
from deepobs_tree import setting_folder_name

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = [
    "GradientDescentOptimizer",
    "GradientDescentOptimizerW_scaled",
    "MomentumOptimizer",
    "MomentumOptimizerW_momscaled",
    "NAGOptimizer",
    "NAGOptimizerW_momscaled",
    "PowKernelGradientDescentOptimizer",
    "PowKernelGradientDescentOptimizerW_scaled",
    "PowKernelMomentumOptimizer",
    "PowKernelMomentumOptimizerW_momscaled",
    "PowKernelMomentumOptimizerN",
    "PowKernelMomentumOptimizerNW_momscaled",
]


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4, 4, 1)), layers.Conv2D(2, 3), layers.BatchNormalization(), layers.Flatten(), layers.Dense(3)]
    )


def test_names_are_the_result_folder_names():
    assert optimizers.names()[: len(EXPECTED)] == EXPECTED
    assert optimizers.BUILTIN == tuple(EXPECTED)


def test_registry_imports_without_keras():
    code = (
        "import sys, optimizers; optimizers.names(); optimizers.recorded_hyperparams('NAGOptimizer', "
        "{'learning_rate': 0.1, 'momentum': 0.5}); assert 'keras' not in sys.modules, 'keras imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_recorded_hyperparams_match_paper_folders():
    """The PowKernel folders of the paper (protocol §1) and the Crowded Valley baselines (§6)."""
    rec = optimizers.recorded_hyperparams(
        "PowKernelMomentumOptimizer", {"learning_rate": 0.0029204338472, "power": 0.9, "momentum": 0.9}
    )
    assert rec == {"learning_rate": 0.0029204338472, "power": 0.9}
    assert (
        setting_folder_name(100, 128, rec)
        == "num_epochs__100__batch_size__128__learning_rate__2.9204338472e-03__power__9.e-01"
    )
    rec = optimizers.recorded_hyperparams(
        "PowKernelMomentumOptimizerNW_momscaled", {"learning_rate": 0.01, "power": 0.5, "weight_decay_opt": 0.002}
    )
    assert rec == {"learning_rate": 0.01, "power": 0.5, "weight_decay_opt": 0.002}
    rec = optimizers.recorded_hyperparams(
        "MomentumOptimizer", {"learning_rate": 0.0017654048052, "momentum": 0.036324869567}
    )
    assert rec == {
        "learning_rate": 0.0017654048052,
        "momentum": 0.036324869567,
        "use_locking": False,
        "use_nesterov": False,
    }
    assert setting_folder_name(100, 128, rec) == (
        "num_epochs__100__batch_size__128__learning_rate__1.7654048052e-03"
        "__momentum__3.6324869567e-02__use_locking__False__use_nesterov__False"
    )
    rec = optimizers.recorded_hyperparams("NAGOptimizer", {"learning_rate": 1, "momentum": 0.5})
    assert rec["use_nesterov"] is True and isinstance(rec["learning_rate"], float)
    assert optimizers.recorded_hyperparams("GradientDescentOptimizer", {"learning_rate": 0.1}) == {"learning_rate": 0.1}
    assert optimizers.recorded_hyperparams(
        "NAGOptimizerW_momscaled", {"learning_rate": 0.1, "momentum": 0.5, "weight_decay_opt": 5e-4}
    ) == {"learning_rate": 0.1, "momentum": 0.5, "use_locking": False, "use_nesterov": True, "weight_decay_opt": 5e-4}
    # recorded dicts read back from a JSON file are accepted by make()
    assert optimizers.make("NAGOptimizer", None, **rec_nag()).nesterov is True


def rec_nag():
    return {"learning_rate": 0.1, "momentum": 0.5, "use_locking": False, "use_nesterov": True}


def test_spec_and_defaults():
    import pickle

    s = pickle.loads(pickle.dumps(optimizers.spec("PowKernelMomentumOptimizerN")))  # workers may ship specs
    assert s.factory(None, learning_rate=0.1, power=0.5).nesterov is True
    assert s.hyperparams == ("learning_rate", "power")
    assert s.defaults["momentum"] == 0.9
    assert optimizers.spec("MomentumOptimizer").hyperparams == (
        "learning_rate",
        "momentum",
        "use_locking",
        "use_nesterov",
    )


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("Adamm", {"learning_rate": 0.1}, "unknown optimizer 'Adamm'; known: GradientDescentOptimizer"),
        ("GradientDescentOptimizer", {"learning_rate": 0.0}, "learning_rate must be a number > 0"),
        ("GradientDescentOptimizer", {"learning_rate": -1}, "learning_rate must be a number > 0"),
        ("GradientDescentOptimizer", {"learning_rate": float("nan")}, "learning_rate must be a number > 0"),
        ("GradientDescentOptimizer", {"learning_rate": "0.1"}, "learning_rate must be a number > 0"),
        ("MomentumOptimizer", {"learning_rate": 0.1, "momentum": 1.0}, "momentum must be a number in [0, 1)"),
        ("PowKernelMomentumOptimizer", {"learning_rate": 0.1, "power": 0.5, "momentum": -0.1}, "in [0, 1)"),
        ("PowKernelGradientDescentOptimizer", {"learning_rate": 0.1, "power": 0}, "power must be a number > 0"),
        ("PowKernelGradientDescentOptimizer", {"learning_rate": 0.1}, "needs power"),
        (
            "PowKernelGradientDescentOptimizerW_scaled",
            {"learning_rate": 0.1, "power": 0.5, "weight_decay_opt": -1e-3},
            "weight_decay_opt must be a number >= 0",
        ),
        ("PowKernelGradientDescentOptimizerW_scaled", {"learning_rate": 0.1, "power": 0.5}, "needs weight_decay_opt"),
        (
            "GradientDescentOptimizer",
            {"learning_rate": 0.1, "momentum": 0.9},
            "does not take 'momentum'; allowed: learning_rate",
        ),
        ("NAGOptimizer", {"learning_rate": 0.1, "use_nesterov": False}, "fixed use_nesterov=True"),
        (
            "PowKernelGradientDescentOptimizer",
            {"learning_rate": 0.1, "power": 0.5, "select": "kernels"},
            "unknown selection rule 'kernels'; allowed: 'rank>=2', 'all', 'none'",
        ),
        (
            "PowKernelGradientDescentOptimizerW_scaled",
            {"learning_rate": 0.1, "power": 0.5, "weight_decay_opt": 0.1, "decay_on": "some"},
            "decay_on must be one of 'selected', 'all'",
        ),
    ],
)
def test_bad_input_raises_value_error_saying_what_is_allowed(name, kwargs, message):
    with pytest.raises(ValueError) as err:
        optimizers.make(name, None, **kwargs)
    assert message in str(err.value)


def test_make_records_provenance_not_in_optimizer_hyperparams():
    model = tiny_model()
    opt = optimizers.make(
        "PowKernelMomentumOptimizerW_momscaled", model, learning_rate=0.1, power=0.7, weight_decay_opt=0.002
    )
    prov = opt.nlwu_provenance
    assert prov["optimizer"] == "PowKernelMomentumOptimizerW_momscaled"
    assert prov["optimizer_hyperparams"] == {"learning_rate": 0.1, "power": 0.7, "weight_decay_opt": 0.002}
    assert prov["hyperparams"]["momentum"] == 0.9
    assert prov["select"] == "rank>=2" and prov["decay_on"] == "selected"
    kernels = [v.path for v in model.trainable_variables if v.path.endswith("kernel")]
    assert prov["selected"] == kernels == prov["decayed"]
    assert len(prov["not_selected"]) == 4  # conv bias, BN gamma/beta, dense bias
    opt_all = optimizers.make(
        "PowKernelMomentumOptimizerW_momscaled",
        model,
        learning_rate=0.1,
        power=0.7,
        weight_decay_opt=0.002,
        decay_on="all",
        select="rank>=3",
    )
    assert opt_all.nlwu_provenance["selected"] == kernels[:1]  # only the 4-D conv kernel
    assert len(opt_all.nlwu_provenance["decayed"]) == len(model.trainable_variables)


def test_selection_rules_use_shape_not_name():
    v_theta = keras.Variable(np.ones((1, 100), "float32"), name="theta")
    v_bias = keras.Variable(np.ones((5,), "float32"), name="kernel")  # name says kernel, rank 1
    rule = optimizers.resolve_rule("rank>=2")
    assert rule(v_theta) and not rule(v_bias)
    assert optimizers.resolve_rule("all")(v_bias) and not optimizers.resolve_rule("none")(v_theta)
    custom = optimizers.resolve_rule(lambda v: int(np.prod(v.shape)) > 50)
    assert custom(v_theta) and not custom(v_bias)


def test_register_nonlinear_adam_and_sweep_it():
    def factory(model, learning_rate, power, select=None):
        return optimizers.nonlinear(keras.optimizers.Adam(learning_rate), power=power, select=select or "rank>=2")

    optimizers.register("PowKernelAdam", factory, hyperparams=("learning_rate", "power"), options=("select",))
    try:
        assert "PowKernelAdam" in optimizers.names()
        with pytest.raises(ValueError, match="already registered"):
            optimizers.register("PowKernelAdam", factory)
        with pytest.raises(ValueError, match="power must be a number > 0"):
            optimizers.make("PowKernelAdam", None, learning_rate=1e-3, power=-1)
        model = tiny_model()
        opt = optimizers.make("PowKernelAdam", model, learning_rate=1e-3, power=0.6)
        assert optimizers.recorded_hyperparams("PowKernelAdam", {"learning_rate": 1e-3, "power": 0.6}) == {
            "learning_rate": 1e-3,
            "power": 0.6,
        }
        assert opt.nlwu_provenance["optimizer"] == "PowKernelAdam"
        grads = [ops.ones(v.shape) for v in model.trainable_variables]
        opt.apply(grads, model.trainable_variables)
        assert all(np.isfinite(ops.convert_to_numpy(v)).all() for v in model.trainable_variables)
    finally:
        optimizers.unregister("PowKernelAdam")
    assert "PowKernelAdam" not in optimizers.names()
    with pytest.raises(ValueError, match="folder name"):
        optimizers.register("bad__name", factory)


def test_get_config_roundtrip():
    opt = optimizers.make("PowKernelMomentumOptimizerN", None, learning_rate=0.1, power=0.6)
    config = opt.get_config()
    clone = optimizers.KernelMapOptimizer.from_config(config)
    assert (clone.power, clone.momentum, clone.nesterov) == (0.6, 0.9, True)
    wrapped = optimizers.nonlinear(keras.optimizers.Adam(0.01), power=0.7)
    clone = optimizers.NonlinearWrapper.from_config(wrapped.get_config())
    assert clone.power == 0.7 and isinstance(clone.inner_optimizer, keras.optimizers.Adam)


def test_plain_keras_factory_gets_provenance_and_rejects_undeclared_options():
    optimizers.register("PlainAdam", lambda model, learning_rate: keras.optimizers.Adam(learning_rate))
    try:
        opt = optimizers.make("PlainAdam", tiny_model(), learning_rate=0.01)
        assert opt.nlwu_provenance["optimizer"] == "PlainAdam"
        assert opt.nlwu_provenance["optimizer_hyperparams"] == {"learning_rate": 0.01}
        assert "selected" not in opt.nlwu_provenance  # no map: no selection to record
        with pytest.raises(ValueError, match="does not take 'select'"):
            optimizers.make("PlainAdam", None, learning_rate=0.01, select="all")
    finally:
        optimizers.unregister("PlainAdam")


def test_builtin_search_is_over_the_protocols_searched_hyperparameters():
    """The writer's default distributions and the reader's grouping name the same hyperparameters, once."""
    from analysis.select import DEFAULT_SEARCHED
    from deepobs_tree.seeds import SEARCHED
    from optimizers.distributions import DEFAULT_SEARCH

    assert tuple(DEFAULT_SEARCH) == SEARCHED == DEFAULT_SEARCHED
    assert DEFAULT_SEARCH["power"] == {"randint": [4, 9], "scale": 0.1}  # protocol §3.2: p = 0.1 k, k in {4, ..., 9}
