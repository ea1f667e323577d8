"""runners.run and runners.worker on the real quadratic_deep problem (Keras, CPU): DeepOBS numbers and format."""

import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
from tree_helpers import LOSS_FILE_KEYS, run_args

import runners.run as run_mod
from deepobs_tree import PROVENANCE_SUFFIX, parse_result_file_name
from runners.commandline import main_run
from runners.run import execute
from runners.spec import RunSpec

DEEPOBS = Path(sys.prefix) / "lib" / "python3.11" / "site-packages" / "deepobs"
GD = "PowKernelGradientDescentOptimizer"
# protocol §3.2 sample #5 (the paper's chosen GD setting), exact float from the paper's JSON
SAMPLE5 = {"learning_rate": 0.006870614282613297, "power": 0.8}


def deepobs_shared_utils():
    """DeepOBS 1.2's own reader (deepobs/analyzer/shared_utils.py), loaded by file: the package's top-level
    import pulls TensorFlow 1, so build a stub package holding only its config module."""
    base = (
        Path(importlib.util.find_spec("deepobs").submodule_search_locations[0])
        if importlib.util.find_spec("deepobs")
        else DEEPOBS
    )
    pkg, sub = types.ModuleType("_deepobs_ref"), types.ModuleType("_deepobs_ref.analyzer")
    pkg.__path__, sub.__path__ = [str(base)], [str(base / "analyzer")]
    sys.modules.setdefault("_deepobs_ref", pkg)
    sys.modules.setdefault("_deepobs_ref.analyzer", sub)
    mods = {}
    for name, file in (
        ("_deepobs_ref.config", base / "config.py"),
        ("_deepobs_ref.analyzer.shared_utils", base / "analyzer" / "shared_utils.py"),
    ):
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        mods[name] = module
    return mods["_deepobs_ref.analyzer.shared_utils"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    spec = RunSpec("quadratic_deep", GD, SAMPLE5, seed=42)
    path = execute(spec, out, progress=False)
    return spec, out, path


def test_single_quadratic_deep_run_matches_deepobs(single_run, paper_tree):
    spec, out, path = single_run
    data = json.loads(path.read_text())
    # epoch-0 values of DeepOBS' quadratic_deep (acceptance: 353.8127 / 353.4468 to 2 decimals)
    assert round(data["valid_losses"][0], 2) == 353.81
    assert round(data["test_losses"][0], 2) == 353.45
    assert list(data) == LOSS_FILE_KEYS
    assert data["weight_decay"] is None and data["training_params"] == {}
    assert data["optimizer_hyperparams"] == SAMPLE5
    assert len(data["test_losses"]) == 101
    assert len(data["minibatch_train_losses"]) == 100  # 7 steps/epoch: step 0 logged once per epoch
    assert path.read_text() == json.dumps(data, indent=4)
    # same folder and file-name pattern as the paper's released run of this setting
    rel = path.relative_to(out)
    released = paper_tree / rel.parent
    assert released.is_dir(), f"{rel.parent} is not a folder of the paper's tree"
    paper_file = sorted(released.glob("random_seed__42__*.json"))[-1]
    paper = json.loads(paper_file.read_text())
    assert set(paper) - {"minibatch_train_losses"} >= set(data) - {"minibatch_train_losses"}
    assert paper["optimizer_hyperparams"] == data["optimizer_hyperparams"]
    assert parse_result_file_name(path.name)[0] == 42
    # the final test loss is in the paper's ballpark (its seed-42 run: same data, same init, same shuffling rule)
    assert abs(data["test_losses"][-1] - paper["test_losses"][-1]) < 1.0
    # provenance beside it, never read as a result
    prov = path.with_name(path.name[: -len(".json")] + PROVENANCE_SUFFIX)
    import yaml

    p = yaml.safe_load(prov.read_text())
    assert p["run_id"] == spec.run_id and p["result_file"] == path.name
    assert p["optimizer"]["selected"] and "keras" in p["versions"] and "commit" in p["git"]


def test_deepobs_reader_accepts_our_tree(single_run):
    spec, out, path = single_run
    su = deepobs_shared_utils()
    folder = path.parent
    agg = su.aggregate_runs(str(folder))
    assert agg["testproblem"] == "quadratic_deep" and agg["num_epochs"] == 100 and agg["batch_size"] == 128
    assert agg["optimizer_hyperparams"] == SAMPLE5
    assert "train_accuracies" not in agg
    setting = su.SettingAnalyzer(str(folder))
    assert setting.n_runs == 1  # the provenance file is not counted as a run
    assert setting.get_final_value("test_losses") == pytest.approx(json.loads(path.read_text())["test_losses"][-1])
    ranking = su.create_setting_analyzer_ranking(str(folder.parent), "final", "valid_losses")
    assert [s.path for s in ranking] == [str(folder)]


def test_existing_seed_is_skipped(single_run):
    spec, out, path = single_run
    before = sorted(p.name for p in path.parent.iterdir())
    assert execute(spec, out, progress=False) == path
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_result_appearing_during_training_wins(tmp_path, monkeypatch, result_text):
    """Two processes on one tree: if the seed's (trusted) file appears while we train, ours is dropped, never both."""
    spec = RunSpec("quadratic_deep", GD, SAMPLE5, seed=44, num_epochs=1)
    other = spec.setting_dir(tmp_path) / "random_seed__44__2000-01-01-00-00-00.json"
    real = run_mod.train_curves

    def racing(*args, **kwargs):
        curves = real(*args, **kwargs)
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text(result_text(spec))
        return curves

    monkeypatch.setattr(run_mod, "train_curves", racing)
    assert execute(spec, tmp_path, progress=False) == other
    assert [p.name for p in other.parent.iterdir()] == [other.name]


def test_divergence_on_quadratic_deep_pads_like_deepobs(tmp_path):
    spec = RunSpec("quadratic_deep", GD, {"learning_rate": 100.0, "power": 0.9}, num_epochs=6)
    data = json.loads(execute(spec, tmp_path, progress=False).read_text())
    mb = data["minibatch_train_losses"]
    # 1 logged loss per epoch; epoch 1's is inf -> stop after epoch n=1, pad num_epochs - n = 5 copies of [0]
    assert not math.isfinite(mb[1]) and mb[2:] == [mb[0]] * 5 and len(mb) == 1 * 2 + 5
    for key in ("train_losses", "valid_losses", "test_losses"):
        assert len(data[key]) == 7 and data[key][2:] == [data[key][0]] * 5
        assert round(data[key][0]) in (353, 354)


def test_run_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    cases = [
        (["--problem", "nope", "--optimizer", GD, "--hp", "learning_rate=0.1"], "unknown test problem 'nope'"),
        (["--problem", "quadratic_deep", "--optimizer", "Adamm", "--hp", "learning_rate=0.1"], "unknown optimizer"),
        (
            ["--problem", "quadratic_deep", "--optimizer", GD, "--hp", "learning_rate=0.1", "--hp", "power=-1"],
            "power must be",
        ),
        (["--problem", "quadratic_deep", "--optimizer", GD, "--hp", "power=0.5"], "learning_rate"),
        (["--problem", "quadratic_deep", "--optimizer", GD, "--hp", "lr"], "expected name=value"),
        (
            [*run_args(GD, "learning_rate=0.1", "power=0.5"), "--epochs", "0"],
            "--epochs must be >= 1",
        ),
        (
            [
                *run_args(GD, "learning_rate=0.1", "power=0.5", problem="fmnist_2c2d"),
                "--data-dir",
                str(tmp_path / "missing"),
            ],
            "prepare-data",
        ),
        (["--problem", "quadratic_deep"], "required"),
    ]
    for argv, message in cases:
        code = main_run([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 2, argv
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_run_cli_writes_one_result(tmp_path, capsys):
    argv = [
        "--problem",
        "quadratic_deep",
        "--optimizer",
        GD,
        "--hp",
        "learning_rate=0.01",
        "--hp",
        "power=0.5",
        "--epochs",
        "2",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main_run(argv) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.is_file() and printed.parent.name == (
        "num_epochs__2__batch_size__128__learning_rate__1.e-02__power__5.e-01"
    )
    assert main_run(argv) == 0 and capsys.readouterr().out.strip() == f"exists: {printed}"


def test_worker_runs_two_and_survives_a_failure(tmp_path):
    ok1 = RunSpec("quadratic_deep", GD, {"learning_rate": 0.01, "power": 0.5}, num_epochs=2)
    ok2 = ok1.replace(seed=43)
    bad = RunSpec("quadratic_deep", GD, {"learning_rate": 0.01, "power": -1.0}, num_epochs=2)
    requests = [
        ok1.to_json(),
        json.dumps({"spec": bad.to_dict()}),
        "",
        json.dumps({"spec": ok2.to_dict(), "out": str(tmp_path / "other")}),
        "{broken",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "runners.worker", "--out", str(tmp_path / "main")],
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["status"] for r in replies] == ["ok", "failed", "ok", "failed"]
    assert [r["run_id"] for r in replies[:3]] == [ok1.run_id, bad.run_id, ok2.run_id]
    assert "power must be" in replies[1]["error"] and "malformed" in replies[3]["error"]
    assert Path(replies[0]["path"]).is_file() and str(tmp_path / "main") in replies[0]["path"]
    assert Path(replies[2]["path"]).is_file() and str(tmp_path / "other") in replies[2]["path"]
    # fresh state per run: the same spec in a fresh worker gives the same curves
    first = json.loads(Path(replies[0]["path"]).read_text())
    again = execute(ok1, tmp_path / "inproc", progress=False)
    assert json.loads(again.read_text())["test_losses"] == first["test_losses"]
