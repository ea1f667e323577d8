"""What the benchmarks that time `python -m runners run` share: the command line of one run."""

from __future__ import annotations


def run_argv(py: str, optimizer: str, *hps: str, problem: str = "quadratic_deep") -> list[str]:
    """``py -m runners run`` for one problem and optimizer, one ``--hp`` per ``name=value``."""
    hp = [a for h in hps for a in ("--hp", h)]
    return [py, "-m", "runners", "run", "--problem", problem, "--optimizer", optimizer, *hp]
