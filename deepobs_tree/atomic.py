"""The one atomic file writer of the project (results, provenance, ledger records, data files, caches).

A reader never sees a half-written file: content goes to a temp file in the target's folder (name starts
with '.' and ends in '.tmp', so no reader globs it as a result and ``runners.ledger.clean_partials`` can
find it), is flushed and fsynced, gets the usual umask permissions (mkstemp creates 0600), then replaces
the target with ``os.replace``. On any error the temp file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


class AtomicFile:
    """Context manager: a binary handle on a temp file that replaces ``path`` on a clean exit.

    Whatever fails (creating the folder or the temp file, a write, flush or fsync on a full disk, the final
    rename), the temp file is removed before the error propagates, and the error is an OSError whose
    ``filename`` is the target (so a caller can name it in one ``error:`` line: ``safe_io.os_error_text``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp: str | None = None
        self.f = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as err:
            raise _named(err, self.path) from None
        self.f = os.fdopen(fd, "wb")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                if exc_type is None:
                    self.f.flush()
                    os.fsync(self.f.fileno())
            finally:
                self.f.close()  # closes the descriptor even when its own flush fails again
            if exc_type is None:
                os.chmod(self.tmp, FILE_MODE)
                os.replace(self.tmp, self.path)
                self.tmp = None
        except BaseException as err:
            self._discard()
            if isinstance(err, OSError):
                raise _named(err, self.path) from None
            raise
        self._discard()  # the body raised: its error propagates, the temp file goes
        if isinstance(exc, OSError) and exc.filename is None:
            raise _named(exc, self.path) from None
        return False

    def _discard(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def _named(err: OSError, path: Path) -> OSError:
    """The same error, with the target as its filename (the temp file's name would mean nothing to a user)."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    path = Path(path)
    with AtomicFile(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)
    return path
