"""Bad input of ``python -m analysis`` (issue 16, part A): a table-driven corpus and the data-loss, cache and
atomic-report promises.

* every bad command line: exit code 2, exactly one stderr line starting with ``error:``, no traceback,
  nothing created under ``--out``, the inputs byte-for-byte unchanged;
* every bad result file: skipped with one warning line naming it, counted and named in the report, the
  rest of the analysis completes;
* unreadable folders, symlink loops, dangling links: one warning each, counted and named, no fake problem;
* the parsed-table cache cannot execute code; the report is written completely or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tree_helpers import deepobs_result

from analysis import load_runs
from analysis.__main__ import main
from deepobs_tree import setting_folder_name

ROOT = Path(__file__).resolve().parents[1]
STAMP = "2024-01-01-00-00-00"
OPT = "PowKernelGradientDescentOptimizer"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def result(hp=None, seed=42, valid=(3.0, 2.0), test=(3.0, 2.5), **extra) -> dict:
    hp = {"learning_rate": 0.1, "power": 0.5} if hp is None else hp
    data = deepobs_result("quadratic_deep", OPT, hp, seed, valid, test, accuracy=False)
    data.update(extra)
    return data


def put(root: Path, data: dict | str, seed: int = 42, folder: str | None = None, stamp: str = STAMP) -> Path:
    hp = data["optimizer_hyperparams"] if isinstance(data, dict) else {"learning_rate": 0.1}
    folder = folder or setting_folder_name(1, 128, hp if isinstance(hp, dict) else {}, None)
    path = root / "quadratic_deep" / OPT / folder / f"random_seed__{seed}__{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def good_tree(root: Path) -> Path:
    for lr, score in ((0.1, 2.0), (0.2, 1.5)):
        hp = {"learning_rate": lr, "power": 0.5}
        put(root, result(hp, valid=(3.0, score)))
        for seed in (43, 44):
            put(root, result(hp, seed=seed, valid=(3.0, score)), seed=seed)
    return root


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes() + str(path.stat().st_mtime_ns).encode())
    return h.hexdigest()


def cli(capfd, *args) -> tuple[int, list[str], str]:
    try:
        code = main([*map(str, args), "--quiet"])
    except SystemExit as exit_:
        code = exit_.code
    captured = capfd.readouterr()
    return code, captured.err.splitlines(), captured.out


# ---- the corpus: bad command lines ----


def _cases(tmp: Path) -> dict[str, list]:
    tree = tmp / "tree"
    out = tmp / "out"
    a_file = tmp / "a_file.txt"
    return {
        "missing results path": [tmp / "nope", "--out", out],
        "results path is a file": [a_file, "--out", out],
        "results folder without result files": [tmp / "empty", "--out", out],
        "missing baselines path": [tree, "--baselines", tmp / "nope", "--out", out],
        "baselines path is a file": [tree, "--baselines", a_file, "--out", out],
        "unknown mode": [tree, "--mode", "median", "--out", out],
        "empty mode": [tree, "--mode", "", "--out", out],
        "filter without =": [tree, "--filter", "power", "--out", out],
        "filter without name": [tree, "--filter", "=0.5", "--out", out],
        "filter without value": [tree, "--filter", "power=", "--out", out],
        "filter matching nothing": [tree, "--filter", "power=0.75", "--out", out],
        "reversed rerun seeds": [tree, "--rerun-seeds", "51-43", "--out", out],
        "letters as rerun seeds": [tree, "--rerun-seeds", "a-b", "--out", out],
        "empty rerun seeds": [tree, "--rerun-seeds", "", "--out", out],
        "rerun seeds with a float": [tree, "--rerun-seeds", "43.5", "--out", out],
        "tuning seed not an int": [tree, "--tuning-seed", "x", "--out", out],
        "out is a file": [tree, "--out", a_file],
        "out below a file": [tree, "--out", a_file / "sub"],
        "out is a dangling symlink": [tree, "--out", tmp / "dangling_out"],
        "unknown option": [tree, "--out", out, "--bogus"],
        "no results": ["--out", out],
    }


CASES = list(_cases(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_bad_command_line(case, tmp_path, capfd):
    good_tree(tmp_path / "tree")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "dangling_out").symlink_to(tmp_path / "nowhere")
    before, digest_tree = digest(tmp_path), digest(tmp_path / "tree")
    code, err, _ = cli(capfd, *_cases(tmp_path)[case])
    assert code == 2, (case, err)
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "Traceback" not in err[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere").exists()
    if case != "filter matching nothing":  # every other case is refused before a file is parsed
        assert not (tmp_path / "cache").exists()
        assert digest(tmp_path) == before
    assert digest(tmp_path / "tree") == digest_tree


def test_unwritable_out(tmp_path, capfd):
    if os.geteuid() == 0:
        pytest.skip("running as root: a mode-0555 folder is still writable, the access check cannot be seen")
    good_tree(tmp_path / "tree")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, err, _ = cli(capfd, tmp_path / "tree", "--out", locked / "out")
    assert code == 2 and len(err) == 1 and "not writable" in err[0]


def test_rerun_seeds_reversed_in_a_fresh_interpreter_no_tensorflow(tmp_path):
    """A subprocess, as a user runs it: one error line, and the analysis never imports TensorFlow or Keras."""
    good_tree(tmp_path / "tree")
    code = (
        "import sys; from analysis.__main__ import main; rc = main(sys.argv[1:]); "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'TensorFlow imported'; sys.exit(rc)"
    )
    env = dict(os.environ, NLWU_CACHE=str(tmp_path / "cache"))
    bad = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "tree"), "--rerun-seeds", "51-43", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: bad --rerun-seeds")
    good = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "tree"), "--out", str(tmp_path / "out"), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "out" / "report.md").is_file()


# ---- the corpus: bad result files are skipped, one warning each, the analysis completes ----

DEEP = "[" * 100_000 + "]" * 100_000
BAD_FILES = {
    "random_seed as a string": json.dumps(result(random_seed="42")),
    "random_seed as a list": json.dumps(result(random_seed=[42])),
    "random_seed as a bool": json.dumps(result(random_seed=True)),
    "random_seed huge": json.dumps(result(random_seed=10**30)),
    "2-D valid_losses": json.dumps(result(valid_losses=[[3.0, 1.0], [2.0, 1.0]])),
    "2-D test_losses": json.dumps(result(test_losses=[[3.0], [2.0]])),
    "string in a curve": json.dumps(result(test_losses=[3.0, "2.0"])),
    "weight_decay as a string": json.dumps(result(weight_decay="0.1")),
    "weight_decay as a list": json.dumps(result(weight_decay=[0.1])),
    "deeply nested JSON": json.dumps(result())[:-1] + ', "deep": ' + DEEP + "}",
    "huge integer in a curve": json.dumps(result(test_losses=[3, 10**400])),
    "huge batch_size": json.dumps(result(batch_size=10**25)),
    "batch_size as a string": json.dumps(result(batch_size="128")),
    "integer beyond Python's digit limit": json.dumps(result())[:-1] + ', "num_epochs": ' + "9" * 5000 + "}",
    "huge hyperparameter": json.dumps(result(optimizer_hyperparams={"learning_rate": 10**40, "power": 0.5})),
    "hyperparameters as a list": json.dumps(result(optimizer_hyperparams=[0.1, 0.5])),
    "training_params as a string": json.dumps(result(training_params="none")),
    "optimizer_name as a list": json.dumps(result(optimizer_name=["a"])),
    "top level a list": "[1, 2]",
    "truncated": json.dumps(result())[:60],
    "not UTF-8": "\udcff",  # written with surrogateescape below
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_result_file_is_skipped_with_one_warning(case, tmp_path, capfd):
    tree = good_tree(tmp_path / "tree")
    bad = (
        tree
        / "quadratic_deep"
        / OPT
        / "num_epochs__1__batch_size__128__learning_rate__9.e-01"
        / "random_seed__45__2024-01-01-00-00-00.json"
    )
    bad.parent.mkdir(parents=True)
    bad.write_bytes(BAD_FILES[case].encode("utf-8", "surrogateescape"))
    before = digest(tree)
    out = tmp_path / "out"
    code, err, _ = cli(capfd, tree, "--out", out)
    assert code == 0, err
    warnings = [line for line in err if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad) in warnings[0] and len(err) == 1, err
    report = (out / "report.md").read_text()
    assert "1 unreadable files or folders skipped" in report and f"`{bad}`" in report
    assert (out / "figures" / "overview.png").is_file()
    assert digest(tree) == before


def test_non_numeric_hyperparameters_do_not_break_the_figures(tmp_path, capfd):
    tree = tmp_path / "tree"
    for i, hp in enumerate(
        (
            {"learning_rate": 0.1, "power": 0.5},
            {"learning_rate": "fast", "power": 0.5},
            {"learning_rate": 0.2, "power": "high"},
            {"learning_rate": [0.3], "power": None},
        )
    ):
        put(tree, result(hp, valid=(3.0, 2.0 - 0.1 * i)), folder=f"setting_{i}")
    code, err, _ = cli(capfd, tree, "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "report.md").is_file()
    assert (tmp_path / "out" / "figures" / "lr_sensitivity_quadratic_deep.png").is_file()


# ---- silent data loss: unreadable folders, symlink loops, dangling links ----


def test_symlink_loop_and_dangling_link_are_skipped_with_one_warning_each(tmp_path, capfd):
    tree = good_tree(tmp_path / "tree")
    (tree / "loop").symlink_to(tree)  # would add a problem 'loop'
    setting = next((tree / "quadratic_deep" / OPT).iterdir())
    (setting / "back").symlink_to(tree / "quadratic_deep")
    dangling = setting / "random_seed__50__2024-01-01-00-00-00.json"
    dangling.symlink_to(tmp_path / "gone.json")
    out = tmp_path / "out"
    code, err, _ = cli(capfd, tree, "--out", out, "--no-figures")
    assert code == 0, err
    assert len(err) == 3 and all(line.startswith("warning:") for line in err), err
    assert sum(": symlink loop" in line for line in err) == 2 and sum(": dangling symlink" in line for line in err) == 1
    runs = load_runs([tree], progress=False, warn=False)
    assert set(runs.testproblem) == {"quadratic_deep"} and len(runs) == 6
    report = (out / "report.md").read_text()
    assert "3 unreadable files or folders skipped" in report
    for path in (tree / "loop", setting / "back", dangling):
        assert f"`{path}`" in report


def _unreadable_tree(tmp_path) -> tuple[Path, Path]:
    tree = good_tree(tmp_path / "tree")
    best = tree / "quadratic_deep" / OPT / setting_folder_name(1, 128, {"learning_rate": 0.2, "power": 0.5})
    return tree, best


def test_unreadable_folder_is_counted_and_named(tmp_path, capfd, monkeypatch):
    """Simulated through the code path (os.scandir raising EACCES), so it also holds when the tests run as root."""
    tree, locked = _unreadable_tree(tmp_path)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, err, _ = cli(capfd, tree, "--out", tmp_path / "out", "--no-figures")
    assert code == 0, err
    assert err == [f"warning: skipped {locked}: unreadable folder (Permission denied)"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "1 unreadable files or folders skipped" in report and f"`{locked}`" in report


def test_unreadable_folder_for_real(tmp_path, capfd):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not deny reads (the simulated test covers the code path)")
    tree, locked = _unreadable_tree(tmp_path)
    locked.chmod(0)
    try:
        code, err, _ = cli(capfd, tree, "--out", tmp_path / "out", "--no-figures")
    finally:
        locked.chmod(0o755)
    assert code == 0 and len(err) == 1 and str(locked) in err[0] and "unreadable folder" in err[0]


# ---- the cache cannot execute code ----


class _Plant:
    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def test_planted_pickle_in_the_cache_never_runs(tmp_path, capfd):
    tree = good_tree(tmp_path / "tree")
    assert cli(capfd, tree, "--out", tmp_path / "out1", "--no-figures")[0] == 0
    cache = tmp_path / "cache" / "analysis"
    [entry] = list(cache.iterdir())
    canary = tmp_path / "pwned"
    payload = pickle.dumps(_Plant(canary))
    assert pickle.loads(payload) == 0 and canary.exists()  # the payload works when unpickled ...
    canary.unlink()
    entry.write_bytes(payload)  # ... planted under the cache's own name
    entry.with_suffix(".pkl").write_bytes(payload)  # and under the old pickle cache's name
    np.savez(cache / "other.npz", meta=np.array([_Plant(canary)], dtype=object))  # an object array
    code, err, _ = cli(capfd, tree, "--out", tmp_path / "out2", "--no-figures")
    assert code == 0 and err == []
    assert not canary.exists()
    assert (tmp_path / "out1" / "summary.csv").read_text() == (tmp_path / "out2" / "summary.csv").read_text()


def test_cache_round_trip_is_exact(tmp_path):
    tree = good_tree(tmp_path / "tree")
    put(tree, result({"learning_rate": 0.3, "power": 0.5}, valid=(3.0, float("nan"))), folder="nan_setting")
    cold = load_runs([tree], progress=False)
    warm = load_runs([tree], progress=False)
    assert list(cold.columns) == list(warm.columns) and len(cold) == len(warm) == 7
    for column in cold.columns:
        for a, b in zip(cold[column], warm[column]):
            if isinstance(a, np.ndarray):
                assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
            elif isinstance(a, float) and np.isnan(a):
                assert np.isnan(b)
            else:
                assert a == b and type(a) is type(b), (column, a, b)


def test_damaged_cache_is_rebuilt(tmp_path):
    tree = good_tree(tmp_path / "tree")
    load_runs([tree], progress=False)
    [entry] = list((tmp_path / "cache" / "analysis").iterdir())
    entry.write_bytes(entry.read_bytes()[:100])
    assert len(load_runs([tree], progress=False)) == 6


# ---- the report is written completely or not at all ----


def test_failing_figure_leaves_no_partial_report(tmp_path, capfd, monkeypatch):
    from analysis import figures, report

    tree = good_tree(tmp_path / "tree")

    def broken(runs, summary, out_dir, tuning_seed=42):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "overview.png").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "all_figures", broken)
    out = tmp_path / "new" / "out"
    code, err, _ = cli(capfd, tree, "--out", out)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot write the report")
    assert not (tmp_path / "new").exists()  # neither out nor the parent folder it created
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "report.md").write_text("old report\n")
    code, err, _ = cli(capfd, tree, "--out", existing)
    assert code == 2
    assert sorted(p.name for p in existing.iterdir()) == ["report.md"]
    assert (existing / "report.md").read_text() == "old report\n"
    assert report.figs.all_figures is broken  # the report's own call went through the failing figure
