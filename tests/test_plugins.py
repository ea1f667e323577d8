"""Plugins (optimizers.plugins) and the registry declarations: loading, provenance, bad plugins, ranges,
search-space merge, and PowKernelAdam at power = 1 through the plugin path."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers, ops

import optimizers
from optimizers import plugins

ROOT = Path(__file__).resolve().parents[1]
ADAM_FAMILY = ROOT / "examples" / "plugins" / "adam_family.py"
LION = ROOT / "examples" / "plugins" / "lion.py"

GOOD = """
import optimizers

def factory(model, learning_rate, beta=0.5):
    import keras
    return keras.optimizers.SGD(learning_rate, momentum=beta)

optimizers.register("{name}", factory, hyperparams=("learning_rate", "beta"), defaults={{"beta": 0.5}},
                    search={{"learning_rate": {{"log_uniform": [1e-3, 1e-1]}}, "beta": {{"uniform": [0.1, 0.9]}}}},
                    ranges={{"beta": "[0, 1)"}}, label="{name} label", baseline=True)
open({counter!r}, "a").write("imported\\n")
"""


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Every plugin loaded in a test is forgotten afterwards; sys.path is restored."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(optimizers.names())
    loaded = set(p.path for p in plugins.loaded())
    yield
    for plugin in plugins.loaded():
        if plugin.path not in loaded:
            plugins.forget(plugin)
    for name in set(optimizers.names()) - before:
        optimizers.unregister(name)


def write_plugin(folder: Path, stem: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(body))
    return path


def good_plugin(folder: Path, stem: str = "tmp_plugin_good", name: str = "TmpGood") -> tuple[Path, Path]:
    counter = folder / f"{stem}.count"
    return write_plugin(folder, stem, GOOD.format(name=name, counter=str(counter))), counter


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, plugins.PluginError)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# ---- loading, exactly once, provenance ----


def test_load_by_path_outside_the_repo_once_with_provenance(tmp_path):
    path, counter = good_plugin(tmp_path / "elsewhere")
    assert ROOT not in path.parents
    plugin = plugins.load(str(path))
    assert plugin.optimizers == ("TmpGood",) and plugin.module == "tmp_plugin_good"
    assert plugin.path == str(path.resolve())
    assert plugin.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # the same file again, by a relative path from another base: no second import
    again = plugins.load("tmp_plugin_good.py", base=path.parent)
    assert again is plugin and counter.read_text() == "imported\n"
    assert plugins.provenance()[-1] == {
        "module": "tmp_plugin_good",
        "path": str(path.resolve()),
        "sha256": plugin.sha256,
        "optimizers": ["TmpGood"],
    }
    assert plugins.plugin_of("TmpGood") is plugin and plugins.plugin_of("NAGOptimizer") is None
    assert plugins.command_line_args()[-2:] == ["--plugin", str(path.resolve())]
    assert optimizers.registry.origin("TmpGood").startswith("plugin tmp_plugin_good")
    assert optimizers.spec("TmpGood").display_label == "TmpGood label"


def test_load_by_module_name_from_the_current_folder(tmp_path, monkeypatch):
    path, counter = good_plugin(tmp_path, stem="tmp_plugin_by_name", name="TmpByName")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    plugin = plugins.load("tmp_plugin_by_name")
    assert plugin.optimizers == ("TmpByName",) and plugin.path == str(path.resolve())
    assert plugins.load(str(path)) is plugin  # keyed by the resolved file: by path it is the same plugin
    assert counter.read_text() == "imported\n"


def test_changed_sources_are_flagged(tmp_path):
    path, _ = good_plugin(tmp_path)
    records = plugins.load(str(path)) and plugins.provenance()[-1:]
    assert plugins.changed(records) == []
    path.write_text(path.read_text() + "\n# edited\n")
    (line,) = plugins.changed(records)
    assert "tmp_plugin_good" in line and "changed since the run" in line
    path.unlink()
    (line,) = plugins.changed(records)
    assert "source is gone" in line


# ---- bad plugins: one line naming the plugin (and the hyperparameter) ----

BAD = {
    "raises": ("import optimizers\n1 / 0\n", "import failed: ZeroDivisionError: division by zero"),
    "nothing": ("X = 1\n", "registers no optimizer"),
    "builtin": (
        "import optimizers\noptimizers.register('GradientDescentOptimizer', lambda model, learning_rate: 0)\n",
        "optimizer GradientDescentOptimizer is already registered (built-in)",
    ),
    "redefines": (
        "import optimizers\noptimizers.register('NAGOptimizer', lambda model, learning_rate: 0, replace=True)\n",
        "redefines optimizer NAGOptimizer (built-in)",
    ),
    "not_keras": (
        "import optimizers\noptimizers.register('TmpNotKeras', lambda model, learning_rate: 'sgd', "
        "search={'learning_rate': {'uniform': [0.1, 0.2]}})\n",
        "optimizer TmpNotKeras: factory returned str, not a keras.optimizers.Optimizer",
    ),
    "factory_raises": (
        "import optimizers\ndef f(model, learning_rate):\n    raise RuntimeError('boom')\n"
        "optimizers.register('TmpRaises', f, search={'learning_rate': {'uniform': [0.1, 0.2]}})\n",
        "optimizer TmpRaises: factory raised RuntimeError: boom",
    ),
    "bad_search": (
        "import optimizers\noptimizers.register('TmpBadSearch', lambda model, learning_rate: 0, "
        "search={'learning_rate': {'log_uniform': [0, 1]}})\n",
        "optimizer TmpBadSearch: declared search of learning_rate: log_uniform needs 0 < low < high",
    ),
    "out_of_range": (
        "import optimizers\noptimizers.register('TmpRange', lambda model, learning_rate, beta: 0, "
        "hyperparams=('learning_rate', 'beta'), search={'beta': {'uniform': [0.5, 1.5]}}, "
        "ranges={'beta': '[0, 1)'})\n",
        "declared search of beta: {'uniform': [0.5, 1.5]} reaches 1.5, outside the allowed range (a number in [0, 1))",
    ),
    "bad_twin": (
        "import optimizers\noptimizers.register('TmpTwin', lambda model, learning_rate: 0, twin='Nope')\n",
        "optimizer TmpTwin declares twin='Nope', which is not registered",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_plugin_is_one_line_naming_it_and_registers_nothing(tmp_path, case):
    body, needle = BAD[case]
    stem = f"tmp_bad_{case}"
    path = write_plugin(tmp_path, stem, body)
    before = {n: optimizers.spec(n) for n in optimizers.names()}
    with pytest.raises(plugins.PluginError) as exc:
        plugins.load(str(path))
    assert_one_line(exc, f"plugin {stem} ({path.resolve()})", needle)
    assert {n: optimizers.spec(n) for n in optimizers.names()} == before
    assert stem not in sys.modules and not plugins.plugin_of("TmpNotKeras")


def test_missing_file_and_module(tmp_path):
    with pytest.raises(plugins.PluginError) as exc:
        plugins.load(str(tmp_path / "nope.py"))
    assert_one_line(exc, "nope.py", "no such file")
    with pytest.raises(plugins.PluginError) as exc:
        plugins.load("no_such_plugin_module_xyz")
    assert_one_line(exc, "plugin no_such_plugin_module_xyz", "no module named")
    with pytest.raises(plugins.PluginError) as exc:
        plugins.load("no_such_package_xyz.sub")
    assert_one_line(exc, "plugin no_such_package_xyz.sub")


def test_name_of_another_plugin(tmp_path):
    first, _ = good_plugin(tmp_path / "a", stem="tmp_first", name="TmpTaken")
    second, _ = good_plugin(tmp_path / "b", stem="tmp_second", name="TmpTaken")
    plugins.load(str(first))
    with pytest.raises(plugins.PluginError) as exc:
        plugins.load(str(second))
    assert_one_line(exc, "plugin tmp_second", "optimizer TmpTaken is already registered (plugin tmp_first")


def test_hyperparameter_without_search_distribution_is_found_at_planning(tmp_path):
    path = write_plugin(
        tmp_path,
        "tmp_nodist",
        """
        import optimizers
        def f(model, learning_rate, beta):
            import keras
            return keras.optimizers.SGD(learning_rate, momentum=beta)
        optimizers.register("TmpNoDist", f, hyperparams=("learning_rate", "beta"), ranges={"beta": "[0, 1)"})
    """,
    )
    plugins.load(str(path))  # the study may still give beta a distribution: no error yet
    with pytest.raises(plugins.PluginError) as exc:
        plugins.validate("TmpNoDist", {"learning_rate": {"log_uniform": [1e-4, 1.0]}})
    assert_one_line(exc, "plugin tmp_nodist", "optimizer TmpNoDist", "hyperparameter beta has no search distribution")
    space = plugins.validate(
        "TmpNoDist", {"learning_rate": {"log_uniform": [1e-4, 1.0]}, "beta": {"uniform": [0.0, 0.9]}}
    )
    assert list(space) == ["learning_rate", "beta"]
    assert plugins.validate("TmpNoDist", {"learning_rate": {"log_uniform": [1e-4, 1.0]}}, fixed={"beta": 0.5})
    with pytest.raises(plugins.PluginError) as exc:
        plugins.validate("TmpNoDist", {"learning_rate": {"log_uniform": [1e-4, 1.0]}, "beta": {"uniform": [0, 2]}})
    assert_one_line(exc, "optimizer TmpNoDist: study search_space of beta", "outside the allowed range")


# ---- declarations: ranges, search-space merge, built-ins ----


def test_undeclared_learning_rate_gets_the_protocols_default_like_the_builtins(tmp_path):
    """One rule for built-ins and plugins: a recorded learning_rate/power without a declared distribution
    searches the protocol's default one, so a study that sets no search_space plans (and samples) it."""
    from optimizers.distributions import DEFAULT_SEARCH
    from runners.config import load_study

    path = write_plugin(
        tmp_path,
        "tmp_nolr",
        """
        import optimizers
        def f(model, learning_rate, power, select=None):
            import keras
            return optimizers.nonlinear(keras.optimizers.SGD(learning_rate), power=power, select=select)
        optimizers.register("TmpNoLr", f, hyperparams=("learning_rate", "power"), options=("select",))
    """,
    )
    plugins.load(str(path))
    space = optimizers.search_space("TmpNoLr")
    assert {n: d.syntax for n, d in space.items()} == {n: DEFAULT_SEARCH[n] for n in ("learning_rate", "power")}
    study = tmp_path / "study.yaml"
    study.write_text(
        f"plugins: [{path}]\ndefaults: {{budget: 3}}\nproblems:\n  quadratic_deep:\n"
        "    optimizers: [TmpNoLr, PowKernelGradientDescentOptimizer]\n"
    )
    ours, builtin = load_study(study).entries
    assert ours.space == builtin.space and ours.samples() == builtin.samples()  # the paper's draws


def test_declared_ranges_are_checked_like_the_builtins():
    plugins.load(str(ADAM_FAMILY))
    hp = {"learning_rate": 1e-3, "power": 0.5, "beta_1": 0.9}
    assert optimizers.resolve_hyperparams("PowKernelAdam", hp)["beta_2"] == 0.999
    for key, value, message in (
        ("beta_1", 1.0, "beta_1 must be a number in [0, 1), got 1.0"),
        ("power", 0, "power must be a number > 0, got 0"),
        ("epsilon", -1e-8, "epsilon must be a number > 0"),
        ("beta_1", "0.9", "beta_1 must be a number in [0, 1), got '0.9'"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            optimizers.resolve_hyperparams("PowKernelAdam", {**hp, key: value})
    with pytest.raises(ValueError, match="range of beta: expected an interval"):
        optimizers.register(
            "TmpBadRange",
            lambda model, learning_rate, beta: 0,
            hyperparams=("learning_rate", "beta"),
            ranges={"beta": "0..1"},
        )
    with pytest.raises(ValueError, match="search names 'gamma', which it does not take"):
        optimizers.register("TmpBadKey", lambda model, learning_rate: 0, search={"gamma": 1})
    optimizers.register(
        "TmpClosed",
        lambda model, learning_rate, beta: 0,
        hyperparams=("learning_rate", "beta"),
        ranges={"beta": (0, 2)},
    )
    assert optimizers.resolve_hyperparams("TmpClosed", {"learning_rate": 1, "beta": 2})["beta"] == 2.0
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 2\], got 2.5"):
        optimizers.resolve_hyperparams("TmpClosed", {"learning_rate": 1, "beta": 2.5})


def test_search_space_study_overrides_plugin_defaults():
    plugins.load(str(ADAM_FAMILY))
    declared = {n: d.syntax for n, d in optimizers.search_space("PowKernelAdam").items()}
    assert declared == {
        "learning_rate": {"log_uniform": [1e-5, 1e-1]},
        "power": {"randint": [4, 9], "scale": 0.1},
        "beta_1": {"uniform": [0.8, 0.999]},
    }
    study = {
        "beta_1": {"uniform": [0.85, 0.95]},
        "learning_rate": {"log_uniform": [1e-4, 1e-2]},
        "momentum": {"log_uniform": [1e-3, 1.0]},
    }  # momentum: not PowKernelAdam's, left out
    merged = optimizers.search_space("PowKernelAdam", study)
    assert list(merged) == ["beta_1", "learning_rate", "power"]  # the study's order, then the declared order
    assert merged["beta_1"].syntax == {"uniform": [0.85, 0.95]} and merged["power"].syntax == declared["power"]
    assert list(optimizers.search_space("PowKernelAdam", study, fixed=["power"])) == ["beta_1", "learning_rate"]
    # KerasLion records beta_1/beta_2 with defaults and no distribution: constant unless the study searches them
    plugins.load(str(LION))
    assert list(optimizers.search_space("KerasLion")) == ["learning_rate"]
    assert list(optimizers.search_space("KerasLion", {"beta_2": {"uniform": [0.9, 0.999]}})) == [
        "beta_2",
        "learning_rate",
    ]


def test_builtin_declarations_match_the_study_defaults_and_the_analysis():
    from analysis.tables import BASELINE_OPTIMIZERS, SHORT_NAMES
    from runners.config import DEFAULT_SPACE

    for name in optimizers.BUILTIN:
        entry = optimizers.spec(name)
        assert entry.display_label == SHORT_NAMES[name]
        assert entry.baseline == (name in BASELINE_OPTIMIZERS) == (not name.startswith("PowKernel"))
        # the paper's / Crowded Valley's draws: the study default space, restricted to what the optimizer records
        fixed = ["weight_decay_opt"] if "W_" in name else []
        expected = {k: v for k, v in DEFAULT_SPACE.items() if k in entry.hyperparams and k not in fixed}
        space = optimizers.search_space(name, fixed=fixed)
        assert {n: d.syntax for n, d in space.items()} == expected and list(space) == list(expected)
    assert optimizers.linear_twin("PowKernelMomentumOptimizerNW_momscaled") == "NAGOptimizerW_momscaled"
    assert optimizers.linear_twin("NAGOptimizer") == "NAGOptimizer"


def test_examples_declare_everything_and_build():
    adam, lion = plugins.load(str(ADAM_FAMILY)), plugins.load(str(LION))
    assert adam.optimizers == ("KerasAdam", "PowKernelAdam") and lion.optimizers == ("KerasLion", "PowKernelLion")
    for name, label, baseline, twin in (
        ("KerasAdam", "Adam", True, "KerasAdam"),
        ("PowKernelAdam", "Adam+φ", False, "KerasAdam"),
        ("KerasLion", "Lion", True, "KerasLion"),
        ("PowKernelLion", "Lion+φ", False, "KerasLion"),
    ):
        entry = optimizers.spec(name)
        assert (entry.display_label, entry.baseline, optimizers.linear_twin(name)) == (label, baseline, twin)
        assert set(entry.ranges) >= set(entry.hyperparams)
        plugins.validate(name)


def test_example_study_plans_through_the_plugin_api():
    """What part B's load_study will do with configs/examples/adam_vs_pow_adam.yaml's plugins: and problems."""
    import yaml

    study = ROOT / "configs" / "examples" / "adam_vs_pow_adam.yaml"
    raw = yaml.safe_load(study.read_text())
    loaded = plugins.load_all(raw["plugins"], base=study.parent)
    assert [p.path for p in loaded] == [str(ADAM_FAMILY)]
    space = (raw.get("defaults") or {}).get("search_space")
    assert set(raw["problems"]) == {"quadratic_deep", "fmnist_2c2d"} and "smoke" in raw["presets"]
    for problem in raw["problems"].values():
        for name in problem["optimizers"]:
            assert plugins.validate(name, space)


# ---- PowKernelAdam at power = 1 is Keras Adam step for step (through the plugin path) ----


def small_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), layers.Dense(4), layers.Dense(3)])


def test_pow_kernel_adam_power_one_is_keras_adam_step_for_step():
    plugins.load(str(ADAM_FAMILY))
    rng = np.random.default_rng(0)
    m1, m2, m3 = small_model(), small_model(), small_model()
    shapes = [tuple(v.shape) for v in m1.trainable_variables]
    grads_seq = [[rng.normal(size=s).astype("float32") * 10.0 ** rng.integers(-3, 2) for s in shapes] for _ in range(5)]
    hp = {"learning_rate": 3e-3, "beta_1": 0.85}
    ours = optimizers.make("PowKernelAdam", m1, power=1.0, **hp)
    twin = optimizers.make(optimizers.linear_twin("PowKernelAdam"), m2, **hp)
    plain = keras.optimizers.Adam(3e-3, beta_1=0.85)
    assert ours.nlwu_provenance["optimizer_hyperparams"] == {"learning_rate": 3e-3, "power": 1.0, "beta_1": 0.85}
    for grads in grads_seq:
        for opt, model in ((ours, m1), (twin, m2), (plain, m3)):
            opt.apply([ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
        for a, b, c in zip(m1.trainable_variables, m2.trainable_variables, m3.trainable_variables):
            np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(c))
            np.testing.assert_array_equal(ops.convert_to_numpy(b), ops.convert_to_numpy(c))
    # and power != 1 does differ on the kernels (the map is really in front)
    m4 = small_model()
    mapped = optimizers.make("PowKernelAdam", m4, power=0.5, **hp)
    mapped.apply([ops.convert_to_tensor(g) for g in grads_seq[0]], m4.trainable_variables)
    m5 = small_model()
    keras.optimizers.Adam(3e-3, beta_1=0.85).apply(
        [ops.convert_to_tensor(g) for g in grads_seq[0]], m5.trainable_variables
    )
    assert not np.array_equal(
        ops.convert_to_numpy(m4.trainable_variables[0]), ops.convert_to_numpy(m5.trainable_variables[0])
    )
