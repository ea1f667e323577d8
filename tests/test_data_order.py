"""Training order, train_eval and augmentation draws across epochs, per fidelity.

DeepOBS 1.2 re-runs its reinitialisable iterator's init op every epoch, which rebuilds the graph-seeded
`Dataset.shuffle` and the map function's random ops: the same order and the same sequence of
augmentation draws every epoch, train_eval = the first batches of that order; only the stateful
`tf.random_shuffle` of the CIFAR-10/SVHN file list changes per init. The TensorFlow test below checks
that mechanism under tf.compat.v1; the others check that 'deepobs' reproduces it and 'corrected'
reshuffles every epoch (synthetic files in the DeepOBS formats)."""

from __future__ import annotations

import numpy as np
import pytest

from testproblems.data import augment, load_dataset, synthetic
from testproblems.data.datasets import AUG_SCRAMBLE_WINDOW

B = 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(("mnist", "cifar10", "cifar100", "svhn")):
        synthetic.write_prepared(name, d, seed=seed)
    return d


def _labels(ds, phase, epoch):
    """The pass as label vectors plus a per-batch fingerprint of the examples (x sums)."""
    return [
        (y.argmax(1).tolist(), np.asarray(x).reshape(len(x), -1).sum(1).round(3).tolist())
        for x, y in ds.batches(phase, epoch)
    ]


@pytest.fixture
def raw_images(monkeypatch):
    """Batches carry the raw images (no augmentation, no standardisation); the augmentation parameters
    handed to `augment.apply` are recorded per batch."""
    seen = []
    monkeypatch.setattr(augment, "apply", lambda x, p: seen.append(p) or x)
    monkeypatch.setattr(augment, "per_image_standardization", lambda x: x)
    return seen


def _keys(ds, phase, epoch):
    return [r.tobytes() for x, _ in ds.batches(phase, epoch) for r in np.ascontiguousarray(x).reshape(len(x), -1)]


def test_quadratic_order_replays_under_deepobs_and_reshuffles_under_corrected():
    deep = load_dataset("quadratic", None, batch_size=128, seed=42)
    tr = [np.concatenate([x for x, _ in deep.batches("train", e)]) for e in range(4)]
    for e in (1, 2, 3):
        np.testing.assert_array_equal(tr[e], tr[0])
    for e in (0, 5):  # train_eval = the first 7 batches of the same order, at every epoch
        np.testing.assert_array_equal(np.concatenate([x for x, _ in deep.batches("train_eval", e)]), tr[0])
    other = np.concatenate([x for x, _ in load_dataset("quadratic", None, batch_size=128, seed=43).batches("train", 0)])
    assert not np.array_equal(other, tr[0])
    corr = load_dataset("quadratic", None, batch_size=128, seed=42, fidelity="corrected")
    c = [np.concatenate([x for x, _ in corr.batches(p, e)]) for p, e in (("train", 0), ("train", 1), ("train_eval", 0))]
    assert not np.array_equal(c[0], c[1]) and not np.array_equal(c[0], c[2])


@pytest.mark.parametrize("name", ["mnist", "cifar100"])
def test_shuffled_sets_replay_one_order_under_deepobs(data_dir, name, raw_images):
    deep = load_dataset(name, data_dir, batch_size=B, seed=7)
    order = _keys(deep, "train", 0)
    assert len(set(order)) == len(order) == deep.num_batches("train") * B
    for e in (1, 2):
        assert _keys(deep, "train", e) == order
    te = _keys(deep, "train_eval", 3)
    assert te == order[: len(te)] and len(te) == deep.num_batches("train_eval") * B
    assert _keys(load_dataset(name, data_dir, batch_size=B, seed=8), "train", 0) != order
    corr = load_dataset(name, data_dir, batch_size=B, seed=7, fidelity="corrected")
    c0, c1 = _keys(corr, "train", 0), _keys(corr, "train", 1)
    assert c0 != c1 and set(c0) == set(c1) and len(c0) == len(order)  # (CIFAR-100 bytes differ by fidelity)
    te = _keys(corr, "train_eval", 0)
    assert te != c0[: len(te)]


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_file_order_redrawn_but_shuffle_replayed_under_deepobs(data_dir, name, raw_images):
    """CIFAR-10 / SVHN: each pass streams the files in a new order (stateful tf.random_shuffle), while the
    shuffle permutation of stream positions replays. Stream position of each record: its file's place in
    this pass' order plus its index in the file; valid = the first V positions, train the rest."""
    ds = load_dataset(name, data_dir, batch_size=B, seed=3)
    files = ds._files
    row = {r.tobytes(): i for i, r in enumerate(files.x.astype(np.float32).reshape(len(files.x), -1))}
    sizes = np.diff(files.offsets)
    file_of = np.repeat(np.arange(len(sizes)), sizes)

    def pass_positions(phase, epoch):
        recs = np.array([row[k] for k in _keys(ds, phase, epoch)])
        return recs, recs - files.offsets[file_of[recs]]  # records, index within the file of each

    r0, i0 = pass_positions("train", 0)
    train_sets, same_within = {frozenset(r0.tolist())}, True
    for e in range(1, 8):
        r, i = pass_positions("train", e)
        train_sets.add(frozenset(r.tolist()))
        if name == "cifar10":  # equal-size files: the within-file index sequence is the replayed permutation
            same_within &= np.array_equal(i, i0)
    assert len(train_sets) > 1  # different training records per epoch: the redrawn file order
    if name == "cifar10":
        assert same_within
        corr = load_dataset(name, data_dir, batch_size=B, seed=3, fidelity="corrected")
        c = [np.array([row[k] for k in _keys(corr, "train", e)]) for e in (0, 1)]
        assert not np.array_equal(c[0] - files.offsets[file_of[c[0]]], c[1] - files.offsets[file_of[c[1]]])


def test_augmentation_draws_replay_locally_rearranged_under_deepobs(data_dir, raw_images):
    """deepobs: every pass applies the same draws per op, each within a few stream positions of where it
    was the pass before (TF's 8-thread map); corrected: fresh draws each epoch."""
    deep = load_dataset("cifar100", data_dir, batch_size=B, seed=0)
    n = deep.sizes["train"]
    assert deep.num_batches("train") * B == n  # every stream position is used

    def draws(ds, epoch):
        raw_images.clear()
        keys = _keys(ds, "train", epoch)
        p = {k: np.concatenate([q[k] for q in raw_images]) for k in raw_images[0]}
        return keys, p

    k0, p0 = draws(deep, 0)
    k1, p1 = draws(deep, 1)
    assert k0 == k1 and set(p0) == {"oy", "ox", "flip", "brightness", "saturation", "contrast"}
    # stream position of each example (single file: record index - V)
    row = {r.tobytes(): i for i, r in enumerate(deep._files.x.astype(np.float32).reshape(len(deep._files.x), -1))}
    pos = np.array([row[k] for k in k0]) - deep.sizes["valid"]
    for key in ("brightness", "saturation", "contrast"):
        np.testing.assert_array_equal(np.sort(p0[key]), np.sort(p1[key]))  # the same draws ...
        at0 = np.empty(n)
        at0[pos] = p0[key]
        at1 = np.empty(n)
        at1[pos] = p1[key]
        moved = [abs(int(np.flatnonzero(at0 == v)[0]) - s) for s, v in enumerate(at1)]
        assert max(moved) <= 2 * AUG_SCRAMBLE_WINDOW + 1  # ... dealt to nearby positions
        assert np.mean(np.array(moved) == 0) < 0.5  # ... in a new order
    # crop offsets move together (one tf.random_crop op draws both)
    pairs0 = sorted(zip(p0["oy"].tolist(), p0["ox"].tolist()))
    assert pairs0 == sorted(zip(p1["oy"].tolist(), p1["ox"].tolist()))
    corr = load_dataset("cifar100", data_dir, batch_size=B, seed=0, fidelity="corrected")
    _, c0 = draws(corr, 0)
    _, c1 = draws(corr, 1)
    assert not np.array_equal(np.sort(c0["brightness"]), np.sort(c1["brightness"]))


def test_tf1_reinitialised_iterator_replays_shuffle_and_map_draws():
    """The mechanism, under tf.compat.v1 graph mode with a graph seed (DeepOBS 1.2's runner): re-running
    the init op replays Dataset.shuffle and the map function's random draws; tf.random_shuffle changes."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    import os
    import tempfile

    tmp = tempfile.mkdtemp()
    for k in range(5):
        np.full(3, k, np.uint8).tofile(os.path.join(tmp, f"data_batch_{k + 1}.bin"))
    g = tf1.Graph()
    with g.as_default():
        tf1.set_random_seed(42)

        def noise(i):
            return i, tf1.random_uniform([])

        train = (
            tf.data.Dataset.from_tensor_slices(np.arange(20)).map(noise).shuffle(20000).batch(4, drop_remainder=True)
        )
        train_eval = train.take(2)
        names = tf1.random_shuffle(tf1.matching_files(os.path.join(tmp, "data_batch_*.bin")))
        files = tf.data.FixedLengthRecordDataset(names, record_bytes=1).map(lambda r: tf1.decode_raw(r, tf.uint8)[0])
        it = tf1.data.Iterator.from_structure(tf1.data.get_output_types(train), tf1.data.get_output_shapes(train))
        inits = {"train": it.make_initializer(train), "train_eval": it.make_initializer(train_eval)}
        nxt = it.get_next()
        f_it = tf1.data.make_initializable_iterator(files.batch(3))
        f_next = f_it.get_next()

        def drain(init, out):
            s.run(init)
            res = []
            try:
                while True:
                    res.append(s.run(out))
            except tf.errors.OutOfRangeError:
                return res

        with tf1.Session(graph=g) as s:
            passes = [drain(inits[p], nxt) for p in ("train", "train", "train_eval")]
            file_orders = {tuple(int(b[0]) for b in drain(f_it.initializer, f_next)) for _ in range(4)}
    order = [np.concatenate([b[0] for b in p]).tolist() for p in passes]
    noise_ = [np.concatenate([b[1] for b in p]).tolist() for p in passes]
    assert order[0] == order[1] and order[0] != sorted(order[0])  # shuffled, the same every init
    assert order[2] == order[0][:8]  # train_eval = the first batches of that order
    assert noise_[0] == noise_[1] and noise_[2] == noise_[0][:8]  # map draws replay too
    assert len(file_orders) > 1  # the stateful file shuffle does not


@pytest.mark.parametrize("fidelity", ["deepobs", "corrected"])
def test_epoch_invariant_phases_serve_the_same_batches_at_every_epoch(fidelity, data_dir):
    """``Dataset.epoch_invariant`` (population training prepares such phases once): every phase it names
    serves identical batches at epochs 0, 1 and 9; every phase it does not name under 'corrected' changes;
    the image data sets (augmentation, redraws) claim nothing."""
    from testproblems.data.datasets import PHASES

    ds = load_dataset("quadratic", None, batch_size=128, seed=42, fidelity=fidelity)
    for phase in PHASES:
        passes = [_keys(ds, phase, e) for e in (0, 1, 9)]
        if ds.epoch_invariant(phase):
            assert passes[1] == passes[0] and passes[2] == passes[0], phase
        else:
            assert fidelity == "corrected" and passes[1] != passes[0], phase
    assert ds.epoch_invariant("train") == (fidelity == "deepobs") and ds.epoch_invariant("test")
    for name in ("mnist", "cifar10", "cifar100", "svhn"):
        images = load_dataset(name, data_dir, batch_size=B, seed=1, fidelity=fidelity)
        assert not any(images.epoch_invariant(phase) for phase in PHASES), name
    with pytest.raises(ValueError, match="unknown phase"):
        ds.epoch_invariant("training")
