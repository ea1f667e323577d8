"""The report's figures (PNG and PDF) cached on disk, so a warm run copies them instead of drawing them.

* Key: a SHA-256 over the derived-table key of the analysis (``analysis.derived.key``: the runs' content, the
  options, the registries' labels, the library versions and the source of every module of ``analysis`` and
  ``deepobs_tree``, figures.py included), the tuning seed the figures mark, the versions of matplotlib and of
  the libraries that write its PNG and PDF bytes (Pillow, fontTools), and matplotlib's effective rcParams
  when the key is taken (a user's matplotlibrc or style changes the figures without changing our source). Any
  change to any of them is a new key; an analysis without a derived key (an input that cannot be hashed
  exactly, or ``--no-cache``) draws its figures and caches nothing.
* Entry: the folder ``$NLWU_CACHE/analysis-figures/<key>/`` (default ``.cache``): the figure files and a
  ``manifest.json`` listing each file's name (relative to the figure folder, in the order drawn) and the
  SHA-256 of its bytes. It is built in a temporary sibling folder and renamed into place, so a crash never
  leaves a half entry under the key. On a hit every file is read, checked against its hash and written to
  the output through ``deepobs_tree.write_atomic``; a missing, damaged or mismatching entry is redrawn and
  replaced. Nothing in an entry executes: bytes and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from deepobs_tree import write_atomic

from .derived import cache_dir as _derived_dir

SCHEMA = 1


def cache_dir() -> Path:
    return _derived_dir().parent / "analysis-figures"


def key(derived_key: str | None, tuning_seed: int) -> str | None:
    """The figure set's key, or None (not cached) where the analysis has no derived-table key."""
    if derived_key is None:
        return None
    text = json.dumps(["figures", SCHEMA, derived_key, int(tuning_seed), _versions(), _rc_params()])
    return hashlib.sha256(text.encode()).hexdigest()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("matplotlib", "pillow", "fonttools"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _rc_params() -> list[list[str]]:
    """matplotlib's rcParams as the figures will be drawn with them (after ``figures._plt()`` has applied its
    own settings over the user's), as text; ``backend`` left out (reading it would pick one, and the files are
    written by the Agg and PDF canvases whatever it is)."""
    from . import figures

    rc = figures._plt().rcParams
    return [[k, repr(dict.__getitem__(rc, k))] for k in sorted(dict.keys(rc)) if k != "backend"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(key_: str, out_dir: Path) -> list[Path] | None:
    """Write the cached figures of ``key_`` into ``out_dir``; their paths, or None (no valid entry)."""
    entry = cache_dir() / key_
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("schema") != SCHEMA or manifest.get("key") != key_:
            return None
        files = []
        for name, digest in manifest["files"]:
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                return None  # only plain file names inside the entry
            data = (entry / name).read_bytes()
            if _sha(data) != digest:
                return None
            files.append((name, data))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if files:
        out_dir.mkdir(parents=True, exist_ok=True)
    return [write_atomic(out_dir / name, data) for name, data in files]


def store(key_: str, paths: list[Path]) -> None:
    """Keep copies of the drawn figures under ``key_`` (best effort: a cache that cannot be written is none)."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{key_}.tmp", dir=root))
    except OSError:
        return
    try:
        files = []
        for path in paths:
            data = path.read_bytes()
            (stage / path.name).write_bytes(data)
            files.append([path.name, _sha(data)])
        (stage / "manifest.json").write_text(json.dumps({"schema": SCHEMA, "key": key_, "files": files}),
                                             encoding="utf-8")
        final = root / key_
        if final.exists():  # a damaged entry: replaced
            shutil.rmtree(final, ignore_errors=True)
        os.rename(stage, final)
    except OSError:
        pass
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cached(key_: str | None, out_dir: Path, draw: Callable[[], list[Path]]) -> list[Path]:
    """The figures of ``key_`` copied from the cache into ``out_dir``, else ``draw()`` (then stored)."""
    if key_ is not None:
        hit = load(key_, out_dir)
        if hit is not None:
            return hit
    paths = draw()
    if key_ is not None and all(p.parent == out_dir for p in paths):
        store(key_, paths)
    return paths
