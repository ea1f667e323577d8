"""DeepOBS 1.2 beta data sets in NumPy: splits and batching (data.md §2-§8) on the readers of ``readers.py``.

`load_dataset(name, data_dir, batch_size=..., seed=..., fidelity=...)` returns a `Dataset` whose
`batches(phase, epoch)` yields NumPy (x, y) batches. Everything random (file order, shuffle,
augmentation) is drawn from generators keyed by (seed, epoch, phase) or, for what DeepOBS' TF1 graph
replays at every iterator init, by the seed alone (see `Dataset.batches`), so a run is reproducible;
decoded files are cached per process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import augment as aug
from ._common import DATASETS, FIDELITIES, FOLDERS, PHASES, DataError, data_error, default_data_dir
from .readers import (
    OFFICIAL_COUNTS,
    QUADRATIC,
    TOLSTOI_SEQ_LEN,
    TOLSTOI_VOCAB,
    clear_cache,
    quadratic_arrays,
    read_idx_split,
    read_image_dataset,
    read_tolstoi,
)

_PHASE_CODE = {"train": 1, "train_eval": 2, "valid": 3, "test": 4}
_REPLAY_CODE = 5  # generator of the draws DeepOBS replays at every init (keyed by the seed only)
#: Window (positions) within which TF's 8-thread parallel map deals the replayed augmentation draws to
#: examples in a new order each pass; measured under tf.compat.v1 (README: median shift 3, 95% <= 9).
AUG_SCRAMBLE_WINDOW = 10.0


# --------------------------------------------------------------------------------------------- datasets
def prefetch(iterator: Iterator, depth: int = 3, name: str = "nlwu-data-prefetch") -> Iterator:
    """Yield the items of ``iterator`` (same order) while a background thread computes the next ``depth``.

    NumPy releases the GIL, so augmentation overlaps with the (compiled) training step. Exceptions in the
    producer are re-raised in the consumer; abandoning the generator stops the thread and closes ``iterator``.
    """

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer
            put((done, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _one_hot(labels: np.ndarray, k: int, dtype) -> np.ndarray:
    return np.eye(k, dtype=dtype)[labels]


class Dataset:
    """One data set at one batch size, seed and fidelity; serves NumPy batches per phase.

    Phases (testproblems.md §0.3): 'train' (shuffled, augmented), 'train_eval' (the first
    `num_batches('train_eval')` batches of a pass of the train pipeline), 'valid' and 'test'
    (in order, not augmented). All batches are full (drop remainder).

    fidelity 'deepobs' replays what DeepOBS' TF1 graph replays at every iterator init (verified under
    tf.compat.v1, README): the `Dataset.shuffle` order is the same permutation every epoch (it depends
    on the seed only) and train_eval is its first batches; the augmentation draws are the same sequence
    every pass, dealt to nearby stream positions in a new order per pass (the parallel map's threads).
    CIFAR-10/SVHN still draw a new file order per pass (`tf.random_shuffle` is stateful). 'corrected'
    reshuffles and redraws the augmentation every epoch, and train_eval is an independent pass.
    """

    name: str
    num_classes: int | None = None

    def __init__(self, name, data_dir, batch_size, seed, fidelity):
        if fidelity not in FIDELITIES:
            raise ValueError(f"unknown fidelity {fidelity!r}; choose one of {', '.join(FIDELITIES)}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.name = name
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.fidelity = fidelity

    # -- interface
    @property
    def sizes(self) -> dict[str, int]:
        raise NotImplementedError

    def num_batches(self, phase: str) -> int:
        raise NotImplementedError

    def batches(self, phase: str, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def epoch_invariant(self, phase: str) -> bool:
        """True only when ``batches(phase, epoch)`` serves the same batches at every epoch, so a caller may
        prepare them once (population training keeps them on the device). The default is the safe False."""
        self._check_phase(phase)
        return False

    def provenance(self) -> dict:
        """What was read and how (recorded next to results)."""
        return {
            "dataset": self.name,
            "data_dir": str(self.data_dir),
            "fidelity": self.fidelity,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "sizes": self.sizes,
            "num_batches": {p: self.num_batches(p) for p in PHASES},
        }

    # -- helpers
    def _check_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")

    def _rng(self, phase: str, epoch: int) -> np.random.Generator:
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        return np.random.default_rng([self.seed, int(epoch), _PHASE_CODE[phase]])

    def _replay_rng(self) -> np.random.Generator:
        """Generator of the draws DeepOBS' graph replays at every init (shuffle order, augmentation)."""
        return np.random.default_rng([self.seed, 0, _REPLAY_CODE])

    def _train_pass(self, n: int, count: int, rng: np.random.Generator, augment_flip: bool | None):
        """Positions (into the n-record train stream) of the first `count` examples of one pass of the
        train pipeline, and their augmentation parameters (None without augmentation).

        The augmentation is drawn per stream position, before the shuffle, as DeepOBS maps before it
        shuffles. 'deepobs': order and draws from the seed-only generator, the draws locally rearranged
        per pass (`rng`); 'corrected': both fresh from `rng`, the (seed, epoch, phase) generator.
        """
        if self.fidelity == "deepobs":
            fixed = self._replay_rng()
            pos = fixed.permutation(n)[:count]
            params = None
            if augment_flip is not None:
                params = aug.scramble(aug.draw(fixed, n, flip=augment_flip), rng, AUG_SCRAMBLE_WINDOW)
        else:
            pos = rng.permutation(n)[:count]
            params = aug.draw(rng, n, flip=augment_flip) if augment_flip is not None else None
        if params is not None:
            params = {k: v[pos] for k, v in params.items()}
        return pos, params

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, data_dir={str(self.data_dir)!r}, "
            f"batch_size={self.batch_size}, seed={self.seed}, fidelity={self.fidelity!r})"
        )


class _ArrayDataset(Dataset):
    """Data held as per-example arrays: x (N, ...) and labels (N,), with index-based splits."""

    augment_flip: bool | None = None  # None: no augmentation; else augment (with / without flip)

    def _check_split(self, n_images: int) -> None:
        """DataError unless ``n_images`` leave training images after the ``self._v``-image validation split."""
        if self._v >= n_images:
            raise data_error(
                self.name,
                self.data_dir,
                self.data_dir / FOLDERS[self.name],
                f"too small (no training images left after the {self._v}-image validation split)",
            )

    def _train_valid_indices(self, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _examples(self, phase: str):  # -> (x, labels) arrays indexed by the split indices
        raise NotImplementedError

    def num_batches(self, phase: str) -> int:
        self._check_phase(phase)
        b = self.batch_size
        s = self.sizes
        n_train = s["train"] // b
        if phase == "train":
            return n_train
        if phase == "train_eval":
            return min(s["train_eval"] // b, n_train)
        return s[phase] // b

    def _finish(self, x: np.ndarray, labels: np.ndarray, params: dict | None):
        raise NotImplementedError

    def batches(self, phase: str, epoch: int = 0):
        self._check_phase(phase)
        nb = self.num_batches(phase)
        b = self.batch_size
        params = None
        if phase == "test":
            x, labels = self._examples("test")
            order = np.arange(nb * b)
        else:
            rng = self._rng(phase, epoch)
            x, labels = self._examples("train")
            train_idx, valid_idx = self._train_valid_indices(rng)
            if phase == "valid":
                order = valid_idx[: nb * b]
            else:
                pos, params = self._train_pass(len(train_idx), nb * b, rng, self.augment_flip)
                order = train_idx[pos]
        it = self._iterate(x, labels, order, nb, params)
        return prefetch(it) if params is not None else it

    def _iterate(self, x, labels, order, nb, params):
        b = self.batch_size
        for k in range(nb):
            sl = slice(k * b, (k + 1) * b)
            idx = order[sl]
            p = None if params is None else {key: v[sl] for key, v in params.items()}
            yield self._finish(x[idx], labels[idx] if labels is not None else None, p)


class QuadraticDataset(_ArrayDataset):
    """DeepOBS `quadratic` (data.md §6). Batches are (x, x): the model compares its parameter with x."""

    def __init__(self, data_dir, batch_size, seed, fidelity):
        super().__init__("quadratic", data_dir, batch_size, seed, fidelity)
        self._arrays = quadratic_arrays()

    @property
    def sizes(self):
        n = QUADRATIC["size"]
        return {"train": n, "valid": n, "train_eval": n, "test": n}

    def batches(self, phase: str, epoch: int = 0):
        for xb in self._split_batches(self._arrays, phase, epoch):
            yield xb, xb

    def epoch_invariant(self, phase: str) -> bool:
        """valid and test are served in order; train and train_eval follow the train pass, whose order under
        'deepobs' comes from the seed-only replay generator (DeepOBS replays it every epoch), under
        'corrected' from the (seed, epoch) generator; no augmentation."""
        self._check_phase(phase)
        return phase in ("valid", "test") or self.fidelity == "deepobs"

    def _split_batches(self, arrays: dict, phase: str, epoch: int) -> Iterator:
        """Full batches of ``arrays[split]`` (rows of one array, or of an (x, y) pair alike): train and
        train_eval passes of the train split in the train pipeline's order, valid and test in order."""
        self._check_phase(phase)
        nb, b = self.num_batches(phase), self.batch_size
        if phase in ("train", "train_eval"):
            data = arrays["train"]
            n = len(data[0]) if isinstance(data, tuple) else len(data)
            order, _ = self._train_pass(n, nb * b, self._rng(phase, epoch), None)
        else:
            data, order = arrays[phase], slice(0, nb * b)
        data = tuple(a[order] for a in data) if isinstance(data, tuple) else data[order]
        for k in range(nb):
            sl = slice(k * b, (k + 1) * b)
            yield tuple(a[sl] for a in data) if isinstance(data, tuple) else data[sl]


class UserDataset(QuadraticDataset):
    """A user's own problem's arrays (``testproblems.register``): ``{"train"|"valid"|"test": (x, y)}``; batches
    as the quadratic problem serves them (train shuffled per the fidelity, train_eval as large as test)."""

    def __init__(self, name, arrays, batch_size, seed, fidelity, source=""):
        _ArrayDataset.__init__(self, name, None, batch_size, seed, fidelity)
        self._arrays = arrays
        self.source = source

    @property
    def sizes(self):
        n = {split: len(self._arrays[split][0]) for split in ("train", "valid", "test")}
        return {**n, "train_eval": min(n["train"], n["test"])}

    def batches(self, phase: str, epoch: int = 0):
        return self._split_batches(self._arrays, phase, epoch)

    def provenance(self):
        return {**super().provenance(), "data_dir": None, "source": self.source}


class MnistDataset(_ArrayDataset):
    """MNIST / Fashion-MNIST (data.md §2, §7.1): valid = first V training images (V = test size, 10,000),
    train = the rest; x float32 (B, 28, 28, 1) in [0, 1]; y one-hot int32 (B, 10). No augmentation."""

    num_classes = 10

    def __init__(self, name, data_dir, batch_size, seed, fidelity):
        super().__init__(name, data_dir, batch_size, seed, fidelity)
        self._train = read_idx_split(name, self.data_dir, "train")
        self._test = read_idx_split(name, self.data_dir, "t10k")
        self._v = len(self._test[0])
        self._check_split(len(self._train[0]))

    @property
    def sizes(self):
        n, v = len(self._train[0]), self._v
        return {"train": n - v, "valid": v, "train_eval": v, "test": len(self._test[0])}

    def _train_valid_indices(self, rng):
        n = len(self._train[0])
        return np.arange(self._v, n), np.arange(self._v)

    def _examples(self, phase):
        return self._train if phase == "train" else self._test

    def _finish(self, x, labels, params):
        return (x.astype(np.float32) / np.float32(255.0))[..., None], _one_hot(labels, 10, np.int32)

    def provenance(self):
        p = super().provenance()
        p["official_counts"] = (len(self._train[0]), len(self._test[0])) == OFFICIAL_COUNTS[self.name]
        return p


class ImageDataset(_ArrayDataset):
    """CIFAR-10, CIFAR-100, SVHN (data.md §3, §4, §7, §8): x float32 (B, 32, 32, 3) per-image standardised
    (augmented in train / train_eval), y one-hot float32.

    Validation size V = size of the test set (DeepOBS' `train_eval_size`: 10,000 / 10,000 / 26,032).
    CIFAR-10 and SVHN with fidelity 'deepobs': every train / train_eval / valid pass draws a new random
    order of the training files and takes valid = the first V records of that stream, train = the rest
    (data.md §7.2, the validation leak). Otherwise (CIFAR-100 always; 'corrected'): valid = the first V
    records in file order, fixed, and train = the rest.
    """

    def __init__(self, name, data_dir, batch_size, seed, fidelity):
        super().__init__(name, data_dir, batch_size, seed, fidelity)
        self.num_classes = 100 if name == "cifar100" else 10
        self.augment_flip = name != "svhn"
        self._files = read_image_dataset(name, self.data_dir, fidelity)
        self._v = len(self._files.test_y)
        self._redraw = name in ("cifar10", "svhn") and fidelity == "deepobs"
        self._check_split(len(self._files.y))

    @property
    def sizes(self):
        n, v = len(self._files.y), self._v
        return {"train": n - v, "valid": v, "train_eval": v, "test": len(self._files.test_y)}

    def _train_valid_indices(self, rng):
        n = len(self._files.y)
        if self._redraw and rng is not None:
            off = self._files.offsets
            perm = rng.permutation(len(off) - 1)
            stream = np.concatenate([np.arange(off[i], off[i + 1]) for i in perm])
        else:
            stream = np.arange(n)
        return stream[self._v :], stream[: self._v]

    def _examples(self, phase):
        f = self._files
        return (f.x, f.y) if phase == "train" else (f.test_x, f.test_y)

    def _finish(self, x, labels, params):
        x = x.astype(np.float32)
        if params is not None:
            x = aug.apply(x, params)
        return aug.per_image_standardization(x), _one_hot(labels, self.num_classes, np.float32)

    def provenance(self):
        p = super().provenance()
        p["files"] = list(self._files.files)
        p["official_counts"] = (len(self._files.y), len(self._files.test_y)) == OFFICIAL_COUNTS[self.name]
        p["validation"] = "redrawn training file(s) per pass (DeepOBS leak)" if self._redraw else "held out"
        if self.name == "cifar100":
            p["cifar100_image_offset"] = 1 if self.fidelity == "deepobs" else 2
        return p


class TolstoiDataset(Dataset):
    """War and Peace character ids (data.md §5, §7.1): valid = first V ids of train.npy (V = test size,
    653,237), train = the rest; batches (x, y) int32 (B, 50), y = x shifted by one character, served in
    order (row i of batch k+1 continues row i of batch k); train_eval = the first V // (B*50) train
    batches. `sizes` count ids."""

    num_classes = TOLSTOI_VOCAB

    def __init__(self, data_dir, batch_size, seed, fidelity):
        super().__init__("tolstoi", data_dir, batch_size, seed, fidelity)
        train, self._test = read_tolstoi(self.data_dir)
        self._v = len(self._test)
        self._valid, self._train = train[: self._v], train[self._v :]

    @property
    def sizes(self):
        return {"train": len(self._train), "valid": self._v, "train_eval": self._v, "test": len(self._test)}

    def _nb(self, a) -> int:
        return (len(a) - 1) // (self.batch_size * TOLSTOI_SEQ_LEN)

    def num_batches(self, phase):
        self._check_phase(phase)
        if phase == "train_eval":
            return min(self._v // (self.batch_size * TOLSTOI_SEQ_LEN), self._nb(self._train))
        return self._nb({"train": self._train, "valid": self._valid, "test": self._test}[phase])

    def provenance(self):
        p = super().provenance()
        p["official_counts"] = (len(self._valid) + len(self._train), len(self._test)) == OFFICIAL_COUNTS["tolstoi"]
        return p

    def batches(self, phase, epoch=0):
        self._check_phase(phase)
        a = {"train": self._train, "train_eval": self._train, "valid": self._valid, "test": self._test}[phase]
        nb_all, nb = self._nb(a), self.num_batches(phase)
        b, t = self.batch_size, TOLSTOI_SEQ_LEN
        x = a[: nb_all * b * t].reshape(b, -1)
        y = a[1 : nb_all * b * t + 1].reshape(b, -1)
        for k in range(nb):
            yield x[:, k * t : (k + 1) * t], y[:, k * t : (k + 1) * t]


def load_dataset(name: str, data_dir=None, *, batch_size: int, seed: int, fidelity: str = "deepobs") -> Dataset:
    """The data set `name` (a ProblemSpec.dataset) below `data_dir` (default $NLWU_DATA_DIR or ./data).

    Raises DataError (a ValueError) naming the file and the fix command when files are missing or
    corrupt, ValueError for an unknown name / fidelity / bad batch size or seed.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name == "quadratic":
        return QuadraticDataset(data_dir, batch_size, seed, fidelity)
    if name in ("mnist", "fmnist"):
        return MnistDataset(name, data_dir, batch_size, seed, fidelity)
    if name == "tolstoi":
        return TolstoiDataset(data_dir, batch_size, seed, fidelity)
    return ImageDataset(name, data_dir, batch_size, seed, fidelity)


__all__ = ["DataError", "Dataset", "UserDataset", "load_dataset", "clear_cache"]
