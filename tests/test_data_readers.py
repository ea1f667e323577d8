"""testproblems.data: readers, splits, batching, augmentation on/off, determinism and fidelity, on small
synthetic files in the exact DeepOBS on-disk formats (data.md §2-§8)."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from testproblems.data import DataError, augment, clear_cache, load_dataset, synthetic

PHASES = ("train", "train_eval", "valid", "test")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(("mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")):
        synthetic.write_prepared(name, d, seed=seed)
    return d


def _std(x):
    """Reference per-image standardisation (population std, floor 1/sqrt(n)), float64."""
    x = x.reshape(len(x), -1).astype(np.float64)
    m = x.mean(1, keepdims=True)
    s = np.maximum(x.std(1, keepdims=True), 1 / np.sqrt(x.shape[1]))
    return (x - m) / s


def _records(path, record_bytes):
    return np.fromfile(path, np.uint8).reshape(-1, record_bytes)


def _rows(a):
    return {r.tobytes() for r in np.ascontiguousarray(a).reshape(len(a), -1)}


def test_no_tensorflow_or_keras_imported():
    import subprocess

    code = (
        "import sys, testproblems.data, testproblems.data.prepare, testproblems.data.synthetic; "
        "bad=[m for m in ('tensorflow','keras','jax','torch') if m in sys.modules]; print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_quadratic_exact_deepobs_arrays():
    ds = load_dataset("quadratic", None, batch_size=128, seed=42)
    assert ds.sizes == {"train": 1000, "valid": 1000, "train_eval": 1000, "test": 1000}
    assert {p: ds.num_batches(p) for p in PHASES} == dict.fromkeys(PHASES, 7)
    for phase, s, first in (
        ("valid", 44, [-0.4503688, 0.7898144, 0.7476840]),
        ("test", 43, [0.1544400, -0.5450889, -0.2271019]),
    ):
        xs = [x for x, y in ds.batches(phase)]
        ref = np.float32(np.random.RandomState(s).normal(0.0, 0.6, (1000, 100)))
        np.testing.assert_array_equal(np.concatenate(xs), ref[:896])
        np.testing.assert_allclose(xs[0][0, :3], first, atol=1e-6)
        assert xs[0].dtype == np.float32 and xs[0].shape == (128, 100)
    train_ref = np.float32(np.random.RandomState(42).normal(0.0, 0.6, (1000, 100)))
    np.testing.assert_allclose(train_ref[0, :3], [0.2980285, -0.0829586, 0.3886131], atol=1e-6)
    for phase in ("train", "train_eval"):
        batches = list(ds.batches(phase, epoch=0))
        x = np.concatenate([b[0] for b in batches])
        assert all(b[1] is b[0] for b in batches)  # target = x (the model compares theta with x)
        assert len(x) == 896 and _rows(x) <= _rows(train_ref)  # a shuffled selection of the seed-42 draw
        assert len(_rows(x)) == 896
        assert not np.array_equal(x, train_ref[:896])
    # deterministic in (seed, epoch); 'deepobs' replays one order per seed (TF1 iterator re-init),
    # 'corrected' reshuffles every epoch; both differ across seeds
    a = np.concatenate([x for x, _ in ds.batches("train", 3)])
    np.testing.assert_array_equal(a, np.concatenate([x for x, _ in ds.batches("train", 4)]))
    other = load_dataset("quadratic", None, batch_size=128, seed=43)
    assert not np.array_equal(a, np.concatenate([x for x, _ in other.batches("train", 3)]))
    corr = load_dataset("quadratic", None, batch_size=128, seed=42, fidelity="corrected")
    c = np.concatenate([x for x, _ in corr.batches("train", 3)])
    np.testing.assert_array_equal(c, np.concatenate([x for x, _ in corr.batches("train", 3)]))
    assert not np.array_equal(c, np.concatenate([x for x, _ in corr.batches("train", 4)]))


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
def test_idx_splits_and_decoding(data_dir, name):
    ds = load_dataset(name, data_dir, batch_size=32, seed=1)
    with gzip.open(data_dir / name / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(data_dir / name / "train-labels-idx1-ubyte.gz") as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(data_dir / name / "t10k-images-idx3-ubyte.gz") as f:
        traw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    # valid size = test size (DeepOBS' train_eval_size = 10,000 = test size on the real files)
    assert ds.sizes == {"train": 500, "valid": 100, "train_eval": 100, "test": 100}
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 15, "train_eval": 3, "valid": 3, "test": 3}
    valid = list(ds.batches("valid"))
    x = np.concatenate([b[0] for b in valid])
    assert x.dtype == np.float32 and x.shape == (96, 28, 28, 1)
    np.testing.assert_array_equal(x[..., 0], raw[:96].astype(np.float32) / np.float32(255))
    y = np.concatenate([b[1] for b in valid])
    assert y.dtype == np.int32 and y.shape == (96, 10)
    np.testing.assert_array_equal(y.argmax(1), lab[:96])
    np.testing.assert_array_equal(np.concatenate([b[0] for b in ds.batches("test")])[..., 0] * 255, traw[:96])
    train = np.concatenate([b[0] for b in ds.batches("train", 0)])[..., 0]
    got = _rows(np.rint(train * 255).astype(np.uint8))
    assert len(got) == 480 and got <= _rows(raw[100:]) and not got & _rows(raw[:100])


def test_cifar10_deepobs_validation_is_a_redrawn_training_file(data_dir, monkeypatch):
    # identify images exactly: no augmentation, no standardisation (both tested elsewhere)
    monkeypatch.setattr(augment, "apply", lambda x, p: x)
    monkeypatch.setattr(augment, "per_image_standardization", lambda x: x)
    files = [_records(data_dir / "cifar-10" / f"data_batch_{i}.bin", 3073) for i in range(1, 6)]
    file_rows = [_rows(f[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32)) for f in files]
    ds = load_dataset("cifar10", data_dir, batch_size=20, seed=3)
    assert ds.sizes == {"train": 240, "valid": 60, "train_eval": 60, "test": 60}
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 12, "train_eval": 3, "valid": 3, "test": 3}
    valid_files, left_out_files = set(), set()
    for epoch in range(8):
        v = _rows(np.concatenate([b[0] for b in ds.batches("valid", epoch)]))
        (k,) = [i for i, r in enumerate(file_rows) if v <= r]  # one whole training file
        assert v == file_rows[k]
        valid_files.add(k)
        t = _rows(np.concatenate([b[0] for b in ds.batches("train", epoch)]))
        left_out = [i for i, r in enumerate(file_rows) if not (t & r)]
        assert len(left_out) == 1  # train = the 4 other files of this epoch's draw
        left_out_files.add(left_out[0])
    assert len(valid_files) > 1 and len(left_out_files) > 1  # redrawn across passes: the leak

    corrected = load_dataset("cifar10", data_dir, batch_size=20, seed=3, fidelity="corrected")
    for epoch in range(4):
        v = _rows(np.concatenate([b[0] for b in corrected.batches("valid", epoch)]))
        assert v == file_rows[0]  # held out: data_batch_1, always
        t = _rows(np.concatenate([b[0] for b in corrected.batches("train", epoch)]))
        assert not t & file_rows[0] and len(t) == 240
        te = _rows(np.concatenate([b[0] for b in corrected.batches("train_eval", epoch)]))
        assert not te & file_rows[0]


def test_cifar10_valid_test_values_and_labels(data_dir):
    ds = load_dataset("cifar10", data_dir, batch_size=20, seed=0, fidelity="corrected")
    rec = _records(data_dir / "cifar-10" / "data_batch_1.bin", 3073)
    x, y = next(ds.batches("valid"))
    ref = _std(rec[:20, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)).reshape(20, 32, 32, 3)
    np.testing.assert_allclose(x, ref, atol=2e-6)
    assert x.dtype == np.float32 and y.dtype == np.float32 and y.shape == (20, 10)
    np.testing.assert_array_equal(y.argmax(1), rec[:20, 0])
    trec = _records(data_dir / "cifar-10" / "test_batch.bin", 3073)
    xt, yt = next(ds.batches("test"))
    np.testing.assert_allclose(
        xt, _std(trec[:20, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)).reshape(20, 32, 32, 3), atol=2e-6
    )
    np.testing.assert_array_equal(yt.argmax(1), trec[:20, 0])


@pytest.mark.parametrize("fidelity,start", [("deepobs", 1), ("corrected", 2)])
def test_cifar100_byte_offset(data_dir, fidelity, start):
    rec = _records(data_dir / "cifar-100" / "train.bin", 3074)
    ds = load_dataset("cifar100", data_dir, batch_size=30, seed=0, fidelity=fidelity)
    assert ds.sizes == {"train": 240, "valid": 60, "train_eval": 60, "test": 60}
    x, y = next(ds.batches("valid"))
    pix = rec[:30, start : start + 3072].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(x, _std(pix).reshape(x.shape), atol=2e-6)
    np.testing.assert_array_equal(y.argmax(1), rec[:30, 1])  # the fine label, read correctly either way
    assert y.shape == (30, 100)
    if fidelity == "deepobs":  # the label byte sits in the red channel of the top-left pixel
        np.testing.assert_array_equal(pix[:, 0, 0, 0], rec[:30, 1])
    # valid is fixed (first records) in both fidelities
    np.testing.assert_array_equal(next(ds.batches("valid", 5))[0], x)


def test_svhn_hwc_records_redrawn_validation_and_no_flip(data_dir, monkeypatch):
    folder = data_dir / "svhn"
    files = [_records(folder / f"data_batch_{i}.bin", 3073) for i in range(3)]
    allrec = np.concatenate(files)
    ds = load_dataset("svhn", data_dir, batch_size=20, seed=0, fidelity="corrected")
    # 3 files (64, 64, 40) = 168 records, test 60: valid = the first 60 records (fixed), train 108
    assert ds.sizes == {"train": 108, "valid": 60, "train_eval": 60, "test": 60}
    x, y = next(ds.batches("valid"))
    np.testing.assert_allclose(x, _std(allrec[:20, 1:].reshape(-1, 32, 32, 3)).reshape(x.shape), atol=2e-6)
    np.testing.assert_array_equal(y.argmax(1), allrec[:20, 0])
    seen_flip = []
    real = augment.apply
    monkeypatch.setattr(augment, "apply", lambda x, p: seen_flip.append("flip" in p) or real(x, p))
    deep = load_dataset("svhn", data_dir, batch_size=20, seed=0)
    firsts = set()
    for epoch in range(6):
        v = np.concatenate([b[1] for b in deep.batches("valid", epoch)])
        firsts.add(v.argmax(1).tobytes())
        assert len(v) == 60
    assert len(firsts) > 1  # the validation stream is redrawn from the training files (data.md §7.2)
    list(deep.batches("train", 0))
    assert seen_flip and not any(seen_flip)  # SVHN: no horizontal flip


def test_augmentation_only_in_train_and_train_eval(data_dir, monkeypatch):
    calls = []
    real = augment.apply
    monkeypatch.setattr(augment, "apply", lambda x, p: calls.append(len(x)) or real(x, p))
    for name in ("cifar10", "cifar100", "svhn"):
        ds = load_dataset(name, data_dir, batch_size=20, seed=0)
        for phase in PHASES:
            calls.clear()
            batches = list(ds.batches(phase, 0))
            expected = [20] * ds.num_batches(phase) if phase in ("train", "train_eval") else []
            assert calls == expected, (name, phase)
            for x, _ in batches:  # standardised in every phase
                np.testing.assert_allclose(x.reshape(20, -1).mean(1), 0, atol=1e-4)
                np.testing.assert_allclose(x.reshape(20, -1).std(1), 1, atol=1e-3)


def test_train_eval_is_a_pass_of_the_train_pipeline(data_dir):
    # corrected: an independent pass (own shuffle and augmentation)
    ds = load_dataset("cifar100", data_dir, batch_size=20, seed=0, fidelity="corrected")
    tr = list(ds.batches("train", 0))
    te = list(ds.batches("train_eval", 0))
    assert len(te) == 3 and len(tr) == 12
    assert not np.array_equal(te[0][1], tr[0][1])  # separately shuffled
    np.testing.assert_array_equal(te[1][0], list(ds.batches("train_eval", 0))[1][0])
    # deepobs: the first batches of the replayed train order, augmented with the replayed draws
    deep = load_dataset("cifar100", data_dir, batch_size=20, seed=0)
    tr, te = list(deep.batches("train", 0)), list(deep.batches("train_eval", 4))
    for (xt, yt), (xe, ye) in zip(tr, te):
        np.testing.assert_array_equal(ye, yt)
        assert not np.array_equal(xe, xt)  # each pass deals the draws to nearby images in a new order


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "tolstoi"])
@pytest.mark.parametrize("fidelity", ["deepobs", "corrected"])
def test_deterministic_in_seed_and_epoch(data_dir, name, fidelity):
    bs = 50 if name == "tolstoi" else 20

    def run(seed, epoch, phase="train"):
        ds = load_dataset(name, data_dir, batch_size=bs, seed=seed, fidelity=fidelity)
        return [np.array(x) for x, _ in ds.batches(phase, epoch)]

    a = run(5, 1)
    for u, v in zip(a, run(5, 1)):
        np.testing.assert_array_equal(u, v)
    if name == "tolstoi":  # never shuffled: the same every epoch and seed
        for u, v in zip(a, run(6, 2)):
            np.testing.assert_array_equal(u, v)
    elif name == "mnist" and fidelity == "deepobs":  # nothing random but the replayed shuffle
        for u, v in zip(a, run(5, 2)):
            np.testing.assert_array_equal(u, v)
        assert not np.array_equal(a[0], run(6, 1)[0])
    else:
        assert not np.array_equal(a[0], run(5, 2)[0])
        assert not np.array_equal(a[0], run(6, 1)[0])
    for u, v in zip(run(5, 0, "test"), run(9, 3, "test")):
        np.testing.assert_array_equal(u, v)


def test_tolstoi_batching_rule(data_dir):
    train = np.load(data_dir / "tolstoi" / "train.npy")
    test = np.load(data_dir / "tolstoi" / "test.npy")
    ds = load_dataset("tolstoi", data_dir, batch_size=8, seed=0)
    v = len(test)
    assert ds.sizes == {"train": len(train) - v, "valid": v, "train_eval": v, "test": v}
    b, t = 8, 50
    for phase, arr in (("valid", train[:v]), ("train", train[v:]), ("test", test)):
        nb = (len(arr) - 1) // (b * t)
        assert ds.num_batches(phase) == nb
        batches = list(ds.batches(phase))
        assert len(batches) == nb
        x = np.concatenate([bx for bx, _ in batches], axis=1)
        y = np.concatenate([by for _, by in batches], axis=1)
        assert x.dtype == np.int32 and x.shape == (b, nb * t)
        np.testing.assert_array_equal(x.reshape(-1), arr[: nb * b * t])  # row i continues across batches
        np.testing.assert_array_equal(y.reshape(-1), arr[1 : nb * b * t + 1])
    te = list(ds.batches("train_eval"))
    assert len(te) == min(v // (b * t), ds.num_batches("train"))
    for (a, _), (c, _) in zip(te, ds.batches("train")):
        np.testing.assert_array_equal(a, c)


def test_batch_counts_at_paper_batch_sizes_match_data_md(tmp_path):
    # file sizes of the real sets (tiny content) -> data.md §7.3 batch counts
    synthetic.write_prepared("tolstoi", tmp_path, n_train=2612948, n_test=653237)
    ds = load_dataset("tolstoi", tmp_path, batch_size=50, seed=0)
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 783, "train_eval": 261, "valid": 261, "test": 261}
    # SVHN with all 73,257 training images: 47,225 train / 26,032 valid -> 368 / 203 at batch 128
    folder = tmp_path / "svhn"
    folder.mkdir()
    for fname, n in [(f"data_batch_{k}.bin", 12800) for k in range(5)] + [
        ("data_batch_5.bin", 9257),
        ("test_batch.bin", 26032),
    ]:
        with open(folder / fname, "wb") as f:  # sparse all-zero records: the right sizes, no disk traffic
            f.truncate(n * 3073)
    ds = load_dataset("svhn", tmp_path, batch_size=128, seed=0)
    assert ds.sizes["train"] == 47225
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 368, "train_eval": 203, "valid": 203, "test": 203}
    clear_cache()


def _sparse(path, nbytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # all-zero records of the real size, no disk traffic
        f.truncate(nbytes)


def test_cifar_batch_counts_at_paper_sizes(tmp_path):
    for i in range(1, 6):
        _sparse(tmp_path / "cifar-10" / f"data_batch_{i}.bin", 10000 * 3073)
    _sparse(tmp_path / "cifar-10" / "test_batch.bin", 10000 * 3073)
    _sparse(tmp_path / "cifar-100" / "train.bin", 50000 * 3074)
    _sparse(tmp_path / "cifar-100" / "test.bin", 10000 * 3074)
    ds = load_dataset("cifar10", tmp_path, batch_size=128, seed=0)
    assert ds.sizes == {"train": 40000, "valid": 10000, "train_eval": 10000, "test": 10000}
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 312, "train_eval": 78, "valid": 78, "test": 78}
    assert ds.provenance()["official_counts"] is True
    ds = load_dataset("cifar100", tmp_path, batch_size=256, seed=0)
    assert ds.sizes == {"train": 40000, "valid": 10000, "train_eval": 10000, "test": 10000}
    assert {p: ds.num_batches(p) for p in PHASES} == {"train": 156, "train_eval": 39, "valid": 39, "test": 39}
    clear_cache()


def test_missing_and_corrupt_data_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, batch_size=8, seed=0)
    msg = str(e.value)
    assert "data_batch_1.bin" in msg and "\n" not in msg
    assert f"python -m testproblems prepare-data --data-dir {tmp_path} --only cifar10" in msg
    synthetic.write_prepared("cifar10", tmp_path)
    with open(tmp_path / "cifar-10" / "data_batch_3.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*--only cifar10"):
        load_dataset("cifar10", tmp_path, batch_size=8, seed=0)
    synthetic.write_prepared("mnist", tmp_path)
    p = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + gzip.decompress(p.read_bytes())[4:]))
    with pytest.raises(DataError, match=r"magic.*t10k-labels-idx1-ubyte\.gz.*--only mnist"):
        load_dataset("mnist", tmp_path, batch_size=8, seed=0)
    p.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="unreadable"):
        load_dataset("mnist", tmp_path, batch_size=8, seed=0)
    synthetic.write_prepared("tolstoi", tmp_path)
    np.save(tmp_path / "tolstoi" / "test.npy", np.array([1, 2, 99]))
    with pytest.raises(DataError, match=r"test\.npy.*--only tolstoi"):
        load_dataset("tolstoi", tmp_path, batch_size=8, seed=0)
    assert issubclass(DataError, ValueError)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", None, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="fidelity"):
        load_dataset("quadratic", None, batch_size=8, seed=0, fidelity="exact")
    with pytest.raises(ValueError, match="batch_size"):
        load_dataset("quadratic", None, batch_size=0, seed=0)
    ds = load_dataset("quadratic", None, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="phase"):
        ds.num_batches("eval")
    with pytest.raises(ValueError, match="epoch"):
        next(ds.batches("train", -1))


def test_default_data_dir_env(monkeypatch, tmp_path):
    synthetic.write_prepared("fmnist", tmp_path)
    monkeypatch.setenv("NLWU_DATA_DIR", str(tmp_path))
    ds = load_dataset("fmnist", None, batch_size=10, seed=0)
    assert ds.data_dir == tmp_path and ds.sizes["test"] == 100
    prov = ds.provenance()
    assert prov["fidelity"] == "deepobs" and prov["num_batches"]["train"] == 50


def test_prefetch_stops_when_abandoned_and_passes_errors_on(data_dir, monkeypatch):
    import threading
    import time

    before = set(threading.enumerate())

    def alive():
        return [t for t in threading.enumerate() if t.name == "nlwu-data-prefetch" and t not in before]

    ds = load_dataset("cifar10", data_dir, batch_size=10, seed=0)
    it = ds.batches("train", 0)
    next(it)
    it.close()  # abandoned after one batch
    deadline = time.time() + 5
    while alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not alive()

    def broken(x, p):
        raise RuntimeError("augmentation failed")

    monkeypatch.setattr(augment, "apply", broken)
    with pytest.raises(RuntimeError, match="augmentation failed"):
        list(ds.batches("train", 0))


@pytest.mark.parametrize("cls,name", [("MnistDataset", "mnist"), ("ImageDataset", "cifar10")])
def test_no_training_images_left_after_the_validation_split_is_a_data_error(cls, name, tmp_path, monkeypatch):
    """A train split no larger than the validation split (which takes as many images as the test split) is one
    DataError naming the dataset's folder and the fix, for the idx and the binary readers alike."""
    import types

    from testproblems.data import datasets

    monkeypatch.setattr(datasets, "read_idx_split", lambda *a: (np.zeros((5, 28, 28)), np.zeros(5)))
    files = types.SimpleNamespace(y=np.zeros(4), test_y=np.zeros(4))
    monkeypatch.setattr(datasets, "read_image_dataset", lambda *a: files)
    with pytest.raises(DataError, match=r"too small \(no training images left after the [45]-image validation split"):
        getattr(datasets, cls)(name, tmp_path, 8, 0, "deepobs")
