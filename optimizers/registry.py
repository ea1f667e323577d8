"""One registry of optimizers keyed by result-folder name (protocol §1, §6); importable without Keras.

``make(name, model, **hyperparams)`` validates the hyperparameters, builds the optimizer and attaches
``nlwu_provenance`` (map, momentum, selection rule and the selected/decayed variable paths of ``model``).
``recorded_hyperparams`` gives exactly the ``optimizer_hyperparams`` dict of the DeepOBS JSON.
Every entry declares, per hyperparameter, a default search distribution (study syntax) and an allowed range,
plus a display label, a baseline flag and its linear twin (``optimizers.space.search_space``, ``linear_twin``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deepobs_tree.errors import NlwuError

from .distributions import DEFAULT_RANGES, DEFAULT_SEARCH, parse_range, range_check
from .selection import selection_record

DEFAULT_MOMENTUM = 0.9
OPTIONS = ("select", "decay_on")  # make() options that go to provenance, never to optimizer_hyperparams


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry.

    ``hyperparams``: names recorded in ``optimizer_hyperparams`` (searched or fixed); ``defaults``: default
    of every accepted, non-fixed hyperparameter (recorded or provenance-only, e.g. PowKernel momentum);
    ``fixed``: recorded constants (``use_locking``/``use_nesterov`` of the TF1 baselines); ``factory``:
    ``factory(model, **hyperparams, **options) -> keras optimizer``. Declarations: ``search`` (default search
    distribution per hyperparameter, study syntax), ``ranges`` (allowed interval per hyperparameter, e.g.
    ``'[0, 1)'``), ``label`` (tables and figures; default the name), ``baseline`` (grey/dashed, reference of
    the comparison table) and ``twin`` (the linear optimizer it equals at power = 1; baselines: themselves).
    """

    name: str
    hyperparams: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    factory: Callable[..., Any] | None = None
    options: tuple[str, ...] = OPTIONS
    description: str = ""
    search: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    baseline: bool = False
    twin: str | None = None

    @property
    def display_label(self) -> str:
        """The label of tables and figures (the name when none is declared)."""
        return self.label or self.name

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every keyword ``make`` accepts for this optimizer."""
        names = list(self.hyperparams) + [k for k in self.defaults if k not in self.hyperparams]
        return tuple(names) + tuple(o for o in self.options if o not in names)


_REGISTRY: dict[str, OptimizerSpec] = {}
_ORIGINS: dict[str, str] = {}  # name -> 'plugin <module> (<path>)', filled in by optimizers.plugins


class PluginError(NlwuError, ValueError):
    """A bad plugin or a bad optimizer declaration; the message is one line naming the plugin (or optimizer)
    and, where relevant, the hyperparameter."""


class AlreadyRegistered(NlwuError, ValueError):
    """``register`` of a name that is taken (a built-in or another plugin's)."""


def origin(name: str) -> str:
    """Who registered ``name``: 'built-in', 'plugin MODULE (PATH)' or 'user code'."""
    if name in BUILTIN:
        return "built-in"
    return _ORIGINS.get(name, "user code")


def who(name: str) -> str:
    """How messages name optimizer ``name``: 'plugin MODULE (PATH): optimizer NAME' or 'optimizer NAME'."""
    where = _ORIGINS.get(name)
    return f"{where}: optimizer {name}" if where else f"optimizer {name}"


def entries() -> dict[str, OptimizerSpec]:
    """A copy of the registry, name -> entry (the plugin loader restores it after a failed import)."""
    return dict(_REGISTRY)


def restore(before: Mapping[str, OptimizerSpec]) -> None:
    """Put the registry back to ``before`` (an ``entries()`` copy)."""
    _REGISTRY.clear()
    _REGISTRY.update(before)


def set_origin(name: str, label: str) -> None:
    """Record who registered ``name`` ('plugin MODULE (PATH)')."""
    _ORIGINS[name] = label


def has_origin(name: str) -> bool:
    return name in _ORIGINS


def forget(name: str) -> None:
    """Remove ``name`` and its origin if registered (a plugin's rollback); no error otherwise."""
    _REGISTRY.pop(name, None)
    _ORIGINS.pop(name, None)


def _check_number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if math.isnan(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {k: range_check(v) for k, v in DEFAULT_RANGES.items()}


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
    for key in values:
        check = range_check(entry.ranges[key]) if key in entry.ranges else _CHECKS.get(key)
        if check is not None:
            values[key] = _check_number(key, values[key], *check)
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
        decay_on = values.get("decay_on", "selected") if values.get("weight_decay_opt", 0.0) > 0 else None
        provenance.update(selection_record(model.trainable_variables, values.get("select"), decay_on))
    return optimizer


def register(
    name: str,
    factory: Callable[..., Any],
    hyperparams: tuple[str, ...] = ("learning_rate",),
    defaults: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    options: tuple[str, ...] = (),
    description: str = "",
    replace: bool = False,
    *,
    search: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Any] | None = None,
    label: str = "",
    baseline: bool = False,
    twin: str | None = None,
) -> OptimizerSpec:
    """Add ``name`` to the registry so runners and configs can sweep it like the built-ins.

    ``factory(model, **hyperparams, **options)`` returns a Keras optimizer, e.g.
    ``lambda model, learning_rate, power, select='rank>=2': nonlinear(keras.optimizers.Adam(learning_rate),
    power=power, select=select)`` with ``hyperparams=('learning_rate', 'power')`` and ``options=('select',)``
    (``options``: keywords ``make`` accepts and passes on but never records in ``optimizer_hyperparams``).
    Declarations (see OptimizerSpec): ``search={'power': {'randint': [4, 9], 'scale': 0.1}}``,
    ``ranges={'beta_1': '[0, 1)'}``, ``label='Adam+φ'``, ``baseline=False``, ``twin='KerasAdam'``.
    """
    if not isinstance(name, str) or not name or "__" in name or "/" in name:
        raise ValueError(f"optimizer name must be a non-empty folder name without '__' or '/', got {name!r}")
    if name in _REGISTRY and not replace:
        error = AlreadyRegistered(
            f"optimizer {name!r} is already registered ({origin(name)}; pass replace=True to redefine it)"
        )
        error.optimizer = name
        raise error
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable(model, **hyperparams), got {factory!r}")
    accepted = set(hyperparams) | set(defaults or {}) | set(options)
    for what, mapping in (("search", search), ("ranges", ranges)):
        for key in mapping or {}:
            if key not in accepted:
                raise ValueError(
                    f"optimizer {name!r}: {what} names {key!r}, which it does not take; "
                    f"takes: {', '.join(sorted(accepted))}"
                )
    for key, text in (ranges or {}).items():
        try:
            parse_range(text)
        except ValueError as exc:
            raise ValueError(f"optimizer {name!r}: range of {key}: {exc}") from None
    if not isinstance(label, str) or not isinstance(baseline, bool):
        raise ValueError(f"optimizer {name!r}: label must be a string and baseline a bool, got {label!r}, {baseline!r}")
    if twin is not None and not isinstance(twin, str):
        raise ValueError(f"optimizer {name!r}: twin must be an optimizer name or None, got {twin!r}")
    entry = OptimizerSpec(
        name=name,
        hyperparams=tuple(hyperparams),
        defaults=dict(defaults or {}),
        fixed=dict(fixed or {}),
        factory=factory,
        options=tuple(options),
        description=description,
        search=dict(search or {}),
        ranges={k: (f"[{v[0]}, {v[1]}]" if isinstance(v, list | tuple) else v) for k, v in (ranges or {}).items()},
        label=label,
        baseline=baseline,
        twin=twin,
    )
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a user registration (tests); unknown names raise ValueError."""
    spec(name)
    del _REGISTRY[name]
    _ORIGINS.pop(name, None)


# ---------------------------------------------------------------- built-ins (protocol §1 and §6)


def _build_kernel_map(
    nonlinear: bool,
    momentum_kind: str | None,
    decay_scaling: str | None,
    model,
    learning_rate,
    power=1.0,
    momentum=0.0,
    weight_decay_opt=0.0,
    select=None,
    decay_on="selected",
):
    """Factory of the built-ins (bound with functools.partial, so registry entries pickle)."""
    from .kernel_map import KernelMapOptimizer  # Keras: the registry imports without it

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


_LABELS = {"GradientDescent": ("GD", "SGD"), "Momentum": ("M", "Momentum"), "Nesterov": ("MN", "NAG")}


def _declarations(recorded: tuple[str, ...], accepted: tuple[str, ...]) -> dict:
    """The built-ins declare the protocol's default search and ranges (weight_decay_opt is fixed per problem, §2)."""
    return {
        "search": {k: v for k, v in DEFAULT_SEARCH.items() if k in recorded},
        "ranges": {k: v for k, v in DEFAULT_RANGES.items() if k in accepted},
    }


def _register_builtins() -> None:
    pending = []  # PowKernel entries, registered after the baselines
    decays = {
        None: ("", ()),
        "scaled": ("W_scaled", ("weight_decay_opt",)),
        "momscaled": ("W_momscaled", ("weight_decay_opt",)),
    }
    for kind, rule in _RULES.items():
        momentum_kind = {"GradientDescent": None, "Momentum": "heavy_ball", "Nesterov": "nesterov"}[kind]
        for decay in (None, "scaled") if momentum_kind is None else (None, "momscaled"):
            suffix, decay_names = decays[decay]
            d_text = {None: "d = 0", "scaled": "d = λ·η", "momscaled": "d = λ·η/(1 − μ)"}[decay]
            label_suffix = "-W" if decay else ""
            defaults = {}  # weight_decay_opt of the W variants has no default: it is fixed per problem (§2)
            # Baselines (DeepOBS / Crowded Valley names): ĝ = g; momentum recorded and searched.
            base = {
                "GradientDescent": "GradientDescentOptimizer",
                "Momentum": "MomentumOptimizer",
                "Nesterov": "NAGOptimizer",
            }[kind] + suffix
            # PowKernel family: ĝ = φ_p(g) on selected tensors; momentum is provenance-only (default 0.9).
            pk_name = "PowKernel" + ("GradientDescentOptimizer" if kind == "GradientDescent" else "MomentumOptimizer")
            pk_name += ("N" if kind == "Nesterov" else "") + suffix
            if suffix:
                _DECOUPLED[pk_name.removesuffix(suffix)] = pk_name
                _DECOUPLED[base.removesuffix(suffix)] = base
            pk_defaults = {**defaults, **({"momentum": DEFAULT_MOMENTUM} if momentum_kind else {})}
            pk_recorded = ("learning_rate", "power") + decay_names
            pending.append(
                dict(
                    name=pk_name,
                    factory=_kernel_map_factory(True, momentum_kind, decay),
                    hyperparams=pk_recorded,
                    defaults=pk_defaults,
                    options=OPTIONS,
                    description=f"ĝ = sign(g)·|g|^p on selected tensors; {rule}; {d_text}",
                    label=_LABELS[kind][0] + label_suffix,
                    baseline=False,
                    twin=base,
                    **_declarations(pk_recorded, pk_recorded + tuple(pk_defaults)),
                )
            )
            fixed = {} if momentum_kind is None else {"use_locking": False, "use_nesterov": momentum_kind == "nesterov"}
            recorded = ("learning_rate",) + (("momentum",) if momentum_kind else ())
            recorded += tuple(fixed) + decay_names
            register(
                base,
                _kernel_map_factory(False, momentum_kind, decay),
                hyperparams=recorded,
                defaults={**defaults, **({"momentum": DEFAULT_MOMENTUM} if momentum_kind else {})},
                fixed=fixed,
                options=OPTIONS,
                description=f"ĝ = g; {rule}; {d_text}",
                label=_LABELS[kind][1] + label_suffix,
                baseline=True,
                twin=base,
                **_declarations(recorded, recorded),
            )
    for entry in pending:
        register(**entry)


_register_builtins()
BUILTIN = tuple(_REGISTRY)


def linear_twin(name: str) -> str:
    """The linear optimizer ``name`` equals at power = 1 (declared ``twin``: ``PowKernelMomentumOptimizerN`` ->
    ``NAGOptimizer``, a plugin's ``PowKernelAdam`` -> ``KerasAdam``); baselines are their own twin; ValueError
    if none is declared."""
    entry = spec(name)
    if entry.twin is None and entry.baseline:
        return name
    if entry.twin is None:
        raise ValueError(f"{who(name)} declares no linear twin (register(..., twin=NAME))")
    return spec(entry.twin).name


def decoupled_variant(name: str) -> str:
    """The decoupled-decay ("W") optimizer for ``name`` (``MomentumOptimizer`` -> ``MomentumOptimizerW_momscaled``;
    a W variant is its own); ValueError when there is none."""
    spec(name)
    if name in _DECOUPLED.values():
        return name
    if name not in _DECOUPLED:
        raise ValueError(f"optimizer {name!r} has no decoupled-decay variant")
    return _DECOUPLED[name]
