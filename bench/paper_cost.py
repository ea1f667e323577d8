"""The paper-scale study (configs/paper.yaml) costed: per problem the runs, epochs and FLOPs per run, computed
from the models themselves (XLA's cost analysis of the suite's own Keras train and test steps on the jax
backend: one batch each, times the steps and evaluation passes of a DeepOBS run), and the wall time that
follows from a measured rate.

    KERAS_BACKEND=jax .venv/bin/python bench/paper_cost.py [--problems a,b] [--cpu-gflops 20] [--gpu-tflops 15]

FLOPs: train step (forward + backward + update) x steps per epoch x epochs, plus forward passes over train-eval,
validation and test data at each of the epochs + 1 evaluations (DeepOBS' evaluate_all). Projections divide by
a sustained rate: ``--cpu-gflops`` (measured on this machine, docs/population.md) and ``--gpu-tflops`` (an
ESTIMATE for one modern GPU kept busy by populations; not measured here), both printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "jax")

#: examples per split of each dataset's full data (DeepOBS splits); tolstoi: sequences of 50 characters
SPLITS = {
    "quadratic": (1000, 1000, 1000),
    "mnist": (50_000, 10_000, 10_000),
    "fmnist": (50_000, 10_000, 10_000),
    "cifar10": (40_000, 10_000, 10_000),
    "cifar100": (40_000, 10_000, 10_000),
    "svhn": (47_225, 26_032, 26_032),
    "tolstoi": (3_000_000 // 50, 400_000 // 50, 400_000 // 50),
}


def step_flops(problem_name: str) -> tuple[float, float, int]:
    """(FLOPs of one training step, FLOPs of one evaluation batch, batch size) from XLA's cost analysis."""
    import jax
    import keras
    import numpy as np

    import optimizers
    import testproblems

    problem = testproblems.get(problem_name)
    model = problem.build_model()
    opt = optimizers.make("MomentumOptimizer", model, learning_rate=0.01, momentum=0.9)
    model.compile(optimizer=opt, loss=problem.loss(), metrics=problem.metrics())
    shape = (problem.batch_size, *model.inputs[0].shape[1:])
    dtype = model.inputs[0].dtype
    x = np.zeros(shape, dtype=dtype)
    y = (
        x
        if problem.spec.loss in ("vae", "quadratic")
        else np.zeros((problem.batch_size, *model.outputs[0].shape[1:]), "float32")
    )
    model._symbolic_build(data_batch=(x, y, None))
    opt.build(model.trainable_variables)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    ov = [v.value for v in opt.variables]
    mv = [v.value for v in model.metrics_variables]

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", 0.0))

    train = flops(lambda s, a, b: model.train_step(s, (a, b)), (tv, ntv, ov, mv), x, y)
    test = flops(lambda s, a, b: model.test_step(s, (a, b)), (tv, ntv, mv), x, y)
    keras.backend.clear_session()
    return train, test, problem.batch_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=None, help="comma-separated subset (default: all of paper.yaml)")
    parser.add_argument("--cpu-gflops", type=float, default=None, help="sustained GFLOP/s of this CPU (measured)")
    parser.add_argument("--gpu-tflops", type=float, default=15.0, help="ESTIMATED sustained TFLOP/s of one GPU")
    parser.add_argument("--gpus", type=int, default=8, help="N of the Ray-cluster column")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import testproblems
    from runners.config import load_study

    study = load_study(ROOT / "configs" / "paper.yaml")
    runs: dict[str, int] = {}
    epochs: dict[str, int] = {}
    for entry in study.entries:
        n = len(entry.tuning_specs()) + len([s for s in entry.rerun_seeds if s != entry.tuning_seed])
        runs[entry.problem] = runs.get(entry.problem, 0) + n
        epochs[entry.problem] = entry.tuning_specs()[0].effective_num_epochs()
    wanted = args.problems.split(",") if args.problems else list(runs)
    rows = []
    for name in wanted:
        spec = testproblems.spec(name)
        train, test, batch = step_flops(name)
        n_train, n_valid, n_test = SPLITS[spec.dataset]
        steps = n_train // batch
        # each phase evaluates its full batches (train-eval: a valid-sized subset of the training data)
        eval_batches = min(n_train, n_valid) // batch + n_valid // batch + n_test // batch
        per_run = epochs[name] * steps * train + (epochs[name] + 1) * eval_batches * test
        total = per_run * runs[name]
        row = {
            "problem": name,
            "runs": runs[name],
            "epochs": epochs[name],
            "train_step_gflop": train / 1e9,
            "flops_per_run": per_run,
            "study_flops": total,
            "gpu_hours_est": total / (args.gpu_tflops * 1e12) / 3600,
        }
        if args.cpu_gflops:
            row["cpu_days"] = total / (args.cpu_gflops * 1e9) / 86400
        row[f"gpu_hours_est_{args.gpus}gpus"] = row["gpu_hours_est"] / args.gpus
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| problem | runs | epochs | FLOPs/run | study FLOPs |"
        + (" CPU days |" if args.cpu_gflops else "")
        + f" 1 GPU h (est. {args.gpu_tflops:g} TFLOP/s) | {args.gpus} GPUs h (est.) |"
    )
    print("|---|---|---|---|---|" + ("---|" if args.cpu_gflops else "") + "---|---|")
    for r in rows:
        print(
            f"| {r['problem']} | {r['runs']} | {r['epochs']} | {r['flops_per_run']:.3g} | {r['study_flops']:.3g} |"
            + (f" {r['cpu_days']:.3g} |" if args.cpu_gflops else "")
            + f" {r['gpu_hours_est']:.3g} | {r[f'gpu_hours_est_{args.gpus}gpus']:.3g} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
