"""YAML study files: which (problem, optimizer) searches to run, with which space, budget and seeds.

A study file (see ``configs/paper.yaml`` for a fully commented example)::

    name: paper                     # optional; default: the file's stem
    defaults: {SETTINGS}            # every key optional; the built-in defaults are DEFAULTS below
    presets:                        # optional; load_study(path, preset=NAME) applies one on top of everything
      smoke: {SETTINGS, problems: [subset], optimizers: [subset]}
      medium: {}
    default_preset: medium          # optional; preset used when none is asked for
    problems:                       # required, non-empty
      PROBLEM:                      # a registered test problem (testproblems.names())
        optimizers: [NAME, ...]     # required; registered optimizers, or a mapping NAME -> {SETTINGS}
        SETTINGS                    # per-problem overrides

SETTINGS are the keys of DEFAULTS. A **list is a sweep axis**: ``regularization``, ``num_epochs``,
``batch_size``, ``weight_decay``, ``fidelity`` and every value under ``fixed`` may be a list, and each
combination is its own search (``optimizers`` is always a list of searches). ``rerun_seeds`` is a list of
seeds, and lists inside a search-space distribution are its arguments, not axes.

Regularisation variants (protocol §2): ``l2`` trains the problem as named, with the L2 factor ``weight_decay``
in the loss (null = the problem's DeepOBS default, recorded as null); ``decoupled`` trains the problem's
``_nodecay`` variant with the decoupled-decay ("W") version of each optimizer (GD -> ``...W_scaled``,
momentum -> ``...W_momscaled``) and ``weight_decay_opt`` fixed to the base problem's L2 factor unless ``fixed``
sets it.

The search space of each optimizer is its declared one (``optimizers.search_space``: per hyperparameter it
records, the default distribution given at ``register``), with the study's ``search_space`` entries overriding
it name by name, in the study's order first. The built-ins declare the paper's space (learning rate
log-uniform on [1e-4, 1], then power 0.1*k, k in {4..9}) and Crowded Valley's momentum (log-uniform on
[1e-3, 1]), in that order (``DEFAULT_SPACE``), so the PowKernel optimizers draw exactly the paper's samples and
the baselines exactly Crowded Valley's (protocol §3.2, §6).

``plugins: [...]`` (top level) names plugin modules or ``.py`` files (relative to the study file's folder)
whose import registers optimizers (``optimizers.plugins``); they are imported before any name is checked, and
every plugin optimizer of the study is built once at load time (``plugins.validate``), so a bad plugin is a
ConfigError before anything runs.

Every problem in a file is validated at load time; errors raise ConfigError naming the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import optimizers
import testproblems
from deepobs_tree import RERUN_SEEDS, TUNING_SEED, NlwuError
from deepobs_tree.safe_io import MAX_YAML_BYTES, YamlLimitError, load_yaml, os_error_text, read_regular, short
from optimizers import PluginError, plugins
from optimizers.distributions import DEFAULT_SEARCH, PAPER_BUDGET, Constant, SpaceError, parse
from runners.sampler import sample_search
from runners.spec import MAX_SEED, RunSpec
from testproblems import FIDELITIES

#: most tuning samples per search: the sampler draws them all (status, sweep), so the bound keeps both quick
MAX_BUDGET = 10_000
#: longest message a config error prints (values inside are cut shorter by ``short``)
MAX_MESSAGE = 600


class ConfigError(NlwuError, ValueError):
    """A bad study file; the message is one line naming the file and the key."""


#: the protocol's default search, in draw order (defined once, in optimizers.distributions)
DEFAULT_SPACE: dict[str, Any] = DEFAULT_SEARCH

#: the built-in default of every setting (the YAML files repeat them, each with a comment)
DEFAULTS: dict[str, Any] = {
    "regularization": "l2",  # 'l2' | 'decoupled' (or a list of both: a sweep axis)
    "budget": PAPER_BUDGET,  # tuning samples per (problem, optimizer) (50)
    "tuning_seed": TUNING_SEED,  # seed of the sampler and of every tuning run (42)
    "rerun_seeds": list(RERUN_SEEDS),  # seeds for the chosen setting (43-51)
    "num_epochs": None,  # None = the problem's DeepOBS default
    "batch_size": None,  # None = the problem's DeepOBS default
    "weight_decay": None,  # L2 factor in the loss; None = the problem's default (recorded as null)
    "train_log_interval": 10,  # minibatch loss logged every N steps
    "fidelity": "deepobs",  # data/model fidelity passed to testproblems.get
    "data_dir": None,  # None = $NLWU_DATA_DIR or ./data
    "search_space": {},  # overrides, name by name, each optimizer's declared search (optimizers.search_space)
    "fixed": {},  # fixed optimizer hyperparameters (lists are sweep axes)
    "options": {},  # optimizer options: select (rule), decay_on ('selected' | 'all')
}
SETTING_KEYS = tuple(DEFAULTS)
AXIS_KEYS = ("regularization", "num_epochs", "batch_size", "weight_decay", "fidelity")
TOP_KEYS = ("name", "description", "plugins", "defaults", "presets", "default_preset", "problems")
PROBLEM_KEYS = ("optimizers", *SETTING_KEYS)
PRESET_KEYS = (*SETTING_KEYS, "problems", "optimizers")
REGULARIZATIONS = ("l2", "decoupled")


@dataclasses.dataclass(frozen=True)
class Search:
    """One search: a (problem, optimizer) pair with every setting resolved."""

    problem: str
    optimizer: str
    regularization: str
    budget: int
    tuning_seed: int
    rerun_seeds: tuple[int, ...]
    num_epochs: int | None
    batch_size: int | None
    weight_decay: float | None
    train_log_interval: int
    fidelity: str
    data_dir: str | None
    space: tuple[tuple[str, Any], ...]  # searched parameters only, in draw order
    fixed: tuple[tuple[str, Any], ...]
    options: tuple[tuple[str, Any], ...]
    source: str  # 'problems.<name>.optimizers.<opt>' (for messages)

    @property
    def searched(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.space)

    @property
    def key(self) -> tuple:
        return (
            self.problem,
            self.optimizer,
            self.fixed,
            self.num_epochs,
            self.batch_size,
            self.weight_decay,
            self.fidelity,
        )

    def samples(self) -> list[dict[str, Any]]:
        """The ``budget`` samples of the search (sampler order), fixed values included."""
        draws = sample_search(dict(self.space), self.budget, self.tuning_seed)
        return [{**dict(self.fixed), **d} for d in draws]

    def run_spec(self, hyperparams: Mapping[str, Any], seed: int) -> RunSpec:
        return RunSpec(
            self.problem,
            self.optimizer,
            hyperparams,
            seed=seed,
            num_epochs=self.num_epochs,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            data_dir=self.data_dir,
            fidelity=self.fidelity,
            train_log_interval=self.train_log_interval,
            options=self.options,
        )

    def tuning_specs(self) -> list[RunSpec]:
        seen, specs = set(), []
        for sample in self.samples():
            spec = self.run_spec(sample, self.tuning_seed)
            if spec.run_id not in seen:
                seen.add(spec.run_id)
                specs.append(spec)
        return specs


@dataclasses.dataclass(frozen=True)
class Study:
    path: Path
    name: str
    preset: str | None
    entries: tuple[Search, ...]

    def tuning_specs(self) -> list[RunSpec]:
        """Every (problem, optimizer, sample) with the tuning seed, in file order."""
        return [spec for entry in self.entries for spec in entry.tuning_specs()]

    def find(self, problem: str, optimizer: str, chosen: Mapping[str, Any] | None = None) -> Search:
        hits = [e for e in self.entries if e.problem == problem and e.optimizer == optimizer]
        if len(hits) > 1 and chosen is not None:
            hp = dict(chosen.get("optimizer_hyperparams") or {})
            hits = [e for e in hits if all(k not in hp or hp[k] == v for k, v in e.fixed)]
            for key in ("num_epochs", "batch_size"):
                if chosen.get(key) is not None:
                    hits = [e for e in hits if getattr(e, key) in (None, chosen[key])]
        if not hits:
            raise KeyError(f"{self.path}: no search for problem {short(problem)} with optimizer {short(optimizer)}")
        if len(hits) > 1:
            raise KeyError(
                f"{self.path}: {len(hits)} searches match {problem}/{optimizer}; pass the chosen "
                f"setting to tell them apart"
            )
        return hits[0]

    def rerun_specs(self, problem: str, optimizer: str, chosen: Mapping[str, Any]) -> list[RunSpec]:
        """The rerun seeds of the chosen setting (``analysis.select_best`` result: its ``optimizer_hyperparams``
        as stored in the JSON, and ``weight_decay``). The runs land in the same setting folder as the tuning run."""

        entry = self.find(problem, optimizer, chosen)
        fixed_by_registry = optimizers.spec(optimizer).fixed
        hp = {k: v for k, v in dict(chosen["optimizer_hyperparams"]).items() if k not in fixed_by_registry}
        hyperparams = {**dict(entry.fixed), **hp}
        weight_decay = chosen.get("weight_decay", entry.weight_decay)
        return [
            dataclasses.replace(entry.run_spec(hyperparams, seed), weight_decay=weight_decay)
            for seed in entry.rerun_seeds
        ]

    def all_specs(self, chosen_by_entry: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[RunSpec]:
        out = self.tuning_specs()
        for (problem, optimizer), chosen in chosen_by_entry.items():
            out += self.rerun_specs(problem, optimizer, chosen)
        return out


# ---------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str):
        """ConfigError naming the file and the key; a user key or value is cut short (``safe_io.short``)."""
        key = key if len(key) <= 120 else key[:120] + "..."
        where = f"{key}: " if key else ""
        message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "... (cut)"
        raise ConfigError(f"{self.path}: {where}{message}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _check_keys(ctx: _Ctx, where: str, mapping: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(mapping, Mapping):
        ctx.fail(where, f"expected a mapping, got {type(mapping).__name__} {short(mapping)}")
    for key in mapping:
        if key not in allowed:
            ctx.fail(f"{where}.{key}" if where else str(key), f"unknown key; allowed: {', '.join(allowed)}")
    return dict(mapping)


def _axis(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _check_setting(ctx: _Ctx, where: str, key: str, value: Any) -> Any:
    """Type/range check of one setting value (an axis list is checked element-wise); returns the value, a
    search space parsed (``optimizers.distributions``)."""
    k = f"{where}.{key}"
    if key in AXIS_KEYS and isinstance(value, list):
        if not value:
            ctx.fail(k, "an empty list (sweep axis) selects nothing")
        for v in value:
            if isinstance(v, list):
                ctx.fail(k, f"nested lists are not allowed, got {short(value)}")
            _check_setting(ctx, where, key, v)
        return value
    if key == "regularization":
        if value not in REGULARIZATIONS:
            ctx.fail(k, f"expected one of {', '.join(REGULARIZATIONS)} (or a list of them), got {short(value)}")
    elif key in ("budget", "train_log_interval"):
        if not _is_int(value) or value < 1:
            ctx.fail(k, f"expected an integer >= 1, got {short(value)}")
        if key == "budget" and value > MAX_BUDGET:
            ctx.fail(k, f"budget {value} is larger than {MAX_BUDGET} samples per search (the paper uses 50)")
    elif key == "tuning_seed":
        if not _is_int(value) or not 0 <= value <= MAX_SEED:
            ctx.fail(k, f"expected an integer seed in [0, {MAX_SEED}], got {short(value)}")
    elif key == "rerun_seeds":
        if not isinstance(value, list) or not all(_is_int(s) and 0 <= s <= MAX_SEED for s in value):
            ctx.fail(k, f"expected a list of integer seeds in [0, {MAX_SEED}], got {short(value)}")
        if len(set(value)) != len(value):
            ctx.fail(k, f"repeated seed in {short(value)}")
    elif key in ("num_epochs", "batch_size"):
        if value is not None and (not _is_int(value) or value < 1):
            ctx.fail(k, f"expected an integer >= 1 or null (problem default), got {short(value)}")
    elif key == "weight_decay":
        if value is not None and (not _is_number(value) or value < 0):
            ctx.fail(k, f"expected a number >= 0 or null (problem default), got {short(value)}")
    elif key == "fidelity":
        if value not in FIDELITIES:
            ctx.fail(k, f"expected one of {', '.join(FIDELITIES)}, got {short(value)}")
    elif key == "data_dir":
        if value is not None and not isinstance(value, str):
            ctx.fail(k, f"expected a path string or null, got {short(value)}")
    elif key == "search_space":
        if not isinstance(value, Mapping):
            ctx.fail(k, f"expected a mapping name -> distribution, got {short(value)}")
        if not value:
            ctx.fail(k, "empty search space: give at least learning_rate, e.g. {log_uniform: [1.0e-4, 1.0]}")
        parsed = {}
        for name, dist in value.items():
            try:
                parsed[str(name)] = parse(str(name), dist)
            except SpaceError as exc:
                ctx.fail(f"{k}.{name}", str(exc).split(": ", 1)[-1])
        return parsed
    elif key == "fixed":
        if not isinstance(value, Mapping):
            ctx.fail(k, f"expected a mapping name -> value, got {short(value)}")
        for name, v in value.items():
            for item in _axis(v):
                if not (item is None or isinstance(item, bool | str) or _is_number(item)):
                    ctx.fail(f"{k}.{name}", f"expected a number, bool, string (or a list of them), got {short(v)}")
            if isinstance(v, list) and not v:
                ctx.fail(f"{k}.{name}", "an empty list (sweep axis) selects nothing")
    elif key == "options":
        _check_keys(ctx, k, value, optimizers.OPTIONS)
        for name, v in value.items():
            if not isinstance(v, str):
                ctx.fail(f"{k}.{name}", f"expected a string, got {short(v)}")
    return value


def _settings(ctx: _Ctx, where: str, mapping: Mapping, allowed: tuple[str, ...]) -> dict:
    data = _check_keys(ctx, where, mapping, allowed)
    for key, value in data.items():
        if key in SETTING_KEYS:
            data[key] = _check_setting(ctx, where, key, value)
    return data


def _read_yaml(path: Path) -> Any:
    """The study file's YAML, within ``deepobs_tree.safe_io``'s limits (bytes, nodes after alias expansion,
    nesting depth): a hostile file is one ConfigError naming the limit, never a hang or a traceback."""
    try:
        text = read_regular(path, max_bytes=MAX_YAML_BYTES).decode()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (configs live in configs/, e.g. configs/paper.yaml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {os_error_text(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read the file: not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: study file too large ({exc}); a study file is a few kB") from None
    try:
        return load_yaml(text)
    except YamlLimitError as exc:
        raise ConfigError(f"{path}: YAML beyond this project's limits: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem[:200]}") from None


def _decoupled_name(ctx: _Ctx, key: str, optimizer: str) -> str:
    try:
        return optimizers.decoupled_variant(optimizer)
    except ValueError as exc:
        ctx.fail(key, str(exc))


def _load_plugins(ctx: _Ctx, refs: Any) -> None:
    """Import the study's ``plugins:`` (paths relative to the study file's folder), before any name is checked."""
    if refs is None:
        return
    if not isinstance(refs, list) or not all(isinstance(r, str) and r.strip() for r in refs):
        ctx.fail("plugins", f"expected a list of module names or .py paths, got {short(refs)}")

    try:
        plugins.load_all(refs, base=ctx.path.parent)
    except PluginError as exc:
        ctx.fail("plugins", str(exc))


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def load_study(path: str | Path, preset: str | None = None) -> Study:
    """Read, validate and resolve a study file; ``preset`` (or the file's ``default_preset``) is applied on top
    of every problem's settings. Raises ConfigError (one line: file, key, what is wrong)."""

    path = Path(path)
    ctx = _Ctx(path)
    raw = _read_yaml(path)
    if raw is None:
        ctx.fail("", "the file is empty; a study needs at least a 'problems' mapping")
    top = _check_keys(ctx, "", raw, TOP_KEYS)
    _load_plugins(ctx, top.get("plugins"))
    name = top.get("name", path.stem)
    if not isinstance(name, str) or not name:
        ctx.fail("name", f"expected a non-empty string, got {short(name)}")
    defaults = copy.deepcopy(DEFAULTS)
    defaults.update(_settings(ctx, "defaults", top.get("defaults") or {}, SETTING_KEYS))

    presets = top.get("presets") or {}
    _check_keys(ctx, "presets", presets, tuple(presets))  # mapping check
    for pname, pval in presets.items():
        _settings(ctx, f"presets.{pname}", pval or {}, PRESET_KEYS)
    if preset is None:
        preset = top.get("default_preset")
        if preset is not None and preset not in presets:
            ctx.fail("default_preset", f"unknown preset {short(preset)}; defined: {', '.join(presets) or 'none'}")
    elif preset not in presets:
        raise ConfigError(f"{path}: unknown preset {short(preset)}; defined: {', '.join(presets) or 'none'}")
    chosen_preset = dict(presets.get(preset) or {}) if preset else {}
    only_problems = chosen_preset.pop("problems", None)
    only_optimizers = chosen_preset.pop("optimizers", None)

    problems = top.get("problems")
    if problems is None:
        ctx.fail("problems", "missing: a study needs a 'problems' mapping (problem -> {optimizers: [...]})")
    if not isinstance(problems, Mapping) or not problems:
        ctx.fail("problems", f"expected a non-empty mapping problem -> settings, got {short(problems)}")
    known_problems, known_optimizers = testproblems.names(), optimizers.names()
    space_names = {n for o in known_optimizers for n in optimizers.spec(o).accepted}

    for k, subset, known in (
        ("problems", only_problems, known_problems),
        ("optimizers", only_optimizers, known_optimizers),
    ):
        if subset is not None and (
            not isinstance(subset, list) or not subset or not all(isinstance(x, str) for x in subset)
        ):
            ctx.fail(f"presets.{preset}.{k}", f"expected a non-empty list of names, got {short(subset)}")
        for x in subset or []:
            if x not in known:
                ctx.fail(f"presets.{preset}.{k}", f"unknown name {short(x)}; known: {', '.join(known)}")

    entries: list[Search] = []
    for problem, pdata in problems.items():
        pwhere = f"problems.{problem}"
        if problem not in known_problems:
            ctx.fail(pwhere, f"unknown test problem; known: {', '.join(known_problems)}")
        pdata = _settings(ctx, pwhere, pdata if pdata is not None else {}, PROBLEM_KEYS)
        opts = pdata.pop("optimizers", None)
        if opts is None:
            ctx.fail(f"{pwhere}.optimizers", "missing: list the optimizers to search")
        if isinstance(opts, list):
            if not all(isinstance(o, str) for o in opts):
                ctx.fail(f"{pwhere}.optimizers", f"expected a list of optimizer names, got {short(opts)}")
            if len(set(opts)) != len(opts):
                ctx.fail(f"{pwhere}.optimizers", f"repeated optimizer in {short(opts)}")
            opts = {o: {} for o in opts}
        elif not isinstance(opts, Mapping):
            ctx.fail(f"{pwhere}.optimizers", f"expected a list or a mapping of optimizer names, got {short(opts)}")
        if not opts:
            ctx.fail(f"{pwhere}.optimizers", "empty: list at least one optimizer")
        for opt, odata in opts.items():
            owhere = f"{pwhere}.optimizers.{opt}"
            if opt not in known_optimizers:
                ctx.fail(owhere, f"unknown optimizer; known: {', '.join(known_optimizers)}")
            odata = _settings(ctx, owhere, odata if odata is not None else {}, SETTING_KEYS)
            if only_problems is not None and problem not in only_problems:
                continue
            if only_optimizers is not None and opt not in only_optimizers:
                continue
            settings = {**defaults, **pdata, **odata, **chosen_preset}
            entries += _expand(ctx, owhere, problem, opt, settings, known_problems, known_optimizers, space_names)

    seen: dict[tuple, str] = {}
    for e in entries:
        if e.key in seen:
            ctx.fail(e.source, f"duplicate search (same problem, optimizer and settings as {seen[e.key]})")
        seen[e.key] = e.source
    if not entries:
        ctx.fail(f"presets.{preset}" if preset else "problems", "selects no search at all")
    return Study(path=path, name=name, preset=preset, entries=tuple(entries))


def _expand(ctx, where, problem, optimizer, settings, known_problems, known_optimizers, space_names):
    """All entries of one (problem, optimizer) block: the product over the sweep axes."""

    fixed = settings["fixed"] or {}
    axes = {k: _axis(settings[k]) for k in AXIS_KEYS}
    fixed_axes = {k: _axis(v) for k, v in fixed.items()}
    space = settings["search_space"]
    for name in space:
        if name not in space_names:
            ctx.fail(
                f"{where}.search_space.{name}",
                f"no registered optimizer takes this hyperparameter; known: {', '.join(sorted(space_names))}",
            )
    entries = []
    keys = list(axes) + [f"fixed.{k}" for k in fixed_axes]
    for combo in itertools.product(*axes.values(), *fixed_axes.values()):
        values = dict(zip(keys, combo))
        reg = values["regularization"]
        prob, opt = problem, optimizer
        fixed_values = {k[len("fixed.") :]: v for k, v in values.items() if k.startswith("fixed.")}
        if reg == "decoupled":
            base = testproblems.spec(problem).base_name
            prob = base + "_nodecay"
            if prob not in known_problems:
                with_l2 = [n for n in known_problems if testproblems.spec(n).has_l2 and not n.endswith("_nodecay")]
                ctx.fail(
                    f"{where}.regularization",
                    f"problem {short(problem)} has no _nodecay variant "
                    f"(decoupled decay needs one; the L2 problems are {', '.join(with_l2)})",
                )
            opt = _decoupled_name(ctx, where, optimizer)
            fixed_values.setdefault("weight_decay_opt", testproblems.spec(base).l2)
        elif "W_" in optimizer:
            ctx.fail(
                f"{where}.regularization",
                f"{optimizer} decays weights itself: use regularization: "
                "decoupled (on a problem with a _nodecay variant)",
            )
        ospec = optimizers.spec(opt)
        constant = {
            n: d
            for n, d in space.items()
            if n in ospec.hyperparams and n not in fixed_values and isinstance(d, Constant)
        }
        for n, d in constant.items():
            fixed_values[n] = d.value
        study_space = {n: d for n, d in space.items() if n not in constant}
        try:  # the study's distributions over the optimizer's declared ones, name by name
            merged = optimizers.search_space(opt, study_space, fixed=tuple(fixed_values))
            if optimizers.registry.origin(opt) != "built-in":  # build it once now, not after training
                plugins.validate(opt, study_space, {**fixed_values, **dict(settings["options"] or {})})
        except optimizers.PluginError as exc:
            ctx.fail(where, str(exc))
        searched = [(n, d) for n, d in merged.items() if d.searched]
        if not searched:
            ctx.fail(
                f"{where}.search_space",
                f"empty search space for {opt}: none of its hyperparameters "
                f"({', '.join(ospec.hyperparams)}) is searched",
            )
        entry = Search(
            problem=prob,
            optimizer=opt,
            regularization=reg,
            budget=settings["budget"],
            tuning_seed=settings["tuning_seed"],
            rerun_seeds=tuple(settings["rerun_seeds"]),
            num_epochs=values["num_epochs"],
            batch_size=values["batch_size"],
            weight_decay=None if values["weight_decay"] is None else float(values["weight_decay"]),
            train_log_interval=settings["train_log_interval"],
            fidelity=values["fidelity"],
            data_dir=settings["data_dir"],
            space=tuple(searched),
            fixed=tuple(sorted(fixed_values.items())),
            options=tuple(sorted((settings["options"] or {}).items())),
            source=where,
        )
        # every value the search can give is accepted (optimizers.search_space checked each distribution's bounds
        # against the declared ranges, nothing drawn); then one spec through RunSpec.validate, the check every
        # run passes
        try:
            entry.run_spec(
                {**dict(entry.fixed), **{n: d.midpoint() for n, d in searched}},
                max((entry.tuning_seed, *entry.rerun_seeds)),
            ).validate()
        except ValueError as exc:
            ctx.fail(where, str(exc).splitlines()[0])
        entries.append(entry)
    return entries
