"""Keras 3 ports of the DeepOBS networks, losses and metrics (spec: testproblems.md).

Only ``keras.layers`` / ``keras.ops`` are used, so every model runs under the tensorflow, jax and
torch backends. TF1 initialisers are reproduced (testproblems.md §0.1); each random initialiser and
random layer gets its own integer seed drawn from one NumPy stream seeded by the problem seed, so a
model is a deterministic function of (problem, seed, backend). L2 follows ``l2_regularizer(f)``:
f * sum(w**2) / 2 per regularised kernel, i.e. Keras ``L2(f / 2)``; f = 0 registers no term.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
from keras import initializers as init
from keras import layers, ops

LRELU_ALPHA = 0.3


class _Seeds:
    """Deterministic stream of integer seeds, one per initialiser / random layer."""

    def __init__(self, seed: int):
        self._rng = np.random.RandomState(seed)

    def __call__(self) -> int:
        return int(self._rng.randint(1, 2**31 - 1))


def _l2(factor: float):
    """DeepOBS ``l2_regularizer(f)`` (f * sum(w^2)/2) as a Keras regulariser; None when f == 0."""
    return keras.regularizers.L2(factor / 2.0) if factor else None


def _glorot_uniform(seeds):
    return init.GlorotUniform(seed=seeds())


def _glorot_normal(seeds):
    # TF 1.15 glorot_normal == truncated normal with stddev sqrt(1/fan_avg)/0.8796; Keras 3's is identical.
    return init.GlorotNormal(seed=seeds())


@keras.saving.register_keras_serializable(package="nlwu")
class Dense(layers.Dense):
    """``keras.layers.Dense`` (same weights, same math: y = act(x @ W + b)) with a faster CPU kernel call.

    Under TensorFlow a 2-D input is multiplied as a batch of one (``BatchMatMulV2``): oneDNN's MatMul is
    slow on the gradient ``dy @ W^T`` (transposed weights, about 2x the forward time for fmnist_2c2d's
    3136x1024 kernel), its BatchMatMul is not; this takes ~5 ms (~8 %) off an fmnist_2c2d training step
    on CPU (``bench/bench_testproblems.py``). Other backends and inputs use the plain Dense call.
    """

    def call(self, inputs, training=None):
        if (
            keras.backend.backend() != "tensorflow"
            or len(inputs.shape) != 2
            or self.quantization_mode
            or self.lora_enabled
        ):
            return super().call(inputs, training=training)
        x = ops.squeeze(ops.matmul(ops.expand_dims(inputs, 0), ops.expand_dims(self.kernel, 0)), 0)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package="nlwu")
class Conv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` (same weights, same products) with a faster CPU call for one input channel.

    Under TensorFlow a convolution of a one-channel input (fmnist_2c2d's first layer) runs as a depthwise
    convolution with ``filters`` as the channel multiplier: the same kernel layout ``(kh, kw, 1, filters)``
    and bit-identical outputs and gradients, but TF's depthwise kernels take ~1 ms less per fmnist_2c2d step
    (forward + kernel gradient) than its Conv2D ones for this shape.
    """

    def convolution_op(self, inputs, kernel):
        if keras.backend.backend() != "tensorflow" or kernel.shape[-2] != 1 or self.groups != 1:
            return super().convolution_op(inputs, kernel)
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=tuple(self.strides),
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


@keras.saving.register_keras_serializable(package="nlwu")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose moving variance follows TF1's fused batch norm.

    DeepOBS' ``tf.layers.batch_normalization`` runs as FusedBatchNormV3, which normalises a training batch
    with its biased variance but feeds the Bessel-corrected one, var * n / (n - 1) with n = values per
    channel, into the moving average; Keras feeds the biased one. With ``bessel_correction=True`` (the
    default) only that moving-average update changes: training outputs are Keras' own. Verified against
    DeepOBS' graph by ``tests/deepobs_oracle`` (svhn_wrn164's moving statistics and eval logits).
    """

    def __init__(self, *args, bessel_correction=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.bessel_correction = bool(bessel_correction)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self.bessel_correction) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(inputs, None)
        n = 1
        for axis in self._reduction_axes:
            n = n * ops.shape(inputs)[axis]
        n = ops.cast(n, inputs.dtype)
        self.moving_mean.assign(ops.cast(self.moving_mean, inputs.dtype) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, inputs.dtype) * self.momentum
            + variance * (n / (n - 1.0)) * (1.0 - self.momentum)
        )
        gamma = ops.cast(self.gamma, inputs.dtype) if self.scale else None
        beta = ops.cast(self.beta, inputs.dtype) if self.center else None
        outputs = ops.batch_normalization(
            x=inputs, mean=mean, variance=variance, axis=self.axis, offset=beta, scale=gamma, epsilon=self.epsilon
        )
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "bessel_correction": self.bessel_correction}


def _lrelu(x):
    """DeepOBS' leaky ReLU: max(x, 0.3 x)."""
    return ops.maximum(x, LRELU_ALPHA * x)


# ----------------------------------------------------------------------------------------------------------
# quadratic_deep
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def quadratic_hessian(dim: int = 100) -> np.ndarray:
    """The fixed Hessian Q = R^T D R of quadratic_deep (float64), built exactly as DeepOBS' TF version.

    A fresh ``RandomState(42)`` draws 90 eigenvalues U(0,1), then 10 U(30,60), then the random rotation R
    (Diaconis-Shahshahani subgroup algorithm) continues the same stream (testproblems.md §1).
    """
    rng = np.random.RandomState(42)
    eig = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    t = 2.0 * np.pi * rng.uniform()
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v = v / np.linalg.norm(v)
        e = np.zeros((d + 1, 1))
        e[0] = 1.0
        x = (e - v) / np.linalg.norm(e - v)
        m = np.zeros((d + 1, d + 1))
        m[0, 0] = 1.0
        m[1:, 1:] = rot
        rot = m - 2.0 * x @ (x.T @ m)
    rot = -rot
    q = rot.T @ np.diag(eig) @ rot
    q.flags.writeable = False  # cached: shared by every caller
    return q


class Theta(layers.Layer):
    """quadratic_deep's only variable ``theta`` (1, dim), initialised to ones; outputs theta - x."""

    def __init__(self, dim=100, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, input_shape):
        self.theta = self.add_weight(shape=(1, self.dim), initializer="ones", name="theta")

    def call(self, x):
        return self.theta - x


def build_quadratic_deep(seeds, l2, batch_size, dim=100, name="quadratic_deep"):
    x = keras.Input((dim,), name="x")
    return keras.Model(x, Theta(dim, name="theta")(x), name=name)


def quadratic_loss(hessian: np.ndarray):
    """Per-example loss 0.5 (theta - x)^T Q (theta - x); the model outputs theta - x, y_true is unused."""
    q = np.asarray(hessian, dtype="float32")

    def loss(y_true, y_pred):
        return 0.5 * ops.sum(ops.matmul(y_pred, q) * y_pred, axis=-1)

    loss.__name__ = "quadratic_loss"
    return loss


# ----------------------------------------------------------------------------------------------------------
# VAE (mnist_vae, fmnist_vae)
# ----------------------------------------------------------------------------------------------------------


class Reparameterize(layers.Layer):
    """z = mean + eps * exp(log_std), eps ~ N(0, I) drawn fresh per example in EVERY phase (as DeepOBS)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, mean, log_std):
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + eps * ops.exp(log_std)


def build_vae(seeds, l2, batch_size, n_latent=8, name="vae"):
    """DeepOBS ``_vae``: conv encoder (lrelu, dropout 0.2) -> (mean, 0.5*dense) -> z -> deconv decoder.

    Output: concatenation [reconstruction (784), mean (n_latent), log_std (n_latent)].
    """

    def conv(f, k, s, act, transpose=False):
        cls = layers.Conv2DTranspose if transpose else layers.Conv2D
        return cls(
            f,
            k,
            strides=s,
            padding="same",
            activation=act,
            kernel_initializer=_glorot_uniform(seeds),
            bias_initializer="zeros",
        )

    def dense(units, act=None, name=None):
        return Dense(
            units, activation=act, kernel_initializer=_glorot_uniform(seeds), bias_initializer="zeros", name=name
        )

    inp = keras.Input((28, 28, 1), name="x")
    h = layers.Reshape((28, 28, 1))(inp)
    for stride in (2, 2, 1):
        h = conv(64, 4, stride, _lrelu)(h)
        h = layers.Dropout(0.2, seed=seeds())(h)
    h = layers.Flatten()(h)
    mean = dense(n_latent, name="mean")(h)
    log_std = layers.Rescaling(0.5, name="std_dev")(dense(n_latent)(h))
    z = Reparameterize(seed=seeds(), name="z")(mean, log_std)
    h = dense(24, _lrelu)(z)
    h = dense(24 * 2 + 1, _lrelu)(h)
    h = layers.Reshape((7, 7, 1))(h)
    h = conv(64, 4, 2, "relu", transpose=True)(h)
    h = layers.Dropout(0.2, seed=seeds())(h)
    h = conv(64, 4, 1, "relu", transpose=True)(h)
    h = layers.Dropout(0.2, seed=seeds())(h)
    h = conv(64, 4, 1, "relu", transpose=True)(h)
    h = layers.Flatten()(h)
    img = dense(28 * 28, "sigmoid", name="decoder_op")(h)
    out = layers.Concatenate(name="img_mean_logstd")([img, mean, log_std])
    return keras.Model(inp, out, name=name)


def vae_loss(n_latent=8):
    """Per-example sum of squared reconstruction errors + KL(q(z|x) || N(0, I)); y_true = the image."""

    def loss(y_true, y_pred):
        x = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, 28 * 28))
        img = y_pred[:, : 28 * 28]
        mean = y_pred[:, 28 * 28 : 28 * 28 + n_latent]
        log_std = y_pred[:, 28 * 28 + n_latent :]
        recon = ops.sum(ops.square(img - x), axis=1)
        kl = -0.5 * ops.sum(1.0 + 2.0 * log_std - ops.square(mean) - ops.exp(2.0 * log_std), axis=1)
        return recon + kl

    loss.__name__ = "vae_loss"
    return loss


# ----------------------------------------------------------------------------------------------------------
# Classification networks
# ----------------------------------------------------------------------------------------------------------


def build_2c2d(seeds, l2, batch_size, num_outputs=10, name="2c2d"):
    """DeepOBS ``_2c2d`` (fmnist_2c2d): 2 conv 5x5 + max-pool, dense 1024, dense logits.

    All kernels truncated normal (stddev 0.05), all biases 0.05; no regulariser.
    """

    def kern():
        return init.TruncatedNormal(stddev=0.05, seed=seeds())

    bias = init.Constant(0.05)
    inp = keras.Input((28, 28, 1), name="x")
    h = Conv2D(32, 5, padding="same", activation="relu", kernel_initializer=kern(), bias_initializer=bias)(inp)
    h = layers.MaxPooling2D(2, 2, padding="same")(h)
    h = Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=kern(), bias_initializer=bias)(h)
    h = layers.MaxPooling2D(2, 2, padding="same")(h)
    h = layers.Flatten()(h)
    h = Dense(1024, activation="relu", kernel_initializer=kern(), bias_initializer=bias)(h)
    out = Dense(num_outputs, kernel_initializer=kern(), bias_initializer=bias)(h)
    return keras.Model(inp, out, name=name)


def build_3c3d(seeds, l2, batch_size, num_outputs=10, name="3c3d"):
    """DeepOBS ``_3c3d`` (cifar10_3c3d): 3 conv (glorot_normal) + 3x3/2 max-pool, dense 512, 256, logits.

    Conv kernels truncated Glorot normal, dense kernels Glorot uniform, biases 0; L2 on all 6 kernels.
    """
    reg = _l2(l2)

    def conv(f, k, padding):
        return Conv2D(
            f,
            k,
            padding=padding,
            activation="relu",
            kernel_initializer=_glorot_normal(seeds),
            bias_initializer="zeros",
            kernel_regularizer=reg,
        )

    def dense(units, act=None):
        return Dense(
            units,
            activation=act,
            kernel_initializer=_glorot_uniform(seeds),
            bias_initializer="zeros",
            kernel_regularizer=reg,
        )

    inp = keras.Input((32, 32, 3), name="x")
    h = conv(64, 5, "valid")(inp)
    h = layers.MaxPooling2D(3, 2, padding="same")(h)
    h = conv(96, 3, "valid")(h)
    h = layers.MaxPooling2D(3, 2, padding="same")(h)
    h = conv(128, 3, "same")(h)
    h = layers.MaxPooling2D(3, 2, padding="same")(h)
    h = layers.Flatten()(h)
    h = dense(512, "relu")(h)
    h = dense(256, "relu")(h)
    out = dense(num_outputs)(h)
    return keras.Model(inp, out, name=name)


def build_allcnnc(seeds, l2, batch_size, num_outputs=100, name="allcnnc"):
    """DeepOBS cifar100_allcnnc: All-CNN-C with input dropout 0.2, dropout 0.5 after each stride-2 conv.

    Every conv: ReLU (the last one too, so logits are >= 0), truncated Glorot-normal kernel with L2, bias 0.1;
    logits = spatial mean of the last conv.
    """
    reg = _l2(l2)

    def conv(f, k, s=1, padding="same"):
        return Conv2D(
            f,
            k,
            strides=s,
            padding=padding,
            activation="relu",
            kernel_initializer=_glorot_normal(seeds),
            bias_initializer=init.Constant(0.1),
            kernel_regularizer=reg,
        )

    inp = keras.Input((32, 32, 3), name="x")
    h = layers.Dropout(0.2, seed=seeds())(inp)
    h = conv(96, 3)(h)
    h = conv(96, 3)(h)
    h = conv(96, 3, 2)(h)
    h = layers.Dropout(0.5, seed=seeds())(h)
    h = conv(192, 3)(h)
    h = conv(192, 3)(h)
    h = conv(192, 3, 2)(h)
    h = layers.Dropout(0.5, seed=seeds())(h)
    h = conv(192, 3, padding="valid")(h)
    h = conv(192, 1)(h)
    h = conv(num_outputs, 1)(h)
    out = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, out, name=name)


def build_wrn164(seeds, l2, batch_size, num_outputs=10, name="wrn164", num_residual_units=2, widening_factor=4):
    """DeepOBS ``_wrn`` 16-4 (svhn_wrn164): pre-activation wide ResNet.

    Convs: no bias, Glorot uniform, L2; BN: momentum 0.9, epsilon 1e-5 (TF1 values), moving variance fed
    with the Bessel-corrected batch variance as TF1's fused batch norm (``BatchNormalization``; under both
    fidelities: it is DeepOBS' network, not a data quirk); final ReLU(BN), spatial mean, dense logits
    (Glorot uniform kernel with L2, bias 0).
    """
    reg = _l2(l2)

    def conv(f, k, s):
        return Conv2D(
            f,
            k,
            strides=s,
            padding="same",
            use_bias=False,
            kernel_initializer=_glorot_uniform(seeds),
            kernel_regularizer=reg,
        )

    def bn_relu(x):
        x = BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        return layers.ReLU()(x)

    filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
    strides = [1, 2, 2]
    inp = keras.Input((32, 32, 3), name="x")
    x = conv(filters[0], 3, 1)(inp)
    for group in range(3):
        for unit in range(num_residual_units):
            out_f = filters[group + 1]
            if unit == 0:
                a = bn_relu(x)
                shortcut = conv(out_f, 1, strides[group])(a)
                r = conv(out_f, 3, strides[group])(a)
            else:
                shortcut = x
                r = conv(out_f, 3, 1)(bn_relu(x))
            r = conv(out_f, 3, 1)(bn_relu(r))
            x = layers.Add()([r, shortcut])
    x = bn_relu(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = Dense(
        num_outputs, kernel_initializer=_glorot_uniform(seeds), bias_initializer="zeros", kernel_regularizer=reg
    )(x)
    return keras.Model(inp, out, name=name)


class CarriedLSTM(layers.LSTM):
    """Stateful LSTM that starts each call from a copy of its stored state.

    Same results as ``LSTM(stateful=True)``; the copy keeps the torch backend's autograd valid when the new
    state is written back into the state variables in place after the forward pass.
    """

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if initial_state is None and self.stateful and self.states is not None:
            initial_state = [ops.copy(v.value) for v in self.states]
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)


def build_char_rnn(seeds, l2, batch_size, seq_len=50, vocab_size=83, hidden=128, name="char_rnn"):
    """DeepOBS tolstoi_char_rnn: embedding 128, two stateful LSTM(128) layers, dense logits over 83 chars.

    TF1 LSTMCell = Keras LSTM with unit_forget_bias (the +1 forget bias becomes the bias' initial value;
    an exact reparameterisation). Kernel and recurrent kernel share TF1's Glorot-uniform limit over the
    joint [256, 512] matrix; embedding and softmax weights/bias are Glorot uniform as TF1's get_variable.
    Dropout(0.2) before layer 1, twice between the layers, after layer 2 (fresh mask per step, as TF1's
    DropoutWrapper; not the LSTM's own dropout). State: stateful with a fixed batch; reset per phase.
    """
    lstm_limit = math.sqrt(6.0 / (2 * hidden + 4 * hidden))

    def uni(limit):
        return init.RandomUniform(-limit, limit, seed=seeds())

    def lstm():
        return CarriedLSTM(
            hidden,
            return_sequences=True,
            stateful=True,
            unit_forget_bias=True,
            kernel_initializer=uni(lstm_limit),
            recurrent_initializer=uni(lstm_limit),
            bias_initializer="zeros",
        )

    inp = keras.Input(batch_shape=(batch_size, seq_len), dtype="int32", name="x")
    h = layers.Embedding(vocab_size, hidden, embeddings_initializer=_glorot_uniform(seeds))(inp)
    h = layers.Dropout(0.2, seed=seeds())(h)
    h = lstm()(h)
    h = layers.Dropout(0.2, seed=seeds())(h)
    h = layers.Dropout(0.2, seed=seeds())(h)
    h = lstm()(h)
    h = layers.Dropout(0.2, seed=seeds())(h)
    out = Dense(
        vocab_size, kernel_initializer=_glorot_uniform(seeds), bias_initializer=uni(math.sqrt(6.0 / (2 * vocab_size)))
    )(h)
    return keras.Model(inp, out, name=name)


# ----------------------------------------------------------------------------------------------------------
# Classification loss and accuracy (one-hot or integer labels)
# ----------------------------------------------------------------------------------------------------------


def softmax_cross_entropy(y_true, y_pred):
    """Per-example softmax cross-entropy on logits; one-hot labels (same rank as logits) or integer ids.

    For sequences (tolstoi) this is per position; Keras' mean reduction then averages over batch and time,
    which equals DeepOBS' sequence_loss (mean over time) followed by the batch mean.
    """
    if len(y_true.shape) == len(y_pred.shape):
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def accuracy(y_true, y_pred):
    """Mean over examples (and positions) of [argmax logits == label]; labels one-hot or integer ids."""
    pred = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape):
        true = ops.argmax(y_true, axis=-1)
    else:
        true = ops.cast(y_true, pred.dtype)
    return ops.cast(ops.equal(pred, ops.reshape(true, ops.shape(pred))), "float32")


accuracy.__name__ = "accuracy"
softmax_cross_entropy.__name__ = "softmax_cross_entropy"
