"""Moving aside result files that cannot be trusted (``RunSpec.result_files``): never deleted, never reused.

A leaf of ``runners`` (imports only ``deepobs_tree``), so ``runners.run`` and ``runners.ledger`` both use it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from deepobs_tree import PROVENANCE_SUFFIX, provenance_file_name

#: the book-keeping folder at a results root (locks, failure records, logs, quarantine)
STATE = ".nlwu"


def quarantine(out: str | Path, path: Path) -> Path:
    """Move a result file that cannot be trusted (and its provenance, if any) to ``<out>/.nlwu/quarantine/``
    under its path relative to ``out`` (a numbered suffix if that is taken); return where it went. Never
    deletes: the user's data stay, out of the results tree the analysis and the resume read."""
    out = Path(out)
    try:
        rel = path.relative_to(out)
    except ValueError:
        rel = Path(path.name)
    target = out / STATE / "quarantine" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while os.path.lexists(target):
        n += 1
        target = target.with_name(f"{rel.name}.{n}")
    prov = path.with_name(provenance_file_name(path.name))
    _move(path, target)
    if os.path.lexists(prov):
        _move(prov, target.with_name(target.name.removesuffix(".json") + PROVENANCE_SUFFIX))
    return target


def _move(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.move(str(source), str(target))
