"""The suite's errors: one base class, one usage error, one place that reports them.

Every error a user can fix (a bad study file, option, plugin, data folder, results tree) is an ``NlwuError``
whose message is one line naming the thing and the fix; every command line reports it with ``fail``: one
``error:`` line on stderr and exit code 2, never a traceback. In the bottom layer so that every package can
raise them.
"""

from __future__ import annotations

import os
import sys

EXIT_BAD_INPUT = 2
#: longest error line printed (values inside are cut shorter by ``safe_io.short``)
MAX_LINE = 1000


class NlwuError(Exception):
    """Base of the suite's errors; the message is one line."""


class UsageError(NlwuError):
    """Bad command-line input: one line, exit code 2."""


def make_target() -> str | None:
    """The make target the user typed (``make figures``, ``make reproduce``): ``$NLWU_PROG`` as the Makefile sets
    it around a module's command line; None outside make. (``make run`` sets ``make``: its runner adds ``run``.)"""
    prog = os.environ.get("NLWU_PROG", "")
    return prog if prog.startswith("make ") else None


def help_hint(prog: str) -> str:
    """Where to read a command's options: ``(see PROG --help)``, or, under a make target (whose ``--help`` is
    make's own), the README's table of make targets and their variables."""
    return '(see "Make targets" in README.md)' if prog.startswith("make ") else f"(see {prog} --help)"


def fail(error: BaseException | str) -> int:
    """Print the one ``error:`` line of ``error`` (its first line) to stderr; returns the exit code, 2.

    Under a make target the line names it (``error: make figures: ...``), whichever of the target's commands
    failed, since make shows the user nothing of the module behind it."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else repr(error)
    target = make_target()
    if target is not None and not line.startswith(f"{target}:"):
        line = f"{target}: {line}"
    if len(line) > MAX_LINE:  # a user value inside can be unbounded (issue 29): the line stays readable
        line = line[:MAX_LINE] + f"... ({len(line) - MAX_LINE} more chars)"
    print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT
