"""Registry of the DeepOBS test problems: static metadata only (no TensorFlow/Keras import).

Values follow DeepOBS' ``DEFAULT_TEST_PROBLEMS_SETTINGS`` and the paper's result files
(spec: testproblems.md §10). ``l2`` is the default L2 factor f of DeepOBS' ``l2_regularizer(f)``,
i.e. the loss gains f * sum(w**2) / 2 per regularised kernel; 0.0 means no regulariser.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = ("quadratic", "mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")
#: 'deepobs' reproduces DeepOBS 1.2's data quirks, 'corrected' uses held-out splits and the right bytes
FIDELITIES = ("deepobs", "corrected")


def default_data_dir() -> Path:
    """`$NLWU_DATA_DIR` if set, else ./data (the contract's default; every dataset's folder lies below it)."""
    return Path(os.environ.get("NLWU_DATA_DIR") or "data")


@dataclass(frozen=True)
class ProblemSpec:
    """One test problem's row: what the runners, the model builder, the trainer and the analysis need."""

    name: str
    dataset: str
    batch_size: int
    num_epochs: int
    l2: float
    has_accuracy: bool
    base_name: str
    trainable_params: int
    #: builder function in ``testproblems.models`` (called as ``builder(seeds, l2, batch_size, name=...)``)
    network: str
    #: loss kind: 'quadratic' (0.5 (θ-x)^T Q (θ-x)), 'vae' (reconstruction + KL, target = the image), 'xent'
    loss: str
    #: whether the network has L2-regularised kernels (the L2 set; the _nodecay variants keep it, with f=0)
    has_l2: bool
    #: whether the network carries state across batches (reset at the start of each phase)
    stateful: bool
    #: a user's own problem (``register``): its model, data and loss; None for the DeepOBS problems
    user: UserProblem | None = None

    @property
    def is_nodecay(self) -> bool:
        return self.name.endswith("_nodecay")


@dataclass(frozen=True)
class UserProblem:
    """What ``register`` was given: ``model()`` -> a fresh keras.Model (Keras is seeded before the call),
    ``data()`` -> ``{"train": (x, y), "valid": (x, y), "test": (x, y)}`` NumPy arrays, ``loss(y_true, y_pred)``
    -> one loss per example; ``source``: the file that registered it (named in every error)."""

    model: Callable[[], Any]
    data: Callable[[], Any]
    loss: Callable[[Any, Any], Any]
    source: str


def _spec(
    name,
    dataset,
    batch_size,
    num_epochs,
    l2,
    has_accuracy,
    trainable_params,
    network,
    loss,
    *,
    has_l2=False,
    stateful=False,
    base_name=None,
):
    return ProblemSpec(
        name,
        dataset,
        batch_size,
        num_epochs,
        float(l2),
        has_accuracy,
        base_name or name,
        trainable_params,
        network,
        loss,
        has_l2,
        stateful,
    )


_BASE = [
    _spec("quadratic_deep", "quadratic", 128, 100, 0.0, False, 100, "build_quadratic_deep", "quadratic"),
    _spec("mnist_vae", "mnist", 64, 50, 0.0, False, 10_151_489, "build_vae", "vae"),
    _spec("fmnist_vae", "fmnist", 64, 100, 0.0, False, 10_151_489, "build_vae", "vae"),
    _spec("fmnist_2c2d", "fmnist", 128, 100, 0.0, True, 3_274_634, "build_2c2d", "xent"),
    _spec("cifar10_3c3d", "cifar10", 128, 100, 0.002, True, 895_210, "build_3c3d", "xent", has_l2=True),
    _spec("cifar100_allcnnc", "cifar100", 256, 350, 5e-4, True, 1_387_108, "build_allcnnc", "xent", has_l2=True),
    _spec("svhn_wrn164", "svhn", 128, 160, 5e-4, True, 2_748_890, "build_wrn164", "xent", has_l2=True),
    _spec("tolstoi_char_rnn", "tolstoi", 50, 200, 0.0, True, 284_499, "build_char_rnn", "xent", stateful=True),
]

_REGISTRY: dict[str, ProblemSpec] = {s.name: s for s in _BASE}
# Each problem with L2 has a ``_nodecay`` twin: the same row with f = 0 (the paper's decoupled-decay runs).
for _b in [s for s in _BASE if s.has_l2]:
    _REGISTRY[_b.name + "_nodecay"] = dataclasses.replace(_b, name=_b.name + "_nodecay", l2=0.0)


BUILTIN = tuple(_REGISTRY)


def register(
    name: str,
    *,
    model: Callable[[], Any],
    data: Callable[[], Any],
    loss: Callable[[Any, Any], Any],
    batch_size: int,
    num_epochs: int,
    accuracy: bool = False,
) -> ProblemSpec:
    """Add a user's own test problem (a Keras model, its data and its loss) so that studies, runs and workers
    use it like a DeepOBS problem (no L2 regulariser; accuracy reported when ``accuracy``). Call it from a
    plugin file (``--plugin``, a study's ``plugins:``); the problem is checked on one batch when the plugin
    loads (``testproblems.user.validate``)."""
    if not isinstance(name, str) or not name or "__" in name or "/" in name or name.endswith("_nodecay"):
        raise ValueError(
            f"test problem name must be a folder name without '__', '/' or a _nodecay suffix, got {name!r}"
        )
    if name in _REGISTRY:
        raise ValueError(f"test problem {name!r} is already registered; choose another name")
    for what, fn in (("model", model), ("data", data), ("loss", loss)):
        if not callable(fn):
            raise ValueError(f"test problem {name!r}: {what} must be callable, got {fn!r}")
    for what, value in (("batch_size", batch_size), ("num_epochs", num_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"test problem {name!r}: {what} must be an integer >= 1, got {value!r}")
    module = sys.modules.get(getattr(model, "__module__", ""), None)
    source = str(getattr(module, "__file__", None) or getattr(model, "__module__", "user code"))
    entry = ProblemSpec(
        name,
        "user",
        batch_size,
        num_epochs,
        0.0,
        bool(accuracy),
        name,
        0,
        "",
        "user",
        False,
        False,
        UserProblem(model, data, loss, source),
    )
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a user's test problem (plugin rollback, tests); the DeepOBS problems stay."""
    if name in BUILTIN:
        raise ValueError(f"test problem {name!r} is built in")
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """All registered problem names: the 8 DeepOBS problems, the 3 ``_nodecay`` variants, then users' own."""
    return list(_REGISTRY)


def spec(name: str) -> ProblemSpec:
    """The ProblemSpec of ``name``; unknown names raise ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown test problem {name!r}; known: {', '.join(_REGISTRY)}") from None


#: training examples (after DeepOBS' validation split) of each dataset's full data; tolstoi counts characters
#: and batches sequences, so it has no bound here (its reader checks the prepared data)
TRAIN_EXAMPLES = {
    "quadratic": 1000,
    "mnist": 50_000,
    "fmnist": 50_000,
    "cifar10": 40_000,
    "cifar100": 40_000,
    "svhn": 73_257 - 26_032,
}


def max_batch_size(name: str) -> int | None:
    """The largest batch size ``name`` can train with (its training set), None when it has no static bound."""
    return TRAIN_EXAMPLES.get(spec(name).dataset)


def supports_l2(name: str) -> bool:
    """Whether the problem's network has L2-regularised kernels (the _nodecay variants do, with f=0)."""
    return spec(name).has_l2
