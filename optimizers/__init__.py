"""Baseline and non-linear optimizers of the study (protocol §1, §6) as composable Keras 3 pieces.

    import optimizers
    optimizers.names()                                   # registry keyed by result-folder names
    opt = optimizers.make("PowKernelMomentumOptimizer", model, learning_rate=3e-3, power=0.7)
    optimizers.recorded_hyperparams(name, hp)            # the JSON optimizer_hyperparams
    optimizers.nonlinear(keras.optimizers.Adam(1e-3), power=0.6)   # φ in front of any Keras optimizer
    optimizers.register("PowKernelAdam", factory, hyperparams=("learning_rate", "power"),
                        search={"power": {"uniform": [0.3, 1.0]}}, label="Adam+φ", twin="KerasAdam")
    optimizers.search_space(name, study_space)           # plugin/built-in defaults merged with a study's
    optimizers.plugins.load("examples/plugins/adam_family.py")   # bring your own optimizer (plugins.py)

The registry functions import no Keras; the optimizer classes and pieces load Keras on first use.
"""

from __future__ import annotations

import importlib

from .registry import (
    BUILTIN,
    DEFAULT_MOMENTUM,
    OPTIONS,
    AlreadyRegistered,
    OptimizerSpec,
    PluginError,
    decoupled_variant,
    linear_twin,
    make,
    names,
    recorded_hyperparams,
    register,
    resolve_hyperparams,
    spec,
    unregister,
)
from .selection import DEFAULT_RULE, RULES, resolve_rule, selection_record
from .space import search_space

_LAZY = {
    "KernelMapOptimizer": ("kernel_map", "KernelMapOptimizer"),
    "NonlinearWrapper": ("wrap", "NonlinearWrapper"),
    "nonlinear": ("wrap", "nonlinear"),
    "maps": ("maps", None),
    "plugins": ("plugins", None),
    "transforms": ("transforms", None),
}

__all__ = [
    "BUILTIN",
    "OPTIONS",
    "decoupled_variant",
    "linear_twin",
    "AlreadyRegistered",
    "DEFAULT_MOMENTUM",
    "DEFAULT_RULE",
    "RULES",
    "OptimizerSpec",
    "PluginError",
    "make",
    "names",
    "recorded_hyperparams",
    "register",
    "resolve_hyperparams",
    "resolve_rule",
    "search_space",
    "selection_record",
    "spec",
    "unregister",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(f"{__name__}.{module}")
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
