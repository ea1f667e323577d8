"""GPU check of population training (issue 30), run by bench/gpu_check.sh: prints and writes one small JSON.

For fmnist_2c2d and cifar10_3c3d on synthetic data of the real size (no download): the device jax runs on, the
time per training step of one run and of populations of 8/16/32 (after compilation; epoch time = steps per
epoch x step time, labelled ``from_steps``), the throughput ratio against one run, peak device memory, and a
few-steps equality check of a population of 2 against the same population on the CPU (a subprocess with
JAX_PLATFORMS=cpu). ``--quick`` shrinks everything (a CPU smoke test of this script).

    KERAS_BACKEND=jax .venv/bin/python bench/gpu_check.py --out gpu_check.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRAIN = {"fmnist_2c2d": ("fmnist", 60_000), "cifar10_3c3d": ("cifar10", 50_000)}


def _specs(problem: str, n: int, data_dir: str, epochs: int = 1):
    from runners.spec import RunSpec

    return [
        RunSpec(
            problem,
            "MomentumOptimizer",
            (("learning_rate", 0.01 * (1 + i % 5)), ("momentum", 0.9)),
            seed=42 + i,
            num_epochs=epochs,
            data_dir=data_dir,
        )
        for i in range(n)
    ]


def step_time(problem: str, n: int, data_dir: str, steps: int) -> dict:
    """Seconds per vmapped training step of a population of ``n`` (median-free: total / steps after 2 warm-up
    steps), and the device's peak memory."""
    import jax
    import numpy as np

    from runners.executors.population import Population

    pop = Population(_specs(problem, n, data_dir))
    its = [iter(p.dataset().batches("train", epoch=0)) for p in pop.problems.values()]

    def step():
        x, y = pop._per_seed(its)
        targets = np.stack([pop.member_problems[0].targets(a, b) for a, b in zip(x, y)])
        state = (pop.trainable, pop.non_trainable, pop.optimizer_state)
        state, loss = pop._train(state, x, targets, pop.seed_index)
        pop.trainable, pop.non_trainable, pop.optimizer_state = state
        return np.asarray(loss)

    step(), step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t0) / steps
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "members": n,
        "step_s": per_step,
        "steps_per_epoch": pop.template.steps_per_epoch,
        "epoch_s_from_steps": per_step * pop.template.steps_per_epoch,
        "peak_bytes": stats.get("peak_bytes_in_use"),
    }


EQUALITY = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench.gpu_check import _specs
from runners.executors.population import Population
pop = Population(_specs(sys.argv[1], 2, sys.argv[2]))
curves = pop.run()
print("RESULT " + json.dumps([{k: c[k] for k in ("train_losses", "test_losses", "minibatch_train_losses")}
                              for c in curves]))
"""


def equality(problem: str, data_dir: str) -> dict:
    """A population of 2, one epoch of a small data set, on the default device and on the CPU."""
    out = {}
    for platform in ("default", "cpu"):
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
        if platform == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        proc = subprocess.run(
            [sys.executable, "-c", EQUALITY, problem, data_dir, str(ROOT)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            return {"error": proc.stderr[-500:]}
        out[platform] = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    worst = 0.0
    for a, b in zip(out["default"], out["cpu"]):
        for key in a:
            for x, y in zip(a[key], b[key]):
                worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return {"max_rel_diff_vs_cpu": worst, "values_compared": sum(len(v) for m in out["cpu"] for v in m.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test of this script)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import jax

    from testproblems.data import synthetic

    device = jax.devices()[0]
    report: dict = {
        "device": f"{device.platform}: {device.device_kind}",
        "jax": jax.__version__,
        "quick": args.quick,
        "problems": {},
    }
    print(f"[gpu_check] device: {report['device']}", flush=True)
    sizes = (1, 2) if args.quick else (1, 8, 16, 32)
    steps = 2 if args.quick else args.steps
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for problem, (dataset, n_train) in TRAIN.items():
            data = Path(tmp) / "full"
            small = Path(tmp) / "small"
            synthetic.write_prepared(dataset, data, n_train=2000 if args.quick else n_train, n_test=1000, seed=2)
            synthetic.write_prepared(dataset, small, n_train=1500, n_test=600, seed=3)
            rows = []
            for n in sizes:
                t0 = time.perf_counter()
                row = step_time(problem, n, str(data), steps)
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                one = rows[0]["step_s"]
                row["throughput_vs_one_run"] = n * one / row["step_s"]
                print(
                    f"[gpu_check] {problem} x{n}: {row['step_s'] * 1e3:.1f} ms/step, epoch ~"
                    f"{row['epoch_s_from_steps']:.1f} s (from {steps} steps), {row['throughput_vs_one_run']:.1f}x "
                    f"one run's throughput, peak {row['peak_bytes']}",
                    flush=True,
                )
            eq = equality(problem, str(small))
            print(f"[gpu_check] {problem} equality vs CPU: {eq}", flush=True)
            report["problems"][problem] = {"populations": rows, "equality": eq}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"[gpu_check] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
