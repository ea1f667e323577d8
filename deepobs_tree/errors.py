"""The suite's errors: one base class, one usage error, one place that reports them.

Every error a user can fix (a bad study file, option, plugin, data folder, results tree) is an ``NlwuError``
whose message is one line naming the thing and the fix; every command line reports it with ``fail``: one
``error:`` line on stderr and exit code 2, never a traceback. In the bottom layer so that every package can
raise them.
"""

from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2
#: longest error line printed (values inside are cut shorter by ``safe_io.short``)
MAX_LINE = 1000


class NlwuError(Exception):
    """Base of the suite's errors; the message is one line."""


class UsageError(NlwuError):
    """Bad command-line input: one line, exit code 2."""


def fail(error: BaseException | str) -> int:
    """Print the one ``error:`` line of ``error`` (its first line) to stderr; returns the exit code, 2."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else repr(error)
    if len(line) > MAX_LINE:  # a user value inside can be unbounded (issue 29): the line stays readable
        line = line[:MAX_LINE] + f"... ({len(line) - MAX_LINE} more chars)"
    print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT
