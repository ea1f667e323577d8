"""Benchmark: analysis of the paper's full released tree (1,741 files) cold and warm vs DeepOBS' own ranking.

* cold: ``analysis.report.analyse`` with an empty cache folder (parse every file, select, summary tables with
  issue 18's bootstrap CIs of every row and of every comparison difference, Holm, budget curves, performance
  profile), then the tables written (csv, md, tex, report.md, report.html; no figures);
* warm: the same with the parsed-table cache and the derived-table cache (``analysis.derived``) in place
  (both invalidated by any change of their inputs);
* reference: DeepOBS' own ``create_setting_analyzer_ranking`` (mode 'final') over every (problem, optimizer)
  folder of the same trees, measured in the same run (interleaved repetitions; the median is reported).

* warm with figures: the same plus every figure (PNG and PDF), copied from the figure cache
  (``analysis.figure_cache``, keyed by the derived-table key, the tuning seed, the versions of matplotlib,
  Pillow and fontTools, and the effective rcParams);
  cold with figures (every figure drawn) is printed once, for information.

Targets (issues 7 and 18): cold <= 10 s, warm <= 2 s and warm with figures <= 2 s on a 2-core machine, and
faster than DeepOBS' ranking. The machine's load average is printed with the
numbers. Usage: ``make bench-analysis`` or ``.venv/bin/python bench/bench_analysis.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.deepobs_reference import shared_utils  # noqa: E402
from analysis.report import analyse, write_report  # noqa: E402


def trees() -> list[Path]:
    cache = ROOT / ".cache" / "reference"
    if not (cache / ".unpacked").exists():
        subprocess.run(["make", "-s", "-C", str(ROOT), ".cache/reference/.unpacked"], check=True)
    return [cache / "paper_results_medium_budget", cache / "paper_results_removed_l2"]


def ours(roots: list[Path], cache_dir: str, figures: bool = False) -> float:
    os.environ["NLWU_CACHE"] = cache_dir
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        write_report(analyse(roots, progress=False), Path(out) / "report", figures=figures)
        return time.perf_counter() - start


def deepobs(roots: list[Path]) -> tuple[float, int]:
    folders = [
        opt
        for root in roots
        for problem in sorted(root.iterdir())
        if problem.is_dir()
        for opt in sorted(problem.iterdir())
        if opt.is_dir()
    ]
    utils = shared_utils(allow_problems=[f.parent.name for f in folders])
    failures = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for folder in folders:
            try:
                utils.create_setting_analyzer_ranking(str(folder), "final", "valid_accuracies")
            except Exception:  # DeepOBS cannot stack curves of different lengths (deepobs-format Q7)
                failures += 1
    return time.perf_counter() - start, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    roots = trees()
    cold, warm, warm_figures, reference = [], [], [], []
    failures = 0
    with tempfile.TemporaryDirectory() as cache_dir:  # once, for information: every figure drawn
        cold_figures = ours(roots, cache_dir, figures=True)
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache_dir:
            cold.append(ours(roots, cache_dir))
            reference_time, failures = deepobs(roots)
            reference.append(reference_time)
            warm.append(ours(roots, cache_dir))
            ours(roots, cache_dir, figures=True)  # fills the figure cache
            warm_figures.append(ours(roots, cache_dir, figures=True))
    c, w, wf, r = (statistics.median(x) for x in (cold, warm, warm_figures, reference))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"files: {sum(1 for root in roots for _ in root.glob('*/*/*/*.json'))}   repetitions: {args.repeat}"
        f"   cores: {os.cpu_count()}   load average (1, 5, 15 min): {load}"
    )
    print(
        f"ours cold (parse + select + tables + write): {c:6.2f} s   target <= 10 s  {'OK' if c <= 10 else 'MISSED'}"
        f"   (all: {' '.join(f'{x:.2f}' for x in cold)})"
    )
    print(
        f"ours warm (cached tables + write):           {w:6.2f} s   target <=  2 s  {'OK' if w <= 2 else 'MISSED'}"
        f"   (all: {' '.join(f'{x:.2f}' for x in warm)})"
    )
    print(
        f"ours warm with figures (+ cached figures):   {wf:6.2f} s   target <=  2 s  {'OK' if wf <= 2 else 'MISSED'}"
        f"   (all: {' '.join(f'{x:.2f}' for x in warm_figures)})"
    )
    print(f"ours cold with figures (every figure drawn, once, no target): {cold_figures:6.2f} s")
    print(
        f"DeepOBS create_setting_analyzer_ranking (all folders, mode final): {r:6.2f} s"
        f" ({failures} folder(s) DeepOBS could not rank)"
    )
    print(f"ratio DeepOBS / ours cold: {r / c:5.2f}x   DeepOBS / ours warm: {r / w:5.2f}x   (> 1 means ours is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
