"""Benchmark of population training (issue 30), every number against a reference measured in the same invocation:

1. study  -- the `make reproduce` default study (configs/reproduce_default.yaml: quadratic_deep, 6 optimizers,
             300 tuning runs + 54 reruns, 100 epochs) with `python -m runners sweep` into a fresh folder, process
             start included: the sweep's default choice (populations on the jax backend for quadratic_deep on
             CPU) vs `--population 1` (today's per-run sweep). Target ratio >= 8 on 2 cores. Both sweeps'
             chosen settings are printed side by side (they must agree with each other and with the committed
             deepobs_results_medium_budget/: `python -m analysis.verdict` checks the latter). ``--fraction F``
             runs the first ceil(F * 50) samples of every search on both sides (+ all reruns), labelled so.
2. single -- ~5 single 100-epoch `python -m runners run` calls (quadratic_deep, GradientDescentOptimizer,
             learning rate 0.01), start-up included: the population study's wall time in units of one run
             (target: <= ~5).
3. cnn    -- fmnist_2c2d on CPU (synthetic data, batch 128): images/s of the per-run path (TF, one run) vs a
             population of 4 on jax, a few steps after compilation. The sweep's choice for fmnist_2c2d on
             CPU (``population.choose``) is printed: per-run, so the sweep never makes it slower.
4. floor  -- the default study's arithmetic (XLA's FLOP count of the suite's own train and test steps) over the
             rate a 50-member population reaches here alone and two at once (one per core), with glibc's malloc
             defaults and with ``runners.malloc.keep_freed_memory``: the population sweep's compute floor on
             this machine, in seconds and in single runs (with ``single``).

    .venv/bin/python bench/bench_population.py [--only study,single,cnn,floor] [--fraction 0.2]

The machine is shared: numbers move with its load (printed next to each section). Run what fits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import run_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
STUDY = ROOT / "configs" / "reproduce_default.yaml"


def env(**extra) -> dict[str, str]:
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    return e


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(cmd: list[str], **extra) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env(**extra), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def chosen(text: str) -> dict[str, str]:
    """search -> chosen setting folder, from a sweep's log."""
    out = {}
    for line in text.splitlines():
        if ": chose " in line:
            search, rest = line.strip().split(": chose ", 1)
            out[search] = rest.split(" (score")[0]
    return out


def bench_study(fraction: float) -> dict:
    print(f"\n[study] {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-population-") as tmp:
        cfg = STUDY
        label = "full default study (354 runs)"
        if fraction < 1:
            budget = max(1, math.ceil(fraction * 50))
            cfg = Path(tmp) / "fraction.yaml"
            text = STUDY.read_text().replace("  budget: 50 ", f"  budget: {budget} ", 1)
            assert f"budget: {budget} " in text, "could not set the budget in the study file"
            cfg.write_text(text)
            label = f"budget {budget} of 50 per search (+ all 54 reruns), both sides"
        walls, logs = {}, {}
        for name, extra in (("population", []), ("per-run", ["--population", "1"])):
            print(f"[study] {name} sweep ... ({load()})", flush=True)
            walls[name], logs[name] = timed(
                [PY, "-m", "runners", "sweep", str(cfg), "--out", f"{tmp}/{name}", "--no-progress", *extra]
            )
            print(f"[study] {name}: {walls[name]:.1f} s", flush=True)
    ratio = walls["per-run"] / walls["population"]
    a, b = chosen(logs["population"]), chosen(logs["per-run"])
    same = sum(a.get(k) == v for k, v in b.items())
    print(
        f"[study] {label}: per-run sweep {walls['per-run']:.1f} s, population sweep {walls['population']:.1f} s "
        f"-> {ratio:.1f}x (target >= 8)"
    )
    print(f"[study] chosen settings equal in {same} of {len(b)} searches")
    for k in b:
        if a.get(k) != b[k]:
            print(f"[study]   {k}: population {a.get(k)} vs per-run {b[k]}")
    return {
        "study": label,
        "population_s": walls["population"],
        "per_run_s": walls["per-run"],
        "ratio": ratio,
        "same_choices": f"{same}/{len(b)}",
    }


def bench_single(repeats: int) -> dict:
    print(f"\n[single] {load()}", flush=True)
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-single-") as tmp:
        for i in range(repeats):
            wall, _ = timed(
                [
                    *run_argv(PY, "GradientDescentOptimizer", "learning_rate=0.01"),
                    "--seed",
                    str(42 + i),
                    "--out",
                    tmp,
                    "--no-progress",
                ]
            )
            times.append(wall)
    med = statistics.median(times)
    print(
        "[single] one 100-epoch quadratic_deep run (start-up included): "
        + ", ".join(f"{t:.1f}" for t in times)
        + f" s; median {med:.1f} s"
    )
    return {"single_run_s": med, "single_runs": times}


CNN_SCRIPT = r"""
import json, sys, time
import numpy as np
from runners.spec import RunSpec
data, mode, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "per-run":
    from runners import run
    spec = RunSpec("fmnist_2c2d", "MomentumOptimizer", (("learning_rate", 0.01), ("momentum", 0.9)), data_dir=data)
    run.fresh_keras_state(42)
    problem, model, opt, trainer = run.build(spec)
    batches = list(trainer.data.batches("train", epoch=0))[:steps + 2]
    for x, y in batches[:2]:
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for x, y in batches[2:]:
        model.train_on_batch(x, y)
    wall = time.perf_counter() - t0
    print("RESULT " + json.dumps({"images_per_s": steps * 128 / wall}))
else:
    from runners.executors.population import Population
    specs = [RunSpec("fmnist_2c2d", "MomentumOptimizer", (("learning_rate", 0.01 * (i + 1)), ("momentum", 0.9)),
                     seed=42 + i, data_dir=data) for i in range(n)]
    pop = Population(specs)
    probs = list(pop.problems.values())
    its = [iter(p.dataset().batches("train", epoch=0)) for p in probs]
    def step():
        x, y = pop._per_seed(its)
        state = (pop.trainable, pop.non_trainable, pop.optimizer_state)
        state, loss = pop._train(state, x, y, pop.seed_index)
        pop.trainable, pop.non_trainable, pop.optimizer_state = state
        np.asarray(loss)
    step(); step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - t0
    print("RESULT " + json.dumps({"images_per_s": n * steps * 128 / wall}))
"""


def bench_cnn(steps: int, members: int) -> dict:
    print(f"\n[cnn] {load()}", flush=True)
    from runners.executors.population import choose
    from testproblems.data import synthetic

    use, why = choose("fmnist_2c2d", "cpu")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-cnn-") as tmp:
        synthetic.write_prepared("fmnist", Path(tmp) / "data", n_train=2 * (steps + 2) * 128 + 1000, n_test=256, seed=2)
        script = Path(tmp) / "cnn.py"
        script.write_text(CNN_SCRIPT)
        for mode, backend in (("per-run", "tensorflow"), ("population", "jax")):
            _, text = timed(
                [PY, str(script), str(Path(tmp) / "data"), mode, str(members), str(steps)], KERAS_BACKEND=backend
            )
            line = next(x for x in text.splitlines() if x.startswith("RESULT "))
            results[mode] = json.loads(line[7:])["images_per_s"]
            print(
                f"[cnn] fmnist_2c2d {mode} ({backend}{f', {members} members' if mode == 'population' else ''}): "
                f"{results[mode]:.0f} images/s",
                flush=True,
            )
    ratio = results["population"] / results["per-run"]
    print(
        f"[cnn] population / per-run throughput on CPU: {ratio:.2f}x; the sweep's choice: "
        f"{'population' if use else 'per-run'} ({why})"
    )
    if not use:
        print("[cnn] the sweep runs fmnist_2c2d per run on CPU: its images/s are the per-run path's (ratio 1.00)")
    return {
        "cnn_per_run_images_s": results["per-run"],
        "cnn_population_images_s": results["population"],
        "cnn_sweep_choice": "population" if use else "per-run",
    }


FLOOR_SCRIPT = r"""
import json, resource, sys, time
keep = sys.argv[1] == "keep"
if keep:
    from runners.malloc import keep_freed_memory
    keep_freed_memory()
import numpy as np
from runners.spec import RunSpec
from runners.executors.population import Population
specs = [RunSpec("quadratic_deep", "GradientDescentOptimizer", (("learning_rate", 0.001 * (1 + i % 7)),), seed=42)
         for i in range(50)]
pop = Population(specs)
pop.evaluate("test", 0); pop.train_epoch(0)  # compile
epochs = int(sys.argv[2])
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
for n in range(epochs):
    pop.train_epoch(n + 1)
    for phase in ("train_eval", "valid", "test"):
        pop.evaluate(phase, n + 1)
wall = time.perf_counter() - t0
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (4 * epochs)
print("RESULT " + json.dumps({"member_epoch_s": wall / (50 * epochs), "faults_per_call": faults}))
"""


def bench_floor(epochs: int) -> dict:
    """The study's arithmetic (XLA's FLOP count of the suite's own steps) against the rate one population reaches
    here, alone and two at once (the sweep runs one per core), with and without ``keep_freed_memory``."""
    print(f"\n[floor] {load()}", flush=True)
    flops_code = "import json; from paper_cost import step_flops; print(json.dumps(step_flops('quadratic_deep')))"
    train, test, batch = json.loads(
        subprocess.run(
            [PY, "-c", flops_code], cwd=ROOT / "bench", env=env(KERAS_BACKEND="jax"), capture_output=True, text=True
        ).stdout.splitlines()[-1]
    )
    # a run: 100 epochs of 7 steps, 101 evaluations of 3 phases x 7 batches (quadratic_deep: 1000 examples, batch 128)
    run_flops = 100 * 7 * train + 101 * 3 * 7 * test
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        script = Path(tmp) / "floor.py"
        script.write_text(FLOOR_SCRIPT)
        xla = dict(KERAS_BACKEND="jax", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

        def one(mode: str) -> subprocess.Popen:
            return subprocess.Popen(
                [PY, str(script), mode, str(epochs)], cwd=ROOT, env=env(**xla), stdout=subprocess.PIPE, text=True
            )

        def result(proc) -> dict:
            text = proc.communicate()[0]
            return json.loads(next(x for x in text.splitlines() if x.startswith("RESULT "))[7:])

        alone = {mode: result(one(mode)) for mode in ("default", "keep")}
        pair = [result(p) for p in [one("keep"), one("keep")]]
    study_flops = 354 * run_flops
    per_member_epoch = run_flops / 101
    rate_alone = per_member_epoch / alone["keep"]["member_epoch_s"]
    rate_pair = sum(per_member_epoch / p["member_epoch_s"] for p in pair)
    for mode, label in (("default", "glibc defaults"), ("keep", "keep_freed_memory")):
        r = alone[mode]
        print(
            f"[floor] one 50-member population alone, {label}: {r['member_epoch_s'] * 1e3:.2f} ms per member-epoch "
            f"({per_member_epoch / r['member_epoch_s'] / 1e9:.0f} GFLOP/s), "
            f"{r['faults_per_call']:.0f} page faults per call"
        )
    print(
        f"[floor] two at once (one per core): {rate_pair / 1e9:.0f} GFLOP/s together "
        f"({rate_pair / rate_alone:.2f}x one)"
    )
    floor = study_flops / rate_pair
    print(
        f"[floor] the default study's arithmetic: {study_flops / 1e12:.2f} TFLOP "
        f"(354 runs x {run_flops / 1e9:.1f} GFLOP) "
        f"-> {floor:.1f} s at that rate: the population sweep's floor here, before any start-up, compile or write"
    )
    return {
        "study_tflop": study_flops / 1e12,
        "rate_alone_gflops": rate_alone / 1e9,
        "rate_two_gflops": rate_pair / 1e9,
        "compute_floor_s": floor,
        "member_epoch_ms_default_malloc": alone["default"]["member_epoch_s"] * 1e3,
        "member_epoch_ms_keep_freed": alone["keep"]["member_epoch_s"] * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="study,single,cnn,floor")
    parser.add_argument("--floor-epochs", type=int, default=20, help="epochs timed per population (floor)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of each search's 50 samples to run")
    parser.add_argument("--repeats", type=int, default=5, help="single 100-epoch runs")
    parser.add_argument("--cnn-steps", type=int, default=10)
    parser.add_argument("--cnn-members", type=int, default=4)
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    only = set(args.only.split(","))
    figures: dict = {}
    if "study" in only:
        figures.update(bench_study(args.fraction))
    if "single" in only:
        figures.update(bench_single(args.repeats))
        if "population_s" in figures:
            units = figures["population_s"] / figures["single_run_s"]
            print(f"[single] the population study took {units:.1f} single runs' time (target <= ~5)")
            figures["study_in_single_runs"] = units
    if "cnn" in only:
        figures.update(bench_cnn(args.cnn_steps, args.cnn_members))
    if "floor" in only:
        figures.update(bench_floor(args.floor_epochs))
        if "single_run_s" in figures:
            units = figures["compute_floor_s"] / figures["single_run_s"]
            print(f"[floor] = {units:.1f} single runs' time (the study's target: <= ~5)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
