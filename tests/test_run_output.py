"""What `make run` / `nlwu run` prints: a bar over the training steps whose last shown losses are the final
evaluation's (not the previous epoch's), a one-line summary (final test loss, time, file), and no TensorFlow /
absl / CUDA start-up lines on a machine without a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tree_helpers import run_argv

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("cuInit", "absl", "I0000", "E0000", "oneDNN", "cuda drivers")


def test_run_prints_steps_final_losses_summary_and_no_startup_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "NLWU_TF_LOGS")}
    result = subprocess.run(
        [
            sys.executable,
            *run_argv("PowKernelGradientDescentOptimizer", "learning_rate=0.01", "power=0.5"),
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip())  # stdout: the result file alone
    data = json.loads(path.read_text())
    err = result.stderr
    for word in NOISE:
        assert word not in err, f"start-up noise {word!r} in: {err[-2000:]}"
    # the bar counts steps (quadratic_deep: 1000 examples / 128 = 7 steps an epoch, 2 epochs)
    assert re.search(r"\b14/14 \[", err), err[-2000:]
    # its last shown evaluation is the final one, as in the file
    shown = re.findall(r"epoch=(\d+)/2, valid_loss=([0-9.e+-]+), test_loss=([0-9.e+-]+)", err)
    assert shown and shown[-1] == ("2", f"{data['valid_losses'][-1]:.4g}", f"{data['test_losses'][-1]:.4g}")
    summary = [line for line in err.splitlines() if line.startswith("done: ")]
    assert len(summary) == 1 and re.fullmatch(
        rf"done: final test loss {data['test_losses'][-1]:.6g} after 2 epochs \(\d+\.\d s\) -> {re.escape(str(path))}",
        summary[0],
    ), summary


def test_real_errors_survive_the_filter(tmp_path):
    """A line on fd 2 during the import that is not start-up noise is written back."""
    script = (
        "import os, sys, builtins\n"
        "real = builtins.__import__\n"
        "def noisy(name, *a, **k):\n"
        "    if name == 'keras' and not getattr(noisy, 'done', False):\n"
        "        noisy.done = True\n"
        "        os.write(2, b'E0000 failed call to cuInit: CUDA error\\nreal problem: disk full\\n')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = noisy\n"
        "from testproblems.quiet import import_keras\n"
        "import_keras()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NLWU_TF_LOGS"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "real problem: disk full" in result.stderr
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        assert "cuInit" not in result.stderr


def test_make_run_error_names_make_run():
    """Bad input through `make run` is one error line naming `make run`, not the module behind it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "run",
            "PROBLEM=bogus",
            "OPTIMIZER=PowKernelGradientDescentOptimizer",
            "HP=learning_rate=0.1 power=0.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: make run: unknown test problem 'bogus'; known: quadratic_deep"), first
    assert "Traceback" not in result.stderr


def _make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "NLWU_PROG"))}
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_make_figures_and_reproduce_errors_name_the_target(tmp_path):
    """Bad input through `make figures` / `make reproduce` is one error line naming the target typed, whichever
    module of its recipe fails; a hint to read the options points at the README's make targets, not at
    `make figures --help` (make's own help) or the module behind it."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    results = str(tmp_path / "results")
    cases = [
        (("figures", f"RESULTS={tmp_path / 'nope'}"), "error: make figures: results path '"),
        (
            ("figures", f"OUT={a_file}"),
            f"error: make figures: --out '{a_file}' is a file, not a folder: pass a folder for the report "
            '(see "Make targets" in README.md)',
        ),
        (("reproduce", f"RESULTS={results}", "CONFIG=nope.yaml"), "error: make reproduce: nope.yaml: no such file"),
        (
            ("reproduce", f"RESULTS={results}", "WORKERS=0"),
            "error: make reproduce: argument --workers: expected a positive integer, got '0'",
        ),
    ]
    for args, expected in cases:
        result = _make(*args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, (args, result.stderr[-2000:])
        assert errors[0].startswith(expected), (args, errors[0])
        assert "python -m" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert a_file.read_text() == "not a folder\n"


def test_verdict_step_of_make_reproduce_names_the_target(tmp_path, monkeypatch, capsys):
    """The last step of `make reproduce` (the verdict) names the target too; outside make, no prefix."""
    from analysis import verdict

    missing = str(tmp_path / "missing")
    monkeypatch.setenv("NLWU_PROG", "make reproduce")
    assert verdict.main([missing, "--out", str(tmp_path / "o")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: make reproduce: results path '{missing}' does not exist: pass the root of a DeepOBS results tree\n"
    )
    assert verdict.main([missing, "--bogus"]) == 2
    assert capsys.readouterr().err == (
        'error: make reproduce: unrecognized arguments: --bogus (see "Make targets" in README.md)\n'
    )
    monkeypatch.delenv("NLWU_PROG")
    assert verdict.main([missing, "--bogus"]) == 2
    assert capsys.readouterr().err == (
        "error: unrecognized arguments: --bogus (see python -m analysis.verdict --help)\n"
    )
