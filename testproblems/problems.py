"""One object per test problem (AlgoPerf style): data, model, loss, metrics, trainer, all read from the
problem's row in ``registry`` (dataset, network builder, loss kind, L2 set, stateful flag).

This module does not import Keras at import time; ``build_model`` / ``trainer`` import it lazily, so
``testproblems.get(name)`` and the metadata stay cheap.
"""

from __future__ import annotations

import math
import numbers
import os
import random
import sys
import warnings
from typing import Any

import numpy as np

from deepobs_tree.seeds import TUNING_SEED

from .data import load_dataset
from .registry import FIDELITIES, ProblemSpec, default_data_dir, spec
from .trainer import Trainer
from .user import dataset


def _integer(value, what: str, minimum: int) -> int:
    """``value`` as a Python int >= minimum (NumPy integers accepted), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{what} must be {kind} integer, got {value!r}")
    return int(value)


class Problem:
    """A DeepOBS test problem bound to a batch size, L2 factor, seed, data directory and data fidelity.

    ``fidelity='deepobs'`` reproduces DeepOBS 1.2's data quirks (CIFAR-10/SVHN validation drawn from the
    training files, CIFAR-100 one-byte offset); ``'corrected'`` uses a held-out split and the right bytes.
    """

    def __init__(
        self, name: str, *, data_dir=None, batch_size=None, l2=None, seed: int = TUNING_SEED, fidelity: str = "deepobs"
    ):
        self.spec: ProblemSpec = spec(name)
        self.name = self.spec.name
        if fidelity not in FIDELITIES:
            raise ValueError(f"unknown fidelity {fidelity!r} for {name}; use one of: {', '.join(FIDELITIES)}")
        if batch_size is None:
            batch_size = self.spec.batch_size
        batch_size = _integer(batch_size, "batch_size", 1)
        seed = _integer(seed, "seed", 0)
        if l2 is None:
            l2 = self.spec.l2
        try:
            l2 = float(l2)
        except (TypeError, ValueError):
            raise ValueError(f"l2 must be a non-negative number, got {l2!r}") from None
        if not math.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a finite non-negative number, got {l2!r}")
        if l2 and not self.spec.has_l2:
            # DeepOBS ignores weight_decay for problems without a regulariser, with a warning.
            warnings.warn(f"{name} has no L2 regulariser; l2={l2} is ignored (as in DeepOBS)", stacklevel=2)
            l2 = 0.0
        self.batch_size = batch_size
        self.l2 = l2
        self.seed = seed
        self.fidelity = fidelity
        self.data_dir = str(data_dir if data_dir is not None else default_data_dir())
        self._dataset = None

    def __repr__(self):
        return (
            f"Problem({self.name!r}, batch_size={self.batch_size}, l2={self.l2}, seed={self.seed}, "
            f"fidelity={self.fidelity!r})"
        )

    @property
    def num_epochs(self) -> int:
        """DeepOBS' default number of epochs (the paper used the same)."""
        return self.spec.num_epochs

    # -- data ---------------------------------------------------------------------------------------------
    def dataset(self):
        """The data set (``testproblems.data.load_dataset``), loaded on first use and cached."""
        if self._dataset is None and self.spec.user is not None:
            self._dataset = dataset(self.spec, self.batch_size, self.seed, self.fidelity)
        if self._dataset is None:
            self._dataset = load_dataset(
                self.spec.dataset, self.data_dir, batch_size=self.batch_size, seed=self.seed, fidelity=self.fidelity
            )
        return self._dataset

    # -- model, loss, metrics -----------------------------------------------------------------------------
    def build_model(self):
        """A fresh keras.Model, initialised deterministically from the seed; needs no data files."""

        from . import models  # models imports Keras

        set_random_seed(self.seed)  # Keras' own call under TensorFlow (below)
        if self.spec.user is not None:
            return self.spec.user.model()
        builder = getattr(models, self.spec.network)
        return builder(models._Seeds(self.seed), self.l2, self.batch_size, name=self.name)

    def loss(self):
        """Keras loss function returning per-example losses (Keras averages them over the batch)."""
        from . import models  # models imports Keras

        kind = self.spec.loss
        if self.spec.user is not None:
            return self.spec.user.loss
        if kind == "quadratic":
            return models.quadratic_loss(models.quadratic_hessian())
        if kind == "vae":
            return models.vae_loss()
        return models.softmax_cross_entropy

    def metrics(self) -> list:
        from . import models  # models imports Keras

        return [models.accuracy] if self.spec.has_accuracy else []

    def targets(self, x, y):
        """What the loss compares the model output with: the image for the VAE, the labels otherwise."""
        kind = self.spec.loss
        if kind == "vae":
            return x
        if kind == "quadratic":
            return x  # unused by the quadratic loss; any array with a batch dimension does
        return y

    def trainer(self, model, optimizer, *, jit_compile="auto"):
        """A Trainer running this problem's epochs and evaluations for ``model`` with ``optimizer``."""

        return Trainer(self, model, optimizer, jit_compile=jit_compile)

    def provenance(self) -> dict[str, Any]:
        """What a result needs to be reproduced: problem options, Keras backend and versions, data."""
        import keras  # Keras only for the backend and version of a finished run

        prov = {
            "testproblem": self.name,
            "dataset": self.spec.dataset,
            "fidelity": self.fidelity,
            "l2": self.l2,
            "l2_semantics": "l2 * sum(w**2) / 2 over kernels (DeepOBS l2_regularizer)",
            "seed": self.seed,
            "batch_size": self.batch_size,
            "keras_backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "data_dir": None if self.spec.dataset in ("quadratic", "user") else os.path.abspath(self.data_dir),
        }
        if self._dataset is not None and hasattr(self._dataset, "provenance"):
            try:
                prov["data"] = self._dataset.provenance()
            except Exception as exc:  # provenance must never break a finished run
                prov["data"] = f"unavailable: {exc}"
        return prov


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, without TensorFlow's seed when Keras runs on another backend and TF is
    not loaded: that call imports TensorFlow (seconds, in every population worker) to seed nothing a jax or
    torch model uses. Under TensorFlow it is Keras' own call."""
    import keras  # Keras only when a model is built: importing testproblems stays light

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    from keras.src.backend.common import global_state  # Keras internals (as keras.utils.set_random_seed)
    from keras.src.random import seed_generator  # (the global seed generator it resets)

    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch  # only under the torch backend

        torch.manual_seed(seed)


def get(
    name: str, *, data_dir=None, batch_size=None, l2=None, seed: int = TUNING_SEED, fidelity: str = "deepobs"
) -> Problem:
    """The Problem ``name`` with optional overrides (unknown name -> ValueError listing the known ones)."""
    return Problem(name, data_dir=data_dir, batch_size=batch_size, l2=l2, seed=seed, fidelity=fidelity)
