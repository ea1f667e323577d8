"""Registry of the DeepOBS test problems: static metadata only (no TensorFlow/Keras import).

Values follow DeepOBS' ``DEFAULT_TEST_PROBLEMS_SETTINGS`` and the paper's result files
(spec: testproblems.md §10). ``l2`` is the default L2 factor f of DeepOBS' ``l2_regularizer(f)``,
i.e. the loss gains f * sum(w**2) / 2 per regularised kernel; 0.0 means no regulariser.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = ("quadratic", "mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")


@dataclass(frozen=True)
class ProblemSpec:
    """Static description of one test problem (what the runners and the analysis need)."""

    name: str
    dataset: str
    batch_size: int
    num_epochs: int
    l2: float
    has_accuracy: bool
    base_name: str
    trainable_params: int

    @property
    def is_nodecay(self) -> bool:
        return self.name.endswith("_nodecay")


def _spec(name, dataset, batch_size, num_epochs, l2, has_accuracy, trainable_params, base_name=None):
    return ProblemSpec(name, dataset, batch_size, num_epochs, float(l2), has_accuracy,
                       base_name or name, trainable_params)


_BASE = [
    _spec("quadratic_deep", "quadratic", 128, 100, 0.0, False, 100),
    _spec("mnist_vae", "mnist", 64, 50, 0.0, False, 10_151_489),
    _spec("fmnist_vae", "fmnist", 64, 100, 0.0, False, 10_151_489),
    _spec("fmnist_2c2d", "fmnist", 128, 100, 0.0, True, 3_274_634),
    _spec("cifar10_3c3d", "cifar10", 128, 100, 0.002, True, 895_210),
    _spec("cifar100_allcnnc", "cifar100", 256, 350, 5e-4, True, 1_387_108),
    _spec("svhn_wrn164", "svhn", 128, 160, 5e-4, True, 2_748_890),
    _spec("tolstoi_char_rnn", "tolstoi", 50, 200, 0.0, True, 284_499),
]
_NODECAY_OF = ("cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164")

_REGISTRY: dict[str, ProblemSpec] = {s.name: s for s in _BASE}
for _base in _NODECAY_OF:
    _b = _REGISTRY[_base]
    _REGISTRY[_base + "_nodecay"] = _spec(_base + "_nodecay", _b.dataset, _b.batch_size, _b.num_epochs, 0.0,
                                          _b.has_accuracy, _b.trainable_params, base_name=_base)

# Problems whose DeepOBS loss has an L2 regulariser (the ones a non-zero ``l2`` override applies to).
_HAS_L2 = frozenset(("cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164"))


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
    return spec(name).base_name in _HAS_L2
