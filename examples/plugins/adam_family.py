"""Example plugin: Keras Adam as a baseline (``KerasAdam``) and φ in front of it (``PowKernelAdam``).

Load it with ``--plugin examples/plugins/adam_family.py`` (or ``plugins: [...]`` in a study). The names are
the DeepOBS result folders. ``KerasAdam``, not ``AdamOptimizer``: that is the folder of Crowded Valley's
TF1 Adam runs (``beta1``/``beta2``/``epsilon`` hyperparameters), which the analysis reads as a baseline of its
own; a different name keeps the two from mixing in one folder.
"""

import keras

import optimizers

SEARCH = {
    "learning_rate": {"log_uniform": [1e-5, 1e-1]},  # Adam's useful range sits lower than SGD's
    "beta_1": {"uniform": [0.8, 0.999]},
    "power": {"randint": [4, 9], "scale": 0.1},  # the paper's p = 0.1*k, k in {4..9}
}
RANGES = {
    "learning_rate": "(0, inf)",
    "beta_1": "[0, 1)",
    "beta_2": "[0, 1)",
    "epsilon": "(0, inf)",
    "power": "(0, inf)",
}
DEFAULTS = {"beta_2": 0.999, "epsilon": 1e-7}  # Keras' defaults, accepted and not recorded


def keras_adam(model, learning_rate, beta_1, beta_2=0.999, epsilon=1e-7):
    """Keras Adam, unchanged."""
    return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def pow_kernel_adam(model, learning_rate, power, beta_1, beta_2=0.999, epsilon=1e-7, select=None):
    """Adam stepping with ĝ = sign(g)·|g|^p on the selected tensors (default: rank >= 2)."""
    return optimizers.nonlinear(
        keras_adam(model, learning_rate, beta_1, beta_2, epsilon), power=power, select=select or "rank>=2"
    )


optimizers.register(
    "KerasAdam",
    keras_adam,
    hyperparams=("learning_rate", "beta_1"),
    defaults=DEFAULTS,
    search={k: SEARCH[k] for k in ("learning_rate", "beta_1")},
    ranges={k: RANGES[k] for k in ("learning_rate", "beta_1", "beta_2", "epsilon")},
    label="Adam",
    baseline=True,
    description="keras.optimizers.Adam",
)
optimizers.register(
    "PowKernelAdam",
    pow_kernel_adam,
    hyperparams=("learning_rate", "power", "beta_1"),
    defaults=DEFAULTS,
    options=("select",),
    search=SEARCH,
    ranges=RANGES,
    label="Adam+φ",
    baseline=False,
    twin="KerasAdam",
    description="ĝ = sign(g)·|g|^p on selected tensors, then keras.optimizers.Adam",
)
