"""DeepOBS 1.1.2's own TensorFlow code, run under TF 2.21 graph mode as the oracle for our ports.

Run only as a subprocess with ``TF_USE_LEGACY_KERAS=1`` (tf-keras 2.21, pinned in requirements.lock; never
imported by the suite's own processes):

    TF_USE_LEGACY_KERAS=1 python deepobs_side.py problem IN.npz OUT.npz   # testproblem oracle
    TF_USE_LEGACY_KERAS=1 python deepobs_side.py data IN.json OUT.npz     # DeepOBS' dataset classes
    TF_USE_LEGACY_KERAS=1 python deepobs_side.py serve                    # the same jobs, read from stdin

``serve`` is the suite's worker (``port_side.DeepOBSWorker``): TensorFlow is imported once and every job
(a line ``MODE<TAB>SRC<TAB>DST``) runs in a fresh ``tf.Graph`` with the module's placeholder lists emptied,
so each problem gets the graph, graph seed and op seeds it would get in a process of its own; the reply is
one line ``<marker>ok`` or ``<marker>error <json traceback>`` on stdout.

The shim gives DeepOBS the TF1 names it uses: ``tf.*`` from ``tf.compat.v1``, ``tf.layers``,
``tf.contrib.layers.l2_regularizer(s)`` = s * tf.nn.l2_loss(w) (TF1's definition, s * sum(w^2) / 2),
``tf.contrib.layers.flatten``, ``tf.contrib.rnn`` (TF1's LSTMCell, MultiRNNCell, DropoutWrapper) and TF1's
``tf.contrib.seq2seq.sequence_loss``. To feed the same randomness to both sides, three things draw from
placeholders instead of a random op: ``tf.layers.dropout`` (x * mask under DeepOBS' own ``training`` tensor,
x otherwise), the DropoutWrapper's dropout (x * mask while its keep probability, DeepOBS' phase-dependent
tensor, is < 1) and the VAE's ``tf.random_normal``. Everything else (layers, initialisers, regulariser
collection, losses, accuracy, phase variable, LSTM state variables and their update ops, UPDATE_OPS) is
DeepOBS' and TF's own graph code. In ``problem`` mode the testproblem's dataset class is replaced by one
whose ``batch`` is placeholders and which keeps DeepOBS' ``phase`` variable and init ops.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import types

import numpy as np

assert os.environ.get("TF_USE_LEGACY_KERAS") == "1", "run with TF_USE_LEGACY_KERAS=1 (tf-keras)"
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
v1.disable_eager_execution()

MASKS: list = []  # dropout-mask placeholders, in creation order
NOISE: list = []  # VAE noise placeholders
BN_OUTPUTS: list = []  # tf.layers.batch_normalization outputs, in creation order
DENSE_OUTPUTS: list = []  # tf.layers.dense outputs (the last one: logits)
DTYPE = [tf.float32]
RNN_SHAPE = [None]  # (batch, time, hidden) for the DropoutWrapper masks


def _dropout(inputs, rate=0.5, noise_shape=None, seed=None, training=False, name=None):
    mask = v1.placeholder(inputs.dtype, inputs.shape, name=f"dropout_mask_{len(MASKS)}")
    MASKS.append(mask)
    return tf.cond(tf.convert_to_tensor(training), lambda: inputs * mask, lambda: tf.identity(inputs))


def _batch_normalization(*args, **kwargs):
    out = v1.layers.batch_normalization(*args, **kwargs)
    BN_OUTPUTS.append(out)
    return out


def _dense(*args, **kwargs):
    out = v1.layers.dense(*args, **kwargs)
    DENSE_OUTPUTS.append(out)
    return out


class _Layers(types.SimpleNamespace):
    def __getattr__(self, name):
        return getattr(v1.layers, name)


class MaskedDropoutWrapper(v1.nn.rnn_cell.DropoutWrapper):
    """TF1's DropoutWrapper whose input/output dropout multiplies by fed masks (one per time step)."""

    def __init__(self, cell, **kwargs):
        super().__init__(cell, **kwargs)
        b, t, h = RNN_SHAPE[0]
        self._masks = {}
        for kind in ("input", "output"):
            self._masks[kind] = v1.placeholder(DTYPE[0], (b, t, h), name=f"rnn_mask_{len(MASKS)}")
            MASKS.append(self._masks[kind])
        self._calls = {"input": 0, "output": 0}

    def _dropout(self, values, salt_prefix, recurrent_noise, keep_prob, shallow_filtered_substructure=None):
        t = self._calls[salt_prefix]
        self._calls[salt_prefix] += 1
        mask = self._masks[salt_prefix][:, t, :]
        return tf.cond(keep_prob < 1.0, lambda: values * mask, lambda: tf.identity(values))


def _l2_regularizer(scale):
    """TF1 contrib: scale * l2_loss(w) = scale * sum(w^2) / 2; None for scale 0."""
    if not scale:
        return lambda _: None

    def l2(weights):
        return tf.multiply(
            tf.convert_to_tensor(scale, dtype=weights.dtype.base_dtype), tf.nn.l2_loss(weights), name="l2_regularizer"
        )

    return l2


def _sequence_loss(
    logits,
    targets,
    weights,
    average_across_timesteps=True,
    average_across_batch=True,
    softmax_loss_function=None,
    name=None,
):
    """TF1's tf.contrib.seq2seq.sequence_loss (the code path DeepOBS uses: per-sequence mean)."""
    num_classes = tf.shape(logits)[2]
    logits_flat = tf.reshape(logits, [-1, num_classes])
    targets = tf.reshape(targets, [-1])
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits_flat)
    crossent *= tf.reshape(weights, [-1])
    batch_size, seq_len = tf.shape(logits)[0], tf.shape(logits)[1]
    crossent = tf.reshape(crossent, [batch_size, seq_len])
    if average_across_timesteps and average_across_batch:
        return tf.reduce_sum(crossent) / (tf.reduce_sum(weights) + 1e-12)
    if average_across_timesteps:
        return tf.reduce_sum(crossent, axis=[1]) / (tf.reduce_sum(weights, axis=[1]) + 1e-12)
    if average_across_batch:
        return tf.reduce_sum(crossent, axis=[0]) / (tf.reduce_sum(weights, axis=[0]) + 1e-12)
    return crossent


def _random_normal(shape, mean=0.0, stddev=1.0, dtype=tf.float32, seed=None, name=None):
    eps = v1.placeholder(DTYPE[0], (RNN_SHAPE[0][0], None), name=f"noise_{len(NOISE)}")
    NOISE.append(eps)
    return eps


class _Shim(types.ModuleType):
    """``tf`` as DeepOBS' TF1 code sees it: tf.compat.v1 plus the contrib names it uses."""

    def __getattr__(self, name):
        return getattr(v1, name)


shim = _Shim("tf_deepobs_shim")
shim.layers = _Layers(dropout=_dropout, batch_normalization=_batch_normalization, dense=_dense)
shim.contrib = types.SimpleNamespace(
    layers=types.SimpleNamespace(l2_regularizer=_l2_regularizer, flatten=v1.layers.flatten),
    rnn=types.SimpleNamespace(
        LSTMCell=v1.nn.rnn_cell.LSTMCell,
        MultiRNNCell=v1.nn.rnn_cell.MultiRNNCell,
        DropoutWrapper=MaskedDropoutWrapper,
        LSTMStateTuple=v1.nn.rnn_cell.LSTMStateTuple,
    ),
    seq2seq=types.SimpleNamespace(sequence_loss=_sequence_loss),
)
shim.random_normal = _random_normal


def _install(package: str) -> list:
    """Import every module of a deepobs.tensorflow package and point its ``tf`` at the shim."""
    pkg = importlib.import_module(package)
    mods = [pkg]
    for info in pkgutil.iter_modules(pkg.__path__):
        mods.append(importlib.import_module(f"{package}.{info.name}"))
    for mod in mods:
        if getattr(mod, "tf", None) is tf:
            mod.tf = shim
    return mods


# ----------------------------------------------------------------------------------------------------------
# problem mode
# ----------------------------------------------------------------------------------------------------------
INPUT_SHAPES = {  # problem -> (x shape, x dtype, y shape or None, y dtype)
    "quadratic_deep": ((100,), None, None, None),
    "mnist_vae": ((28, 28, 1), None, (10,), None),
    "fmnist_vae": ((28, 28, 1), None, (10,), None),
    "fmnist_2c2d": ((28, 28, 1), None, (10,), None),
    "cifar10_3c3d": ((32, 32, 3), None, (10,), None),
    "cifar100_allcnnc": ((32, 32, 3), None, (100,), None),
    "svhn_wrn164": ((32, 32, 3), None, (10,), None),
    "tolstoi_char_rnn": ((50,), tf.int64, (50,), tf.int64),
}


SESSIONS: list = []  # the job's sessions, closed when it ends


def _session():
    sess = v1.Session(config=v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1))
    SESSIONS.append(sess)
    return sess


_DATASET_NAMES: dict = {}  # testproblem module -> names bound to a DeepOBS DataSet class (found once)


def _placeholder_dataset(problem: str):
    xs, xd, ys, yd = INPUT_SHAPES[problem]

    class PlaceholderDataSet:
        """DeepOBS' DataSet with its input pipeline replaced by placeholders; phase variable and init ops
        as in ``deepobs.tensorflow.datasets.dataset.DataSet``."""

        def __init__(self, batch_size, *args, **kwargs):
            self.x = v1.placeholder(xd or DTYPE[0], (batch_size, *xs), name="x")
            self.y = None if ys is None else v1.placeholder(yd or DTYPE[0], (batch_size, *ys), name="y")
            self.batch = self.x if self.y is None else (self.x, self.y)
            self.phase = tf.Variable("train", name="phase", trainable=False)
            self.train_init_op = tf.group([v1.assign(self.phase, "train")], name="train_init_op")
            self.train_eval_init_op = tf.group([v1.assign(self.phase, "train_eval")], name="train_eval_init_op")
            self.test_init_op = tf.group([v1.assign(self.phase, "test")], name="test_init_op")

    return PlaceholderDataSet


def _tf1_optimizer(meta: dict, grads: list, dense_grads: list, trainable: list):
    """TF1's own optimizer of the job, the gradients it is given and the ops that must run before it.

    Without ``meta['optimizer']``: ``GradientDescentOptimizer(lr)`` on DeepOBS' gradients (the testproblem
    oracle). With ``{"power": p | None, "momentum": μ, "nesterov": bool, "decay": d, "decay_all": bool}``: the
    paper's update as protocol.md §1.1 defines it, built from TF1's pieces only: ĝ = sign(g)·|g|^p on every
    rank >= 2 variable (§1.2; the dense gradient; ĝ = g where p is None), then ``tf.train.GradientDescentOptimizer``
    (μ = 0) or ``tf.train.MomentumOptimizer(lr, μ, use_nesterov)`` on ĝ; with d > 0 first w <- w - d·w on the
    rank >= 2 variables (all with ``decay_all``), after the gradients are computed at the pre-decay w (as TF1
    contrib's / TF Addons' ``DecoupledWeightDecayExtension``: the decay never enters the buffer)."""
    spec = meta.get("optimizer")
    if not spec:
        return v1.train.GradientDescentOptimizer(meta["lr"]), grads, []
    p = spec["power"]
    mapped = [
        tf.sign(g) * tf.pow(tf.abs(g), tf.cast(p, g.dtype)) if p is not None and len(v.shape) >= 2 else g
        for g, v in zip(dense_grads, trainable)
    ]
    before = []
    if spec.get("decay"):
        with tf.control_dependencies(mapped):  # w is read for the gradients before it decays
            before = [
                v1.assign_sub(v, tf.cast(spec["decay"], v.dtype.base_dtype) * v)
                for v in trainable
                if spec["decay_all"] or len(v.shape) >= 2
            ]
    if spec["momentum"]:
        opt = v1.train.MomentumOptimizer(meta["lr"], spec["momentum"], use_nesterov=spec["nesterov"])
    else:
        opt = v1.train.GradientDescentOptimizer(meta["lr"])
    return opt, mapped, before


def run_problem(inp: dict) -> dict:
    meta = json.loads(str(inp["meta"]))
    problem, batch = meta["problem"], meta["batch_size"]
    DTYPE[0] = tf.float64 if meta["dtype"] == "float64" else tf.float32
    RNN_SHAPE[0] = (batch, 50, 128)
    v1.set_random_seed(meta["seed"])
    mods = _install("deepobs.tensorflow.testproblems")
    from deepobs.tensorflow.datasets.dataset import DataSet

    fake = _placeholder_dataset(problem)
    for mod in mods:
        if mod.__name__ not in _DATASET_NAMES:  # before any replacement (a second job sees the fakes)
            _DATASET_NAMES[mod.__name__] = [
                key for key, value in vars(mod).items() if isinstance(value, type) and issubclass(value, DataSet)
            ]
        for key in _DATASET_NAMES[mod.__name__]:
            setattr(mod, key, fake)
    cls = getattr(importlib.import_module(f"deepobs.tensorflow.testproblems.{problem}"), problem)
    tp = cls(batch, weight_decay=meta["weight_decay"]) if "weight_decay" in meta else cls(batch)  # `_nodecay`: 0
    tp.set_up()
    data = tp.dataset
    # DeepOBS' runner (a problem without L2 has a float32 zero regulariser: cast for the float64 runs)
    loss = tf.reduce_mean(tp.losses) + tf.cast(tp.regularizer, tp.losses.dtype)
    variables = [v for v in v1.global_variables() if v.trainable or "moving_" in v.name]
    trainable = v1.trainable_variables()
    grads = tf.gradients(loss, trainable)
    dense_grads = [tf.convert_to_tensor(g) for g in grads]  # the embedding's IndexedSlices, densified
    opt, step_grads, before = _tf1_optimizer(meta, grads, dense_grads, trainable)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS) + before):  # as DeepOBS' runner
        step = opt.apply_gradients(list(zip(step_grads, trainable)))
    slots = [opt.get_slot(v, "momentum") for v in trainable] if meta.get("optimizer", {}).get("momentum") else []
    states = [s for pair in getattr(tp, "state_variables", ()) for s in pair]  # (c, h) per layer
    out = {
        "names": np.array([v.name for v in variables]),
        "trainable": np.array([v.trainable for v in variables]),
        "n_regularizers": len(v1.get_collection(v1.GraphKeys.REGULARIZATION_LOSSES)),
        "n_masks": len(MASKS),
        "n_noise": len(NOISE),
        "n_bn": len(BN_OUTPUTS),
    }
    sess = _session()
    sess.run(v1.global_variables_initializer())
    for i, value in enumerate(sess.run(variables)):
        out[f"init_{i}"] = value  # DeepOBS' own initialisers (graph seed meta['seed'])
    n_w = int(meta["n_weights"])
    assert n_w == len(variables), f"port has {n_w} weights, DeepOBS {len(variables)}: {out['names']}"
    for i, v in enumerate(variables):
        w = inp[f"w_{i}"]
        assert tuple(w.shape) == tuple(v.shape.as_list()), (i, v.name, w.shape, v.shape)
        v.load(w, sess)
    acc = tp.accuracy if tp.accuracy is not None else tf.constant(np.nan)
    logits = DENSE_OUTPUTS[-1] if DENSE_OUTPUTS else tf.constant(np.nan)

    def feed(prefix, k):
        f = {data.x: inp[f"{prefix}x_{k}"]}
        if data.y is not None:
            f[data.y] = inp[f"{prefix}y_{k}"]
        for j, m in enumerate(MASKS):
            f[m] = inp[f"{prefix}mask_{k}_{j}"]
        for j, e in enumerate(NOISE):
            f[e] = inp[f"{prefix}noise_{k}_{j}"]
        return f

    sess.run(tp.train_init_op)
    for k in range(int(meta["train_steps"])):
        res = sess.run(
            {
                "loss": loss,
                "losses": tp.losses,
                "reg": tp.regularizer,
                "acc": acc,
                "grads": dense_grads,
                "bn": BN_OUTPUTS,
                "step": step,
            },
            feed_dict=feed("train_", k),
        )
        out[f"train_loss_{k}"], out[f"train_losses_{k}"] = res["loss"], res["losses"]
        out[f"train_reg_{k}"], out[f"train_acc_{k}"] = res["reg"], res["acc"]
        for i, g in enumerate(res["grads"]):
            out[f"grad_{k}_{i}"] = g
        for i, b in enumerate(res["bn"]):
            out[f"bn_{k}_{i}"] = b
        for i, value in enumerate(sess.run(variables)):
            out[f"after_{k}_{i}"] = value
        for i, value in enumerate(sess.run(states)):
            out[f"train_state_{k}_{i}"] = value
        for i, value in enumerate(sess.run(slots)):
            out[f"slot_{k}_{i}"] = value
    sess.run(tp.test_init_op)
    for k in range(int(meta["eval_steps"])):
        res = sess.run(
            {"loss": loss, "losses": tp.losses, "reg": tp.regularizer, "acc": acc, "logits": logits},
            feed_dict=feed("eval_", k),
        )
        for key, value in res.items():
            out[f"eval_{key}_{k}"] = value
        for i, value in enumerate(sess.run(states)):
            out[f"eval_state_{k}_{i}"] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# data mode: DeepOBS' dataset classes on a data folder
# ----------------------------------------------------------------------------------------------------------
def run_data(meta: dict) -> dict:
    """Every batch of the requested phases of DeepOBS' own dataset class (its tf.data pipeline)."""
    mods = _install("deepobs.tensorflow.datasets")
    from deepobs.tensorflow import config

    config.set_data_dir(meta["data_dir"])
    v1.set_random_seed(meta["seed"])
    cls = getattr(importlib.import_module(f"deepobs.tensorflow.datasets.{meta['dataset']}"), meta["dataset"])
    kwargs = meta.get("kwargs", {})
    ds = cls(meta["batch_size"], **kwargs)
    del mods
    out = {}
    sess = _session()
    sess.run(v1.global_variables_initializer())
    for phase in meta["phases"]:
        sess.run(getattr(ds, f"{phase}_init_op"))
        xs, ys = [], []
        while True:
            try:
                x, y = sess.run(ds.batch)
            except tf.errors.OutOfRangeError:
                break
            xs.append(x)
            ys.append(y)
        out[f"{phase}_x"] = np.concatenate(xs) if xs else np.zeros((0,))
        out[f"{phase}_y"] = np.concatenate(ys) if ys else np.zeros((0,))
        out[f"{phase}_batches"] = len(xs)
    return out


def run_job(mode: str, src: str, dst: str) -> None:
    """One job in a fresh graph (and fresh placeholder lists): as in a process of its own."""
    for registry in (MASKS, NOISE, BN_OUTPUTS, DENSE_OUTPUTS):
        registry.clear()
    try:
        with tf.Graph().as_default():
            if mode == "problem":
                with np.load(src) as f:
                    out = run_problem(dict(f))
            elif mode == "data":
                with open(src) as f:
                    out = run_data(json.load(f))
            else:
                raise ValueError(f"unknown mode {mode!r}")
    finally:
        while SESSIONS:
            SESSIONS.pop().close()
    np.savez(dst, **out)


REPLY = "@@deepobs_side@@ "  # prefix of the worker's replies (anything else on stdout is TF's chatter)


def serve(stdin=sys.stdin, stdout=sys.stdout) -> int:
    import traceback

    stdout.write(REPLY + "ready\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        try:
            run_job(*line.rstrip("\n").split("\t"))
            reply = "ok"
        except Exception:  # reported to the test that sent the job; the worker stays up
            reply = "error " + json.dumps(traceback.format_exc())
        stdout.write(REPLY + reply + "\n")
        stdout.flush()
    return 0


def main(argv) -> int:
    if argv == ["serve"]:
        return serve()
    mode, src, dst = argv
    run_job(mode, src, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
