"""``make fidelity`` reuses a finished run only when its recorded spec is the one requested: the DeepOBS file
does not record options such as ``select`` (they live in the provenance sidecar and the folder name), so a run
of another variant in the same tree must not stand in for the paper's setting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

from runners.spec import RunSpec

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("deepobs_oracle_fidelity_reuse", HERE / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fidelity
_spec.loader.exec_module(fidelity)

HP = {"learning_rate": 0.005762487216478597, "power": 0.7000000000000001}


def _result(result_text, out: Path, setting: str, spec_overrides: dict, sidecar=True) -> Path:
    folder = out / "results" / "fmnist_2c2d" / fidelity.M / setting
    folder.mkdir(parents=True)
    path = folder / "random_seed__42__2026-12-04-18-40-04.json"
    run = RunSpec("fmnist_2c2d", fidelity.M, HP, seed=42, num_epochs=5)
    path.write_text(result_text(run))  # a result the runner trusts (schema and values), as a real run writes
    spec = {
        "testproblem": "fmnist_2c2d",
        "optimizer": fidelity.M,
        "hyperparams": dict(HP),
        "seed": 42,
        "num_epochs": 5,
        "batch_size": None,
        "weight_decay": None,
        "fidelity": "deepobs",
        "options": {},
        **spec_overrides,
    }
    if sidecar:
        path.with_name(path.name[:-5] + ".provenance.yaml").write_text(yaml.safe_dump({"spec": spec}))
    return path


def _reused(out: Path):
    return fidelity.run_case("fmnist_2c2d", fidelity.M, HP, 42, 5, out, out / "data", train=False)


def test_the_requested_run_is_reused(tmp_path, result_text):
    _result(result_text, tmp_path, "default", {})
    assert _reused(tmp_path) is not None


def test_another_variant_or_an_unrecorded_run_is_not_reused(tmp_path, result_text):
    cases = [
        ({"options": {"select": "all"}}, True),
        ({"hyperparams": {**HP, "momentum": 0.95}}, True),
        ({"num_epochs": 3}, True),
        ({"batch_size": 64}, True),
        ({"fidelity": "corrected"}, True),
        ({}, False),
    ]
    for i, (overrides, sidecar) in enumerate(cases):
        out = tmp_path / str(i)
        _result(result_text, out, "variant", overrides, sidecar=sidecar)
        assert _reused(out) is None, (overrides, sidecar)
