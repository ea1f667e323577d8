"""The suite's one on-disk cache: derived tables, figures, and the paper's released trees unpacked.

* Where: ``$NLWU_CACHE`` (default ``.cache``), one folder per kind (``KINDS``); ``clear`` (``make clean-cache``,
  ``python -m deepobs_tree.cache clear``) removes them and nothing else (not ``fidelity/``'s training runs).
* Key, one rule: a SHA-256 over the entry's inputs (their content, not their names or times) and the version of
  the code that computes it (``code_version``: the source of its modules), ``key(kind, inputs, code)``. Any
  change is a new key, so a stale entry is never read.
* Entry, one format: the folder ``<kind>/<key>/`` holding plain files and ``manifest.json`` (schema, key, each
  file's name and SHA-256), built in a temporary sibling and renamed into place, read back only when every
  file matches its hash. Bytes and JSON only: nothing in an entry executes (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import fail

SCHEMA = 1
#: kind -> what it holds (the folders ``clear`` removes)
KINDS = {
    "analysis": "parsed result trees (analysis.loader, NumPy .npz read without pickle)",
    "analysis-derived": "derived tables (analysis.derived)",
    "analysis-figures": "the report's figures (analysis.figure_cache)",
    "reference": "the paper's released trees, unpacked (tests, make paper-figures)",
}


def root() -> Path:
    """``$NLWU_CACHE``, else ``.cache`` (relative to the current folder)."""
    return Path(os.environ.get("NLWU_CACHE") or ".cache")


def folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; known: {', '.join(KINDS)}")
    return root() / kind


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_version(folders: Iterable[Path]) -> str:
    """SHA-256 of the source (``*.py``, by name and content) of every module in ``folders``."""
    digest = hashlib.sha256()
    for where in folders:
        for path in sorted(Path(where).glob("*.py")):
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def key(kind: str, inputs: Any, code: str = "") -> str:
    """The key of an entry of ``kind``: SHA-256 over the JSON of ``inputs`` (content digests, options) and the
    ``code`` version."""
    return sha256(json.dumps([kind, SCHEMA, inputs, code], sort_keys=True).encode())


def read(kind: str, key_: str) -> dict[str, bytes] | None:
    """The files of entry ``key_`` (name -> bytes, in stored order), or None: missing, damaged or foreign."""
    entry = folder(kind) / key_
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("schema") != SCHEMA or manifest.get("key") != key_:
            return None
        files = {}
        for name, digest in manifest["files"]:
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                return None  # only plain file names inside the entry
            data = (entry / name).read_bytes()
            if sha256(data) != digest:
                return None
            files[name] = data
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files


def write(kind: str, key_: str, files: Mapping[str, bytes]) -> bool:
    """Store ``files`` (name -> bytes) as entry ``key_`` (replacing a damaged one); False where the cache
    cannot be written (that only costs the recomputation)."""
    base = folder(kind)
    try:
        base.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{key_}.tmp", dir=base))
    except OSError:
        return False
    try:
        for name, data in files.items():
            (stage / name).write_bytes(data)
        manifest = {"schema": SCHEMA, "key": key_, "files": [[name, sha256(data)] for name, data in files.items()]}
        (stage / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        final = base / key_
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.rename(stage, final)
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def unpack(archives: Iterable[Path], dest: Path | None = None) -> Path:
    """Extract the ``.tar.xz`` archives into ``dest`` (default the ``reference`` kind's folder) unless the
    extraction there was made from archives with the same content (their SHA-256s in ``.unpacked``)."""

    archives = [Path(a) for a in archives]
    dest = Path(dest) if dest is not None else folder("reference")
    stamp = dest / ".unpacked"
    want = key("reference", [[a.name, sha256(a.read_bytes())] for a in archives])
    if stamp.is_file() and stamp.read_text().strip() == want:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(dest, filter="data")  # no links out of dest, no devices, no absolute paths
    stamp.write_text(want + "\n")
    return dest


def clear() -> list[Path]:
    """Remove every kind's folder under ``root()``; the removed folders."""
    removed = []
    for kind in KINDS:
        path = root() / kind
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["clear"]:
        return fail("usage: python -m deepobs_tree.cache clear")
    for path in clear():
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
