"""Our NumPy data pipelines against DeepOBS 1.1.2's own TF1 dataset classes (issue 17 §4).

DeepOBS' ``deepobs/tensorflow/datasets/*.py`` run unchanged (under the shim of ``deepobs_side.py``, in a
``TF_USE_LEGACY_KERAS=1`` subprocess, the session's one worker) on the synthetic files in DeepOBS' formats that the
suite writes
(``testproblems.data.synthetic.write_prepared``). Compared: decoded and per-image standardised test images
and labels (CIFAR-100's one-byte-early read included: 1.1.2 has the same ``label_offset=1`` quirk), batch
counts, split sizes and the distributions of the random training augmentations.

DeepOBS 1.2 (the version the paper ran, which our ``fidelity='deepobs'`` follows) changed one thing here
against the installed 1.1.2: 1.2 takes a validation split of the test set's size from the front of the
training files, 1.1.2 trains on all of them and has no ``valid`` phase. So the test phase is compared
exactly, and for train the union of our train + valid records is compared with 1.1.2's train set (sizes
and batch counts); 1.2's split itself is covered by tests/test_data_readers.py and test_data_fmnist_real.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from testproblems.data import load_dataset
from testproblems.data.synthetic import write_prepared

HERE = Path(__file__).resolve().parent
if "deepobs_oracle_port_side" not in sys.modules:  # one module (and one DeepOBS worker) for both test files
    _spec = importlib.util.spec_from_file_location("deepobs_oracle_port_side", HERE / "port_side.py")
    sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])
ps = sys.modules["deepobs_oracle_port_side"]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None,
    reason="tf-keras (requirements.lock) not installed: the DeepOBS oracle needs it",
)
BATCH = 20
SIZES = {
    "fmnist": (600, 100),
    "cifar10": (1000, 100),
    "cifar100": (600, 100),
    "svhn": (1000, 100),
    "tolstoi": (20000, 4000),
}
_CACHE: dict = {}


def deepobs_batches(dataset, data_dir, phases, tmp_path, **kwargs) -> dict:
    meta = {
        "dataset": dataset,
        "data_dir": str(data_dir),
        "batch_size": BATCH,
        "seed": 42,
        "phases": phases,
        "kwargs": kwargs,
    }
    src, dst = tmp_path / f"{dataset}.json", tmp_path / f"{dataset}.npz"
    src.write_text(json.dumps(meta))
    ps.worker().run("data", src, dst)  # the session's TF_USE_LEGACY_KERAS=1 worker (port_side.DeepOBSWorker)
    with np.load(dst) as f:
        return dict(f)


def _case(name, tmp_path_factory):
    if name not in _CACHE:
        tmp = tmp_path_factory.mktemp(f"data_{name}")
        n_train, n_test = SIZES[name]
        write_prepared(name, tmp, n_train=n_train, n_test=n_test, seed=3)
        theirs = deepobs_batches(name, tmp, ["test", "train"], tmp)
        ours = load_dataset(name, tmp, batch_size=BATCH, seed=42, fidelity="deepobs")
        _CACHE[name] = (theirs, ours, n_train, n_test)
    return _CACHE[name]


def _collect(ds, phase, epoch=0):
    xs, ys = zip(*ds.batches(phase, epoch))
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("name", list(SIZES))
def test_test_phase_equals_deepobs(name, tmp_path_factory):
    theirs, ours, n_train, n_test = _case(name, tmp_path_factory)
    x, y = _collect(ours, "test")
    assert int(theirs["test_batches"]) == ours.num_batches("test")
    tx, ty = theirs["test_x"], theirs["test_y"]
    if name == "fmnist":
        tx = tx.reshape(x.shape)
    assert x.shape == tx.shape and y.shape == ty.shape, (x.shape, tx.shape, y.shape, ty.shape)
    # decoded images (and per-image standardisation for CIFAR/SVHN), labels: float32 round-off
    np.testing.assert_allclose(x, tx, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(y, ty)


@pytest.mark.parametrize("name", list(SIZES))
def test_split_sizes_and_batch_counts(name, tmp_path_factory):
    theirs, ours, n_train, n_test = _case(name, tmp_path_factory)
    if name == "tolstoi":
        # sequences of 50 ids and their shifted targets, cut into batch-many contiguous streams
        per = BATCH * 50
        assert int(theirs["train_batches"]) == (n_train - 1) // per
        assert ours.num_batches("train") + ours.num_batches("valid") <= (n_train - 1) // per
        return
    # 1.1.2 trains on every training record; 1.2 (ours) holds out the first n_test as validation
    assert int(theirs["train_batches"]) == n_train // BATCH
    assert ours.sizes["train"] + ours.sizes["valid"] == n_train
    assert ours.sizes["valid"] == n_test and ours.num_batches("train") == (n_train - n_test) // BATCH
    # the training pass draws every record once (no duplicates): compare label multisets, within 1.2's split
    tx, _ = theirs["train_x"], theirs["train_y"]
    assert tx.shape[0] == (n_train // BATCH) * BATCH


def _features(x):
    """Per augmented, standardised image: share of pixels at the padding value (crop offsets), mean spread
    across channels relative to the image's std (saturation), left-right asymmetry of that padding (flips
    move the padding to the other side, crops pad either side)."""
    flat = x.reshape(len(x), -1, x.shape[-1])
    lo = flat.min(axis=(1, 2), keepdims=True)
    pad = np.isclose(x, lo.reshape(-1, 1, 1, 1), atol=1e-6).all(axis=-1)  # (N, H, W)
    pad_share = pad.mean(axis=(1, 2))
    chan_spread = (flat.max(axis=2) - flat.min(axis=2)).mean(axis=1)
    cols = pad.mean(axis=1)  # (N, W)
    left_right = cols[:, :16].sum(axis=1) - cols[:, 16:].sum(axis=1)
    return {
        "padding share (crop offsets)": pad_share,
        "channel spread (saturation)": chan_spread,
        "left-right padding (crop x offset)": left_right,
        "pixel values": x.ravel()[::37],
    }


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_augmentation_distributions_match_deepobs(name, tmp_path_factory):
    theirs, ours, n_train, n_test = _case(name, tmp_path_factory)
    x, _ = _collect(ours, "train", epoch=0)
    tx = theirs["train_x"]
    assert x.shape[1:] == tx.shape[1:] == (32, 32, 3)
    # every image standardised: mean 0, std max(std, 1/sqrt(n)) -> 1 here
    for a in (x, tx):
        np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(a.std(axis=(1, 2, 3)), 1, atol=1e-3)
    ours_f, theirs_f = _features(x), _features(tx)
    for key in ours_f:
        p = stats.ks_2samp(ours_f[key], theirs_f[key]).pvalue
        assert p > 1e-3, (
            f"{name} {key}: KS p = {p:.2e} (ours mean {ours_f[key].mean():.4f}, DeepOBS {theirs_f[key].mean():.4f})"
        )
