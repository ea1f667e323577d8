"""A user's own test problem (``testproblems.register``): its data as a ``UserDataset`` and the check that
it trains, run once when its plugin loads.

``validate`` loads the data, builds the model and evaluates the loss on one training batch: a data dict
without train/valid/test (x, y) arrays of matching lengths, a model that fails on the data's shapes, or a
loss that does not give one finite value per example raises ``UserProblemError``, one line naming the file.
"""

from __future__ import annotations

import numpy as np

from deepobs_tree.errors import NlwuError

from .data.datasets import UserDataset
from .registry import ProblemSpec

SPLITS = ("train", "valid", "test")


class UserProblemError(NlwuError, ValueError):
    """A broken user test problem; one line naming the problem and the file that registered it."""


def _fail(entry: ProblemSpec, what: str) -> UserProblemError:
    return UserProblemError(f"test problem {entry.name} ({entry.user.source}): {what}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def arrays(entry: ProblemSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The problem's ``data()`` as checked NumPy arrays per split."""
    try:
        data = entry.user.data()
    except Exception as exc:  # noqa: BLE001 - user code
        raise _fail(entry, f"data() raised {_one_line(exc)}") from None
    if not isinstance(data, dict) or set(data) != set(SPLITS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise _fail(entry, f"data() must return a dict with keys {list(SPLITS)} of (x, y) arrays, got {got}")
    out = {}
    for split in SPLITS:
        pair = data[split]
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise _fail(entry, f"data()[{split!r}] must be a pair (x, y) of arrays")
        x, y = (np.asarray(a) for a in pair)
        if x.ndim < 1 or y.ndim < 1 or len(x) != len(y) or not len(x):
            raise _fail(
                entry,
                f"data()[{split!r}]: x and y must hold the same number (>= 1) of examples, "
                f"got shapes {x.shape} and {y.shape}",
            )
        out[split] = (x, y)
    return out


def dataset(entry: ProblemSpec, batch_size: int, seed: int, fidelity: str) -> UserDataset:
    return UserDataset(entry.name, arrays(entry), batch_size, seed, fidelity, source=entry.user.source)


def validate(problem) -> None:
    """Build ``problem`` (a ``testproblems.Problem`` of a user's problem), run its model and loss on one
    training batch; UserProblemError if anything is off."""
    import keras  # Keras only when a user problem is checked: importing testproblems stays light

    entry = problem.spec
    data = problem.dataset()
    if data.num_batches("train") < 1:
        raise _fail(
            entry, f"batch_size {problem.batch_size} is larger than the training set ({data.sizes['train']} examples)"
        )
    x, y = next(iter(data.batches("train")))
    try:
        model = problem.build_model()
    except Exception as exc:  # noqa: BLE001 - user code
        raise _fail(entry, f"model() raised {_one_line(exc)}") from None
    if not isinstance(model, keras.Model):
        raise _fail(entry, f"model() must return a keras.Model, got {type(model).__name__}")
    try:
        out = model(x, training=False)
    except Exception as exc:  # noqa: BLE001 - user model
        raise _fail(entry, f"the model does not take a batch of x of shape {x.shape}: {_one_line(exc)}") from None
    try:
        losses = keras.ops.convert_to_numpy(entry.user.loss(keras.ops.convert_to_tensor(y), out))
    except Exception as exc:  # noqa: BLE001 - user loss
        raise _fail(
            entry, f"loss(y, model(x)) raised {_one_line(exc)} (y {y.shape}, model output {tuple(out.shape)})"
        ) from None
    if losses.shape != (len(x),):
        raise _fail(entry, f"loss must give one value per example (shape ({len(x)},)), got shape {losses.shape}")
    if not np.all(np.isfinite(losses)):
        raise _fail(entry, "loss gives non-finite values on the first training batch")
