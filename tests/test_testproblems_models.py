"""The Keras ports against DeepOBS: parameter counts, initialisers, L2 semantics, losses, LSTM cell, phases.

Reference numbers come from DeepOBS' own unit tests (parameter counts), testproblems.md (Hessian checks,
taken from DeepOBS' generator) and the paper's released result files (the cifar10_3c3d L2 term at init).
"""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

import testproblems  # noqa: E402
from testproblems import models  # noqa: E402

# DeepOBS 1.1.2 tests/testproblems/test_<problem>.py
DEEPOBS_PARAMS = {
    "quadratic_deep": 100,
    "mnist_vae": 10_151_489,
    "fmnist_vae": 10_151_489,
    "fmnist_2c2d": 3_274_634,
    "cifar10_3c3d": 895_210,
    "cifar100_allcnnc": 1_387_108,
    "svhn_wrn164": 2_748_890,
    "tolstoi_char_rnn": 284_499,
    "cifar10_3c3d_nodecay": 895_210,
    "cifar100_allcnnc_nodecay": 1_387_108,
    "svhn_wrn164_nodecay": 2_748_890,
}


def _count(model):
    return sum(math.prod(v.shape) for v in model.trainable_weights)


def _kernels(model):
    return [v for v in model.trainable_weights if v.path.endswith("kernel")]


@pytest.mark.parametrize("name", list(DEEPOBS_PARAMS))
def test_trainable_parameter_count_equals_deepobs(name):
    model = testproblems.get(name).build_model()
    assert _count(model) == DEEPOBS_PARAMS[name] == testproblems.spec(name).trainable_params


def test_svhn_wrn164_structure_and_bn_settings():
    # testproblems.md §7 (DeepOBS' per-variable test list): 44 trainable variables; stem 432, final BN 512,
    # dense 2,570, the three groups 121,248 + 525,184 + 2,098,944; BN momentum 0.9, epsilon 1e-5; no conv bias
    model = testproblems.get("svhn_wrn164").build_model()
    assert len(model.trainable_weights) == 44
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    dense = [la for la in model.layers if isinstance(la, keras.layers.Dense)]
    assert len(bns) == 13 and all(b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)
    assert len(convs) == 16 and all(not c.use_bias for c in convs)
    assert _count(convs[0]) == 432 and _count(bns[-1]) == 512 and _count(dense[0]) == 2_570
    groups = _count(model) - 432 - 512 - 2_570
    assert groups == 121_248 + 525_184 + 2_098_944
    assert sorted({c.kernel.shape[-1] for c in convs}) == [16, 64, 128, 256]
    assert sorted(c.strides for c in convs).count((2, 2)) == 4  # shortcut + first conv of groups 2 and 3


def test_quadratic_hessian_matches_deepobs_checks():
    q = models.quadratic_hessian()
    assert q.shape == (100, 100)
    np.testing.assert_allclose([q[0, 0], q[0, 1], q[99, 99]], [6.221429, 1.127020, 6.305664], atol=5e-6)
    assert np.trace(q) == pytest.approx(477.6123, abs=1e-4)
    assert q.sum() == pytest.approx(535.0587, abs=1e-4)
    eig = np.linalg.eigvalsh(q)
    assert eig.min() == pytest.approx(0.00552, abs=1e-5) and eig.max() == pytest.approx(53.129, abs=1e-3)


def test_quadratic_model_starts_at_ones_and_loss_is_the_quadratic_form():
    p = testproblems.get("quadratic_deep")
    model = p.build_model()
    np.testing.assert_array_equal(model.trainable_weights[0].numpy(), np.ones((1, 100), np.float32))
    x = np.random.default_rng(0).normal(0, 0.6, (5, 100)).astype(np.float32)
    got = keras.ops.convert_to_numpy(p.loss()(x, model(x)))
    q = models.quadratic_hessian()
    d = 1.0 - x.astype(np.float64)
    np.testing.assert_allclose(got, 0.5 * np.einsum("bi,ij,bj->b", d, q, d), rtol=1e-5)


def _truncated_std_ok(w, std, n_sigma=2.0):
    w = np.asarray(w, np.float64).ravel()
    assert np.abs(w).max() <= n_sigma * std * 1.0001
    # std of a normal truncated at +-2 sigma is 0.8796 sigma
    assert w.std() == pytest.approx(0.87962566 * std, rel=0.05)


def test_fmnist_2c2d_init_truncated_normal_005_and_bias_005():
    model = testproblems.get("fmnist_2c2d").build_model()
    for v in model.trainable_weights:
        if v.path.endswith("kernel"):
            _truncated_std_ok(v.numpy(), 0.05)
        else:
            np.testing.assert_array_equal(v.numpy(), np.full(v.shape, 0.05, np.float32))


def _fans(shape):
    rf = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * rf, shape[-1] * rf


def test_cifar10_3c3d_init_conv_glorot_normal_dense_glorot_uniform():
    model = testproblems.get("cifar10_3c3d").build_model()
    ks = _kernels(model)
    assert len(ks) == 6
    for k in ks:
        fi, fo = _fans(k.shape)
        w = k.numpy()
        if len(k.shape) == 4:  # truncated Glorot normal: stddev sqrt(2/(fi+fo))/0.8796 before truncation
            _truncated_std_ok(w, math.sqrt(2.0 / (fi + fo)) / 0.87962566)
        else:
            limit = math.sqrt(6.0 / (fi + fo))
            assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    for v in model.trainable_weights:
        if v.path.endswith("bias"):
            assert not np.any(v.numpy())


def test_cifar10_3c3d_l2_term_at_init_matches_the_paper():
    """Paper files, seed 42, epoch 0: test loss 3.58886 with L2 (removed_l2 study, weight_decay 0.002) and
    2.32750 without (cifar10_3c3d_nodecay), same init -> the L2 term f*sum(w^2)/2 was 1.2614 at init."""
    p = testproblems.get("cifar10_3c3d")
    model = p.build_model()
    manual = 0.002 * sum(float(np.sum(np.square(k.numpy(), dtype=np.float64))) for k in _kernels(model)) / 2
    assert manual == pytest.approx(3.58886 - 2.32750, rel=0.01)
    keras_terms = sum(float(keras.ops.convert_to_numpy(x)) for x in model.losses)
    assert keras_terms == pytest.approx(manual, rel=1e-5)
    assert len(model.losses) == 6  # kernels only, no biases
    assert testproblems.get("cifar10_3c3d_nodecay").build_model().losses == []


def test_l2_factor_override_scales_the_regulariser():
    m1 = testproblems.get("svhn_wrn164", l2=5e-4).build_model()
    m2 = testproblems.get("svhn_wrn164", l2=1e-3).build_model()
    s1 = sum(float(keras.ops.convert_to_numpy(x)) for x in m1.losses)
    s2 = sum(float(keras.ops.convert_to_numpy(x)) for x in m2.losses)
    assert len(m1.losses) == 17  # 16 convs (incl. 3 shortcuts) + dense kernel
    assert s2 == pytest.approx(2 * s1, rel=1e-5)
    manual = 5e-4 * sum(float(np.sum(np.square(k.numpy(), dtype=np.float64))) for k in _kernels(m1)) / 2
    assert s1 == pytest.approx(manual, rel=1e-5)


def test_allcnnc_init_and_structure():
    model = testproblems.get("cifar100_allcnnc").build_model()
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert len(convs) == 9 and len(model.losses) == 9
    assert all(c.activation.__name__ == "relu" for c in convs)  # the last conv too: logits >= 0
    for c in convs:
        np.testing.assert_array_equal(c.bias.numpy(), np.full(c.bias.shape, 0.1, np.float32))
    drops = [la.rate for la in model.layers if isinstance(la, keras.layers.Dropout)]
    assert drops == [0.2, 0.5, 0.5]
    assert model.output_shape == (None, 100)


def test_tolstoi_init_limits():
    model = testproblems.get("tolstoi_char_rnn").build_model()
    w = {v.path: v.numpy() for v in model.trainable_weights}
    emb = next(v for k, v in w.items() if "embedding" in k)
    assert np.abs(emb).max() <= math.sqrt(6 / (83 + 128)) and np.abs(emb).max() > 0.95 * math.sqrt(6 / 211)
    lstm_lim = math.sqrt(6 / (256 + 512))
    for k, v in w.items():
        if "lstm" in k and "kernel" in k:
            assert np.abs(v).max() <= lstm_lim and np.abs(v).max() > 0.95 * lstm_lim
        if "lstm" in k and "bias" in k:  # TF1's run-time forget bias 1.0 as initial value, zero elsewhere
            np.testing.assert_array_equal(v, np.r_[np.zeros(128), np.ones(128), np.zeros(256)].astype(np.float32))
    dense_b = next(v for k, v in w.items() if "dense" in k and "bias" in k)
    assert np.abs(dense_b).max() <= math.sqrt(6 / 166) and np.any(dense_b)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tf1_lstm(xs, kernel, bias, h, c):
    """TF1 LSTMCell (forget bias 1.0 at run time, gates i, j, f, o) over time; returns outputs, h, c."""
    out = []
    for t in range(xs.shape[1]):
        z = np.concatenate([xs[:, t], h], axis=1) @ kernel + bias
        i, j, f, o = np.split(z, 4, axis=1)
        c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(j)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), h, c


def _keras_to_tf1(kernel, recurrent, bias):
    """Keras LSTM weights (gates i, f, c, o; forget bias in the variable) -> TF1 LSTMCell (i, j, f, o)."""
    w = np.concatenate([kernel, recurrent], axis=0)
    i, f, c, o = np.split(w, 4, axis=1)
    bi, bf, bc, bo = np.split(bias, 4)
    return np.concatenate([i, c, f, o], axis=1), np.concatenate([bi, bc, bf - 1.0, bo])


def test_char_rnn_equals_tf1_lstm_cells_and_carries_state():
    """The Keras network equals DeepOBS' TF1 graph (embedding, 2 x LSTMCell with run-time forget bias 1,
    softmax layer) in inference mode, and the state carries over from one batch to the next until reset."""
    model = models.build_char_rnn(models._Seeds(3), 0.0, 2, seq_len=6)
    rng = np.random.default_rng(1)
    # perturb biases so the forget-gate mapping is exercised
    for v in model.trainable_weights:
        if "lstm" in v.path and "bias" in v.path:
            v.assign(v.numpy() + rng.normal(0, 0.3, v.shape).astype(np.float32))
    ids = [rng.integers(0, 83, (2, 6)).astype(np.int32) for _ in range(2)]
    w = {v.path: v.numpy().astype(np.float64) for v in model.trainable_weights}
    emb = next(v for k, v in w.items() if "embedding" in k)
    lstms = sorted({k.rsplit("/", 2)[0] for k in w if "lstm" in k})
    cells = []
    for name in lstms:
        get = {k.rsplit("/", 1)[1]: v for k, v in w.items() if k.startswith(name + "/")}
        cells.append(_keras_to_tf1(get["kernel"], get["recurrent_kernel"], get["bias"]))
    dk = next(v for k, v in w.items() if "dense" in k and k.endswith("kernel"))
    db = next(v for k, v in w.items() if "dense" in k and k.endswith("bias"))
    state = [(np.zeros((2, 128)), np.zeros((2, 128))) for _ in cells]
    for x in ids:
        h = emb[x]
        for n, (k, b) in enumerate(cells):
            h, hs, cs = _tf1_lstm(h, k, b, *state[n])
            state[n] = (hs, cs)
        want = h @ dk + db
        got = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(got, want, atol=2e-5)
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
    fresh = keras.ops.convert_to_numpy(model(ids[1], training=False))
    carried = keras.ops.convert_to_numpy(model(ids[1], training=False))
    assert not np.allclose(fresh, carried)  # second call continued from the first call's state


def test_vae_loss_is_squared_error_plus_kl():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 28, 28, 1)).astype(np.float32)
    img = rng.uniform(0, 1, (3, 784)).astype(np.float32)
    mean = rng.normal(0, 1, (3, 8)).astype(np.float32)
    log_std = rng.normal(0, 0.5, (3, 8)).astype(np.float32)
    got = keras.ops.convert_to_numpy(models.vae_loss()(x, np.concatenate([img, mean, log_std], axis=1)))
    recon = ((img - x.reshape(3, 784)) ** 2).sum(1)
    kl = -0.5 * (1 + 2 * log_std - mean**2 - np.exp(2 * log_std)).sum(1)
    np.testing.assert_allclose(got, recon + kl, rtol=1e-5)


def test_vae_architecture_shapes():
    model = testproblems.get("mnist_vae").build_model()
    shapes = [tuple(v.shape) for v in model.trainable_weights if v.path.endswith("kernel")]
    assert shapes == [
        (4, 4, 1, 64),
        (4, 4, 64, 64),
        (4, 4, 64, 64),
        (3136, 8),
        (3136, 8),
        (8, 24),
        (24, 49),
        (4, 4, 64, 1),
        (4, 4, 64, 64),
        (4, 4, 64, 64),
        (12544, 784),
    ]
    assert model.output_shape == (None, 800)
    assert [la.rate for la in model.layers if isinstance(la, keras.layers.Dropout)] == [0.2] * 5


def test_classification_loss_and_accuracy_one_hot_and_sparse():
    logits = np.array([[2.0, 1.0, 0.1], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 1])
    one_hot = np.eye(3, dtype=np.float32)[labels]
    want = -np.log(np.exp(logits[[0, 1], labels]) / np.exp(logits).sum(1))
    for y in (labels, one_hot):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(models.softmax_cross_entropy(y, logits)), want, rtol=1e-5)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(models.accuracy(y, logits)), [1.0, 0.0])


def test_phases_dropout_and_noise():
    """Dropout only in training; the VAE's reparameterisation noise in every phase (as DeepOBS)."""
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    m = testproblems.get("cifar100_allcnnc").build_model()
    a, b = (keras.ops.convert_to_numpy(m(x, training=False)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    t1, t2 = (keras.ops.convert_to_numpy(m(x, training=True)) for _ in range(2))
    assert not np.allclose(t1, t2) and not np.allclose(t1, a)
    vae = testproblems.get("fmnist_vae").build_model()
    img = np.random.default_rng(1).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    e1, e2 = (keras.ops.convert_to_numpy(vae(img, training=False)) for _ in range(2))
    assert not np.allclose(e1[:, :784], e2[:, :784])  # noise is sampled in evaluation too
    np.testing.assert_array_equal(e1[:, 784:], e2[:, 784:])  # mean and log-std are deterministic


def test_batch_norm_uses_moving_statistics_in_inference_only():
    m = testproblems.get("svhn_wrn164", batch_size=4).build_model()
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 32, 32, 3)).astype(np.float32)
    bn = next(la for la in m.layers if isinstance(la, keras.layers.BatchNormalization))
    before = bn.moving_mean.numpy().copy()
    m(x, training=False)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    a = keras.ops.convert_to_numpy(m(x[:2], training=True))
    b = keras.ops.convert_to_numpy(m(x[:2], training=False))
    assert not np.allclose(a, b)


def test_model_is_deterministic_in_seed():
    a = testproblems.get("cifar10_3c3d", seed=5).build_model()
    b = testproblems.get("cifar10_3c3d", seed=5).build_model()
    c = testproblems.get("cifar10_3c3d", seed=6).build_model()
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert not all(np.array_equal(va.numpy(), vc.numpy()) for va, vc in zip(a.weights, c.weights))
    # distinct layers get distinct seeds (an int-seeded initialiser reused would repeat values)
    k = _kernels(a)
    assert not np.array_equal(k[3].numpy()[:256, :256], k[4].numpy()[:256, :256])


def _assert_behaves_like(ours, ref, shape, seed=0):
    """``ours`` (a models.* kernel-call variant) equals Keras' ``ref`` given the same weights: weight names,
    outputs, and under TensorFlow the gradients with respect to input and weights."""
    rng = np.random.default_rng(seed)
    ours.build(shape)
    ref.build(shape)
    ref.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in ref.weights])
    ours.set_weights(ref.get_weights())
    assert isinstance(ours, type(ref))  # the optimizers' kernel mask and the layer checks see Keras' class
    assert [w.path.split("/")[-1] for w in ours.weights] == [w.path.split("/")[-1] for w in ref.weights]
    x = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), rtol=1e-5, atol=1e-5
    )
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        grads = []
        for layer in (ours, ref):
            xt = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = tf.reduce_sum(tf.square(layer(xt)))
            grads.append([g.numpy() for g in tape.gradient(loss, [xt, *layer.trainable_weights])])
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(7, 13), (3, 4, 13)])
def test_batched_matmul_dense_equals_keras_dense(shape):
    # models.Dense runs 2-D inputs through BatchMatMul under TensorFlow (a faster CPU gradient)
    _assert_behaves_like(models.Dense(5, activation="relu"), keras.layers.Dense(5, activation="relu"), shape)


@pytest.mark.parametrize("channels,strides", [(1, 1), (1, 2), (3, 1)])
def test_one_channel_conv_as_depthwise_equals_keras_conv2d(channels, strides):
    # models.Conv2D runs one-input-channel convolutions as depthwise ones under TensorFlow (faster on CPU)
    kw = dict(filters=4, kernel_size=3, strides=strides, padding="same", activation="relu")
    _assert_behaves_like(models.Conv2D(**kw), keras.layers.Conv2D(**kw), (2, 9, 9, channels), seed=1)
