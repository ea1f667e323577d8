"""Our side of the DeepOBS oracle: the port's weights, inputs, dropout masks and noise, and its results.

``case(problem)`` builds the port (``testproblems.get(problem, batch_size=8).build_model()``), maps its
weights to DeepOBS' variables (call order while building; tolstoi's LSTM kernels stacked [W_x; W_h], gates reordered
Keras i,f,c,o -> TF1 i,j,f,o and the forget bias of 1 moved to TF1's run-time ``forget_bias``), draws the
inputs, dropout masks and VAE noise, and runs 2 SGD training steps (or ``train_steps`` of one of our
optimizers, against TF1's own optimizer of the same rule, ``tf1_optimizer``) then the eval steps eagerly with the
same masks and noise patched into its Dropout / Reparameterize layers. ``run_deepobs`` feeds the same to
``deepobs_side.py`` in a ``TF_USE_LEGACY_KERAS=1`` subprocess (one worker for the session, ``worker()``); ``compare``
lists every relative difference.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBLEMS = (
    "quadratic_deep",
    "mnist_vae",
    "fmnist_vae",
    "fmnist_2c2d",
    "cifar10_3c3d",
    "cifar100_allcnnc",
    "svhn_wrn164",
    "tolstoi_char_rnn",
)
BATCH = 8
LR = 0.1


@contextlib.contextmanager
def float_type(dtype):
    """Keras' floatx and global dtype policy set to ``dtype`` (the policy, once read, no longer follows
    floatx: both are set), restored afterwards."""
    import keras

    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


@contextlib.contextmanager
def call_order():
    """Record the order in which Keras layers are first called while the model is built.

    DeepOBS' ``tf.layers`` functions create a layer's variables where they call it, so its variables follow
    call order; Keras' ``model.weights`` follow the graph's topological order (the VAE's std-dev dense
    before its mean) and construction order differs where a layer is built before its argument
    (``conv(...)(bn_relu(x))``)."""
    import keras

    order: dict[int, int] = {}
    original = keras.layers.Layer.__call__

    def call(self, *args, **kwargs):
        order.setdefault(id(self), len(order))
        return original(self, *args, **kwargs)

    keras.layers.Layer.__call__ = call
    try:
        yield order
    finally:
        keras.layers.Layer.__call__ = original


def _layers(model):
    for layer in model.layers:
        yield layer
        yield from _layers(layer) if hasattr(layer, "layers") else ()


def _lstm_to_tf(kernel, recurrent, bias=None, shift_forget=True):
    """Keras LSTM (i,f,c,o) -> TF1 LSTMCell kernel [W_x; W_h] and bias (i,j,f,o), forget bias moved."""
    h = recurrent.shape[0]

    def reorder(a):
        i, f, c, o = (a[..., k * h : (k + 1) * h] for k in range(4))
        return np.concatenate([i, c, f, o], axis=-1)

    k = reorder(np.concatenate([kernel, recurrent], axis=0))
    if bias is None:
        return k
    b = reorder(bias)
    if shift_forget:  # TF1 adds forget_bias=1.0 at run time; shifted in float64 (no second rounding)
        b = b.astype(np.float64)
        b[2 * h : 3 * h] -= 1.0
    return k, b


def deepobs_layout(problem, arrays_by_layer, grads=False):
    """[(layer, [arrays])] in creation order -> the list of DeepOBS variables' values."""
    out = []
    for layer, arrays in arrays_by_layer:
        if type(layer).__name__ in ("CarriedLSTM", "LSTM"):
            k, b = _lstm_to_tf(arrays[0], arrays[1], arrays[2], shift_forget=not grads)
            out += [k, b]
        else:
            out += list(arrays)
    return out


class Port:
    """The port of ``problem`` at batch 8 with its randomness fed from arrays."""

    def __init__(self, problem, *, seed=42, dtype="float32", l2=None, build=None, lr=LR, optimizer=None, train_steps=2):
        """``optimizer``: None (Keras SGD, the testproblem oracle) or (registry name, hyperparameters) of one
        of our optimizers, run against TF1's own optimizer of the protocol's rule (``tf1_optimizer``)."""
        import testproblems

        # a `_nodecay` problem is DeepOBS' class of its base problem with weight_decay=0 (testproblems.md §9)
        self.nodecay = problem.endswith("_nodecay")
        self.problem_name = problem.removesuffix("_nodecay")
        self.p = testproblems.get(problem, batch_size=BATCH, seed=seed, l2=l2)
        self.dtype = dtype
        self.lr = lr
        self.optimizer = optimizer
        self.train_steps = train_steps
        with float_type(dtype), call_order() as order:
            self.model = build(self.p) if build is not None else self.p.build_model()
        layers = sorted({id(la): la for la in _layers(self.model)}.values(), key=lambda la: order.get(id(la), 1e9))
        self.layers = [la for la in layers if la.weights]
        self.dropouts = [la for la in layers if type(la).__name__ == "Dropout"]
        self.reparams = [la for la in layers if type(la).__name__ == "Reparameterize"]
        self.bns = [la for la in layers if "BatchNormalization" in type(la).__name__]
        self.lstms = [la for la in layers if getattr(la, "stateful", False)]
        self.feed: dict = {}
        self.bn_out: dict = {}
        for j, layer in enumerate(self.dropouts):
            layer.call = types.MethodType(self._dropout_call(j), layer)
        for j, layer in enumerate(self.reparams):
            layer.call = types.MethodType(self._noise_call(j), layer)
        for j, layer in enumerate(self.bns):
            layer.call = types.MethodType(self._bn_call(j, layer.call), layer)

    def _dropout_call(self, j):
        feed = self.feed

        def call(layer, inputs, training=False):
            from keras import ops

            return inputs * ops.convert_to_tensor(feed["mask"][j], inputs.dtype) if training else inputs

        return call

    def _noise_call(self, j):
        feed = self.feed

        def call(layer, mean, log_std):
            from keras import ops

            return mean + ops.convert_to_tensor(feed["noise"][j], mean.dtype) * ops.exp(log_std)

        return call

    def _bn_call(self, j, original):
        store = self.bn_out

        def call(layer, inputs, training=None, mask=None):
            out = original(inputs, training=training, mask=mask)
            store[j] = out
            return out

        return call

    # -- layout -----------------------------------------------------------------------------------------
    def weights(self):
        return deepobs_layout(self.problem_name, [(la, [np.asarray(w) for w in la.weights]) for la in self.layers])

    def trainable_index(self):
        """Map trainable_variables -> position within each layer (for the gradients' layout)."""
        return [(la, [w for w in la.trainable_weights]) for la in self.layers if la.trainable_weights]

    # -- inputs -----------------------------------------------------------------------------------------
    def draw(self, rng, prefix, k):
        """One batch and its randomness (DeepOBS-side arrays; the port reads the same ones)."""
        name, dt = self.problem_name, self.dtype
        d = {}
        if name == "quadratic_deep":
            d["x"] = rng.normal(size=(BATCH, 100)).astype(dt)
            d["y"] = None
        elif name == "tolstoi_char_rnn":
            d["x"] = rng.integers(0, 83, size=(BATCH, 50)).astype(np.int64)
            d["y"] = rng.integers(0, 83, size=(BATCH, 50)).astype(np.int64)
        else:
            shape = tuple(self.model.inputs[0].shape[1:])
            classes = 100 if name == "cifar100_allcnnc" else 10
            x = (
                rng.uniform(size=(BATCH, *shape))
                if "vae" in name or "fmnist" in name
                else rng.normal(size=(BATCH, *shape))
            )
            d["x"] = x.astype(dt)
            d["y"] = np.eye(classes, dtype=dt)[rng.integers(0, classes, BATCH)]
        masks = []
        for layer in self.dropouts:
            shape = (BATCH, *layer.output.shape[1:]) if hasattr(layer, "output") else None
            keep = rng.uniform(size=shape) >= layer.rate
            masks.append((keep / (1.0 - layer.rate)).astype(dt))
        d["mask"] = masks
        d["noise"] = [rng.normal(size=(BATCH, 8)).astype(dt) for _ in self.reparams]
        return d

    # -- running ----------------------------------------------------------------------------------------
    def _forward(self, d, training):
        from keras import ops

        self.feed["mask"], self.feed["noise"] = d["mask"], d["noise"]
        x = d["x"].astype(np.int32) if self.problem_name == "tolstoi_char_rnn" else d["x"]
        y = d["y"] if d["y"] is not None else d["x"]
        out = self.model(x, training=training)
        per = self.p.loss()(self.p.targets(x, y), out)
        if len(per.shape) == 2:  # tolstoi: per position -> per sequence (DeepOBS' average across time)
            per = ops.mean(per, axis=1)
        reg = ops.sum(ops.stack(self.model.losses)) if self.model.losses else ops.convert_to_tensor(0.0, out.dtype)
        loss = ops.mean(per) + ops.cast(reg, per.dtype)
        acc = ops.mean(self.p.metrics()[0](self.p.targets(x, y), out)) if self.p.metrics() else np.nan
        return out, per, reg, loss, acc

    def states(self):
        """LSTM states as DeepOBS' state variables: (c, h) per layer."""
        out = []
        for layer in self.lstms:
            h, c = (np.asarray(s) for s in layer.states)
            out += [c, h]
        return out

    def run(self, train_steps=None, eval_steps=1, seed=0):

        with float_type(self.dtype):  # Keras casts regularisation losses to floatx
            return self._run(self.train_steps if train_steps is None else train_steps, eval_steps, seed)

    def _optimizer(self):
        import keras

        if self.optimizer is None:
            return keras.optimizers.SGD(learning_rate=self.lr)
        import optimizers

        name, hp = self.optimizer
        return optimizers.make(name, self.model, learning_rate=self.lr, **hp)

    def _run(self, train_steps, eval_steps, seed):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        inp = {f"w_{i}": w for i, w in enumerate(self.weights())}
        res = {}
        opt = self._optimizer()
        for layer in self.lstms:
            layer.reset_state()
        for k in range(train_steps):
            d = self.draw(rng, "train_", k)
            self._put(inp, "train_", k, d)
            with tf.GradientTape() as tape:
                out, per, reg, loss, acc = self._forward(d, True)
            tv = self.model.trainable_variables
            grads = tape.gradient(loss, tv)
            by_var = {id(v): np.asarray(tf.convert_to_tensor(g)) for v, g in zip(tv, grads)}  # embedding: IndexedSlices
            glay = [(la, [by_var[id(w)] for w in la.trainable_weights]) for la in self.layers if la.trainable_weights]
            res.update(
                {
                    f"train_loss_{k}": np.asarray(loss),
                    f"train_losses_{k}": np.asarray(per),
                    f"train_reg_{k}": np.asarray(reg),
                    f"train_acc_{k}": np.asarray(acc),
                }
            )
            for i, g in enumerate(deepobs_layout(self.problem_name, glay, grads=True)):
                res[f"grad_{k}_{i}"] = g
            for i in range(len(self.bns)):
                res[f"bn_{k}_{i}"] = np.asarray(self.bn_out[i])
            opt.apply(grads, tv)
            for i, w in enumerate(self.weights()):
                res[f"after_{k}_{i}"] = w
            for i, s in enumerate(self.states()):
                res[f"train_state_{k}_{i}"] = s
            if getattr(opt, "momentum", 0.0) and hasattr(opt, "_accumulators"):  # our buffers, DeepOBS' layout
                assert not self.lstms, "momentum buffers are compared for problems without an LSTM only"
                buf = {id(v): np.asarray(opt._accumulators[opt._get_variable_index(v)]) for v in tv}
                slay = [(la, [buf[id(w)] for w in la.trainable_weights]) for la in self.layers if la.trainable_weights]
                for i, a in enumerate(deepobs_layout(self.problem_name, slay, grads=True)):
                    res[f"slot_{k}_{i}"] = a
        for layer in self.lstms:
            layer.reset_state()
        for k in range(eval_steps):
            d = self.draw(rng, "eval_", k)
            self._put(inp, "eval_", k, d)
            out, per, reg, loss, acc = self._forward(d, False)
            res.update(
                {
                    f"eval_loss_{k}": np.asarray(loss),
                    f"eval_losses_{k}": np.asarray(per),
                    f"eval_reg_{k}": np.asarray(reg),
                    f"eval_acc_{k}": np.asarray(acc),
                }
            )
            if self.problem_name in ("fmnist_2c2d", "cifar10_3c3d", "svhn_wrn164"):  # logits = tf.layers.dense
                logits = np.asarray(out)
                res[f"eval_logits_{k}"] = logits
            for i, s in enumerate(self.states()):
                res[f"eval_state_{k}_{i}"] = s
        meta = {
            "problem": self.problem_name,
            "batch_size": BATCH,
            "dtype": self.dtype,
            "lr": self.lr,
            "seed": 42,
            "train_steps": train_steps,
            "eval_steps": eval_steps,
            "n_weights": len(self.weights()),
        }
        if self.nodecay:
            meta["weight_decay"] = 0.0
        if self.optimizer is not None:
            meta["optimizer"] = tf1_optimizer(*self.optimizer, self.lr)
        inp["meta"] = np.array(json.dumps(meta))
        return inp, res

    @staticmethod
    def _put(inp, prefix, k, d):
        inp[f"{prefix}x_{k}"] = d["x"]
        if d["y"] is not None:
            inp[f"{prefix}y_{k}"] = d["y"]
        for j, m in enumerate(d["mask"]):
            inp[f"{prefix}mask_{k}_{j}"] = m
        for j, e in enumerate(d["noise"]):
            inp[f"{prefix}noise_{k}_{j}"] = e


_NAME = re.compile(r"^(PowKernel)?(GradientDescent|Momentum|NAG)Optimizer(N?)(W_(scaled|momscaled))?$")


def tf1_optimizer(name: str, hp: dict, lr: float) -> dict:
    """TF1's optimizer for our optimizer ``name``, read off the name with protocol.md §1's grammar (no code of
    ``optimizers`` shared): ``PowKernel`` -> φ_p with p = ``power`` on rank >= 2 tensors (else ĝ = g);
    ``Momentum`` / ``NAG`` -> TF1 ``MomentumOptimizer`` with μ = ``momentum`` (0.9, §1.3, where not given),
    ``N`` or ``NAG`` -> Nesterov; ``W_scaled`` / ``W_momscaled`` -> the decoupled decay w <- w - d·w before the
    step, d = λ·η or λ·η/(1 - μ) with λ = ``weight_decay_opt``, on the rank >= 2 tensors (the project's
    ``decay_on='selected'``; every tensor with ``decay_on='all'``)."""
    m = _NAME.match(name)
    assert m, f"{name}: not a protocol §1 optimizer name"
    pow_kernel, kind, n_suffix, _, scaling = m.groups()
    mu = 0.0 if kind == "GradientDescent" else float(hp.get("momentum", 0.9))
    decay = 0.0
    if scaling:
        lam = float(hp["weight_decay_opt"])
        decay = lam * lr if scaling == "scaled" else lam * lr / (1.0 - mu)
    return {
        "power": float(hp["power"]) if pow_kernel else None,
        "momentum": mu,
        "nesterov": kind == "NAG" or n_suffix == "N",
        "decay": decay,
        "decay_all": hp.get("decay_on", "selected") == "all",
    }


def _tf1_env() -> dict:
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("KERAS_BACKEND", None)
    return env


REPLY = "@@deepobs_side@@ "  # deepobs_side.REPLY (that module is never imported here: it imports tf-keras)


class DeepOBSWorker:
    """One ``TF_USE_LEGACY_KERAS=1`` process running ``deepobs_side.py serve`` for the whole test session.

    TensorFlow is imported there once (started at once, so the import overlaps the port's own work) instead
    of once per problem; every job runs in a fresh graph (see deepobs_side.run_job), so each problem's graph,
    seeds and results are those of a process of its own. A job that fails raises with the worker's traceback;
    a worker that dies or runs past ``timeout`` is killed and the next job starts a new one."""

    def __init__(self, timeout=900):
        self.timeout = timeout
        self.proc = None
        self.jobs = 0
        self._start()

    def _start(self):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.cwd = tempfile.mkdtemp(prefix="deepobs_side_")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "deepobs_side.py"), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=_tf1_env(),
            cwd=self.cwd,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            if line.startswith(REPLY):
                lines.put(line[len(REPLY) :].rstrip("\n"))
        lines.put(None)  # end of file: the worker exited

    def _stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def run(self, mode: str, src, dst) -> None:
        src, dst = str(src), str(dst)
        assert not any(c in src + dst for c in "\t\n"), (src, dst)
        if self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(f"{mode}\t{src}\t{dst}\n")
        self.proc.stdin.flush()
        self.jobs += 1
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self.close()
                raise TimeoutError(f"deepobs_side.py {mode} {src}: no reply within {self.timeout} s") from None
            if reply is None:
                self.close()
                raise RuntimeError(f"deepobs_side.py exited ({self.proc.returncode}):\n{self._stderr()}")
            if reply == "ok":
                return
            if reply.startswith("error "):
                raise RuntimeError(f"deepobs_side.py {mode} failed:\n{json.loads(reply[6:])}")
            # "ready": TensorFlow imported

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.cwd, ignore_errors=True)


_WORKER: list = []


def worker() -> DeepOBSWorker:
    """The session's one DeepOBS worker (started on first use, closed at exit)."""
    if not _WORKER:
        _WORKER.append(DeepOBSWorker())
        atexit.register(_WORKER[0].close)
    return _WORKER[0]


def run_deepobs(inp: dict, workdir: Path) -> dict:
    """DeepOBS' side of one problem (in the session's TF_USE_LEGACY_KERAS=1 worker); its output arrays."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src, dst = workdir / "in.npz", workdir / "out.npz"
    np.savez(src, **inp)
    worker().run("problem", src, dst)
    with np.load(dst) as f:
        return dict(f)


def rel(a, b) -> float:
    """max |a - b| / max |b| (relative to the tensor's scale; 0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if np.isnan(b).all() and np.isnan(a).all():
        return 0.0
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale else float(diff)


def _port_bias(b):
    """A TF1 LSTM bias (i,j,f,o, forget bias 1 added at run time) in the port's parameterisation (+1 on f).

    The port stores 1 + delta in float32, TF1 delta: relative to delta alone the port's own float32 storage
    of 1 + delta is off by up to 6e-8 / |delta| (1e-4 after two steps), so biases are compared at the scale
    the port holds them."""
    b = np.asarray(b, np.float64).copy()
    h = b.shape[0] // 4
    b[2 * h : 3 * h] += 1.0
    return b


def compare(ours: dict, theirs: dict, lstm_bias_keys=()) -> dict[str, float]:
    """{key: relative difference} for every result both sides produced."""
    out = {}
    for k in ours:
        if k not in theirs:
            continue
        if k in lstm_bias_keys:
            out[k] = rel(_port_bias(ours[k]), _port_bias(theirs[k]))
        else:
            out[k] = rel(ours[k], theirs[k])
    return out


def lstm_bias_keys(theirs: dict, train_steps=2) -> set[str]:
    """The after-step keys of TF1 LSTM biases (by DeepOBS' variable names)."""
    idx = [i for i, n in enumerate(theirs["names"]) if "lstm_cell/bias" in str(n)]
    return {f"after_{k}_{i}" for k in range(train_steps) for i in idx}


def summarize(diffs: dict[str, float]) -> dict[str, float]:
    """Largest difference per kind (train_loss, grad, after, bn, eval_logits, ...)."""
    out: dict[str, float] = {}
    for k, v in diffs.items():
        kind = "_".join(part for part in k.split("_") if not part.isdigit())
        out[kind] = max(out.get(kind, 0.0), v)
    return out
