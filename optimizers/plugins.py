"""Plugins: a user's module whose import registers optimizers with ``optimizers.register(...)`` and/or its
own test problems with ``testproblems.register(...)`` (checked on one batch, ``testproblems.user``).

    from optimizers import plugins
    plugins.load("examples/plugins/adam_family.py")      # a .py path (relative to ``base`` or the cwd) ...
    plugins.load("my_opts.adam")                         # ... or a dotted module name (cwd or PYTHONPATH)
    plugins.provenance()            # [{"module", "path", "sha256", "optimizers"[, "testproblems"]}] per plugin
    plugins.changed(records)        # one line per recorded plugin whose source differs now
    plugins.validate(name, study_space, fixed)           # build it once on a tiny model (planning time)

Each plugin is imported at most once per process (keyed by its resolved file path); what its import
registered is found by diffing the registries. Every problem is a PluginError (a ValueError) with a one-line
message naming the plugin and, where relevant, the optimizer and hyperparameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import testproblems
from testproblems import user as user_problems

from . import registry
from .distributions import Distribution, allowed_range, check_range
from .registry import PluginError
from .space import search_space

__all__ = [
    "Plugin",
    "PluginError",
    "changed",
    "command_line_args",
    "forget",
    "load",
    "load_all",
    "loaded",
    "plugin_of",
    "provenance",
    "validate",
    "validate_optimizer",
]


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One imported plugin: its module name, resolved source path, SHA-256 of the source and the optimizer
    names its import registered (registration order)."""

    module: str
    path: str
    sha256: str
    optimizers: tuple[str, ...]
    testproblems: tuple[str, ...] = ()  # the user's own test problems it registered (testproblems.register)

    def record(self) -> dict[str, Any]:
        """JSON-able provenance (``testproblems`` only where it registered some)."""
        record = {"module": self.module, "path": self.path, "sha256": self.sha256, "optimizers": list(self.optimizers)}
        return {**record, "testproblems": list(self.testproblems)} if self.testproblems else record


_LOADED: dict[str, Plugin] = {}  # resolved path -> plugin, in load order
_VALIDATED: set[tuple] = set()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_path(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or os.sep in ref


def _locate(ref: str, base: Path | None) -> tuple[str, Path]:
    """(module name, resolved source path) of a plugin reference; PluginError if there is none."""
    if not isinstance(ref, str | os.PathLike) or not str(ref).strip():
        raise PluginError(f"plugin {ref!r}: expected a dotted module name or a path to a .py file")
    ref = os.fspath(ref).strip()
    if _is_path(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        if path.suffix != ".py":
            raise PluginError(f"plugin {ref}: a plugin path must name a .py file")
        if not path.is_file():
            raise PluginError(f"plugin {ref}: no such file {path}")
        return path.stem, path.resolve()
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # "importable from the current folder", also outside ``python -m``
    try:
        found = importlib.util.find_spec(ref)
    except (ImportError, ValueError) as exc:  # a parent package that is missing or raises
        raise PluginError(f"plugin {ref}: cannot find the module: {_one_line(exc)}") from None
    if found is None:
        raise PluginError(
            f"plugin {ref}: no module named {ref!r} in the current folder or on PYTHONPATH "
            "(or give a path to a .py file)"
        )
    if not found.origin or not found.has_location or not found.origin.endswith(".py"):
        raise PluginError(f"plugin {ref}: module {ref!r} has no .py source file ({found.origin})")
    return ref, Path(found.origin).resolve()


def _import(module: str, path: Path, by_path: bool):
    if not by_path:
        return importlib.import_module(module)
    clash = sys.modules.get(module)
    if clash is not None:
        where = getattr(clash, "__file__", None)
        raise PluginError(
            f"plugin {path}: module name {module!r} is already taken by {where or 'a built-in module'}; rename the file"
        )
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod  # so that pickled factories find their module again
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(module, None)
        raise
    return mod


def load(ref: str | os.PathLike, base: str | os.PathLike | None = None, validate: bool = True) -> Plugin:
    """Import plugin ``ref`` (once per process) and return its Plugin record.

    ``base``: the folder relative paths are taken from (a study file's folder; default the cwd). The import
    must register at least one new optimizer or test problem and may not redefine a registered optimizer; each
    registration's
    declarations are checked (search distributions in their ranges, linear twin registered), and with
    ``validate`` every optimizer whose declared search is complete is built once on a tiny model
    (``validate(name)``; the others are validated with the study's space at planning time).
    """
    module, path = _locate(ref, Path(base) if base is not None else None)
    key = str(path)
    if key in _LOADED:
        return _LOADED[key]
    label = f"plugin {module} ({path})"
    already = sys.modules.get(module)
    if already is not None and Path(getattr(already, "__file__", "") or "").resolve() == path:
        # imported before by other code: its registrations are the ones whose factory lives in the module
        new = [
            n
            for n in registry.names()
            if getattr(registry.spec(n).factory, "__module__", None) == module and not registry.has_origin(n)
        ]
        problems = [
            n
            for n in testproblems.names()
            if testproblems.spec(n).user is not None and testproblems.spec(n).user.source == str(path)
        ]
    else:
        before, problems_before = registry.entries(), set(testproblems.names())
        try:
            _import(module, path, _is_path(os.fspath(ref)))
        except PluginError:
            _forget_problems(problems_before)
            raise
        except registry.AlreadyRegistered as exc:
            registry.restore(before)
            _forget_problems(problems_before)
            name = getattr(exc, "optimizer", "?")
            raise PluginError(
                f"{label}: optimizer {name} is already registered ({registry.origin(name)}); choose another name"
            ) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code (not Ctrl-C)
            registry.restore(before)
            _forget_problems(problems_before)
            raise PluginError(f"{label}: import failed: {_one_line(exc)}") from None
        now = registry.entries()
        replaced = [n for n, entry in before.items() if now.get(n) is not entry]
        new = [n for n in registry.names() if n not in before]
        problems = [n for n in testproblems.names() if n not in problems_before]
        if replaced:
            registry.restore(before)
            _forget_problems(problems_before)
            sys.modules.pop(module, None)
            raise PluginError(
                f"{label}: redefines optimizer {replaced[0]} ({registry.origin(replaced[0])}); choose another name"
            )
    if not new and not problems:
        sys.modules.pop(module, None)
        raise PluginError(
            f"{label}: registers no optimizer (its import must call optimizers.register(...)) "
            "and no test problem (testproblems.register(...))"
        )
    for name in new:
        registry.set_origin(name, label)
    try:
        for name in new:
            _check_declarations(label, name)
        if validate:
            for name in new:
                try:
                    space = search_space(name)
                except PluginError as exc:
                    if "has no search distribution" in str(exc):
                        continue  # the study may give one: validated at planning time
                    raise
                validate_optimizer(name, space)
            for name in problems:
                try:
                    user_problems.validate(testproblems.get(name))
                except user_problems.UserProblemError as exc:
                    raise PluginError(f"plugin {module}: {exc}") from None
    except PluginError:
        for name in new:
            registry.forget(name)
        _forget_problems(set(testproblems.names()) - set(problems))
        sys.modules.pop(module, None)  # a fixed file can be loaded again
        raise
    plugin = Plugin(module=module, path=key, sha256=_sha256(path), optimizers=tuple(new), testproblems=tuple(problems))
    _LOADED[key] = plugin
    return plugin


def _forget_problems(keep: set[str]) -> None:
    """Unregister the test problems a failed plugin import registered (every name not in ``keep``)."""
    for name in testproblems.names():
        if name not in keep:
            testproblems.unregister(name)


def _check_declarations(label: str, name: str) -> None:
    entry = registry.spec(name)
    if entry.twin is not None and entry.twin not in registry.names():
        raise PluginError(f"{label}: optimizer {name} declares twin={entry.twin!r}, which is not registered")
    for key, dist in entry.search.items():
        try:
            check_range(key, dist, allowed_range(entry.ranges, key))
        except ValueError as exc:
            raise PluginError(f"{label}: optimizer {name}: declared search of {exc}") from None


def load_all(
    refs: Iterable[str | os.PathLike], base: str | os.PathLike | None = None, validate: bool = True
) -> list[Plugin]:
    """``load`` each of ``refs`` in order (the ``--plugin`` options or a study's ``plugins:``)."""
    return [load(ref, base=base, validate=validate) for ref in refs]


def loaded() -> list[Plugin]:
    """Every plugin imported in this process, in load order."""
    return list(_LOADED.values())


def provenance() -> list[dict[str, Any]]:
    """JSON-able provenance of every loaded plugin (module, path, sha256, optimizers)."""
    return [p.record() for p in _LOADED.values()]


def plugin_of(name: str) -> Plugin | None:
    """The loaded plugin that registered optimizer ``name`` (None for built-ins and user code)."""
    return next((p for p in _LOADED.values() if name in p.optimizers), None)


def command_line_args() -> list[str]:
    """``['--plugin', PATH, ...]`` reloading every loaded plugin in another process (``--emit-commands``)."""
    return [arg for p in _LOADED.values() for arg in ("--plugin", p.path)]


def changed(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per recorded plugin (``provenance()`` entries of a result file) whose source is missing or
    differs from its recorded SHA-256; [] when all are unchanged. The recorded path is tried first, then
    the module name (a Ray worker's copy lives elsewhere)."""
    out = []
    for record in records:
        module, path, digest = record.get("module"), record.get("path"), record.get("sha256")
        source = Path(path) if path else None
        if source is None or not source.is_file():
            try:
                found = importlib.util.find_spec(module) if module else None
            except (ImportError, ValueError):
                found = None
            source = Path(found.origin) if found is not None and found.origin else None
        if source is None or not source.is_file():
            out.append(f"plugin {module} ({path}): source is gone")
        elif _sha256(source) != digest:
            out.append(
                f"plugin {module} ({source}): source changed since the run (sha256 {str(digest)[:12]} -> "
                f"{_sha256(source)[:12]})"
            )
    return out


def validate_optimizer(name: str, space: Mapping[str, Distribution], fixed: Mapping[str, Any] | None = None) -> None:
    """Build ``name`` once with the middle of each (parsed) distribution of ``space`` (plus ``fixed``) on a tiny
    Keras model and apply one step; PluginError if the factory raises or returns no Keras optimizer."""
    values = {**{k: d.midpoint() for k, d in space.items()}, **dict(fixed or {})}
    key = (name, tuple(sorted((k, repr(v)) for k, v in values.items())))
    if key in _VALIDATED:
        return
    who = registry.who(name)
    try:
        registry.resolve_hyperparams(name, values)
    except ValueError as exc:
        raise PluginError(f"{who}: {exc}") from None
    import keras  # Keras only to build a plugin's optimizer once: importing optimizers stays light

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    try:
        optimizer = registry.make(name, model, **values)
    except Exception as exc:  # noqa: BLE001 - user factory
        raise PluginError(f"{who}: factory raised {_one_line(exc)} (built with {values})") from None
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise PluginError(f"{who}: factory returned {type(optimizer).__name__}, not a keras.optimizers.Optimizer")
    try:
        grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]
        optimizer.apply(grads, model.trainable_variables)
    except Exception as exc:  # noqa: BLE001 - user optimizer
        raise PluginError(f"{who}: one step on a tiny model raised {_one_line(exc)}") from None
    _VALIDATED.add(key)


def validate(
    name: str, study_space: Mapping[str, Any] | None = None, fixed: Mapping[str, Any] | None = None
) -> dict[str, Distribution]:
    """Planning-time check of one (study, optimizer) search: the merged search space
    (``optimizers.search_space``) is complete and valid and the optimizer builds; returns the space."""
    space = search_space(name, study_space, fixed=tuple(fixed or ()))
    validate_optimizer(name, space, fixed)
    return space


def forget(plugin: Plugin) -> None:
    """Unregister a plugin's optimizers and forget it (tests; the module stays imported)."""
    for name in plugin.optimizers:
        registry.forget(name)
    for name in plugin.testproblems:
        testproblems.unregister(name)
    _LOADED.pop(plugin.path, None)
    sys.modules.pop(plugin.module, None)
    _VALIDATED.difference_update({k for k in _VALIDATED if k[0] in plugin.optimizers})
