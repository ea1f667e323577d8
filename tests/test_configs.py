"""Study YAML files: the shipped configs resolve to the paper's plan; bad files give one clear ConfigError."""

import json
import re
from pathlib import Path

import pytest

from deepobs_tree import setting_folder_name
from runners.config import DEFAULTS, ConfigError, load_study
from runners.sampler import paper_samples

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NONLINEAR = ["PowKernelGradientDescentOptimizer", "PowKernelMomentumOptimizer", "PowKernelMomentumOptimizerN"]
BASELINES = ["GradientDescentOptimizer", "MomentumOptimizer", "NAGOptimizer"]


def test_reproduce_default_is_354_runs_of_quadratic_deep():
    study = load_study(CONFIGS / "reproduce_default.yaml")
    assert study.preset == "medium"
    assert [(e.problem, e.optimizer) for e in study.entries] == [("quadratic_deep", o) for o in NONLINEAR + BASELINES]
    tuning = study.tuning_specs()
    reruns = sum(len(e.rerun_seeds) for e in study.entries)
    assert len(tuning) == 300 and reruns == 54 and len(tuning) + reruns == 354
    assert {s.seed for s in tuning} == {42} and len({s.run_id for s in tuning}) == 300
    assert all(e.rerun_seeds == tuple(range(43, 52)) for e in study.entries)
    gd = [s for s in tuning if s.optimizer == NONLINEAR[0]]
    assert [s.hyperparams_dict for s in gd] == paper_samples()
    by = {e.optimizer: e.searched for e in study.entries}
    assert by == {
        **dict.fromkeys(NONLINEAR, ("learning_rate", "power")),
        "GradientDescentOptimizer": ("learning_rate",),
        "MomentumOptimizer": ("learning_rate", "momentum"),
        "NAGOptimizer": ("learning_rate", "momentum"),
    }
    smoke = load_study(CONFIGS / "reproduce_default.yaml", preset="smoke")
    assert len(smoke.tuning_specs()) == 12 and all(s.num_epochs == 2 for s in smoke.tuning_specs())


def test_tuning_folders_are_the_papers(paper_tree):
    study = load_study(CONFIGS / "reproduce_default.yaml")
    for optimizer in NONLINEAR:
        ours = {s.setting_folder() for s in study.tuning_specs() if s.optimizer == optimizer}
        theirs = {p.name for p in (paper_tree / "quadratic_deep" / optimizer).iterdir() if p.is_dir()}
        assert ours == theirs, optimizer


def test_baseline_folders_use_crowded_valley_names():
    study = load_study(CONFIGS / "reproduce_default.yaml")
    first = {s.optimizer: s.setting_folder() for s in study.tuning_specs()[::50]}
    assert first["MomentumOptimizer"] == (
        "num_epochs__100__batch_size__128__learning_rate__3.148911648e-03__"
        "momentum__7.1144760093e-01__use_locking__False__use_nesterov__False"
    )
    assert first["NAGOptimizer"].endswith("use_locking__False__use_nesterov__True")
    assert first["GradientDescentOptimizer"] == "num_epochs__100__batch_size__128__learning_rate__3.148911648e-03"


def test_rerun_specs_land_in_the_chosen_tuning_folder(paper_tree):
    study = load_study(CONFIGS / "reproduce_default.yaml")
    folder = (
        paper_tree
        / "quadratic_deep"
        / "PowKernelMomentumOptimizer"
        / ("num_epochs__100__batch_size__128__learning_rate__2.9204338472e-03__power__9.e-01")
    )
    stored = json.loads(sorted(folder.glob("random_seed__42__*.json"))[-1].read_text())
    chosen = {"optimizer_hyperparams": stored["optimizer_hyperparams"], "weight_decay": stored["weight_decay"]}
    reruns = study.rerun_specs("quadratic_deep", "PowKernelMomentumOptimizer", chosen)
    assert [s.seed for s in reruns] == list(range(43, 52))
    assert {s.setting_folder() for s in reruns} == {folder.name}
    tuned = [s for s in study.tuning_specs() if s.optimizer == "PowKernelMomentumOptimizer"][14]  # sample #15
    assert tuned.hyperparams == reruns[0].hyperparams and tuned.replace(seed=43) == reruns[0]
    # baselines: the stored use_locking/use_nesterov constants are accepted and not duplicated
    nag = study.rerun_specs(
        "quadratic_deep",
        "NAGOptimizer",
        {
            "optimizer_hyperparams": {
                "learning_rate": 0.0123,
                "momentum": 0.019,
                "use_locking": False,
                "use_nesterov": True,
            },
            "weight_decay": None,
        },
    )
    assert nag[0].hyperparams_dict == {"learning_rate": 0.0123, "momentum": 0.019}
    assert nag[0].setting_folder().endswith("use_nesterov__True")
    with pytest.raises(KeyError):
        study.rerun_specs("mnist_vae", "NAGOptimizer", chosen)


def test_paper_yaml_is_the_full_study():
    study = load_study(CONFIGS / "paper.yaml")
    units = {(e.problem, e.optimizer) for e in study.entries}
    base = [
        "quadratic_deep",
        "mnist_vae",
        "fmnist_vae",
        "fmnist_2c2d",
        "tolstoi_char_rnn",
        "cifar10_3c3d",
        "cifar100_allcnnc",
        "svhn_wrn164",
    ]
    for p in base:
        assert {(p, o) for o in BASELINES} <= units  # baselines: DeepOBS problems, L2 in the loss
    for p in base[:6]:
        assert {(p, o) for o in NONLINEAR} <= units
    w = [
        "PowKernelGradientDescentOptimizerW_scaled",
        "PowKernelMomentumOptimizerW_momscaled",
        "PowKernelMomentumOptimizerNW_momscaled",
    ]
    for p, decay in (
        ("cifar10_3c3d_nodecay", 0.002),
        ("cifar100_allcnnc_nodecay", 0.0005),
        ("svhn_wrn164_nodecay", 0.0005),
    ):
        entries = [e for e in study.entries if e.problem == p]
        assert [e.optimizer for e in entries] == w
        assert all(dict(e.fixed) == {"weight_decay_opt": decay} and e.regularization == "decoupled" for e in entries)
    assert len(study.entries) == 8 * 6 + 3 * 3 - 6  # cifar100/svhn non-linear only as W variants
    assert all(e.budget == 50 and e.tuning_seed == 42 for e in study.entries)
    # the W runs' folders carry weight_decay_opt like the paper's
    entry = next(e for e in study.entries if e.problem == "cifar100_allcnnc_nodecay")
    assert entry.tuning_specs()[4].setting_folder() == (
        "num_epochs__350__batch_size__256__learning_rate__6.8706142826e-03__power__8.e-01__weight_decay_opt__5.e-04"
    )
    smoke = load_study(CONFIGS / "paper.yaml", preset="smoke")
    assert {e.problem for e in smoke.entries} == {"quadratic_deep"} and len(smoke.tuning_specs()) == 12


def test_every_default_is_in_the_files_and_commented():
    for name in ("paper.yaml", "reproduce_default.yaml"):
        text = (CONFIGS / name).read_text()
        block = text.split("\ndefaults:\n", 1)[1].split("\n\n", 1)[0]
        for key in DEFAULTS:
            line = next((ln for ln in block.splitlines() if re.match(rf"\s+{key}:", ln)), None)
            assert line is not None, f"{name}: default {key} missing"
            assert "#" in line, f"{name}: default {key} has no comment"
        study = load_study(CONFIGS / name)
        e = study.entries[0]
        assert (e.budget, e.tuning_seed, list(e.rerun_seeds), e.train_log_interval) == (
            DEFAULTS["budget"],
            DEFAULTS["tuning_seed"],
            DEFAULTS["rerun_seeds"],
            DEFAULTS["train_log_interval"],
        )


def test_smoke_yaml_loads_with_both_presets():
    assert len(load_study(CONFIGS / "smoke.yaml").tuning_specs()) == 6
    assert len(load_study(CONFIGS / "smoke.yaml", preset="medium").tuning_specs()) == 100


def test_list_is_a_sweep_axis(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        "problems:\n  cifar10_3c3d:\n    optimizers: [PowKernelMomentumOptimizer]\n"
        "    regularization: [l2, decoupled]\n    budget: 2\n    num_epochs: [1, 2]\n"
        "  quadratic_deep:\n    optimizers:\n      MomentumOptimizer: {fixed: {momentum: [0.5, 0.9]}}\n"
    )
    study = load_study(f)
    got = [(e.problem, e.optimizer, e.num_epochs, dict(e.fixed), e.searched) for e in study.entries]
    assert got == [
        ("cifar10_3c3d", "PowKernelMomentumOptimizer", 1, {}, ("learning_rate", "power")),
        ("cifar10_3c3d", "PowKernelMomentumOptimizer", 2, {}, ("learning_rate", "power")),
        (
            "cifar10_3c3d_nodecay",
            "PowKernelMomentumOptimizerW_momscaled",
            1,
            {"weight_decay_opt": 0.002},
            ("learning_rate", "power"),
        ),
        (
            "cifar10_3c3d_nodecay",
            "PowKernelMomentumOptimizerW_momscaled",
            2,
            {"weight_decay_opt": 0.002},
            ("learning_rate", "power"),
        ),
        ("quadratic_deep", "MomentumOptimizer", None, {"momentum": 0.5}, ("learning_rate",)),
        ("quadratic_deep", "MomentumOptimizer", None, {"momentum": 0.9}, ("learning_rate",)),
    ]
    specs = study.entries[-2].tuning_specs()
    assert (
        specs[0]
        .setting_folder()
        .startswith("num_epochs__100__batch_size__128__learning_rate__3.148911648e-03__momentum__5.e-01")
    )
    chosen = {"optimizer_hyperparams": {"learning_rate": 0.1, "momentum": 0.9}, "weight_decay": None}
    assert study.rerun_specs("quadratic_deep", "MomentumOptimizer", chosen)[0].hyperparams_dict == {
        "learning_rate": 0.1,
        "momentum": 0.9,
    }


QD = "problems:\n  quadratic_deep:\n    optimizers: [PowKernelGradientDescentOptimizer]\n"
BAD = [
    ("unknown_top", "problemz:\n  quadratic_deep: {}\n", "problemz: unknown key"),
    ("unknown_key", QD + "    budgett: 3\n", "problems.quadratic_deep.budgett: unknown key"),
    ("unknown_default", "defaults:\n  seeds: [1]\n" + QD, "defaults.seeds: unknown key"),
    ("wrong_type_budget", QD + "    budget: many\n", "problems.quadratic_deep.budget: expected an integer >= 1"),
    ("wrong_type_top", "- a\n- b\n", "expected a mapping"),
    ("zero_budget", "defaults:\n  budget: 0\n" + QD, "defaults.budget: expected an integer >= 1"),
    ("bad_seeds", QD + "    rerun_seeds: 43\n", "rerun_seeds: expected a list"),
    ("bad_reg", QD + "    regularization: dropout\n", "regularization: expected one of l2, decoupled"),
    ("bad_epochs", QD + "    num_epochs: -1\n", "num_epochs: expected an integer >= 1 or null"),
    (
        "unknown_problem",
        "problems:\n  quadratic_shallow:\n    optimizers: [MomentumOptimizer]\n",
        "problems.quadratic_shallow: unknown test problem",
    ),
    (
        "unknown_optimizer",
        "problems:\n  quadratic_deep:\n    optimizers: [Adamm]\n",
        "problems.quadratic_deep.optimizers.Adamm: unknown optimizer",
    ),
    ("empty_space", QD + "    search_space: {}\n", "search_space: empty search space"),
    (
        "space_without_searched",
        QD + "    fixed: {learning_rate: 0.1, power: 0.5}\n",
        "empty search space for PowKernelGradientDescentOptimizer",
    ),
    (
        "bad_distribution",
        QD + "    search_space:\n      learning_rate: {log_uniform: [0, 1]}\n",
        "search_space.learning_rate: log_uniform needs 0 < low < high",
    ),
    (
        "typo_in_space",
        QD + "    search_space:\n      learnig_rate: {log_uniform: [0.001, 1.0]}\n",
        "search_space.learnig_rate: no registered optimizer takes",
    ),
    ("no_problems", "name: x\n", "problems: missing"),
    ("empty_file", "", "the file is empty"),
    ("malformed", "problems: [\n", "malformed YAML (line"),
    ("no_optimizers", "problems:\n  quadratic_deep: {budget: 2}\n", "problems.quadratic_deep.optimizers: missing"),
    ("no_decoupled_variant", QD + "    regularization: decoupled\n", "has no _nodecay variant"),
    (
        "w_without_decoupled",
        "problems:\n  quadratic_deep:\n    optimizers: [PowKernelGradientDescentOptimizerW_scaled]\n",
        "use regularization: decoupled",
    ),
    ("bad_fixed", QD + "    fixed: {power: -1}\n", "power must be a number > 0"),
    ("unknown_fixed", QD + "    fixed: {dampening: 0.1}\n", "does not take 'dampening'"),
    ("bad_option", QD + "    options: {rule: x}\n", "options.rule: unknown key"),
    ("empty_axis", QD + "    num_epochs: []\n", "empty list (sweep axis)"),
    (
        "duplicate",
        "problems:\n  quadratic_deep:\n    optimizers: [MomentumOptimizer, MomentumOptimizer]\n",
        "repeated optimizer",
    ),
    ("unknown_preset_default", QD + "default_preset: fast\n", "default_preset: unknown preset 'fast'"),
    ("bad_preset_key", QD + "presets:\n  smoke: {epochs: 1}\n", "presets.smoke.epochs: unknown key"),
]


@pytest.mark.parametrize("name, text, message", BAD, ids=[b[0] for b in BAD])
def test_bad_configs_give_one_clear_error(tmp_path, name, text, message):
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as info:
        load_study(f)
    text_ = str(info.value)
    assert text_.startswith(str(f) + ": ") and message in text_ and "\n" not in text_, text_
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_unreadable_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_study(tmp_path / "missing.yaml")
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_study(folder)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00problems")
    with pytest.raises(ConfigError, match="cannot read|malformed"):
        load_study(binary)
    with pytest.raises(ConfigError, match="unknown preset 'huge'; defined: medium, smoke"):
        load_study(CONFIGS / "paper.yaml", preset="huge")


def test_setting_folder_helper_matches_naming():
    spec = load_study(CONFIGS / "smoke.yaml").tuning_specs()[0]
    assert spec.setting_folder() == setting_folder_name(2, 128, spec.hyperparams_dict)
