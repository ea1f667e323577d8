"""A user's own test problem as a plugin: a small MLP classifying three Gaussian blobs in 2-D.

`--plugin examples/plugins/tiny_problem.py` (or a study's `plugins:`) registers `blobs_mlp`; a study then
names it under `problems:` like a DeepOBS problem, and every worker (local pool, Ray) imports this file too.
The three pieces: `model()` a fresh Keras model (Keras is seeded before the call), `data()` the train / valid
/ test arrays, `loss(y_true, y_pred)` one loss per example. Checked on one batch when the plugin loads.
"""

import keras
import numpy as np

import testproblems

CENTRES = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], dtype="float32")


def model():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def data():
    rng = np.random.default_rng(0)  # fixed data; the run's seed shuffles the batches and initialises the model

    def split(n):
        y = rng.integers(0, 3, n)
        return (CENTRES[y] + rng.normal(0.0, 1.0, (n, 2))).astype("float32"), y.astype("int32")

    return {"train": split(512), "valid": split(128), "test": split(128)}


def loss(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


testproblems.register("blobs_mlp", model=model, data=data, loss=loss, batch_size=32, num_epochs=3, accuracy=True)
