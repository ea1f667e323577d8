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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepobs_tree import parse_result_file_name, setting_folder_name

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
            raise ValueError(f"RunSpec.{what} must be (name, value) pairs or a dict, got {value!r}")
        name, val = item
        if isinstance(val, list):
            val = tuple(val)
        pairs.append((str(name), val))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"RunSpec.{what} has a repeated name: {names}")
    return tuple(sorted(pairs))


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
    seed: int = 42
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
                raise ValueError(f"RunSpec.{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("seed", "num_epochs", "batch_size", "train_log_interval"):
            value = getattr(self, name)
            if value is None and name in ("num_epochs", "batch_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"RunSpec.{name} must be an integer, got {value!r}")
            if name != "seed" and value < 1:
                raise ValueError(f"RunSpec.{name} must be >= 1, got {value!r}")
        if self.weight_decay is not None:
            if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, int | float):
                raise ValueError(f"RunSpec.weight_decay must be a number or None, got {self.weight_decay!r}")
            if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
                raise ValueError(f"RunSpec.weight_decay must be finite and >= 0, got {self.weight_decay!r}")
        if self.data_dir is not None:
            set_(self, "data_dir", str(self.data_dir))

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
        import testproblems

        return testproblems.spec(self.testproblem).num_epochs

    def effective_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        import testproblems

        return testproblems.spec(self.testproblem).batch_size

    def recorded_hyperparams(self) -> dict[str, Any]:
        """What goes into the JSON's ``optimizer_hyperparams`` (and the folder name)."""
        import optimizers

        return optimizers.recorded_hyperparams(self.optimizer, self.hyperparams_dict)

    def setting_folder(self) -> str:
        return setting_folder_name(
            self.effective_num_epochs(),
            self.effective_batch_size(),
            self.recorded_hyperparams(),
            weight_decay=self.weight_decay,
            training_params={},
        )

    def setting_dir(self, out: str | Path) -> Path:
        """``<out>/<testproblem>/<optimizer>/<setting folder>`` (DeepOBS 1.2 naming)."""
        return Path(out) / self.testproblem / self.optimizer / self.setting_folder()

    def existing_result(self, out: str | Path) -> Path | None:
        """A ``random_seed__<seed>__<timestamp>.json`` for this seed already in the setting folder (the
        latest by name if several), else None."""
        folder = self.setting_dir(out)
        if not folder.is_dir():
            return None
        hits = sorted(
            p
            for p in folder.glob(f"random_seed__{self.seed:d}__*.json")
            if (parsed := parse_result_file_name(p.name)) is not None and parsed[0] == self.seed and p.is_file()
        )
        return hits[-1] if hits else None

    def label(self) -> str:
        hp = " ".join(f"{k}={v}" for k, v in self.hyperparams)
        return f"{self.testproblem}/{self.optimizer} {hp} seed={self.seed}"
