"""Run identity (issue 16 item 1): a value that changes the math never shares a setting folder with another
value, the paper's defaults keep the paper's folder names, and a result is reused only if its recorded spec
(provenance) equals the requested one. No TensorFlow here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tree_helpers import run_argv, valid_result_text

from deepobs_tree import provenance_file_name
from runners.config import load_study
from runners.spec import RunSpec, SpecMismatch

ROOT = Path(__file__).resolve().parents[1]
PK = "PowKernelMomentumOptimizer"
HP = {"learning_rate": 0.01, "power": 0.5}
PAPER = "num_epochs__1__batch_size__128__learning_rate__1.e-02__power__5.e-01"


def _spec(**kw):
    hp = {**HP, **kw.pop("hp", {})}
    return RunSpec("quadratic_deep", PK, hp, num_epochs=1, **kw)


@pytest.mark.parametrize(
    "kw, token",
    [
        ({}, ""),
        ({"hp": {"momentum": 0.9}}, ""),  # the default, given explicitly: the paper's name
        ({"options": {"select": "rank>=2", "decay_on": "selected"}}, ""),
        ({"hp": {"momentum": 0.0}}, "__momentum__0.e+00"),
        ({"hp": {"momentum": 0.5}}, "__momentum__5.e-01"),
        ({"options": {"select": "all"}}, "__select__all"),
        ({"options": {"decay_on": "all"}}, "__decay_on__all"),
        ({"fidelity": "corrected"}, "__fidelity__corrected"),
        ({"train_log_interval": 5}, "__train_log_interval__5"),
    ],
)
def test_non_default_values_are_in_the_folder_name(kw, token):
    assert _spec(**kw).setting_folder() == PAPER + token


def test_every_math_changing_value_gives_its_own_folder():
    variants = [
        {},
        {"hp": {"momentum": 0.0}},
        {"hp": {"momentum": 0.5}},
        {"options": {"select": "all"}},
        {"options": {"select": "none"}},
        {"options": {"decay_on": "all"}},
        {"fidelity": "corrected"},
        {"train_log_interval": 3},
        {"options": {"select": "all", "decay_on": "all"}},
    ]
    folders = [_spec(**kw).setting_folder() for kw in variants]
    assert len(set(folders)) == len(folders)


def _plant(spec, out, recorded_spec=None, stamp="2026-01-01-00-00-00"):
    folder = spec.setting_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / f"random_seed__{spec.seed}__{stamp}.json"
    result.write_text(valid_result_text(spec))
    if recorded_spec is not None:
        rec = {
            **recorded_spec.to_dict(),
            "hyperparams": recorded_spec.hyperparams_dict,
            "options": recorded_spec.options_dict,
        }
        (folder / provenance_file_name(result.name)).write_text(yaml.safe_dump({"spec": rec}))
    return result


def test_reuse_only_when_the_recorded_spec_equals_the_requested(tmp_path):
    spec = _spec()
    done = _plant(spec, tmp_path, recorded_spec=spec.replace(hyperparams={**HP, "momentum": 0.9}))
    assert spec.existing_result(tmp_path) == done  # explicit default == implicit default
    # a result in the paper's folder recorded with momentum 0.5 (an older tree): refused, naming the difference
    other = tmp_path / "other"
    _plant(spec, other, recorded_spec=_spec(hp={"momentum": 0.5}))
    with pytest.raises(SpecMismatch, match=r"hyperparams.momentum: recorded 0.5, requested 0.9"):
        spec.existing_result(other)
    bad = tmp_path / "bad"
    result = _plant(spec, bad)
    result.with_name(provenance_file_name(result.name)).write_text("spec: [unclosed")
    assert spec.existing_result(bad) is None  # cannot be verified: never reused (a sweep moves it aside)
    [rejected] = spec.result_files(bad)[1]
    assert rejected.path == result and "provenance" in rejected.reason and "unreadable" in rejected.reason


def test_a_rewritten_provenance_is_read_again(tmp_path):
    # the recorded spec is memoised per provenance file (a sweep asks for the same results many times); the
    # memo is keyed on the file's identity, so a provenance replaced after the first check is checked anew
    spec = _spec()
    done = _plant(spec, tmp_path, recorded_spec=spec)
    assert spec.existing_result(tmp_path) == done
    assert spec.existing_result(tmp_path) == done  # memoised: same answer
    prov = done.with_name(provenance_file_name(done.name))
    rec = {**spec.to_dict(), "hyperparams": {**HP, "momentum": 0.5}, "options": {}}
    fresh = prov.with_name("new.yaml")
    fresh.write_text(yaml.safe_dump({"spec": rec}))
    os.replace(fresh, prov)  # as write_atomic replaces a file
    with pytest.raises(SpecMismatch, match=r"hyperparams.momentum: recorded 0.5, requested 0.9"):
        spec.existing_result(tmp_path)
    prov.write_text("spec: [unclosed")  # rewritten in place
    assert spec.existing_result(tmp_path) is None


def test_results_without_provenance_are_reused(tmp_path):
    spec = _spec()
    done = _plant(spec, tmp_path)
    assert spec.existing_result(tmp_path) == done


def test_committed_tree_keeps_its_folder_names():
    tree = ROOT / "deepobs_results_medium_budget"
    if not tree.is_dir():
        pytest.skip("no committed result tree")
    study = load_study(ROOT / "configs" / "paper.yaml", preset="medium")
    ours = {s.setting_dir(tree) for s in study.tuning_specs()[:200]}
    on_disk = {p for p in ours if p.is_dir()}
    assert on_disk, "the paper's default specs must map onto the committed folders"


def test_study_fixed_momentum_axis_gives_distinct_searches(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "defaults": {"budget": 3, "num_epochs": 1, "rerun_seeds": []},
                "problems": {"quadratic_deep": {"optimizers": [PK], "fixed": {"momentum": [0.9, 0.5]}}},
            }
        )
    )
    study = load_study(cfg)
    assert len(study.entries) == 2
    specs = study.tuning_specs()
    assert len(specs) == 6
    assert len({(s.setting_folder(), s.seed) for s in specs}) == 6


def test_cli_momentum_run_does_not_reuse_the_default_result(tmp_path):
    """End to end: `run ... --hp momentum=0.0` after a default-momentum run trains its own result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = [
        sys.executable,
        *run_argv(PK, "learning_rate=0.01", "power=0.5"),
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    second = subprocess.run(
        base + ["--hp", "momentum=0.0"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert not second.stdout.startswith("exists:")
    assert Path(first.stdout.strip()).parent.name == PAPER
    assert Path(second.stdout.strip()).parent.name == PAPER + "__momentum__0.e+00"


def test_analysis_keeps_runs_that_differ_only_by_a_folder_token(tmp_path, monkeypatch):
    """Two results with the same recorded JSON values but different provenance-only momentum are two
    settings for the analysis (the folder's extra token is part of the identity), not one superseding the other."""
    import json

    from analysis import load_runs

    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))
    data = {
        "testproblem": "quadratic_deep",
        "batch_size": 128,
        "num_epochs": 1,
        "random_seed": 42,
        "weight_decay": None,
        "optimizer_name": PK,
        "optimizer_hyperparams": HP,
        "training_params": {},
        "train_losses": [2.0, 1.0],
        "valid_losses": [2.0, 1.0],
        "test_losses": [2.0, 1.0],
        "minibatch_train_losses": [1.0],
    }
    for token, stamp in (("", "2026-01-01-00-00-00"), ("__momentum__5.e-01", "2026-01-01-00-00-01")):
        folder = tmp_path / "out" / "quadratic_deep" / PK / (PAPER + token)
        folder.mkdir(parents=True)
        (folder / f"random_seed__42__{stamp}.json").write_text(json.dumps(data))
    runs = load_runs([tmp_path / "out"], progress=False, cache=False)
    assert len(runs) == 2 and runs["setting_key"].nunique() == 2


def test_sweep_with_a_momentum_axis_trains_every_run(tmp_path):
    """`fixed: {momentum: [0.9, 0.5]}`: 2 searches, all 2 x (2 tuning + 1 rerun) runs trained, 2 choices."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "defaults": {"budget": 2, "num_epochs": 1, "rerun_seeds": [43]},
                "problems": {"quadratic_deep": {"optimizers": [PK], "fixed": {"momentum": [0.9, 0.5]}}},
            }
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NLWU_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners",
            "sweep",
            str(cfg),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((tmp_path / "out").rglob("random_seed__*.json"))
    assert len(results) == 6
    assert sum("__momentum__5.e-01" in str(p) for p in results) == 3
    assert proc.stderr.count(": chose ") == 2 and "not selected" not in proc.stderr
    # the printed summary tells the two searches apart by the folder token no column shows
    rows = [line for line in proc.stdout.splitlines() if line.startswith("quadratic_deep")]
    assert len(rows) == 2 and sum(line.rstrip().endswith("momentum=5.e-01") for line in rows) == 1, proc.stdout


def test_a_result_this_suite_just_wrote_is_not_parsed_again_until_it_changes(tmp_path, monkeypatch):
    """``note_written`` (a worker's report) fills the provenance memo for the file as it is now, so selection
    does not parse the record again; a provenance replaced afterwards is read and judged anew."""
    from runners import spec as spec_module

    spec = _spec()
    done = _plant(spec, tmp_path, recorded_spec=spec)
    spec.note_written(done)
    monkeypatch.setattr(spec_module, "load_yaml", lambda text: pytest.fail("parsed a record just written"))
    assert spec.existing_result(tmp_path) == done
    monkeypatch.undo()
    prov = done.with_name(provenance_file_name(done.name))
    rec = {**spec.to_dict(), "hyperparams": {**HP, "momentum": 0.5}, "options": {}}
    fresh = prov.with_name("new.yaml")
    fresh.write_text(yaml.safe_dump({"spec": rec}))
    os.replace(fresh, prov)
    with pytest.raises(SpecMismatch, match=r"hyperparams.momentum: recorded 0.5, requested 0.9"):
        spec.existing_result(tmp_path)
