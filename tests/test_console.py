"""The `nlwu` console command: help, `list`, dispatch to the module mains with hints naming the command typed,
and `pip install .` into a new venv giving a working `nlwu` from any folder (study files found by name)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from nlwu import cli

ROOT = Path(__file__).resolve().parents[1]


def _nlwu(*args, cwd: Path = ROOT, exe: list[str] | None = None, env=None):
    exe = exe or [sys.executable, "-m", "nlwu"]
    return subprocess.run(
        [*exe, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_help_and_list(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in cli.SUBCOMMANDS)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "quadratic_deep",
        "svhn_wrn164_nodecay",
        "PowKernelMomentumOptimizerN",
        "non-linear (twin NAGOptimizer)",
        "learning_rate* power*",
        "configs/reproduce_default.yaml",
        "medium smoke",
        "examples/plugins/lion.py",
    ):
        assert expected in out, expected
    assert cli.main(["list", "presets"]) == 0 and "problems:" not in capsys.readouterr().out


def test_errors_name_the_command_typed(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/nlwu", "lsit"])
    monkeypatch.delenv("NLWU_PROG", raising=False)
    assert cli.main() == 2
    assert capsys.readouterr().err == (
        "error: unknown subcommand 'lsit': use one of run, sweep, status, report, "
        "verdict, problems, list (see nlwu --help)\n"
    )
    assert cli.main(["list", "optimisers"]) == 2
    assert "(see nlwu list --help)" in capsys.readouterr().err
    # a module main's own hint names `nlwu report`, not `python -m analysis`
    result = _nlwu("report", str(ROOT / "deepobs_results_medium_budget"), "--mode", "bogus")
    assert result.returncode == 2 and result.stderr.strip().endswith("(see python -m nlwu report --help)")
    assert cli.prog_name("/x/bin/nlwu") == "nlwu" and cli.prog_name("/x/nlwu/__main__.py") == "python -m nlwu"


def test_study_files_are_found_by_name():
    assert cli.resolve_config("reproduce_default") == str(ROOT / "configs" / "reproduce_default.yaml")
    assert cli.resolve_config("configs/smoke.yaml") in ("configs/smoke.yaml", str(ROOT / "configs" / "smoke.yaml"))
    assert cli.resolve_config("no_such_study") == "no_such_study"


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "make-setup-editable"])
def test_pip_install_in_a_new_venv_works_from_any_folder(tmp_path, editable):
    """`pip install .` (no dependencies fetched: the new venv sees the pinned environment's site-packages
    through a .pth file) puts a `nlwu` on the venv's PATH that works outside the checkout; so does the
    editable install `make setup` runs (`pip install --no-deps --no-build-isolation -e .`)."""
    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for rel in files:
        if rel.startswith(("deepobs_results_medium_budget/", "tests/")) or not (ROOT / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "pinned.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            *(["-e"] if editable else []),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    nlwu = venv / "bin" / "nlwu"
    assert nlwu.is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_ = subprocess.run([str(nlwu), "--help"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: nlwu SUBCOMMAND")
    listed = subprocess.run([str(nlwu), "list"], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "PowKernelGradientDescentOptimizer" in listed.stdout and "reproduce_default.yaml" in listed.stdout
    # the installed code, not the checkout's, and the installed study files
    where = subprocess.run(
        [str(python), "-c", "import nlwu, runners; print(nlwu.__file__, runners.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert str(ROOT) not in where.stdout and str(src if editable else venv) in where.stdout
    plan = subprocess.run(
        [str(nlwu), "sweep", "smoke", "--out", "res", "--emit-commands"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert plan.stdout.count("runners run") == 6  # configs/smoke.yaml: 2 searches x 3 tuning runs
    bad = subprocess.run(
        [str(nlwu), "sweep", "smoke", "--preset", "nope"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
