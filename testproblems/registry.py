"""Registry of the DeepOBS test problems: static metadata only (no TensorFlow/Keras import).

Values follow DeepOBS' ``DEFAULT_TEST_PROBLEMS_SETTINGS`` and the paper's result files
(spec: testproblems.md §10). ``l2`` is the default L2 factor f of DeepOBS' ``l2_regularizer(f)``,
i.e. the loss gains f * sum(w**2) / 2 per regularised kernel; 0.0 means no regulariser.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def is_nodecay(self) -> bool:
        return self.name.endswith("_nodecay")


def _spec(name, dataset, batch_size, num_epochs, l2, has_accuracy, trainable_params, network, loss, *,
          has_l2=False, stateful=False, base_name=None):
    return ProblemSpec(name, dataset, batch_size, num_epochs, float(l2), has_accuracy, base_name or name,
                       trainable_params, network, loss, has_l2, stateful)


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


def names() -> list[str]:
    """All registered problem names: the 8 DeepOBS problems, then the 3 ``_nodecay`` variants."""
    return list(_REGISTRY)


def spec(name: str) -> ProblemSpec:
    """The ProblemSpec of ``name``; unknown names raise ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown test problem {name!r}; known: {', '.join(_REGISTRY)}") from None


#: training examples (after DeepOBS' validation split) of each dataset's full data; tolstoi counts characters
#: and batches sequences, so it has no bound here (its reader checks the prepared data)
TRAIN_EXAMPLES = {"quadratic": 1000, "mnist": 50_000, "fmnist": 50_000, "cifar10": 40_000, "cifar100": 40_000,
                  "svhn": 73_257 - 26_032}


def max_batch_size(name: str) -> int | None:
    """The largest batch size ``name`` can train with (its training set), None when it has no static bound."""
    return TRAIN_EXAMPLES.get(spec(name).dataset)


def supports_l2(name: str) -> bool:
    """Whether the problem's network has L2-regularised kernels (the _nodecay variants do, with f=0)."""
    return spec(name).has_l2
