"""The derived tables (summary with its bootstrap intervals, comparison, tuning-budget curves, performance
profile) cached on disk, so a warm run neither selects nor bootstraps again (nor imports scipy).

* Key: a SHA-256 over everything the tables are computed from: the content of the loaded run tables (every
  column, curves as their float64 bytes, and the index), the options (tuning seed, rerun seeds, searched
  hyperparameters, mode, filter), what the registries say about the runs' names (each optimizer's label and
  baseline flag, each problem's accuracy flag: plugins can change them), the versions of numpy, pandas and
  scipy, and the source of every module of ``analysis`` and ``deepobs_tree``. Any change to any of them is a
  different key, so a stale entry is never read; it only stays on disk.
* Entry: ``tables.json`` in the ``analysis-derived`` entry of the one cache (``deepobs_tree.cache``: a folder
  per key, each file checked against its SHA-256). Data never executes code: every value is type-tagged JSON (no
  pickle), and a
  frame is stored only if decoding its encoding gives it back exactly (same columns, dtypes, values, value
  types and attrs), so a cached table is the table. A missing, unreadable or malformed entry is recomputed;
  a value the encoding does not know (or a cache folder that cannot be written) just means no caching.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from deepobs_tree import cache

SCHEMA = 1
TABLES = ("summary", "comparison", "budget", "profile")
_PACKAGES = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "deepobs_tree"


class Unencodable(TypeError):
    """A value outside the cached types: the tables are then computed and not cached."""


# ---- type-tagged JSON (exact for the value types the tables hold) ----


def _enc(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"f": repr(value)}
    if isinstance(value, list):
        return {"l": [_enc(v) for v in value]}
    if isinstance(value, tuple):
        return {"t": [_enc(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"d": [[k, _enc(v)] for k, v in value.items()]}
    raise Unencodable(f"cannot cache a {type(value).__name__}")


def _dec(value):
    if not isinstance(value, dict):
        return value
    [(tag, body)] = value.items()
    if tag == "f":
        return float(body)
    if tag == "l":
        return [_dec(v) for v in body]
    if tag == "t":
        return tuple(_dec(v) for v in body)
    if tag == "d":
        return {k: _dec(v) for k, v in body}
    raise ValueError(f"unknown tag {tag!r}")


def encode_frame(frame: pd.DataFrame) -> dict:
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        raise Unencodable("only frames with a default RangeIndex are cached")
    if not all(isinstance(c, str) for c in frame.columns) or not frame.columns.is_unique:
        raise Unencodable("only frames with unique string column names are cached")
    columns = []
    for name in frame.columns:
        series = frame[name]
        values = series.tolist() if series.dtype != object else list(series)
        columns.append([name, str(series.dtype), [_enc(v) for v in values]])
    return {
        "rows": len(frame),
        "columns": columns,
        "attrs": _enc(dict(frame.attrs)),
        "range_columns": isinstance(frame.columns, pd.RangeIndex),
        "columns_dtype": str(frame.columns.dtype),
    }


def decode_frame(data: dict) -> pd.DataFrame:
    frame = pd.DataFrame(index=pd.RangeIndex(int(data["rows"])))
    for name, dtype, values in data["columns"]:
        decoded = [_dec(v) for v in values]
        if dtype == "object":
            series = pd.Series(_cells(decoded), dtype=object, index=frame.index)  # lists stay cells
        else:
            series = pd.Series(decoded, dtype=dtype, index=frame.index)
        frame[name] = series
    if data["range_columns"]:
        frame.columns = pd.RangeIndex(0)
    else:
        frame.columns = pd.Index(list(frame.columns), dtype=data["columns_dtype"])
    frame.attrs = _dec(data["attrs"])
    return frame


def _cells(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _exact(frame: pd.DataFrame, encoded: dict) -> bool:
    """Whether the encoding gives the frame back exactly (else it is not cached): the decoded frame has the
    same encoding (every value with its exact type; NaN as a tag, so NaN inside a list counts as equal), the
    same column index and dtypes."""
    try:
        back = decode_frame(json.loads(json.dumps(encoded, allow_nan=False)))
        return (
            encode_frame(back) == encoded
            and type(back.columns) is type(frame.columns)
            and back.columns.equals(frame.columns)
            and back.columns.dtype == frame.columns.dtype
            and back.dtypes.equals(frame.dtypes)
            and len(back) == len(frame)
        )
    except (Unencodable, ValueError, TypeError, KeyError):
        return False


# ---- the key ----


def _feed_frame(digest, frame: pd.DataFrame) -> None:
    digest.update(
        json.dumps([list(map(str, frame.columns)), [str(t) for t in frame.dtypes], _enc(list(frame.index))]).encode()
    )
    for name in frame.columns:
        series = frame[name]
        if series.dtype.kind in "biuf":
            digest.update(np.ascontiguousarray(series.to_numpy()).tobytes())
            continue
        if series.dtype != object:  # strings (pandas' str dtype): NaN dumps as NaN, a string as "..."
            digest.update(json.dumps([name, series.tolist()]).encode())
            continue
        cells = []
        for value in series:
            if isinstance(value, np.ndarray):  # the curves: their bytes (a repr would abbreviate them)
                digest.update(f"a{value.dtype.str}{value.shape}\0".encode())
                digest.update(np.ascontiguousarray(value).tobytes())
                cells.append({"a": len(cells)})
            else:
                cells.append(_enc(value))
        digest.update(json.dumps([name, cells]).encode())


def _versions() -> list[str]:
    out = []
    for name in ("numpy", "pandas", "scipy"):
        try:
            out.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}=none")
    return out


def key(frames: list[pd.DataFrame], options: dict, registry: dict) -> str | None:
    """The cache key of tables computed from ``frames`` (the run tables) with ``options`` and what the
    registries say (``registry``); None where some input cannot be hashed exactly (then nothing is cached)."""
    digest = hashlib.sha256(f"derived v{SCHEMA}\0".encode())
    try:
        digest.update(json.dumps([_enc(options), _enc(registry), _versions()]).encode())
        for frame in frames:
            _feed_frame(digest, frame)
    except (Unencodable, TypeError, ValueError):  # e.g. a column type JSON does not know
        return None
    return cache.key("analysis-derived", digest.hexdigest(), cache.code_version(_PACKAGES))


# ---- load / store ----


def load(key: str) -> dict[str, pd.DataFrame] | None:
    """The cached tables of ``key``, or None (missing, unreadable or malformed: recomputed)."""
    files = cache.read("analysis-derived", key)
    try:
        data = json.loads(files["tables.json"].decode("utf-8"))
        if data.get("schema") != SCHEMA or data.get("key") != key:
            return None
        return {name: decode_frame(data["tables"][name]) for name in TABLES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no entry (None) or a damaged one
        return None


def store(key: str, tables: dict[str, pd.DataFrame]) -> bool:
    """Write the tables under ``key`` if each one round-trips exactly; False where nothing was written."""
    try:
        encoded = {name: encode_frame(tables[name]) for name in TABLES}
    except Unencodable:
        return False
    if not all(_exact(tables[name], encoded[name]) for name in TABLES):
        return False
    try:
        text = json.dumps({"schema": SCHEMA, "key": key, "tables": encoded}, allow_nan=False)
    except ValueError:
        return False
    return cache.write("analysis-derived", key, {"tables.json": text.encode("utf-8")})  # False: not writable


def cached(key_: str | None, compute: Callable[[], dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """The tables of ``key_`` from the cache, else ``compute()`` (stored under ``key_``; None: not cached)."""
    if key_ is not None:
        hit = load(key_)
        if hit is not None:
            return hit
    tables = compute()
    if key_ is not None:
        store(key_, tables)
    return tables
