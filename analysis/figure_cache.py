"""The report's figures (PNG and PDF) cached on disk, so a warm run copies them instead of drawing them.

* Key: a SHA-256 over the derived-table key of the analysis (``analysis.derived.key``: the runs' content, the
  options, the registries' labels, the library versions and the source of every module of ``analysis`` and
  ``deepobs_tree``, figures.py included), the tuning seed the figures mark, the versions of matplotlib and of
  the libraries that write its PNG and PDF bytes (Pillow, fontTools), and matplotlib's effective rcParams
  when the key is taken (a user's matplotlibrc or style changes the figures without changing our source). Any
  change to any of them is a new key; an analysis without a derived key (an input that cannot be hashed
  exactly, or ``--no-cache``) draws its figures and caches nothing.
* Entry: the ``analysis-figures`` entry of the one cache (``deepobs_tree.cache``): the figure files (in the
  order drawn) with their SHA-256s in its manifest, renamed into place whole. On a hit every file is read,
  checked against its hash and written to the output through ``deepobs_tree.write_atomic``; a missing,
  damaged or mismatching entry is redrawn and replaced. Nothing in an entry executes: bytes and JSON only.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from deepobs_tree import cache, write_atomic

from . import figures

SCHEMA = 1


def key(derived_key: str | None, tuning_seed: int) -> str | None:
    """The figure set's key, or None (not cached) where the analysis has no derived-table key."""
    if derived_key is None:
        return None
    return cache.key("analysis-figures", [SCHEMA, derived_key, int(tuning_seed), _versions(), _rc_params()])


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
    rc = figures._plt().rcParams
    return [[k, repr(dict.__getitem__(rc, k))] for k in sorted(dict.keys(rc)) if k != "backend"]


def load(key_: str, out_dir: Path) -> list[Path] | None:
    """Write the cached figures of ``key_`` into ``out_dir``; their paths, or None (no valid entry)."""
    files = cache.read("analysis-figures", key_)
    if files is None:
        return None
    if files:
        out_dir.mkdir(parents=True, exist_ok=True)
    return [write_atomic(out_dir / name, data) for name, data in files.items()]


def store(key_: str, paths: list[Path]) -> None:
    """Keep copies of the drawn figures under ``key_`` (best effort: a cache that cannot be written is none)."""
    try:
        files = {path.name: path.read_bytes() for path in paths}
    except OSError:
        return
    cache.write("analysis-figures", key_, files)


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
