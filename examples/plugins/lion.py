"""Example plugin: Keras Lion (not in the paper) as a baseline (``KerasLion``) and with φ (``PowKernelLion``).

Lion steps by sign(β1·m + (1 − β1)·g), so its learning rate wants to be 3-10x smaller than Adam's; φ changes
the gradient's magnitudes before they enter the interpolation and the momentum.
"""

import keras

import optimizers

SEARCH = {
    "learning_rate": {"log_uniform": [1e-6, 1e-2]},
    "power": {"randint": [4, 9], "scale": 0.1},
}
RANGES = {"learning_rate": "(0, inf)", "beta_1": "[0, 1]", "beta_2": "[0, 1)", "power": "(0, inf)"}
DEFAULTS = {"beta_1": 0.9, "beta_2": 0.99}  # Keras' defaults: recorded, constant unless a study searches them


def keras_lion(model, learning_rate, beta_1=0.9, beta_2=0.99):
    """Keras Lion, unchanged."""
    return keras.optimizers.Lion(learning_rate, beta_1=beta_1, beta_2=beta_2)


def pow_kernel_lion(model, learning_rate, power, beta_1=0.9, beta_2=0.99, select=None):
    """Lion fed ĝ = sign(g)·|g|^p on the selected tensors (default: rank >= 2)."""
    return optimizers.nonlinear(
        keras_lion(model, learning_rate, beta_1, beta_2), power=power, select=select or "rank>=2"
    )


optimizers.register(
    "KerasLion",
    keras_lion,
    hyperparams=("learning_rate", "beta_1", "beta_2"),
    defaults=DEFAULTS,
    search={"learning_rate": SEARCH["learning_rate"]},
    ranges={k: v for k, v in RANGES.items() if k != "power"},
    label="Lion",
    baseline=True,
    description="keras.optimizers.Lion",
)
optimizers.register(
    "PowKernelLion",
    pow_kernel_lion,
    hyperparams=("learning_rate", "power", "beta_1", "beta_2"),
    defaults=DEFAULTS,
    options=("select",),
    search=SEARCH,
    ranges=RANGES,
    label="Lion+φ",
    baseline=False,
    twin="KerasLion",
    description="ĝ = sign(g)·|g|^p on selected tensors, then keras.optimizers.Lion",
)
