"""One registry of optimizers keyed by result-folder name (protocol §1, §6); importable without Keras.

``make(name, model, **hyperparams)`` validates the hyperparameters, builds the optimizer and attaches
``nlwu_provenance`` (map, momentum, selection rule and the selected/decayed variable paths of ``model``).
``recorded_hyperparams`` gives exactly the ``optimizer_hyperparams`` dict of the DeepOBS JSON.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MOMENTUM = 0.9
OPTIONS = ("select", "decay_on")  # make() options that go to provenance, never to optimizer_hyperparams


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry.

    ``hyperparams``: names recorded in ``optimizer_hyperparams`` (searched or fixed); ``defaults``: default
    of every accepted, non-fixed hyperparameter (recorded or provenance-only, e.g. PowKernel momentum);
    ``fixed``: recorded constants (``use_locking``/``use_nesterov`` of the TF1 baselines); ``factory``:
    ``factory(model, **hyperparams, **options) -> keras optimizer``.
    """

    name: str
    hyperparams: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    factory: Callable[..., Any] | None = None
    options: tuple[str, ...] = OPTIONS
    description: str = ""

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every keyword ``make`` accepts for this optimizer."""
        names = list(self.hyperparams) + [k for k in self.defaults if k not in self.hyperparams]
        return tuple(names) + tuple(o for o in self.options if o not in names)


_REGISTRY: dict[str, OptimizerSpec] = {}


def _check_number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if math.isnan(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda x: 0.0 < x < math.inf, "a number > 0"),
    "momentum": (lambda x: 0.0 <= x < 1.0, "a number in [0, 1)"),
    "power": (lambda x: 0.0 < x < math.inf, "a number > 0"),
    "weight_decay_opt": (lambda x: 0.0 <= x < math.inf, "a number >= 0"),
}


def names() -> list[str]:
    """Registered optimizer names (built-ins first, then user registrations, in registration order)."""
    return list(_REGISTRY)


def spec(name: str) -> OptimizerSpec:
    """The registry entry of ``name``; ValueError listing the known names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(_REGISTRY)}") from None


def resolve_hyperparams(name: str, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, values validated, unknown keys rejected; fixed keys must equal their value."""
    entry = spec(name)
    unknown = [k for k in hyperparams if k not in entry.accepted and k not in entry.fixed]
    if unknown:
        raise ValueError(
            f"optimizer {name} does not take {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(entry.accepted + tuple(entry.fixed))}"
        )
    for key, value in entry.fixed.items():
        if key in hyperparams and hyperparams[key] != value:
            raise ValueError(f"optimizer {name} has fixed {key}={value!r}, got {hyperparams[key]!r}")
    values = {**entry.defaults, **{k: v for k, v in hyperparams.items() if k not in entry.fixed}}
    missing = [k for k in entry.hyperparams if k not in values and k not in entry.fixed]
    if missing:
        raise ValueError(f"optimizer {name} needs {', '.join(missing)} (recorded: {', '.join(entry.hyperparams)})")
    for key, (ok, allowed) in _CHECKS.items():
        if key in values:
            values[key] = _check_number(key, values[key], ok, allowed)
    return values


def recorded_hyperparams(name: str, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly the JSON ``optimizer_hyperparams`` of a run: recorded names in registry order, floats as
    floats, fixed constants (``use_locking: False``, ``use_nesterov``) added; provenance-only values (PowKernel
    momentum, selection rule, decay_on) left out."""
    entry = spec(name)
    values = resolve_hyperparams(name, hyperparams)
    return {k: entry.fixed[k] if k in entry.fixed else values[k] for k in entry.hyperparams}


def make(name: str, model: Any = None, **hyperparams: Any):
    """Build optimizer ``name`` for ``model`` (a Keras model or None) with validated hyperparameters.

    The result carries ``nlwu_provenance``: optimizer name, recorded and provenance-only hyperparameters,
    the map, and (for a built model) the selection rule and the selected/decayed variable paths.
    """
    entry = spec(name)
    values = resolve_hyperparams(name, hyperparams)
    optimizer = entry.factory(model, **values)
    ours = getattr(optimizer, "nlwu_provenance", None) is not None  # our classes know their map and rule
    if not ours:
        try:
            optimizer.nlwu_provenance = {"base_optimizer": type(optimizer).__name__}
        except AttributeError:  # pragma: no cover - exotic optimizer classes
            return optimizer
    provenance = optimizer.nlwu_provenance  # re-read: Keras wraps assigned dicts in a tracked copy
    provenance.update(
        {
            "optimizer": name,
            "optimizer_hyperparams": recorded_hyperparams(name, hyperparams),
            "hyperparams": {k: v for k, v in values.items() if k not in entry.options},
        }
    )
    built = getattr(optimizer, "built", False)
    if ours and not built and model is not None and getattr(model, "trainable_variables", None):
        from .selection import selection_record

        decay_on = values.get("decay_on", "selected") if values.get("weight_decay_opt", 0.0) > 0 else None
        provenance.update(selection_record(model.trainable_variables, values.get("select"), decay_on))
    return optimizer


def register(name: str, factory: Callable[..., Any], hyperparams: tuple[str, ...] = ("learning_rate",),
             defaults: Mapping[str, Any] | None = None, fixed: Mapping[str, Any] | None = None,
             options: tuple[str, ...] = (), description: str = "", replace: bool = False) -> OptimizerSpec:
    """Add ``name`` to the registry so runners and configs can sweep it like the built-ins.

    ``factory(model, **hyperparams, **options)`` returns a Keras optimizer, e.g.
    ``lambda model, learning_rate, power, select='rank>=2': nonlinear(keras.optimizers.Adam(learning_rate),
    power=power, select=select)`` with ``hyperparams=('learning_rate', 'power')`` and ``options=('select',)``
    (``options``: keywords ``make`` accepts and passes on but never records in ``optimizer_hyperparams``).
    """
    if not isinstance(name, str) or not name or "__" in name or "/" in name:
        raise ValueError(f"optimizer name must be a non-empty folder name without '__' or '/', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"optimizer {name!r} is already registered (pass replace=True to redefine it)")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable(model, **hyperparams), got {factory!r}")
    entry = OptimizerSpec(
        name=name,
        hyperparams=tuple(hyperparams),
        defaults=dict(defaults or {}),
        fixed=dict(fixed or {}),
        factory=factory,
        options=tuple(options),
        description=description,
    )
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a user registration (tests); unknown names raise ValueError."""
    spec(name)
    del _REGISTRY[name]


# ---------------------------------------------------------------- built-ins (protocol §1 and §6)

def _build_kernel_map(nonlinear: bool, momentum_kind: str | None, decay_scaling: str | None, model,
                      learning_rate, power=1.0, momentum=0.0, weight_decay_opt=0.0, select=None,
                      decay_on="selected"):
    """Factory of the built-ins (bound with functools.partial, so registry entries pickle)."""
    from .kernel_map import KernelMapOptimizer

    return KernelMapOptimizer(
        learning_rate=learning_rate,
        power=power if nonlinear else None,
        momentum=momentum if momentum_kind else 0.0,
        nesterov=momentum_kind == "nesterov",
        weight_decay_opt=weight_decay_opt if decay_scaling else 0.0,
        decay_scaling=decay_scaling or "scaled",
        select=select,
        decay_on=decay_on,
    )


def _kernel_map_factory(nonlinear: bool, momentum_kind: str | None, decay_scaling: str | None):
    return functools.partial(_build_kernel_map, nonlinear, momentum_kind, decay_scaling)


_RULES = {
    "GradientDescent": "w ← w − d·w − η·ĝ",
    "Momentum": "a ← μ·a + ĝ; w ← w − d·w − η·a",
    "Nesterov": "a ← μ·a + ĝ; w ← w − d·w − η·(ĝ + μ·a)",
}


#: base optimizer -> its decoupled-decay ("W") variant, filled by ``_register_builtins``
_DECOUPLED: dict[str, str] = {}


def _register_builtins() -> None:
    pending = []  # PowKernel entries, registered after the baselines
    decays = {None: ("", ()), "scaled": ("W_scaled", ("weight_decay_opt",)),
              "momscaled": ("W_momscaled", ("weight_decay_opt",))}
    for kind, rule in _RULES.items():
        momentum_kind = {"GradientDescent": None, "Momentum": "heavy_ball", "Nesterov": "nesterov"}[kind]
        for decay in (None, "scaled") if momentum_kind is None else (None, "momscaled"):
            suffix, decay_names = decays[decay]
            d_text = {None: "d = 0", "scaled": "d = λ·η", "momscaled": "d = λ·η/(1 − μ)"}[decay]
            defaults = {}  # weight_decay_opt of the W variants has no default: it is fixed per problem (§2)
            # PowKernel family: ĝ = φ_p(g) on selected tensors; momentum is provenance-only (default 0.9).
            pk_name = "PowKernel" + ("GradientDescentOptimizer" if kind == "GradientDescent" else "MomentumOptimizer")
            pk_name += ("N" if kind == "Nesterov" else "") + suffix
            base = {"GradientDescent": "GradientDescentOptimizer", "Momentum": "MomentumOptimizer",
                    "Nesterov": "NAGOptimizer"}[kind]
            if suffix:
                _DECOUPLED[pk_name.removesuffix(suffix)] = pk_name
                _DECOUPLED[base] = base + suffix
            pk_defaults = {**defaults, **({"momentum": DEFAULT_MOMENTUM} if momentum_kind else {})}
            pending.append(dict(
                name=pk_name, factory=_kernel_map_factory(True, momentum_kind, decay),
                hyperparams=("learning_rate", "power") + decay_names,
                defaults=pk_defaults, options=OPTIONS,
                description=f"ĝ = sign(g)·|g|^p on selected tensors; {rule}; {d_text}",
            ))
            # Baselines (DeepOBS / Crowded Valley names): ĝ = g; momentum recorded and searched.
            base += suffix
            fixed = {} if momentum_kind is None else {"use_locking": False,
                                                      "use_nesterov": momentum_kind == "nesterov"}
            recorded = ("learning_rate",) + (("momentum",) if momentum_kind else ())
            recorded += tuple(fixed) + decay_names
            register(
                base, _kernel_map_factory(False, momentum_kind, decay),
                hyperparams=recorded,
                defaults={**defaults, **({"momentum": DEFAULT_MOMENTUM} if momentum_kind else {})},
                fixed=fixed, options=OPTIONS,
                description=f"ĝ = g; {rule}; {d_text}",
            )
    for entry in pending:
        register(**entry)


_register_builtins()
BUILTIN = tuple(_REGISTRY)


def linear_twin(name: str) -> str:
    """The baseline a PowKernel optimizer equals at power = 1 (``PowKernelMomentumOptimizerN`` ->
    ``NAGOptimizer``); baselines are their own twin."""
    spec(name)
    if not name.startswith("PowKernel"):
        return name
    twin = name[len("PowKernel"):]
    twin = twin.replace("MomentumOptimizerN", "NAGOptimizer") if "MomentumOptimizerN" in twin else twin
    return spec(twin).name


def decoupled_variant(name: str) -> str:
    """The decoupled-decay ("W") optimizer for ``name`` (``MomentumOptimizer`` -> ``MomentumOptimizerW_momscaled``;
    a W variant is its own); ValueError when there is none."""
    spec(name)
    if name in _DECOUPLED.values():
        return name
    if name not in _DECOUPLED:
        raise ValueError(f"optimizer {name!r} has no decoupled-decay variant")
    return _DECOUPLED[name]
