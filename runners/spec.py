"""RunSpec: the canonical description of one training run, its stable id and where its result lives.

A run is defined by (testproblem, optimizer, hyperparams, seed, num_epochs, batch_size, weight_decay,
fidelity, train_log_interval, options); ``data_dir`` only says where the data lie and is not part of the id.
The result goes to ``<out>/<testproblem>/<optimizer>/<setting folder>/random_seed__<seed>__<timestamp>.json``
exactly as DeepOBS 1.2 names it (deepobs-format §1). Importing this module needs neither TF nor Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optimizers
import testproblems
from deepobs_tree import (
    RUN_FIELD_DEFAULTS,
    TUNING_SEED,
    NlwuError,
    parse_result_file_name,
    provenance_file_name,
    setting_folder_name,
)
from deepobs_tree.safe_io import (
    MAX_YAML_BYTES,
    NotRegularFile,
    load_yaml,
    name_problem,
    os_error_text,
    read_regular,
    short,
)
from deepobs_tree.schema import ResultSchemaError, check_result
from optimizers.selection import DEFAULT_RULE, resolve_rule, rule_name, validate_decay_on
from testproblems import FIDELITIES

#: seeds NumPy, Python and the backends all accept (unsigned 32 bit)
MAX_SEED = 2**32 - 1


def same_value(a: Any, b: Any) -> bool:
    """Equal, with floats equal to 1e-12 relative: far below the folder names' 10 significant digits, above the
    last-bit differences of the sampler's exp/log between machines (seen on the committed tree's learning rates)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float | int) and isinstance(b, float | int):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


class SpecMismatch(NlwuError, ValueError):
    """A result exists in the run's folder but was made with a different spec (one line: what differs)."""


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A file named like a result of a run that cannot be trusted: never reused, never summarised."""

    path: Path
    reason: str


#: largest result file a run reads back (the biggest DeepOBS file, tolstoi's, is under 1 MB)
MAX_RESULT_BYTES = 64 << 20
_VERDICTS: dict[tuple, str | None] = {}
#: recorded spec identities of provenance files, memoised on the file's identity (device, inode, size, mtime):
#: a sweep asks for the same results many times, and parsing their YAML dominated a resumed sweep's time
_IDENTITIES: dict[tuple, dict[str, Any]] = {}


def _stat_key(path: Path) -> tuple | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode


#: fields that define a run (hashed into run_id); data_dir is deliberately absent.
ID_FIELDS = (
    "testproblem",
    "optimizer",
    "hyperparams",
    "seed",
    "num_epochs",
    "batch_size",
    "weight_decay",
    "fidelity",
    "train_log_interval",
    "options",
)


def _pairs(value: Any, what: str) -> tuple[tuple[str, Any], ...]:
    """Normalise a mapping or an iterable of (name, value) pairs to a name-sorted tuple of pairs."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    pairs = []
    for item in items:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"RunSpec.{what} must be (name, value) pairs or a dict, got {short(value)}")
        name, val = item
        if isinstance(val, list):
            val = tuple(val)
        pairs.append((str(name), val))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"RunSpec.{what} has a repeated name: {names}")
    return tuple(sorted(pairs))


@dataclasses.dataclass(frozen=True)
class _Unreadable(ValueError):
    """A provenance file that could not be read as text (too large, not UTF-8)."""


def _recorded_identity(prov: Path) -> dict[str, Any]:
    """The identity of the spec that provenance file ``prov`` records, memoised on the file's identity (a
    rewritten file is read again). OSError (FileNotFoundError: no provenance) and _Unreadable when it cannot be
    read; any other exception when its text does not record a spec."""
    key = (str(prov), _stat_key(prov))
    if key[1] is None or key not in _IDENTITIES:
        try:
            text = read_regular(prov, max_bytes=MAX_YAML_BYTES).decode("utf-8")
        except OSError:
            raise
        except ValueError as exc:
            raise _Unreadable(str(exc)) from None
        identity = RunSpec.from_dict(load_yaml(text)["spec"]).identity()
        if key[1] is None:
            return identity
        if len(_IDENTITIES) > 100_000:
            _IDENTITIES.clear()
        _IDENTITIES[key] = identity
    return dict(_IDENTITIES[key])


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: test problem x optimizer x hyperparameters x seed (+ overrides). Immutable and hashable.

    ``hyperparams`` are all keyword arguments for ``optimizers.make`` (e.g. learning_rate, power,
    weight_decay_opt, momentum); ``options`` are extra, non-recorded optimizer options (select rule,
    decay_on). ``weight_decay`` is the L2 factor passed to the problem (None = the problem's default),
    recorded as passed, as DeepOBS does (deepobs-format §2.6). ``num_epochs``/``batch_size`` None = the
    problem's DeepOBS defaults.
    """

    testproblem: str
    optimizer: str
    hyperparams: tuple[tuple[str, Any], ...] = ()
    seed: int = TUNING_SEED
    num_epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    data_dir: str | None = None
    fidelity: str = "deepobs"
    train_log_interval: int = 10
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "hyperparams", _pairs(self.hyperparams, "hyperparams"))
        set_(self, "options", _pairs(self.options, "options"))
        for name in ("testproblem", "optimizer", "fidelity"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"RunSpec.{name} must be a non-empty string, got {short(getattr(self, name))}")
        for name in ("seed", "num_epochs", "batch_size", "train_log_interval"):
            value = getattr(self, name)
            if value is None and name in ("num_epochs", "batch_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"RunSpec.{name} must be an integer, got {short(value)}")
            if name != "seed" and value < 1:
                raise ValueError(f"RunSpec.{name} must be >= 1, got {short(value)}")
        if self.weight_decay is not None:
            if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, int | float):
                raise ValueError(f"RunSpec.weight_decay must be a number or None, got {short(self.weight_decay)}")
            if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
                raise ValueError(f"RunSpec.weight_decay must be finite and >= 0, got {short(self.weight_decay)}")
        if self.data_dir is not None:
            set_(self, "data_dir", str(self.data_dir))

    # -- validation (no TensorFlow) ---------------------------------------------------------------
    def validate(self) -> RunSpec:
        """ValueError (one line) unless every field is one a run accepts: known names, a seed in
        [0, 2**32 - 1], a known fidelity, a batch no larger than the problem's training set, hyperparameters and
        options the optimizer takes (values in their declared ranges). Imports neither TF nor Keras."""

        problem = testproblems.spec(self.testproblem)
        optimizers.spec(self.optimizer)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        if self.fidelity not in FIDELITIES:
            raise ValueError(f"unknown fidelity {short(self.fidelity)}; use one of: {', '.join(FIDELITIES)}")
        limit = testproblems.max_batch_size(self.testproblem)
        if self.batch_size is not None and limit is not None and self.batch_size > limit:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set of {problem.name} ({limit} examples)"
            )
        self.resolved_hyperparams()
        for name, value in self.folder_extras().items():
            text = str(value)
            if not text or "/" in text or "__" in text or text.startswith(".") or "\0" in text:
                raise ValueError(f"option {name}={short(value)} cannot be part of a folder name")
        return self

    def resolved_hyperparams(self) -> dict[str, Any]:
        """Hyperparameters and options as the optimizer gets them: defaults filled in, values validated,
        options normalised (select rule name, decay_on)."""

        values = optimizers.resolve_hyperparams(self.optimizer, {**self.hyperparams_dict, **self.options_dict})
        if "select" in values or "select" in optimizers.spec(self.optimizer).options:
            resolve_rule(values.get("select"))
            values["select"] = rule_name(values.get("select") or DEFAULT_RULE)
        if "decay_on" in values or "decay_on" in optimizers.spec(self.optimizer).options:
            values["decay_on"] = validate_decay_on(values.get("decay_on", "selected"))
        return values

    def folder_extras(self) -> dict[str, Any]:
        """What changes the math but is not in DeepOBS' folder name and differs from the paper's defaults:
        provenance-only hyperparameters (PowKernel momentum), options (select, decay_on), fidelity and
        train_log_interval. These become ``name__value`` tokens of the setting folder, so runs with different
        values never share a folder, while the paper's defaults keep the paper's folder names."""

        entry = optimizers.spec(self.optimizer)
        values = self.resolved_hyperparams()
        defaults = {**entry.defaults, "select": DEFAULT_RULE, "decay_on": "selected"}
        extras = {
            k: v
            for k, v in values.items()
            if k not in entry.hyperparams and k not in entry.fixed and (k not in defaults or v != defaults[k])
        }
        for name, default in RUN_FIELD_DEFAULTS.items():
            if getattr(self, name) != default:
                extras[name] = getattr(self, name)
        return extras

    def identity(self) -> dict[str, Any]:
        """The values that decide a run's result (effective epochs/batch size, resolved hyperparameters and
        options): two specs with the same identity give the same result file."""
        return {
            "testproblem": self.testproblem,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "num_epochs": self.effective_num_epochs(),
            "batch_size": self.effective_batch_size(),
            "weight_decay": self.weight_decay,
            "fidelity": self.fidelity,
            "train_log_interval": self.train_log_interval,
            **{
                f"hyperparams.{k}": (list(v) if isinstance(v, tuple) else v)
                for k, v in self.resolved_hyperparams().items()
            },
        }

    # -- identity -------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The fields that define the run, JSON-ready (pairs as lists)."""
        d = self.to_dict()
        return {k: d[k] for k in ID_FIELDS}

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit id: sha256 of ``json.dumps(canonical, sort_keys=True)``."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def hyperparams_dict(self) -> dict[str, Any]:
        return dict(self.hyperparams)

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)

    # -- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "testproblem": self.testproblem,
            "optimizer": self.optimizer,
            "hyperparams": [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.hyperparams],
            "seed": self.seed,
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "data_dir": self.data_dir,
            "fidelity": self.fidelity,
            "train_log_interval": self.train_log_interval,
            "options": [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.options],
        }

    def to_json(self) -> str:
        """One line of JSON (the worker protocol and --emit-commands use it)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        if not isinstance(data, Mapping):
            raise ValueError(f"a RunSpec must be a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown RunSpec field(s) {unknown}; allowed: {sorted(fields)}")
        missing = [k for k in ("testproblem", "optimizer") if k not in data]
        if missing:
            raise ValueError(f"RunSpec is missing {missing}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed RunSpec JSON: {exc}") from None
        return cls.from_dict(data)

    # -- effective values and paths ---------------------------------------------------------------
    def effective_num_epochs(self) -> int:
        if self.num_epochs is not None:
            return self.num_epochs

        return testproblems.spec(self.testproblem).num_epochs

    def effective_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size

        return testproblems.spec(self.testproblem).batch_size

    def recorded_hyperparams(self) -> dict[str, Any]:
        """What goes into the JSON's ``optimizer_hyperparams`` (and the folder name)."""

        return optimizers.recorded_hyperparams(self.optimizer, self.hyperparams_dict)

    def setting_folder(self) -> str:
        return setting_folder_name(
            self.effective_num_epochs(),
            self.effective_batch_size(),
            self.recorded_hyperparams(),
            weight_decay=self.weight_decay,
            training_params=self.folder_extras(),
        )

    def setting_dir(self, out: str | Path) -> Path:
        """``<out>/<testproblem>/<optimizer>/<setting folder>`` (DeepOBS 1.2 naming)."""
        return Path(out) / self.testproblem / self.optimizer / self.setting_folder()

    def existing_result(self, out: str | Path) -> Path | None:
        """The latest trusted ``random_seed__<seed>__<timestamp>.json`` of this seed in the setting folder, else
        None. Files named like one that cannot be trusted (see ``result_files``) are never returned."""
        return self.result_files(out)[0]

    def result_files(self, out: str | Path) -> tuple[Path | None, list[Rejected]]:
        """(the latest trusted result of this seed, the files named like one that are not trusted, with why).

        Trusted: a regular file that parses, passes ``deepobs_tree.schema.check_result`` with curves of exactly
        ``num_epochs + 1`` values, records this run's values (problem, optimizer, epochs, batch size, seed, L2
        factor, recorded hyperparameters) and whose provenance, if any, is readable. A readable provenance that
        records another spec raises SpecMismatch (another run's valid result: never moved, never reused)."""
        folder = self.setting_dir(out)
        if name_problem(folder) is not None:
            return None, []  # no file system holds such a folder: nothing can be there
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return None, []
        trusted, rejected = None, []
        for name in names:
            parsed = parse_result_file_name(name)
            if parsed is None or parsed[0] != self.seed:
                continue
            path = folder / name
            reason = self.untrusted_reason(path)
            if reason is None:
                trusted = path
            else:
                rejected.append(Rejected(path, reason))
        if trusted is not None:
            self.check_provenance(trusted)
        return trusted, rejected

    def untrusted_reason(self, path: Path) -> str | None:
        """Why ``path`` is not a trusted result of this run (None: trusted); memoised on the file's and its
        provenance's identity (device, inode, size, mtime)."""
        key = (str(path), _stat_key(path), _stat_key(path.with_name(provenance_file_name(path.name))), self.run_id)
        if key not in _VERDICTS:
            if len(_VERDICTS) > 100_000:
                _VERDICTS.clear()
            _VERDICTS[key] = self._judge(path)
        return _VERDICTS[key]

    def _judge(self, path: Path) -> str | None:
        try:
            raw = read_regular(path, max_bytes=MAX_RESULT_BYTES)
            data = json.loads(raw.decode("utf-8"))
        except OSError as exc:
            return exc.strerror if isinstance(exc, NotRegularFile) else f"unreadable ({os_error_text(exc)})"
        except UnicodeDecodeError as exc:
            return f"not UTF-8 text (byte {exc.start})"
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}; truncated?)"
        except (ValueError, RecursionError) as exc:
            return f"not a result file ({str(exc)[:80] or type(exc).__name__})"
        try:
            check_result(data, seed=self.seed, exact_length=True)
        except ResultSchemaError as exc:
            return f"not a DeepOBS result of this run: {exc}"
        wanted = {
            "testproblem": self.testproblem,
            "optimizer_name": self.optimizer,
            "num_epochs": self.effective_num_epochs(),
            "batch_size": self.effective_batch_size(),
            "weight_decay": self.weight_decay,
            "optimizer_hyperparams": self.recorded_hyperparams(),
        }
        for key, value in wanted.items():
            if not same_value(data.get(key), value):
                return f"records {key} {short(data.get(key), 50)}, the run has {short(value, 50)}"
        prov = path.with_name(provenance_file_name(path.name))
        try:
            _recorded_identity(prov)
        except FileNotFoundError:
            return None  # DeepOBS' own results, the paper's: the folder name says every value they were made with
        except (OSError, _Unreadable) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:80]
            return f"its provenance {prov.name} is unreadable ({why})"
        except Exception as exc:  # noqa: BLE001 - any unreadable record means: cannot verify
            return (
                f"its provenance {prov.name} is unreadable ({type(exc).__name__}: {str(exc)[:80]}); cannot "
                "check the spec"
            )
        return None

    def note_written(self, result: str | Path) -> None:
        """Remember that this suite just wrote ``result``'s provenance for this spec (a worker reported it), so
        the trust check does not parse that record again: the memo is the one a read fills, keyed on the file's
        identity (device, inode, size, mtime), so a file changed afterwards is read again."""
        prov = Path(result).with_name(provenance_file_name(Path(result).name))
        key = (str(prov), _stat_key(prov))
        if key[1] is not None:
            if len(_IDENTITIES) > 100_000:
                _IDENTITIES.clear()
            _IDENTITIES[key] = self.identity()

    def check_provenance(self, result: Path) -> None:
        """SpecMismatch (one line naming what differs) if the provenance file beside ``result`` records a spec
        other than this one. Results without a provenance file (DeepOBS' own, the paper's) are accepted: their
        folder name already says every value they were made with."""
        prov = result.with_name(provenance_file_name(result.name))
        try:
            recorded = _recorded_identity(prov)
        except FileNotFoundError:
            return
        except (OSError, _Unreadable) as exc:
            raise SpecMismatch(f"cannot read {prov} to check the existing result: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable record means: cannot verify
            raise SpecMismatch(
                f"{prov}: unreadable provenance ({type(exc).__name__}); cannot check that "
                f"{result.name} was made with the requested spec; move it away"
            ) from None
        wanted = self.identity()
        diff = [
            f"{k}: recorded {short(recorded.get(k))}, requested {short(wanted.get(k))}"
            for k in sorted(set(recorded) | set(wanted))
            if not same_value(recorded.get(k), wanted.get(k))
        ]
        if diff:
            raise SpecMismatch(
                f"{result} was made with a different spec ({'; '.join(diff)}); move it away or choose another --out"
            )

    def label(self) -> str:
        hp = " ".join(f"{k}={v}" for k, v in self.hyperparams)
        return f"{self.testproblem}/{self.optimizer} {hp} seed={self.seed}"
