"""The one atomic file writer of the project (results, provenance, ledger records, data files, caches).

A reader never sees a half-written file: content goes to a temp file in the target's folder (name starts
with '.' and ends in '.tmp', so no reader globs it as a result and ``runners.ledger.clean_partials`` can
find it), is flushed and fsynced, gets the usual umask permissions (mkstemp creates 0600), then replaces
the target with ``os.replace``. On any error the temp file is removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


class AtomicFile:
    """Context manager: a binary handle on a temp file that replaces ``path`` on a clean exit."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.f = os.fdopen(fd, "wb")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.f.flush()
                os.fsync(self.f.fileno())
        finally:
            self.f.close()
        if exc_type is None:
            try:
                os.chmod(self.tmp, FILE_MODE)
                os.replace(self.tmp, self.path)
            except BaseException:
                Path(self.tmp).unlink(missing_ok=True)
                raise
        else:
            Path(self.tmp).unlink(missing_ok=True)
        return False


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    path = Path(path)
    with AtomicFile(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)
    return path
