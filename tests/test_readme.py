"""README.md is a short guide whose commands run as written: at most ~200 lines, every docs/ link resolves, and
the cheap commands of its code blocks run and print what it says they print (the expensive ones, `make
reproduce` and `make test`, are run by tests/test_reproduce_verdict.py and CI)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: commands the README shows that are not run here: they train the full study, run the suite, or install
EXPENSIVE = ("make reproduce", "make test", "make setup", "pip install")
#: docs written on other branches (linked before they land)
OTHERS = {"docs/architecture.md", "docs/population.md", "docs/reliability-faults.md"}


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_is_short_and_links_resolve():
    assert len(README.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if target.startswith("http") or target in OTHERS:
            continue
        assert (ROOT / target).is_file(), target
    for path in re.findall(r"`(docs/[a-z_-]+\.md)`", README):
        assert (ROOT / path).is_file() or path in OTHERS, path
    # one timing table, no second opinion elsewhere in prose
    assert README.count("| wall time |") == 1 and "minutes" not in README.split("## How long")[0]


def test_every_command_is_accounted_for():
    cheap = [c for c in commands() if not c.startswith(EXPENSIVE)]
    assert {c.split()[0] for c in cheap} <= {"make", ".venv/bin/nlwu"}, cheap
    assert any(c.startswith("make run ") for c in cheap) and any(c.startswith("make figures ") for c in cheap)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_cheap_commands_run_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env["NLWU_CACHE"] = str(tmp_path / "cache")
    for command in (c for c in commands() if not c.startswith(EXPENSIVE)):
        argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"))
        if argv[0] == ".venv/bin/nlwu" and not (ROOT / argv[0]).exists():  # a venv from before `nlwu` existed
            argv = [str(ROOT / ".venv/bin/python"), "-m", "nlwu", *argv[1:]]
        if argv[0] == "make":
            argv = ["make", "-s", "-o", ".venv/.installed", *argv[1:]]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        said = " ".join(result.stdout.split())
        if command.startswith("make figures"):
            quoted = re.search(r"prints `(wrote .*?)`", README, flags=re.S).group(1)
            assert " ".join(quoted.replace("/tmp/", f"{tmp_path}/").split()) in said
        if command.startswith("make run"):
            done = [line for line in result.stderr.splitlines() if line.startswith("done: final test loss ")]
            assert len(done) == 1 and done[0].endswith(result.stdout.strip()), result.stderr[-2000:]
            assert done[0].split(" (")[0] in README  # the same final loss as the README shows


def test_the_verdict_line_it_shows_is_the_committed_trees(tmp_path, capsys, monkeypatch):
    """The headline the README quotes is what the verdict prints on the committed tree, word for word."""
    from analysis.verdict import main as verdict_main

    protocol = ROOT.parent / "shared" / "spec" / "protocol.md"
    if not protocol.is_file():
        pytest.skip(f"{protocol} not found (../shared beside the checkout)")
    quoted = re.search(r"```text\n(VERDICT: .*?)```", README, flags=re.S).group(1)
    monkeypatch.chdir(ROOT)  # the tree named as the README names it
    assert verdict_main(["deepobs_results_medium_budget", "--paper", str(protocol), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert " ".join(quoted.split()) == printed
