"""Reference for bench_runners.py: one quadratic_deep run with DeepOBS 1.1.2's own TensorFlow code under
``tf.compat.v1`` (graph mode, ``disable_v2_behavior``): its ``quadratic_deep`` test problem and data set and
its ``StandardRunner`` (deepobs/tensorflow/runners/runner.py), writing its own JSON.

The installed deepobs package's top-level ``__init__`` pulls the analyzer and TF1-only modules, so the
packages ``deepobs`` and ``deepobs.tensorflow`` are entered without running their ``__init__`` and
``import tensorflow`` inside DeepOBS resolves to ``tf.compat.v1``. DeepOBS 1.1.2's data sets have no
validation split while its (1.2-beta) runner evaluates one, so the quadratic problem gets the 1.2 split added
after its own ``set_up`` (``RandomState(44)``, unshuffled, as data.md §6 and DeepOBS 1.2 define it); nothing
else of DeepOBS' code is changed or replaced, except that ``write_output`` converts NumPy scalars to Python
floats first (under NumPy 2, ``0.0 + np.float32`` stays float32, which ``json.dump`` rejects).

    python bench/bench_runners_deepobs_tf1.py --out DIR [--epochs 100] [--lr 0.01]
Prints one JSON line: {"seconds_in_process": ..., "file": ..., "final_test_loss": ...}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

T0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_deepobs_tf1():
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_v2_behavior()
    sys.modules["tensorflow"] = v1  # DeepOBS' `import tensorflow as tf` -> the TF1 API
    spec = importlib.util.find_spec("deepobs")
    root = Path(spec.origin).parent
    for name, path in (("deepobs", root), ("deepobs.tensorflow", root / "tensorflow")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    import deepobs.tensorflow.runners.runner as runner
    import deepobs.tensorflow.testproblems._quadratic as quadratic_mod
    import numpy as np

    original_set_up = quadratic_mod._quadratic_base.set_up

    def set_up_with_valid(self):
        original_set_up(self)
        ds = self.dataset
        x = np.float32(np.random.RandomState(44).normal(0.0, ds._noise_level, (ds._train_size, ds._dim)))
        valid = ds._make_dataset(x, shuffle=False)
        self.valid_init_op = v1.group([ds._iterator.make_initializer(valid), v1.assign(ds.phase, "valid")])

    quadratic_mod._quadratic_base.set_up = set_up_with_valid

    original_write = runner.StandardRunner.write_output

    def write_output(output, run_folder_name, file_name):
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, list) else (v.item() if hasattr(v, "item") else v)

        return original_write({k: plain(v) for k, v in output.items()}, run_folder_name, file_name)

    runner.StandardRunner.write_output = staticmethod(write_output)
    return v1, runner


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    v1, runner = load_deepobs_tf1()
    sys.argv = sys.argv[:1]  # DeepOBS' runner parses the command line for anything not passed
    r = runner.StandardRunner(v1.train.GradientDescentOptimizer, {"learning_rate": {"type": float}})
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every evaluation
        r.run(
            testproblem="quadratic_deep",
            hyperparams={"learning_rate": args.lr},
            batch_size=128,
            num_epochs=args.epochs,
            random_seed=args.seed,
            data_dir=None,
            output_dir=args.out,
            weight_decay=None,
            no_logs=False,
            train_log_interval=10,
            print_train_iter=False,
            tb_log=False,
            tb_log_dir="none",
            skip_if_exists=False,
        )
    files = sorted(Path(args.out).rglob("*.json"))
    data = json.loads(files[-1].read_text())
    print(
        json.dumps(
            {
                "seconds_in_process": time.perf_counter() - T0,
                "file": str(files[-1]),
                "final_test_loss": data["test_losses"][-1],
                "epoch0_test_loss": data["test_losses"][0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
