"""The Makefile passes user values to the commands verbatim: no make expansion, no shell parsing (issue 16 item 7).

Every target runs with ``PY`` pointing at a fake interpreter that records its arguments, so the real recipes
run (the shell lines, the splitting of list variables, the sub-make of ``reproduce``) without training or
analysing anything; ``-o .venv/.installed`` keeps make from (re)installing the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tree_helpers import run_argv

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


@pytest.fixture
def fake_py(tmp_path):
    log = tmp_path / "argv.jsonl"
    script = tmp_path / "fake_python"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(0o755)
    return script, log


def make(*args, py: Path, dry: bool = False):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    command = [
        "make",
        "-s",
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        *(["-n"] if dry else []),
        f"PY={py}",
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def hostile(canary: Path) -> dict[str, str]:
    """A value per user variable, each trying another way to run ``touch canary``."""
    c = str(canary)
    return {
        "PROBLEM": f"$(shell touch {c})",
        "OPTIMIZER": f'a" ; touch {c} ; "',
        "HP": f"learning_rate=0.01 power=$(shell touch {c}) x=`touch {c}`",
        "SEED": f"42; touch {c}",
        "EPOCHS": f"$$(touch {c})",
        "RESULTS": f"x; touch {c} #",
        "OUT": f"my reports $(shell touch {c})",
        "BASELINES": f"b1 'b2 $(touch {c})'",
        "CONFIG": f"c.yaml && touch {c}",
        "PRESET": f"smoke | touch {c}",
        "WORKERS": f"2 > {c}",
        "BACKEND": f"local; touch {c}",
        "ADDRESS": f"host:1$(shell touch {c})",
        "DATA_DIR": f"d `touch {c}`",
        "SOURCE": f"/src $(touch {c})",
        "ONLY": f"fmnist *; touch {c}",
        "BENCH_ARGS": f"--x $(shell touch {c})",
        "REFERENCE": f"ref$(shell touch {c})",
        "PLUGINS": f"p.py $(shell touch {c}) q`touch {c}`.py",
    }


TARGETS = [
    "figures",
    "paper-figures",
    "run",
    "reproduce",
    "data",
    "bench-data",
    "bench-runners",
    "bench-testproblems",
    "clean",
]


@pytest.mark.parametrize("target", TARGETS)
def test_dry_run_with_hostile_values_executes_nothing(target, tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    values = hostile(canary)
    values["CACHE"] = str(tmp_path / "cache")  # make -n still must not run anything for the unpack step
    result = make(target, *(f"{k}={v}" for k, v in values.items()), py=py, dry=True)
    assert result.returncode == 0, result.stderr
    assert not canary.exists() and not log.exists()
    assert "NLWU_ARG_" in result.stdout  # the recipe reads the values from the environment


def test_figures_with_hostile_values_passes_them_verbatim(tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    values = hostile(canary)
    result = make(
        "figures", f"RESULTS={values['RESULTS']}", f"OUT={values['OUT']}", f"BASELINES={values['BASELINES']}", py=py
    )
    assert result.returncode == 0, result.stderr
    assert not canary.exists()
    assert calls(log) == [
        [
            "-m",
            "analysis",
            "x;",
            "touch",
            str(canary),
            "#",
            "--out",
            values["OUT"],
            "--baselines",
            "b1",
            "'b2",
            "$(touch",
            f"{canary})'",
        ]
    ]


def test_figures_lists_split_and_out_stays_one_argument(fake_py):
    py, log = fake_py
    assert make("figures", "RESULTS=tree_a tree_b", "OUT=my reports", "BASELINES=base_1  base_2", py=py).returncode == 0
    assert make("figures", py=py).returncode == 0  # the defaults, no --baselines
    assert calls(log) == [
        ["-m", "analysis", "tree_a", "tree_b", "--out", "my reports", "--baselines", "base_1", "base_2"],
        ["-m", "analysis", "deepobs_results_medium_budget", "--out", "reports"],
    ]


def test_run_with_hostile_values_passes_them_verbatim(tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    v = hostile(canary)
    args = [f"{k}={v[k]}" for k in ("PROBLEM", "OPTIMIZER", "HP", "SEED", "EPOCHS", "OUT", "DATA_DIR")]
    result = make("run", *args, py=py)
    assert result.returncode == 0, result.stderr
    assert not canary.exists()
    assert calls(log) == [
        [
            "-m",
            "runners",
            "run",
            "--problem",
            v["PROBLEM"],
            "--optimizer",
            v["OPTIMIZER"],
            "--hp",
            "learning_rate=0.01",
            "--hp",
            "power=$(shell",
            "--hp",
            "touch",
            "--hp",
            f"{canary})",
            "--hp",
            "x=`touch",
            "--hp",
            f"{canary}`",
            "--epochs",
            v["EPOCHS"],
            "--data-dir",
            v["DATA_DIR"],
            "--seed",
            v["SEED"],
            "--out",
            v["OUT"],
        ]
    ]


def test_run_defaults_as_documented(fake_py):
    py, log = fake_py
    result = make(
        "run",
        "PROBLEM=quadratic_deep",
        "OPTIMIZER=PowKernelGradientDescentOptimizer",
        "HP=learning_rate=0.01 power=0.5",
        py=py,
    )
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        [
            *run_argv("PowKernelGradientDescentOptimizer", "learning_rate=0.01", "power=0.5"),
            "--seed",
            "42",
            "--out",
            "results",
        ]
    ]  # OUT of `run` defaults to results/, no --data-dir


def test_reproduce_and_its_sub_make(tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    v = hostile(canary)
    result = make(
        "reproduce",
        f"CONFIG={v['CONFIG']}",
        "RESULTS=my results",
        f"PRESET={v['PRESET']}",
        f"WORKERS={v['WORKERS']}",
        f"ADDRESS={v['ADDRESS']}",
        f"BACKEND={v['BACKEND']}",
        "OUT=my out",
        py=py,
    )
    assert result.returncode == 0, result.stderr
    assert not canary.exists()
    assert calls(log) == [
        [
            "-m",
            "runners",
            "sweep",
            v["CONFIG"],
            "--out",
            "my results",
            "--backend",
            v["BACKEND"],
            "--preset",
            v["PRESET"],
            "--workers",
            v["WORKERS"],
            "--address",
            v["ADDRESS"],
        ],
        ["-m", "analysis", "my results", "--out", "my out"],  # reproduce's RESULTS is one folder
        [
            "-m",
            "analysis.verdict",
            "my results",
            "--reference",
            "deepobs_results_medium_budget",
            "--paper",
            "../shared/spec/protocol.md",
            "--out",
            "my out",
        ],
    ]


def test_reproduce_trains_into_a_fresh_folder_by_default(fake_py):
    py, log = fake_py
    result = make("reproduce", "PRESET=smoke", py=py)
    assert result.returncode == 0, result.stderr
    assert [c[:5] for c in calls(log)] == [
        ["-m", "runners", "sweep", "configs/reproduce_default.yaml", "--out"],
        ["-m", "analysis", "results/reproduce_default_smoke", "--out", "reports"],
        ["-m", "analysis.verdict", "results/reproduce_default_smoke", "--reference", "deepobs_results_medium_budget"],
    ]
    assert calls(log)[0][5] == "results/reproduce_default_smoke"


def test_plugins_reach_reproduce_and_figures_verbatim(tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    v = hostile(canary)
    result = make("reproduce", "CONFIG=c.yaml", "RESULTS=res", f"PLUGINS={v['PLUGINS']}", "OUT=o", py=py)
    assert result.returncode == 0, result.stderr
    assert make("figures", "PLUGINS=examples/plugins/adam_family.py  my.opts", py=py).returncode == 0
    assert not canary.exists()
    plugin_args = [
        "--plugin",
        "p.py",
        "--plugin",
        "$(shell",
        "--plugin",
        "touch",
        "--plugin",
        f"{canary})",
        "--plugin",
        "q`touch",
        "--plugin",
        f"{canary}`.py",
    ]
    assert calls(log) == [
        ["-m", "runners", "sweep", "c.yaml", "--out", "res", "--backend", "local", *plugin_args],
        ["-m", "analysis", "res", "--out", "o", *plugin_args],
        [
            "-m",
            "analysis.verdict",
            "res",
            "--reference",
            "deepobs_results_medium_budget",
            "--paper",
            "../shared/spec/protocol.md",
            "--out",
            "o",
        ],
        [
            "-m",
            "analysis",
            "deepobs_results_medium_budget",
            "--out",
            "reports",
            "--plugin",
            "examples/plugins/adam_family.py",
            "--plugin",
            "my.opts",
        ],
    ]


def test_data_and_bench_args(tmp_path, fake_py):
    py, log = fake_py
    canary = tmp_path / "pwned"
    v = hostile(canary)
    assert (
        make("data", f"DATA_DIR={v['DATA_DIR']}", f"SOURCE={v['SOURCE']}", f"ONLY={v['ONLY']}", py=py).returncode == 0
    )
    assert make("data", py=py).returncode == 0
    assert make("bench-data", f"BENCH_ARGS={v['BENCH_ARGS']}", py=py).returncode == 0
    assert not canary.exists()
    assert calls(log) == [
        [
            "-m",
            "testproblems",
            "prepare-data",
            "--data-dir",
            v["DATA_DIR"],
            "--only",
            "fmnist",
            "--only",
            "*;",
            "--only",
            "touch",
            "--only",
            str(canary),
            "--source",
            v["SOURCE"],
        ],
        ["-m", "testproblems", "prepare-data", "--data-dir", "data"],
        ["bench/bench_data.py", "--x", "$(shell", "touch", f"{canary})"],
    ]


def test_paper_figures_reads_cache_and_out_verbatim(tmp_path, fake_py):
    py, log = fake_py
    cache = tmp_path / "cache"  # a make target path: no spaces
    (cache / "reference").mkdir(parents=True)
    (cache / "reference" / ".unpacked").touch()
    result = make("paper-figures", f"CACHE={cache}", "OUT=out dir", "BASELINES=", py=py)
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        [
            "-m",
            "analysis",
            f"{cache}/reference/paper_results_medium_budget",
            f"{cache}/reference/paper_results_removed_l2",
            "--out",
            "out dir",
        ]
    ]
