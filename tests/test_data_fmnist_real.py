"""The real Fashion-MNIST files (Debian's dataset-fashion-mnist, installed by .ci/run): prepare-data
--source accepts them, the splits have DeepOBS' sizes (data.md §7.1) and the decoded images and labels
equal the raw IDX bytes."""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testproblems.data import download, load_dataset, prepare

ROOT = Path(__file__).resolve().parents[1]

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST absent ({DEBIAN}); apt-get install dataset-fashion-mnist",
)


def _raw(name):
    with gzip.open(DEBIAN / name) as f:
        data = f.read()
    offset = 16 if "images" in name else 8
    return np.frombuffer(data, np.uint8, offset=offset)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    rc = prepare.run(parser.parse_args(["--data-dir", str(d), "--only", "fmnist", "--source", str(DEBIAN), "--quiet"]))
    assert rc == 0
    return d


def test_debian_files_pass_the_checksums():
    # Debian recompressed the .gz files (the archive MD5s differ) but the IDX payload is the official one
    for remote in prepare.SPECS["fmnist"].files:
        assert download.verify(DEBIAN / remote.name, remote) == "decompressed md5 ok"


def test_real_splits_and_bytes(data_dir):
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (data_dir / "fmnist" / name).read_bytes() == (DEBIAN / name).read_bytes()
    ds = load_dataset("fmnist", data_dir, batch_size=128, seed=42)
    assert ds.sizes == {"train": 50000, "valid": 10000, "train_eval": 10000, "test": 10000}
    assert {p: ds.num_batches(p) for p in ("train", "train_eval", "valid", "test")} == {
        "train": 390,
        "train_eval": 78,
        "valid": 78,
        "test": 78,
    }
    images = _raw("train-images-idx3-ubyte.gz").reshape(60000, 28, 28)
    labels = _raw("train-labels-idx1-ubyte.gz")
    test_images = _raw("t10k-images-idx3-ubyte.gz").reshape(10000, 28, 28)
    test_labels = _raw("t10k-labels-idx1-ubyte.gz")

    def collect(phase, epoch=0):
        xs, ys = zip(*ds.batches(phase, epoch))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = collect("valid")  # the first 9,984 training images, in file order (10,000 minus the remainder)
    assert x.shape == (9984, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], images[:9984].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), images[:9984])
    np.testing.assert_array_equal(y.argmax(1), labels[:9984])
    assert (y.sum(1) == 1).all()
    x, y = collect("test")
    np.testing.assert_array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), test_images[:9984])
    np.testing.assert_array_equal(y.argmax(1), test_labels[:9984])
    # train: 49,920 distinct images of the last 50,000, shuffled, each with its own label
    x, y = collect("train", epoch=3)
    raw_train = {img.tobytes(): lab for img, lab in zip(images[10000:], labels[10000:])}
    got = np.rint(x[..., 0] * 255).astype(np.uint8)
    keys = [g.tobytes() for g in got]
    assert all(k in raw_train for k in keys)
    assert [raw_train[k] for k in keys] == list(y.argmax(1))
    valid_keys = {img.tobytes() for img in images[:10000]}
    assert not valid_keys & set(keys)
    assert len(set(keys)) >= 49000  # Fashion-MNIST has a few duplicate images
    # deepobs: every epoch replays the same order (TF1 iterator re-init), train_eval = its first 78 batches
    te, _ = collect("train_eval", epoch=3)
    assert te.shape == (9984, 28, 28, 1)
    np.testing.assert_array_equal(te, x[:9984])
    np.testing.assert_array_equal(collect("train", epoch=0)[0], x)


def test_vae_batch_counts(data_dir):
    ds = load_dataset("fmnist", data_dir, batch_size=64, seed=0)  # fmnist_vae (data.md §7.3)
    assert {p: ds.num_batches(p) for p in ("train", "train_eval", "valid", "test")} == {
        "train": 781,
        "train_eval": 156,
        "valid": 156,
        "test": 156,
    }


@pytest.mark.skipif(
    not (ROOT / "testproblems" / "__main__.py").is_file(),
    reason="testproblems/__main__.py (the CLI, models part) not there yet",
)
def test_cli_prepare_data_from_debian_source(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "testproblems",
        "prepare-data",
        "--data-dir",
        str(tmp_path),
        "--only",
        "fmnist",
        "--source",
        str(DEBIAN),
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert "fmnist: prepared in" in r.stdout
    assert load_dataset("fmnist", tmp_path, batch_size=128, seed=0).sizes["train"] == 50000
    r = subprocess.run(cmd[:-5] + ["--only", "imagenet"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
