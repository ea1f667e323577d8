"""Read DeepOBS result trees into one tidy pandas table: one row per run, the per-epoch curves alongside.

Tolerant of everything real DeepOBS trees contain (deepobs-format.md §4, quirks Q1-Q24): non-result files,
``NaN``/``Infinity`` literals, missing accuracy keys or ``minibatch_train_losses``, ``weight_decay`` or
``l2_reg``, curves shorter than ``num_epochs + 1``, byte-identical copies, one run stored under two sibling
folders, an ``optimizer_name`` that differs from its folder, and unreadable JSON (skipped, with a warning).

Runs are identified by what their JSON says, never by folder name or float ``==``: the *setting key* holds
every optimizer hyperparameter as its DeepOBS folder token (11 significant digits, ``naming.format_value``),
the batch size, the number of epochs and the normalised L2 factor (``weight_decay`` null -> the problem's
default factor; 0/0.0 stay 0, which is the default of the ``_nodecay`` problems).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import testproblems
from deepobs_tree import (
    CURVES,
    AtomicFile,
    NlwuError,
    cache,
    extra_tokens,
    format_value,
    parse_result_file_name,
)
from deepobs_tree.safe_io import check_regular, os_error_text, read_regular
from deepobs_tree.schema import ResultSchemaError, check_result

CACHE_VERSION = 7  # 7: schema-checked files (deepobs_tree.schema); 6: hp_key includes the folder's extra tokens
#: the runners' state folder at a results root (``runners.ledger.STATE``): never walked for results
STATE_FOLDER = ".nlwu"
INT_LIMIT = 2**63  # integers a result file may hold (seeds, sizes, hyperparameters): int64


class AnalysisError(NlwuError, ValueError):
    """Bad input for the analysis: the message names the thing and how to fix it."""


class MalformedResult(NlwuError, ValueError):
    """A result file that parses but does not have the DeepOBS structure."""


@dataclass
class LoadReport:
    """What loading saw besides the runs: skipped files (with the reason) and counts."""

    roots: list[str]
    n_files: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_duplicates: int = 0
    n_superseded: int = 0


@functools.cache
def _registry_spec(testproblem: str):
    """The test-problem registry's metadata for a name, or None when the suite does not know the problem."""
    try:
        return testproblems.spec(testproblem)
    except ValueError:  # a problem this suite does not know (a foreign tree's): no registry metadata
        return None


def default_l2(testproblem: str) -> float | None:
    """The problem's default L2 factor from the test-problem registry; None for a problem the suite does not know."""
    spec = _registry_spec(testproblem)
    return None if spec is None else float(spec.l2)


def registry_has_accuracy(testproblem: str) -> bool | None:
    """Whether the registry says the problem reports an accuracy; None if the problem is unknown."""
    spec = _registry_spec(testproblem)
    return None if spec is None else bool(spec.has_accuracy)


def normalise_l2(testproblem: str, stored) -> float:
    """The L2 factor a run used: the stored value, or the problem's default where it stored null (NaN if unknown)."""
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        default = default_l2(testproblem)
        return default if default is not None else math.nan
    return float(stored)


def find_result_files(root: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every ``random_seed__<seed>__<timestamp>.json`` at least three folders below ``root``, sorted.

    The three folders right above a file are ``<testproblem>/<optimizer>/<setting>``; anything above them
    (e.g. Crowded Valley's ``results/large_budget/none/``) is tolerated. All other files are ignored.
    Symlinked folders are followed, except one that leads back to a folder it is inside of (a loop); a
    folder that cannot be listed, a loop and a dangling link named like a result file are appended to
    ``problems`` as ``(path, reason)`` (each one warned about and counted by ``load_runs``).
    """
    problems = [] if problems is None else problems
    found: list[Path] = []

    def walk(folder: Path, depth: int, ancestors: frozenset[str], folder_real: str) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            problems.append((str(folder), f"unreadable folder ({err.strerror or type(err).__name__})"))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links
                is_link = entry.is_symlink()
            except OSError as err:
                loop = err.errno == errno.ELOOP
                problems.append(
                    (
                        str(path),
                        "symlink loop, not followed" if loop else f"cannot stat ({err.strerror or type(err).__name__})",
                    )
                )
                continue
            if is_dir and entry.name == STATE_FOLDER and depth == 0:
                continue  # the runners' book-keeping (locks, failures, files moved aside), never results
            if is_dir:
                real = os.path.realpath(path) if is_link else os.path.join(folder_real, entry.name)
                if real in ancestors:
                    problems.append((str(path), f"symlink loop (leads back to {real}), not followed"))
                    continue
                walk(path, depth + 1, ancestors | {real}, real)
            elif depth >= 3 and parse_result_file_name(entry.name):
                try:  # only regular files: a FIFO or device would block the reader, a loop never ends
                    check_regular(path)
                except OSError as err:
                    problems.append((str(path), err.strerror or os_error_text(err)))
                    continue
                found.append(path)

    real_root = os.path.realpath(root)
    walk(Path(root), 0, frozenset({real_root}), real_root)
    return found


def _strip_minibatch(text: str) -> tuple[str, int | None, bool]:
    """Cut ``minibatch_train_losses`` out of the JSON text before parsing (it is most of the bytes).

    Returns the remaining text, the list's length (None if absent) and whether it holds a non-finite value
    (DeepOBS' divergence marker, deepobs-format §2.5). The list holds only numbers, so its closing bracket
    is the first ``]`` after its opening one.
    """
    key = text.find('"minibatch_train_losses"')
    if key < 0:
        return text, None, False
    start = text.find("[", key)
    end = text.find("]", start)
    if start < 0 or end < 0:
        return text, None, False  # truncated: let json.loads report it
    body = text[start + 1 : end]
    if _NOT_NUMBERS.search(body):
        return text, None, False  # not a list of numbers: let json.loads and the schema check judge it
    length = body.count(",") + 1 if body.strip() else 0
    nonfinite = "NaN" in body or "Infinity" in body
    return text[: start + 1] + text[end:], length, nonfinite


_NOT_NUMBERS = re.compile(r"[^-+.,0-9eENaInfity \t\r\n]")


def _final(curve: np.ndarray | None) -> float:
    return float(curve[-1]) if curve is not None and len(curve) else math.nan


def _hp_token(value) -> str:
    return format_value(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return f"{type(value).__name__} {text[:40]}" + ("..." if len(text) > 40 else "")


def _check_int_range(name: str, value) -> None:
    if _is_int(value) and not -INT_LIMIT <= value < INT_LIMIT:
        raise MalformedResult(f"{name} is an integer of {value.bit_length()} bits (outside int64)")


_CURVE_TYPES = frozenset({int, float, type(None)})


def parse_run_file(path: Path, root: Path) -> dict:
    """One result file -> one row (raises ValueError/UnicodeDecodeError for unreadable content)."""
    raw = read_regular(path)  # never blocks on a FIFO swapped in since the walk
    text = raw.decode("utf-8")
    text, minibatch_len, diverged = _strip_minibatch(text)
    try:
        data = json.loads(text)
    except RecursionError as err:
        raise MalformedResult("JSON nested too deeply") from err
    seed_from_name, timestamp = parse_result_file_name(path.name)
    try:
        check_result(data, seed=seed_from_name)
    except ResultSchemaError as err:
        raise MalformedResult(str(err)) from None
    setting_dir = path.parent
    optimizer_dir = setting_dir.parent
    problem_dir = optimizer_dir.parent
    testproblem = problem_dir.name
    hyperparams = data.get("optimizer_hyperparams")
    if hyperparams is None:
        hyperparams = data.get("hyperparams") or {}  # DeepOBS 1.1 layout
        if "learning_rate" in data and "learning_rate" not in hyperparams:
            hyperparams = {"learning_rate": data["learning_rate"], **hyperparams}
    if not isinstance(hyperparams, dict):
        raise MalformedResult("optimizer_hyperparams is not an object")
    if "weight_decay" in data:
        stored_l2 = data["weight_decay"]
    else:
        stored_l2 = data.get("l2_reg")
    if stored_l2 is not None and not _is_number(stored_l2):
        raise MalformedResult(f"weight_decay/l2_reg is {_describe(stored_l2)}, not a number or null")
    for name, value in hyperparams.items():
        _check_int_range(f"optimizer_hyperparams.{name}", value)
    curves = {}
    for name in CURVES:
        values = data.get(name)
        if isinstance(values, list):
            types = set(map(type, values))  # json.loads yields exact types: bool is not int here
            if not types <= _CURVE_TYPES:
                raise MalformedResult(f"{name} is not a flat list of numbers")
            try:
                curves[name] = np.asarray(
                    [math.nan if v is None else v for v in values] if type(None) in types else values, dtype=float
                )
            except (TypeError, ValueError, OverflowError) as err:
                raise MalformedResult(f"{name} is not a list of numbers in float range") from err
    seed = data.get("random_seed", seed_from_name)
    if seed is None:
        seed = seed_from_name
    if not _is_int(seed):
        raise MalformedResult(f"random_seed is {_describe(seed)}, not an integer")
    _check_int_range("random_seed", seed)
    for key in ("batch_size", "num_epochs"):
        value = data.get(key)
        if value is not None and not _is_int(value):
            raise MalformedResult(f"{key} is {_describe(value)}, not an integer")
        _check_int_range(key, value)
    for key in ("testproblem", "optimizer_name", "optimizer"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise MalformedResult(f"{key} is {_describe(value)}, not a string")
    training_params = data.get("training_params")
    if training_params is not None and not isinstance(training_params, dict):
        raise MalformedResult(f"training_params is {_describe(training_params)}, not an object")
    row = {
        "root": str(root),
        "path": str(path),
        "relpath": str(path.relative_to(root)),
        "testproblem": testproblem,
        "optimizer": optimizer_dir.name,
        "setting_folder": setting_dir.name,
        "seed": int(seed),
        "timestamp": timestamp,
        "sha1": hashlib.sha1(raw).hexdigest(),
        "json_testproblem": data.get("testproblem"),
        "optimizer_name": data.get("optimizer_name", data.get("optimizer")),
        "batch_size": data.get("batch_size"),
        "num_epochs": data.get("num_epochs"),
        "weight_decay_stored": stored_l2,
        "optimizer_hyperparams": dict(hyperparams),
        "training_params": training_params,
        "n_evals": max((len(c) for c in curves.values()), default=0),
        "minibatch_len": minibatch_len,
        "diverged": bool(diverged),
        "has_accuracy": "valid_accuracies" in curves or "test_accuracies" in curves,
    }
    for name in CURVES:
        row[f"final_{name}"] = _final(curves.get(name))
        row[name] = curves.get(name)
    row["hp_key"] = tuple(
        sorted(
            [(k, _hp_token(v)) for k, v in hyperparams.items()]
            + list(extra_tokens(setting_dir.name, hyperparams).items())
        )
    )
    return row


def setting_key(row: pd.Series | dict) -> tuple:
    """Identity of a setting: problem, optimizer, epochs, batch size, L2 token and every hyperparameter token."""
    l2 = row["weight_decay"]
    l2_token = "default" if l2 is None or (isinstance(l2, float) and math.isnan(l2)) else format_value(float(l2))
    return (
        row["testproblem"],
        row["optimizer"],
        str(row["num_epochs"]),
        str(row["batch_size"]),
        l2_token,
        row["hp_key"],
    )


def _file_signature(files: Sequence[Path]) -> str:
    """Hash of every file's path, size, mtime and mode (a file gone since it was listed counts as changed)."""
    digest = hashlib.sha1(str(CACHE_VERSION).encode())
    for path in files:
        try:
            info = path.stat()
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{stat.S_IMODE(info.st_mode)}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _cache_dir() -> Path:
    return cache.folder("analysis")


# The parsed-table cache: one NumPy .npz per signature, read with allow_pickle=False, so a planted or
# corrupted file can at worst be rejected (and rebuilt), never execute code. It holds the rows as JSON
# (``meta``, UTF-8 bytes) and every curve concatenated into one float64 array (``values``) with per-row,
# per-curve offsets and lengths (-1: the file had no such curve).


def _cache_save(path: Path, signature: str, rows: list[dict], skipped: list[tuple[str, str]]) -> None:
    lengths = np.full((len(rows), len(CURVES)), -1, dtype=np.int64)
    parts, plain = [], []
    for i, row in enumerate(rows):
        plain.append({k: None if k in CURVES else v for k, v in row.items()})  # keeps the column order
        for j, name in enumerate(CURVES):
            curve = row.get(name)
            if curve is not None:
                lengths[i, j] = len(curve)
                parts.append(np.asarray(curve, dtype=np.float64))
    values = np.concatenate(parts) if parts else np.zeros(0)
    meta = json.dumps({"signature": signature, "version": CACHE_VERSION, "rows": plain, "skipped": skipped})
    with AtomicFile(path) as handle:
        np.savez(handle, meta=np.frombuffer(meta.encode(), dtype=np.uint8), values=values, lengths=lengths)


def _cache_load(path: Path, signature: str) -> tuple[list[dict], list[tuple[str, str]]] | None:
    """The cached rows, or None for a missing, foreign or damaged file (never unpickles anything)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            values, lengths = archive["values"], archive["lengths"]
        if meta.get("signature") != signature or meta.get("version") != CACHE_VERSION:
            return None
        rows = meta["rows"]
        if values.dtype != np.float64 or lengths.shape != (len(rows), len(CURVES)):
            return None
        start = 0
        for i, row in enumerate(rows):
            row["hp_key"] = tuple((str(k), str(v)) for k, v in row["hp_key"])
            for j, name in enumerate(CURVES):
                n = int(lengths[i, j])
                if n < 0:
                    row[name] = None
                    continue
                if start + n > values.size:
                    return None
                row[name] = values[start : start + n].copy()
                start += n
        return rows, [(str(p), str(r)) for p, r in meta["skipped"]]
    except Exception:  # noqa: BLE001 - any damage (bad zip, bad JSON, wrong keys): rebuild, never trust
        return None


def _parse_all(files: list[tuple[Path, Path]], progress: bool) -> tuple[list[dict], list[tuple[str, str]]]:
    rows, skipped = [], []
    bar = tqdm(files, desc="loading runs", unit="file", disable=not progress, file=sys.stderr, leave=False)
    for path, root in bar:
        try:
            rows.append(parse_run_file(path, root))
        except (ValueError, TypeError, RecursionError, OverflowError, OSError) as err:  # one bad file: skip it
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            skipped.append((str(path), reason))
    return rows, skipped


def load_runs(
    roots: Iterable[str | os.PathLike],
    *,
    progress: bool = True,
    cache: bool = True,
    warn: bool = True,
) -> pd.DataFrame:
    """All runs under ``roots`` as one DataFrame, de-duplicated (see ``deduplicate``).

    Each row is one run: identity columns (testproblem, optimizer, setting folder, seed, timestamp),
    normalised hyperparameters (``optimizer_hyperparams`` dict plus one ``hp_<name>`` column each),
    ``weight_decay`` (normalised L2 factor), final values of every curve (``final_<curve>``), the curves
    themselves as arrays, divergence and length flags. ``df.attrs['report']`` is the ``LoadReport``.
    Unreadable files are skipped with one warning line each on stderr.
    """
    roots = [Path(r) for r in roots]
    for root in roots:
        if not root.exists():
            raise AnalysisError(f"results path '{root}' does not exist: pass the root of a DeepOBS results tree")
        if not root.is_dir():
            raise AnalysisError(f"results path '{root}' is not a folder: pass the root of a DeepOBS results tree")
    walk_problems: list[tuple[str, str]] = []
    files = [(path, root) for root in roots for path in find_result_files(root, walk_problems)]
    if warn:
        for path, reason in walk_problems:
            print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if not files:
        names = ", ".join(f"'{r}'" for r in roots)
        unread = f" ({len(walk_problems)} folders or links skipped, see warnings)" if walk_problems else ""
        raise AnalysisError(
            f"no DeepOBS result files (<problem>/<optimizer>/<setting>/random_seed__<seed>__<time>.json) "
            f"under {names}{unread}: check the RESULTS path"
        )
    report = LoadReport(roots=[str(r) for r in roots], n_files=len(files))
    signature = _file_signature([p for p, _ in files]) + "|" + "|".join(str(r.resolve()) for r in roots)
    cache_path = _cache_dir() / (hashlib.sha1(signature.encode()).hexdigest() + ".npz")
    loaded = _cache_load(cache_path, signature) if cache and cache_path.is_file() else None
    if loaded is not None:
        rows, skipped = loaded
    else:
        rows, skipped = _parse_all(files, progress)
        if cache:
            try:
                _cache_save(cache_path, signature, rows, skipped)
            except OSError:
                pass
    report.skipped = list(walk_problems) + list(skipped)
    if warn:
        for path, reason in skipped:
            print(f"warning: skipped unreadable result file {path} ({reason})", file=sys.stderr)
    if not rows:
        raise AnalysisError(
            f"none of the {len(files)} DeepOBS result files under the given roots could be read (see warnings)"
        )
    runs = pd.DataFrame(rows)
    runs["weight_decay_stored"] = pd.Series([r["weight_decay_stored"] for r in rows], dtype=object)
    runs["weight_decay"] = [
        normalise_l2(problem, stored) for problem, stored in zip(runs["testproblem"], runs["weight_decay_stored"])
    ]
    runs = deduplicate(runs, report)
    runs.attrs["report"] = report
    return runs


def deduplicate(runs: pd.DataFrame, report: LoadReport | None = None) -> pd.DataFrame:
    """One row per (setting key, seed): byte-identical copies count once, otherwise the latest timestamp wins.

    Adds ``setting_key`` (see ``setting_key``) and ``n_copies`` (files that held this run).
    """
    runs = runs.copy()
    columns = ["testproblem", "optimizer", "num_epochs", "batch_size", "weight_decay", "hp_key"]
    runs["setting_key"] = [setting_key(dict(zip(columns, values))) for values in zip(*(runs[c] for c in columns))]
    # Identical bytes anywhere (Q8, Q9): keep one, preferring the canonical folder (the first in name order).
    runs = runs.sort_values(["setting_key", "seed", "timestamp", "relpath"], kind="stable")
    n_before = len(runs)
    copies = runs.groupby(["sha1"], sort=False)["sha1"].transform("size")
    runs = runs.assign(n_copies=copies).drop_duplicates(subset=["setting_key", "seed", "sha1"], keep="first")
    n_identical = n_before - len(runs)
    # Different files for the same run (Q13, Q14): the latest start time wins.
    n_before = len(runs)
    runs = runs.drop_duplicates(subset=["setting_key", "seed"], keep="last")
    if report is not None:
        report.n_duplicates = n_identical
        report.n_superseded = n_before - len(runs)
    hp_names = sorted({k for hp in runs["optimizer_hyperparams"] for k in hp})
    for name in hp_names:
        runs[f"hp_{name}"] = [hp.get(name) for hp in runs["optimizer_hyperparams"]]
    return runs.sort_values(["testproblem", "optimizer", "setting_folder", "seed"], kind="stable").reset_index(
        drop=True
    )


def curves_long(runs: pd.DataFrame, curves: Sequence[str] = CURVES) -> pd.DataFrame:
    """The per-epoch curves as a long tidy table: (run index, testproblem, optimizer, seed, curve, epoch, value)."""
    parts = []
    for index, row in runs.iterrows():
        for name in curves:
            values = row.get(name)
            if values is None or (isinstance(values, float) and math.isnan(values)):
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "run": index,
                        "testproblem": row["testproblem"],
                        "optimizer": row["optimizer"],
                        "seed": row["seed"],
                        "curve": name,
                        "epoch": np.arange(len(values)),
                        "value": values,
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=["run", "testproblem", "optimizer", "seed", "curve", "epoch", "value"])
    return pd.concat(parts, ignore_index=True)
