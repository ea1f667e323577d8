"""Fault-injection corpus (issue 29): corrupt state, exhausted resources, hostile YAML, stale locks and
impossible cluster requests. Each case asserts the one `error:` line or the one warning per bad thing, the
exit code, that nothing is written or left behind, and that resuming after the fault loses or duplicates
nothing. Docs: docs/reliability-faults.md."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tree_helpers import ONE_EPOCH, PK, result_data

from deepobs_tree import CURVES, dump_deepobs_json, provenance_file_name
from deepobs_tree.safe_io import YamlLimitError, load_yaml, read_regular
from deepobs_tree.schema import ResultSchemaError, check_result
from runners.config import load_study
from runners.ledger import LockPolicy, RunLock, lock_path, lock_state
from runners.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
STAMP = "2026-01-01-00-00-00"
TIMESTAMP = re.compile(r"__\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")
STUDY = """\
name: faults
defaults:
  budget: {budget}
  num_epochs: 1
  rerun_seeds: [43]
problems:
  quadratic_deep:
    optimizers: [PowKernelGradientDescentOptimizer]
"""


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _cmd(module: str, *args, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _study(tmp_path: Path, budget: int = 3) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(STUDY.format(budget=budget))
    return path


def _result(spec: RunSpec, **change) -> dict:
    """A trusted result for ``spec`` with falling curves (2.0, 1.5, ...), then ``change``."""
    losses = [2.0 - 0.5 * i for i in range(spec.effective_num_epochs() + 1)]
    return {**result_data(spec, losses), **change}


def _plant(spec: RunSpec, out: Path, content: str | dict | None = None, stamp: str = STAMP) -> Path:
    """A file named like ``spec``'s result (a trusted one unless ``content`` says otherwise)."""
    path = spec.setting_dir(out) / f"random_seed__{spec.seed}__{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = _result(spec) if content is None else content
    path.write_text(content if isinstance(content, str) else dump_deepobs_json(content))
    return path


def _files(root: Path) -> dict[str, str]:
    """{relative path: sha256 or kind} of every non-folder below ``root`` (book-keeping included)."""
    found = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "link"
        elif path.is_fifo():
            found[rel] = "fifo"
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _results(out: Path) -> list[tuple[str, int]]:
    """(setting folder, seed) of every result file in the tree (book-keeping excluded)."""
    return sorted(
        (str(p.parent.relative_to(out)), int(p.name.split("__")[1]))
        for p in out.rglob("random_seed__*.json")
        if ".nlwu" not in p.relative_to(out).parts
    )


def _assert_complete(config: Path, out: Path) -> None:
    """Every run of the study exactly once, every one trusted, no temp file, no lock, no stray provenance."""
    from studies.sweep import selections

    study = load_study(config)
    choices = selections(study, out)
    assert all(c is not None for c in choices.values())
    specs = study.tuning_specs() + [s for c in choices.values() for s in c.rerun_specs()]
    assert _results(out) == sorted((str(s.setting_dir(out).relative_to(out)), s.seed) for s in specs)
    assert all(s.existing_result(out) is not None for s in specs)
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".lock"]
    assert leftovers == []
    provenance = [p for p in out.rglob("*.provenance.yaml") if ".nlwu" not in p.relative_to(out).parts]
    assert all(p.with_name(p.name.removesuffix(".provenance.yaml") + ".json").is_file() for p in provenance)


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------------------------------------------------
# 1. corrupt state: schema, foreign JSON, truncated files, FIFOs, devices, loops
# ---------------------------------------------------------------------------------------------------------
SPEC = RunSpec("quadratic_deep", PK, {"learning_rate": 0.01, "power": 0.5}, num_epochs=1)
SCHEMA_CASES = [
    ("foreign", {"hello": "world"}, "not a DeepOBS result"),
    ("list", [1, 2, 3], "not an object"),
    ("seed-string", {"random_seed": "42"}, "random_seed is a str"),
    ("seed-mismatch", {"random_seed": 7}, "file name says seed 42"),
    ("epochs-missing", {"num_epochs": None}, "num_epochs is null"),
    ("curve-string", {"valid_losses": "low"}, "valid_losses is a str"),
    ("curve-nested", {"test_losses": [[1.0], [2.0]]}, "test_losses holds a list"),
    ("curve-bool", {"train_losses": [True, False]}, "train_losses holds a bool"),
    ("curve-unequal", {"test_losses": [1.0]}, "unequal length"),
    ("curve-too-long", {"train_losses": [1.0] * 5, "valid_losses": [1.0] * 5, "test_losses": [1.0] * 5}, "1 to 2"),
    ("hyper-list", {"optimizer_hyperparams": [0.1]}, "optimizer_hyperparams is a list"),
    ("l2-string", {"weight_decay": "none"}, "weight_decay is a str"),
    ("no-train-losses", {"train_losses": None}, "train_losses is a null"),
]


@pytest.mark.parametrize("case", [c[0] for c in SCHEMA_CASES])
def test_schema_rejects_what_is_not_a_deepobs_result(case):
    _, change, reason = next(c for c in SCHEMA_CASES if c[0] == case)
    data = change if not isinstance(change, dict) or case == "foreign" else {**_result(SPEC), **change}
    if case == "no-train-losses":
        del data["train_losses"]
        reason = "train_losses is missing"
    with pytest.raises(ResultSchemaError, match=re.escape(reason)):
        check_result(data, seed=42)


def test_schema_accepts_deepobs_variants():
    """1.2 with NaN/Infinity (diverged runs), Crowded Valley's l2_reg, a shorter curve (Q6), the 1.1 layout."""
    good = _result(SPEC)
    check_result(
        json.loads(dump_deepobs_json({**good, "minibatch_train_losses": [float("nan"), float("inf")]})),
        seed=42,
        exact_length=True,
    )
    check_result({k: v for k, v in good.items() if k != "weight_decay"} | {"l2_reg": None}, seed=42)
    short = {**good, **{k: v[:1] for k, v in good.items() if k in CURVES}}
    check_result(short, seed=42)
    with pytest.raises(ResultSchemaError, match="unfinished run"):
        check_result(short, seed=42, exact_length=True)
    old = {
        "testproblem": "quadratic_deep",
        "batch_size": 128,
        "num_epochs": 1,
        "random_seed": 42,
        "optimizer": "MomentumOptimizer",
        "hyperparams": {"momentum": 0.9},
        "learning_rate": 0.1,
        "train_losses": [2.0, 1.0],
        "test_losses": [2.0, 1.0],
    }
    check_result(old, seed=42)


def test_analysis_warns_once_per_untrusted_file_and_never_blocks(tmp_path):
    """A foreign JSON, a wrong-schema and a truncated file named like results, a FIFO, a link to a character
    device and a symlink loop: one warning line each (path and reason), none summarised, the report counts
    them, the tree is unchanged, and nothing blocks (a FIFO would block a plain open forever)."""
    tree = tmp_path / "tree"
    good = _plant(SPEC, tree)
    _plant(SPEC.replace(hyperparams={"learning_rate": 0.1, "power": 0.5}), tree)
    folder = good.parent
    bad = {
        "foreign": folder / "random_seed__44__2026-01-01-00-00-00.json",
        "schema": folder / "random_seed__45__2026-01-01-00-00-00.json",
        "truncated": folder / "random_seed__46__2026-01-01-00-00-00.json",
        "fifo": folder / "random_seed__47__2026-01-01-00-00-00.json",
        "device": folder / "random_seed__48__2026-01-01-00-00-00.json",
        "loop": folder / "random_seed__49__2026-01-01-00-00-00.json",
    }
    bad["foreign"].write_text(json.dumps({"name": "my notes", "values": [1, 2]}))
    bad["schema"].write_text(dump_deepobs_json(_result(SPEC.replace(seed=45), num_epochs="one")))
    bad["truncated"].write_text(dump_deepobs_json(_result(SPEC.replace(seed=46)))[:200])
    os.mkfifo(bad["fifo"])
    bad["device"].symlink_to("/dev/zero")
    bad["loop"].symlink_to(bad["loop"].name)
    # a foreign JSON elsewhere in the tree (its own "problem"), and the sweep's state folder (never read)
    other = tree / "notes" / "mine" / "x" / f"random_seed__42__{STAMP}.json"
    other.parent.mkdir(parents=True)
    other.write_text('{"a": 1}')
    quarantined = tree / ".nlwu" / "quarantine" / good.relative_to(tree)
    quarantined.parent.mkdir(parents=True)
    quarantined.write_text(good.read_text())
    before = _files(tree)
    out = tmp_path / "report"
    proc = _cmd("analysis", tree, "--out", out, "--no-figures", "--no-cache", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 7, proc.stderr
    for path in [*bad.values(), other]:
        assert sum(str(path) in line for line in warnings) == 1, (path, warnings)
    text = "\n".join(warnings)
    for reason in (
        "not a DeepOBS result",
        "num_epochs is a str",
        "JSONDecodeError",
        "a FIFO, not a regular file",
        "a character device, not a regular file",
        "symlink loop",
    ):
        assert reason in text, (reason, text)
    import csv

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["testproblem"], r["n_samples"], r["n_seeds"]) for r in rows] == [("quadratic_deep", "2", "1")]
    assert "7 unreadable files or folders skipped" in (out / "report.md").read_text()
    assert _files(tree) == before


def test_status_counts_corrupt_runs_and_the_sweep_retrains_them(tmp_path):
    """Truncated, wrong-schema, unfinished (short curves), wrong-values, FIFO and unverifiable-provenance
    results are not "done" in `status` (one warning each, "corrupt" in the total); the sweep moves each aside
    (never deletes it), retrains exactly those runs, and ends with every run present once."""
    config, out = _study(tmp_path, budget=7), tmp_path / "out"
    study = load_study(config)
    specs = study.tuning_specs()
    assert len(specs) == 7
    good = [_plant(s, out) for s in specs]
    bad = {
        "truncated": good[0].read_text()[:150],
        "schema": dump_deepobs_json({"testproblem": "quadratic_deep", "values": [1, 2]}),
        "short": dump_deepobs_json(_result(specs[2], train_losses=[2.0], valid_losses=[2.0], test_losses=[2.0])),
        "values": dump_deepobs_json(_result(specs[3], optimizer_hyperparams={"learning_rate": 9.0, "power": 0.5})),
    }
    for path, content in zip(good, bad.values()):
        path.write_text(content)
    good[4].unlink()
    os.mkfifo(good[4])
    good[5].with_name(provenance_file_name(good[5].name)).write_text("a: &a [*a, *a]\nspec: *a\n")
    contents = {p: ("fifo" if p.is_fifo() else p.read_bytes()) for p in good[:6]}

    status = _cmd("runners", "status", config, "--out", out, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "total: 1 done, 0 running, 0 failed, 1 missing, 6 corrupt" in status.stdout, status.stdout
    warned = [line for line in status.stdout.splitlines() if line.startswith("warning:")]
    assert len(warned) == 6 and all(sum(str(p) in w for w in warned) == 1 for p in good[:6]), warned
    for reason in (
        "not valid JSON",
        "not a DeepOBS result",
        "not num_epochs + 1",
        "records optimizer_hyperparams",
        "a FIFO",
        "provenance",
    ):
        assert reason in status.stdout, (reason, status.stdout)

    sweep = _cmd("runners", "sweep", config, "--out", out, "--workers", "1", "--no-progress", timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    moved = [line for line in sweep.stderr.splitlines() if line.startswith("warning:") and "moved to" in line]
    assert len(moved) == 6, sweep.stderr
    quarantine = out / ".nlwu" / "quarantine"
    for path, content in contents.items():  # moved aside byte for byte, never deleted
        kept = quarantine / path.relative_to(out)
        assert kept.is_fifo() if content == "fifo" else kept.read_bytes() == content, kept
    assert (quarantine / good[5].relative_to(out)).with_name(provenance_file_name(good[5].name)).is_file()
    _assert_complete(config, out)
    assert good[6].read_text() == dump_deepobs_json(_result(specs[6]))  # the trusted one was reused
    status = _cmd("runners", "status", config, "--out", out, timeout=120)
    assert "total: 8 done, 0 running, 0 failed, 0 missing" in status.stdout and "warning" not in status.stdout


# ---------------------------------------------------------------------------------------------------------
# 2. writers: full disk, read-only, permissions, long names, non-folder parents
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_atomic_writer_leaves_nothing_when_the_disk_fails(tmp_path, monkeypatch, code):
    from deepobs_tree import write_atomic

    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    target = tmp_path / "sub" / "result.json"
    with pytest.raises(OSError) as err:
        write_atomic(target, "{}")
    assert err.value.errno == code and err.value.filename == str(target)
    assert list((tmp_path / "sub").iterdir()) == []


def test_lock_that_cannot_be_written_is_removed(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if fd > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        RunLock.acquire(tmp_path, "abc")
    monkeypatch.undo()
    assert not lock_path(tmp_path, "abc").exists()


SITE = """\
import errno, os
_code = int(os.environ.get("NLWU_FAULT_ERRNO", "0"))
if _code:
    def _fail(fd):
        raise OSError(_code, os.strerror(_code))
    os.fsync = _fail  # every atomic write (result, provenance, failure record) fails as on a full disk
"""


def test_run_on_a_full_disk_then_resume(tmp_path):
    """`runners run` on a full disk: one error line naming the file and ENOSPC, exit 2, no file left (no
    temp, no provenance without its result); the same command later (a truncated result planted meanwhile)
    moves the truncated file aside with one warning and writes the result once."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    out = tmp_path / "out"
    args = ["run", *ONE_EPOCH, "--out", out]
    env = {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "NLWU_FAULT_ERRNO": str(errno.ENOSPC)}
    proc = _cmd("runners", *args, timeout=300, **env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = _error_lines(proc.stderr)
    assert "No space left on device (ENOSPC)" in line and str(SPEC.setting_dir(out)) in line, line
    assert _files(out) == {}
    truncated = _plant(SPEC, out, dump_deepobs_json(_result(SPEC))[:100])  # and a truncated result on top
    proc = _cmd("runners", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [warning] = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert str(truncated) in warning and "not valid JSON" in warning and "moved to" in warning, warning
    assert _results(out) == [(str(SPEC.setting_dir(out).relative_to(out)), 42)]
    assert SPEC.existing_result(out) is not None and not truncated.exists()
    kept = out / ".nlwu" / "quarantine" / truncated.relative_to(out)
    assert kept.read_text() == dump_deepobs_json(_result(SPEC))[:100]
    assert len(_files(out)) == 3  # the result, its provenance and the truncated file moved aside


def test_sweep_on_a_full_disk_stops_cleanly_then_resumes(tmp_path):
    """A sweep whose runs cannot write (ENOSPC in the workers and the driver) stops at the first one: one
    error line, exit 2, no result, temp file, lock or failure record left; rerun, it completes with every run
    exactly once."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    config, out = _study(tmp_path, budget=2), tmp_path / "out"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "NLWU_FAULT_ERRNO": str(errno.ENOSPC)}
    proc = _cmd("runners", "sweep", config, "--out", out, "--workers", "1", "--no-progress", timeout=300, **env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = _error_lines(proc.stderr)
    assert "ENOSPC" in line and "rerun the same command to resume" in line, line
    left = [rel for rel in _files(out) if not rel.startswith(".nlwu/logs/")]
    assert left == [], left
    proc = _cmd("runners", "sweep", config, "--out", out, "--workers", "1", "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_complete(config, out)


def test_long_names_and_non_folder_parents_are_one_error_line(tmp_path, capsys):
    """A name longer than the file system allows, a state folder that is a file, an --out below a file, a
    FIFO as the study file: one error line, exit 2, nothing created, nothing blocks (run, sweep, status and
    the analysis alike)."""
    from analysis.__main__ import main as analysis_main
    from runners.__main__ import main as runners_main

    config = _study(tmp_path)
    long_out = tmp_path / ("x" * 300)
    run = ["run", *ONE_EPOCH]
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    fifo = tmp_path / "study.yaml"
    os.mkfifo(fifo)  # a study "file" that would block a plain open forever
    state_file = tmp_path / "state"
    state_file.mkdir()
    (state_file / ".nlwu").write_text("not a folder")
    cases = [
        (runners_main, [*run, "--out", long_out], "ENAMETOOLONG"),
        (runners_main, ["sweep", config, "--out", long_out], "ENAMETOOLONG"),
        (runners_main, ["status", config, "--out", long_out], "ENAMETOOLONG"),
        (analysis_main, [long_out, "--out", tmp_path / "r"], "ENAMETOOLONG"),
        (analysis_main, [tmp_path, "--out", long_out], "ENAMETOOLONG"),
        (runners_main, ["sweep", config, "--out", state_file], ".nlwu is not a folder"),
        (runners_main, ["status", config, "--out", state_file], ".nlwu is not a folder"),
        (runners_main, [*run, "--out", afile / "sub"], "is not a folder"),
        (runners_main, ["status", fifo, "--out", tmp_path / "o"], "a FIFO, not a regular file"),
        (runners_main, ["sweep", config, "--out", afile / "sub"], "is not a folder"),
    ]
    before = _files(tmp_path)
    for main, args, fragment in cases:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, err)
        assert fragment in lines[0] and len(lines[0]) < 400, (fragment, lines[0])
    assert _files(tmp_path) == before


def test_too_long_setting_folder_is_refused_before_any_run(tmp_path, capsys):
    """A study whose folder names would exceed NAME_MAX (a long --out component plus tokens) fails at load."""
    from runners.__main__ import main

    config = _study(tmp_path)
    out = tmp_path / "out"
    long = tmp_path / "long.yaml"
    long.write_text(
        STUDY.format(budget=1).replace("rerun_seeds: [43]", "rerun_seeds: [43]\n  train_log_interval: " + "1" * 250)
    )
    capsys.readouterr()
    code = main(["status", str(long), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ENAMETOOLONG" in err[0], err
    assert not out.exists()
    assert main(["status", str(config), "--out", str(out)]) == 0


# ---------------------------------------------------------------------------------------------------------
# 3. hostile YAML
# ---------------------------------------------------------------------------------------------------------
def _bomb(levels: int = 9, width: int = 10) -> str:
    """``name: [&l0 [lol x width], &l1 [*l0 x width], ...]``: a few hundred bytes, width**levels nodes."""
    parts = [f"&l0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return f"name: [{', '.join(parts)}]\n"


YAML_CASES = [
    ("alias-bomb", lambda: _bomb() + "problems: {quadratic_deep: {optimizers: [" + PK + "]}}\n", "alias bomb"),
    (
        "small-bomb",
        lambda: _bomb(levels=3) + "problems: {quadratic_deep: {optimizers: [" + PK + "]}}\n",
        "name: expected a non-empty string",
    ),
    ("deep-flow", lambda: "name: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64"),
    ("deep-block", lambda: "problems:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)), "nested deeper"),
    ("recursive", lambda: "name: &a [*a]\n", "contains it"),
    ("huge", lambda: "description: '" + "x" * (2 << 20) + "'\n", "above the limit of 1048576"),
]


@pytest.mark.parametrize("case", [c[0] for c in YAML_CASES])
def test_hostile_yaml_is_one_short_error_line(case, tmp_path, capsys):
    """Alias bombs, deep nesting, recursive aliases and huge files: one error line naming the file and the
    limit, within seconds and without expanding anything; a value in a message is cut to a short prefix."""
    from runners.__main__ import main

    _, text, fragment = next(c for c in YAML_CASES if c[0] == case)
    config = tmp_path / "hostile.yaml"
    config.write_text(text())
    out = tmp_path / "out"
    for command in ("status", "sweep"):
        capsys.readouterr()
        t0 = time.perf_counter()
        code = main([command, str(config), "--out", str(out)])
        elapsed = time.perf_counter() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {config}"), err
        assert fragment in err[0] and len(err[0]) < 500, err[0][:1000]
        assert elapsed < 20, elapsed
    assert not out.exists()


def test_yaml_limits_also_guard_provenance_records():
    with pytest.raises(YamlLimitError, match="alias bomb"):
        load_yaml(_bomb())
    assert load_yaml("spec: {a: &x [1, 2], b: *x}") == {"spec": {"a": [1, 2], "b": [1, 2]}}


def _random_tree(rng, depth):
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, "a", "x: y", "- z", None, 2.5])
    if rng.random() < 0.5:
        return [_random_tree(rng, depth - 1) for _ in range(rng.randint(1, 3))]
    return {f"k{i}": _random_tree(rng, depth - 1) for i in range(rng.randint(1, 3))}


def _depth(value) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return 1 + max((_depth(c) for c in children), default=0)


def test_yaml_fast_path_equals_the_pure_path_and_its_depth_bound_never_underestimates(monkeypatch):
    """libyaml (C) is used only where a character count bounds the nesting (``_depth_bound``): on random
    nested documents in block, flow and mixed styles the bound is never below the true depth, and the fast
    path's value equals the pure-Python path's, limits included."""
    import random

    import yaml

    from deepobs_tree import safe_io

    rng = random.Random(0)
    docs = []
    for _ in range(300):
        tree = _random_tree(rng, rng.randint(1, 12))
        style = rng.choice([False, True, None])
        text = yaml.safe_dump(tree, default_flow_style=style, indent=rng.choice([2, 4]))
        assert safe_io._depth_bound(text) >= _depth(tree), text
        docs.append(text)
    docs.append("spec: {a: &x [1, 2], b: *x}")
    fast = [load_yaml(text) for text in docs]
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    assert fast == [load_yaml(text) for text in docs]
    monkeypatch.undo()
    assert not safe_io._depth_bound("[" * 70) <= safe_io.MAX_YAML_DEPTH  # deep texts take the guarded path
    with pytest.raises(YamlLimitError, match="nested"):
        load_yaml("[" * 70 + "]" * 70)


# ---------------------------------------------------------------------------------------------------------
# 4. locks
# ---------------------------------------------------------------------------------------------------------
def _foreign_lock(out: Path, run_id: str, age: float, host: str = "gone-host.example") -> Path:
    path = lock_path(out, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": 4242, "started": "1", "time": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_dead_local_lock_is_taken_over_and_foreign_one_is_stale(tmp_path):
    dead = lock_path(tmp_path, "dead")
    dead.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead.write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid, "started": "1", "time": 0}))
    lock = RunLock.acquire(tmp_path, "dead")
    assert lock is not None and json.loads(dead.read_text())["pid"] == os.getpid()
    lock.release()
    _foreign_lock(tmp_path, "far", age=2 * 86400)
    assert lock_state(tmp_path, "far")[0] == "stale"
    assert RunLock.acquire(tmp_path, "far") is None  # never taken over unasked
    assert lock_state(tmp_path, "far", LockPolicy(stale_age=3 * 86400))[0] == "live"
    taken = RunLock.acquire(tmp_path, "far", LockPolicy(break_stale=True))
    assert taken is not None
    taken.release()
    _foreign_lock(tmp_path, "recent", age=5)
    assert RunLock.acquire(tmp_path, "recent", LockPolicy(break_stale=True)) is None  # heartbeat is recent


def test_stale_foreign_lock_status_waiting_sweep_and_break_flag(tmp_path):
    """A lock left by another host two days ago: status says "stale (host X, age 2d 0h)"; a sweep waits but
    says so at once, naming host and age and the flag; --break-stale-locks takes the run over, and the tree
    ends complete with nothing duplicated."""
    config, out = _study(tmp_path, budget=2), tmp_path / "out"
    first, locked = load_study(config).tuning_specs()
    _plant(first, out)
    _foreign_lock(out, locked.run_id, age=2 * 86400 + 60)
    status = _cmd("runners", "status", config, "--out", out, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "stale (host gone-host.example, age 2d 0h)" in status.stdout, status.stdout
    assert "total: 1 done, 0 running, 0 failed, 1 missing, 1 stale" in status.stdout, status.stdout

    proc = subprocess.Popen(
        [sys.executable, "-m", "runners", "sweep", str(config), "--out", str(out), "--workers", "1", "--no-progress"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, err = time.monotonic() + 120, ""
        while time.monotonic() < deadline and "--break-stale-locks" not in err:
            line = proc.stderr.readline()
            if not line:
                break
            err += line
    finally:
        proc.kill()
        proc.communicate()
    assert "waiting for 1 run(s) locked by other processes (1 stale)" in err, err
    assert "stale (host gone-host.example, age 2d 0h)" in err and "--break-stale-locks" in err, err
    assert _results(out) == [(str(first.setting_dir(out).relative_to(out)), 42)]

    sweep = _cmd(
        "runners", "sweep", config, "--out", out, "--workers", "1", "--no-progress", "--break-stale-locks", timeout=300
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    _assert_complete(config, out)


# ---------------------------------------------------------------------------------------------------------
# 5. executors: requests no node can meet
# ---------------------------------------------------------------------------------------------------------
NODE = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * 2**30}}


@pytest.mark.parametrize(
    "ask, fragment",
    [
        (
            (1, 1, 0),
            "asks for 1 GPUs (--gpus-per-run), but no node of the Ray cluster has that: the largest has 0 GPUs",
        ),
        ((4, 0, 0), "asks for 4 CPUs (--cpus-per-run)"),
        ((1, 0, 8 * 2**30), "asks for 8 GB memory (--memory-per-run)"),
    ],
)
def test_impossible_ray_request_names_asked_and_available(ask, fragment):
    from runners.executors import BackendError
    from runners.executors.ray import check_resources

    with pytest.raises(BackendError, match=re.escape(fragment)):
        check_resources([NODE, {"Alive": False, "Resources": {"GPU": 8.0}}], *ask)
    check_resources([NODE], 2, 0, 4 * 2**30)  # exactly what a node has: fine
    with pytest.raises(BackendError, match="no node of the Ray cluster has all of them"):
        check_resources([{"Resources": {"CPU": 8.0}}, {"Resources": {"CPU": 1.0, "GPU": 1.0}}], 4, 1, 0)


def test_gpus_on_a_cpu_only_ray_cluster_fail_before_any_run(tmp_path):
    """A real local Ray cluster (127.0.0.1, no GPU): --gpus-per-run 1 is one error line naming asked and
    available, exit 2, before any run is submitted: no result, no lock."""
    pytest.importorskip("ray")
    config, out = _study(tmp_path, budget=2), tmp_path / "out"
    proc = _cmd(
        "runners",
        "sweep",
        config,
        "--out",
        out,
        "--backend",
        "ray",
        "--workers",
        "1",
        "--gpus-per-run",
        "1",
        "--no-progress",
        timeout=300,
        CUDA_VISIBLE_DEVICES="",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = _error_lines(proc.stderr)
    assert "asks for 1 GPUs (--gpus-per-run)" in line and "the largest has 0 GPUs" in line, line
    assert _results(out) == [] and not list(out.rglob("*.lock"))


def test_read_regular_refuses_fifos_without_blocking(tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="a FIFO, not a regular file"):
        read_regular(fifo)
