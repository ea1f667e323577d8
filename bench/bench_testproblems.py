"""Benchmark: training-step throughput of fmnist_2c2d and cifar10_3c3d against DeepOBS' own PyTorch nets.

Measured in one run, rounds interleaved, each framework in its own long-lived worker process (so their
thread pools never compete), batch 128 on the CPU:

* ``full``: our complete problem step, ``testproblems.get(name).trainer(model, SGD).train_epoch(...)``:
  input pipeline (NumPy reading of files in the DeepOBS formats, CIFAR augmentation and standardisation),
  loss, L2 term (cifar10_3c3d), accuracy metric, SGD update (Keras 3, backend from ``--backend``);
* ``plain``: the same Keras model stepped with ``train_on_batch`` on one fixed in-memory batch (no pipeline);
* ``stock``: ``plain`` for a ``keras.Sequential`` of stock ``keras.layers`` with the same configuration (the
  issue's reference point; ours differs only in ``testproblems.models.Dense``/``Conv2D``, faster kernel calls);
* ``xla`` (with ``--xla``): ``plain`` with ``jit_compile=True``;
* reference ``torch``: DeepOBS 1.1.2's ``net_mnist_2c2d`` / ``net_cifar10_3c3d``
  (``deepobs/pytorch/testproblems/testproblems_modules.py``, loaded as a single file because importing
  ``deepobs.pytorch`` pulls torchvision), stepped as DeepOBS' PyTorch runner does: zero_grad, forward,
  cross-entropy, batch accuracy (``.item()``), L2 term for cifar10_3c3d (f * ||w||^2 / 2 over non-bias
  parameters), backward, SGD step, ``loss.item()``, on in-memory tensors (no input pipeline at all).

Prints ms/step (median over rounds) and the throughput ratio torch_ms / ours_ms (> 1: ours is faster;
also the ratio of the per-round minima, less sensitive to other load on the machine);
target >= 1.5 for ``full``. torch is not a project dependency: if missing, it is installed into the running
interpreter's environment with ``pip install torch==2.13.0`` (a CPU wheel; pass ``--no-install`` to refuse).
Usage: ``.venv/bin/python bench/bench_testproblems.py [--steps 29 --rounds 3 --xla --backend tensorflow]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 128
TORCH_VERSION = "2.13.0"
PROBLEMS = ("fmnist_2c2d", "cifar10_3c3d")
TORCH_NETS = {
    "fmnist_2c2d": ("net_mnist_2c2d", (1, 28, 28), 0.0),
    "cifar10_3c3d": ("net_cifar10_3c3d", (3, 32, 32), 0.002),
}


# ------------------------------------------------------------------------------------------------- data
def write_data(folder: Path, steps: int) -> None:
    """Synthetic files in the DeepOBS formats sized so that one training epoch is exactly `steps` batches."""
    from testproblems.data import synthetic

    assert (steps + 1) % 5 == 0, "--steps + 1 must be a multiple of 5 (CIFAR-10 has 5 training files)"
    n = (steps + 1) * BATCH  # the validation split takes n_test = BATCH training records
    synthetic.write_prepared("fmnist", folder, n_train=n, n_test=BATCH, seed=0)
    synthetic.write_prepared("cifar10", folder, n_train=n, n_test=BATCH, seed=0)


# ---------------------------------------------------------------------------------------------- workers
def _limit_threads(threads: int) -> None:
    """Cap the compute threads of TensorFlow (if it is the backend) or torch at `threads` (0: defaults)."""
    if not threads:
        return
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def stock_sequential(model):
    """A ``keras.Sequential`` of stock ``keras.layers`` with the configuration of ``model``'s layers."""
    import keras

    layers = []
    for layer in model.layers[1:]:  # [0] is the InputLayer
        cls = next(c for c in type(layer).__mro__ if c.__module__.startswith("keras"))
        layers.append(cls.from_config(layer.get_config()))
    return keras.Sequential([keras.Input(model.inputs[0].shape[1:]), *layers])


def train_step_flops(model, batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one training step of a Conv2D/Dense/pooling network.

    Forward, plus two products of the same size per layer backwards (input and kernel gradient), except
    the first layer, whose input needs no gradient. Pooling, activations, bias and update are left out.
    """
    import keras

    total, first = 0, True
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, oh, ow, _ = layer.output.shape
            fwd = 2 * oh * ow * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            fwd = 2 * math.prod(layer.kernel.shape)
        else:
            continue
        total += fwd * (2 if first else 3)
        first = False
    return total * batch


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    """Best-of-3 GFLOP/s of an n x n x n float32 ``keras.ops.matmul``: this machine's attainable peak."""
    import keras
    import numpy as np

    a = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            r = keras.ops.matmul(a, a)
        keras.ops.convert_to_numpy(r)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best / 1e9


def keras_worker(data_dir: str, steps: int, xla: bool, threads: int) -> None:
    _limit_threads(threads)
    import keras
    import numpy as np

    import testproblems

    rng = np.random.default_rng(0)
    state = {}
    for name in PROBLEMS:
        p = testproblems.get(name, data_dir=data_dir)
        model = p.build_model()
        tr = p.trainer(model, keras.optimizers.SGD(1e-3))
        assert tr.steps_per_epoch == steps, (name, tr.steps_per_epoch)
        tr.train_epoch(0)  # warm-up: tracing, data cache
        shape = (BATCH, *model.inputs[0].shape[1:])
        x = rng.normal(size=shape).astype(np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]
        params = sum(math.prod(v.shape) for v in model.trainable_weights)
        plain = {}
        for kind, jit in (("plain", False), ("stock", False)) + ((("xla", True),) if xla else ()):
            m = stock_sequential(model) if kind == "stock" else p.build_model()
            if kind == "stock":
                assert all(type(la).__module__.startswith("keras") for la in m.layers), m.layers
                assert sum(math.prod(v.shape) for v in m.trainable_weights) == params
            m.compile(optimizer=keras.optimizers.SGD(1e-3), loss=p.loss(), metrics=p.metrics(), jit_compile=jit)
            for _ in range(3):
                m.train_on_batch(x, y)
            plain[kind] = m
        state[name] = (tr, plain, x, y, params, train_step_flops(model, BATCH))
    print(
        json.dumps(
            {
                "ready": True,
                "backend": keras.backend.backend(),
                "params": {k: v[4] for k, v in state.items()},
                "flops": {k: v[5] for k, v in state.items()},
            }
        ),
        flush=True,
    )
    epoch = 1
    for line in sys.stdin:
        kind, name = line.split()
        if kind == "peak":
            print(json.dumps({"gflops": matmul_gflops()}), flush=True)
            continue
        tr, plain, x, y, _, _ = state[name]
        t0 = time.perf_counter()
        if kind == "full":
            tr.train_epoch(epoch)
            epoch += 1
        else:
            m = plain[kind]
            for _ in range(steps):
                m.train_on_batch(x, y)
        print(json.dumps({"ms": (time.perf_counter() - t0) / steps * 1e3}), flush=True)


def _load_deepobs_torch_modules():
    """deepobs/pytorch/testproblems/testproblems_modules.py (+ its utils) without importing deepobs.pytorch."""
    spec = importlib.util.find_spec("deepobs")
    folder = Path(spec.submodule_search_locations[0]) / "pytorch" / "testproblems"
    pkg = types.ModuleType("_deepobs_pt")
    pkg.__path__ = [str(folder)]
    sys.modules["_deepobs_pt"] = pkg
    for mod in ("testproblems_utils", "testproblems_modules"):
        s = importlib.util.spec_from_file_location(f"_deepobs_pt.{mod}", folder / f"{mod}.py")
        m = importlib.util.module_from_spec(s)
        sys.modules[s.name] = m
        s.loader.exec_module(m)
    return sys.modules["_deepobs_pt.testproblems_modules"]


def torch_worker(steps: int, threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    mods = _load_deepobs_torch_modules()
    torch.manual_seed(0)
    state = {}
    for name, (cls, shape, wd) in TORCH_NETS.items():
        net = getattr(mods, cls)(num_outputs=10)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        x = torch.randn(BATCH, *shape)
        y = torch.randint(0, 10, (BATCH,))
        reg = [p for n, p in net.named_parameters() if "bias" not in n]
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(net=net, opt=opt, x=x, y=y, reg=reg, wd=wd, loss_fn=loss_fn):
            opt.zero_grad()
            out = net(x)
            loss = loss_fn(out, y)
            _, pred = torch.max(out.data, 1)
            _accuracy = (pred == y).sum().item() / BATCH
            if wd:
                loss = loss + sum(torch.norm(p) ** 2 for p in reg) * wd / 2
            loss.backward()
            opt.step()
            return loss.item()

        for _ in range(3):
            step()
        state[name] = (step, sum(p.numel() for p in net.parameters()))
    print(
        json.dumps(
            {
                "ready": True,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "params": {k: v[1] for k, v in state.items()},
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        _, name = line.split()
        step = state[name][0]
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        print(json.dumps({"ms": (time.perf_counter() - t0) / steps * 1e3}), flush=True)


# ------------------------------------------------------------------------------------------------- main
def ensure_torch(install: bool) -> None:
    if importlib.util.find_spec("torch") is not None:
        return
    if not install:
        sys.exit(
            "error: torch is not installed; rerun without --no-install or "
            f"`{sys.executable} -m pip install torch=={TORCH_VERSION}`"
        )
    print(f"installing torch=={TORCH_VERSION} (benchmark-only dependency) ...", flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}"])


class Worker:
    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker {self.proc.args} died (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, kind: str, name: str, key: str = "ms") -> float:
        self.proc.stdin.write(f"{kind} {name}\n")
        self.proc.stdin.flush()
        return self._read()[key]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=29, help="training steps per timed block (steps+1 divisible by 5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--xla", action="store_true", help="also time the plain Keras step with jit_compile=True")
    ap.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend of our side (default tensorflow)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="compute threads per framework (default 0: each framework's own default, all cores)",
    )
    ap.add_argument("--no-install", action="store_true", help="do not pip-install torch when it is missing")
    ap.add_argument("--worker", choices=("keras", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "keras":
        keras_worker(args.data_dir, args.steps, args.xla, args.threads)
        return 0
    if args.worker == "torch":
        torch_worker(args.steps, args.threads)
        return 0
    if (args.steps + 1) % 5:
        ap.error("--steps + 1 must be a multiple of 5")
    ensure_torch(not args.no_install)
    kinds = ["full", "plain", "stock"] + (["xla"] if args.xla else [])
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp), args.steps)
        env = dict(os.environ, KERAS_BACKEND=args.backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        common = ["--steps", str(args.steps), "--data-dir", tmp, "--threads", str(args.threads)]
        ours = Worker(["--worker", "keras", *common] + (["--xla"] if args.xla else []), env)
        ref = Worker(["--worker", "torch", *common], env)
        print(
            f"keras backend {ours.info['backend']} | torch {ref.info['torch']} ({ref.info['threads']} threads) | "
            f"batch {BATCH}, {args.steps} steps per block, {args.rounds} interleaved rounds, cpu count "
            f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
        )
        times = {(k, n): [] for n in PROBLEMS for k in [*kinds, "torch"]}
        for r in range(args.rounds):
            for name in PROBLEMS:
                for kind in kinds:
                    times[(kind, name)].append(ours.ask(kind, name))
                times[("torch", name)].append(ref.ask("torch", name))
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
        peak = ours.ask("peak", "-", key="gflops")
        ours.close()
        ref.close()
    print(
        f"load average at the end {os.getloadavg()[0]:.1f} (other processes on the machine inflate both sides,"
        " torch's spinning OpenMP threads more so)"
    )
    ok = True
    print(
        f"\n{'problem':14} {'params ours/torch':>21} {'variant':>7} {'ms/step':>9} {'torch ms':>9} {'ratio':>6}"
        f" {'best-of ratio':>13}"
    )
    for name in PROBLEMS:
        t_ref = statistics.median(times[("torch", name)])
        b_ref = min(times[("torch", name)])
        pc = f"{ours.info['params'][name]:,}/{ref.info['params'][name]:,}"
        for kind in kinds:
            t = statistics.median(times[(kind, name)])
            ratio = t_ref / t
            flag = "" if kind != "full" else ("  OK (>= 1.5)" if ratio >= 1.5 else "  BELOW TARGET 1.5")
            ok &= kind != "full" or ratio >= 1.5
            print(
                f"{name:14} {pc:>21} {kind:>7} {t:9.1f} {t_ref:9.1f} {ratio:6.2f} "
                f"{b_ref / min(times[(kind, name)]):13.2f}{flag}"
            )
    print("ratio = torch ms / ours ms of the medians over rounds (> 1: ours is faster); best-of: of the minima")
    print(f"\nroofline: this machine's float32 matmul peak (2048^3, keras.ops.matmul, best of 3) {peak:.0f} GFLOP/s")
    print(
        f"{'problem':14} {'GFLOP/step':>10} {'ours GFLOP/s':>13} {'torch GFLOP/s':>14} {'1.5x needs ms':>14}"
        f" {'= GFLOP/s':>10}"
    )
    for name in PROBLEMS:
        gf = ours.info["flops"][name] / 1e9
        t, t_ref = statistics.median(times[("full", name)]), statistics.median(times[("torch", name)])
        need = t_ref / 1.5
        print(
            f"{name:14} {gf:10.2f} {gf / t * 1e3:8.0f} ({gf / t * 1e3 / peak:3.0%}) {gf / t_ref * 1e3:8.0f} "
            f"({gf / t_ref * 1e3 / peak:3.0%}) {need:14.1f} {gf / need * 1e3:5.0f} ({gf / need * 1e3 / peak:3.0%})"
        )
    print(
        "GFLOP/step counts the convolutions and matrix products only (forward + input and kernel gradients);"
        " percentages are of the matmul peak"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
