"""DeepOBS test problems ported to Keras 3 (tensorflow, jax and torch backends).

Metadata (``names``, ``spec``) imports without TensorFlow/Keras; ``get(name)`` returns a Problem whose
``build_model`` / ``trainer`` import Keras lazily. Data: ``testproblems.data.load_dataset``. A user's own
problem (a Keras model, its data and loss) joins with ``register`` from a plugin file (``testproblems.user``).
"""

from .problems import Problem, get
from .registry import (
    DATASETS,
    FIDELITIES,
    ProblemSpec,
    default_data_dir,
    max_batch_size,
    names,
    register,
    spec,
    supports_l2,
    unregister,
)

__all__ = [
    "DATASETS",
    "FIDELITIES",
    "Problem",
    "ProblemSpec",
    "default_data_dir",
    "get",
    "max_batch_size",
    "names",
    "register",
    "spec",
    "supports_l2",
    "unregister",
]
