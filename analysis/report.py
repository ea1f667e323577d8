"""Write the report under OUT: summary.{csv,md,tex}, comparison.{csv,md}, figures/, report.md."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deepobs_tree import RERUN_SEEDS, TUNING_SEED, write_atomic

from . import derived, figure_cache, html_report, stats, verdict
from . import figures as figs
from . import tables as table_module  # module access: a monkeypatched label reaches the cache key
from .budget import budget_curves, budget_figures
from .loader import LoadReport, load_runs, registry_has_accuracy
from .profiles import TAUS, omitted_reason, performance_profile, profile_figure
from .select import DEFAULT_SEARCHED, summarize
from .tables import (
    COMPARISON_INTERNAL,
    COMPARISON_VIEW,
    PHI_LEGEND,
    SUMMARY_VIEW,
    compare_to_baselines,
    label,
    latex_table,
    markdown_table,
    results_matrix,
    summary_csv_frame,
    view,
)


@dataclass
class Analysis:
    """Everything the report is made of (pure data)."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    comparison: pd.DataFrame
    reports: list[LoadReport]
    caveats: list[tuple[str, str]] = field(default_factory=list)
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)
    key: str | None = None  # the derived-table key (analysis.derived); None: nothing cached


def readme_caveat(root: Path) -> str | None:
    """The 'Caveat' section of a tree's README.md (or its first paragraph), to show next to its numbers."""
    readme = Path(root) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"^#+\s*Caveat[^\n]*\n(.*?)(?=^#+\s|\Z)", text, flags=re.S | re.M | re.I)
    if match:
        return match.group(1).strip()
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
    return paragraphs[0] if paragraphs else None


def analyse(
    results: Sequence[str | os.PathLike],
    baselines: Sequence[str | os.PathLike] = (),
    *,
    tuning_seed: int = TUNING_SEED,
    rerun_seeds: Iterable[int] = RERUN_SEEDS,
    searched: Sequence[str] = DEFAULT_SEARCHED,
    mode: str = "final",
    where: Mapping[str, object] | None = None,
    progress: bool = True,
    cache: bool = True,
) -> Analysis:
    """Load the trees, select and aggregate (protocol §4-5), compare with the baselines."""
    rerun_seeds = list(rerun_seeds)
    options = dict(tuning_seed=tuning_seed, rerun_seeds=rerun_seeds, searched=searched, mode=mode, where=where)
    runs = load_runs(results, progress=progress, cache=cache)
    reports = [runs.attrs["report"]]
    frames = [runs]
    caveats = []
    if baselines:
        base_runs = load_runs(baselines, progress=progress, cache=cache)
        reports.append(base_runs.attrs["report"])
        frames.append(base_runs)
        for root in baselines:
            caveat = readme_caveat(Path(root))
            if caveat:
                caveats.append((str(root), caveat))
    sources = ["results", "baselines"][: len(frames)]
    runs = pd.concat([f.assign(source=s) for f, s in zip(frames, sources)], ignore_index=True)
    runs.attrs = {}
    key = derived.key(frames, _key_options(options, sources), _registry(runs)) if cache else None
    tables = derived.cached(key, lambda: _derive(frames, sources, runs, **options))
    summary, comparison, budget, profile = (tables[name] for name in derived.TABLES)
    settings = {
        "results trees": ", ".join(map(str, results)),
        "baseline trees": ", ".join(map(str, baselines)) or "none",
        "selection rule": f"mode '{mode}': each search's settings ranked by the tuning run's (seed {tuning_seed}) "
        "final validation accuracy (final validation loss where the problem has no accuracy), "
        "non-finite scores last, exact ties to the first setting folder in name order",
        "searched hyperparameters": ", ".join(searched),
        "tuning seed": tuning_seed,
        "rerun seeds": _rerun_seeds_text(summary, rerun_seeds),
        "filter": ", ".join(f"{k}={v}" for k, v in (where or {}).items()) or "none",
    }
    return Analysis(
        runs=runs,
        summary=summary,
        comparison=comparison,
        reports=reports,
        caveats=caveats,
        budget=budget,
        profile=profile,
        settings=settings,
        key=key,
    )


def _rerun_seeds_text(summary: pd.DataFrame, rerun_seeds: list[int]) -> str:
    """The rerun seeds that ran (in any reported row), and the requested ones when some never ran."""
    present: set[int] = set()
    for seeds in summary.get("seeds", []):
        present |= {int(s) for s in str(seeds).split() if s.lstrip("-").isdigit()}
    ran = [s for s in rerun_seeds if s in present]
    text = " ".join(map(str, ran)) or "none"
    if len(ran) < len(rerun_seeds):
        text += f" (of the requested {_seed_range(rerun_seeds)}; the others have no result file)"
    return text


def _seed_range(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return " ".join(map(str, seeds))


def _key_options(options: dict, sources: list[str]) -> dict:
    """The options as the derived-table cache key holds them (JSON-able, filter values as given)."""
    where = options["where"] or {}
    return {
        "tuning_seed": int(options["tuning_seed"]),
        "rerun_seeds": [int(s) for s in options["rerun_seeds"]],
        "searched": [str(s) for s in options["searched"]],
        "mode": str(options["mode"]),
        "where": [[str(k), type(v).__name__, repr(v)] for k, v in sorted(where.items())],
        "sources": sources,
    }


def _registry(runs: pd.DataFrame) -> dict:
    """What the registries (built-in and plugin optimizers, test problems) say about the runs' names, as far
    as the derived tables use it: each optimizer's label and baseline flag, each problem's accuracy flag."""
    optimizers = {}
    for name in sorted(set(runs["optimizer"])):
        entry = table_module._registered(name)
        optimizers[name] = [table_module.short_name(name), None if entry is None else bool(entry.baseline)]
    problems = {name: registry_has_accuracy(name) for name in sorted(set(runs["testproblem"]))}
    return {"optimizers": optimizers, "problems": problems}


def _derive(
    frames: list[pd.DataFrame],
    sources: list[str],
    runs: pd.DataFrame,
    *,
    tuning_seed: int,
    rerun_seeds: list[int],
    searched: Sequence[str],
    mode: str,
    where,
) -> dict[str, pd.DataFrame]:
    """The derived tables (selection and aggregation, intervals, comparison, budget curves, profile)."""
    summary = pd.concat(
        [
            summarize(
                frame,
                tuning_seed=tuning_seed,
                rerun_seeds=rerun_seeds,
                searched=searched,
                mode=mode,
                where=where,
                source=source,
            )
            for frame, source in zip(frames, sources)
        ],
        ignore_index=True,
    )
    summary = summary.sort_values(["testproblem", "source", "optimizer", "search"], kind="stable").reset_index(
        drop=True
    )
    summary = stats.add_confidence_intervals(summary)
    comparison = stats.add_comparison_statistics(compare_to_baselines(summary))
    budget = budget_curves(runs, summary, tuning_seed=tuning_seed, searched=searched, where=where)
    profile = performance_profile(summary)
    return {"summary": summary, "comparison": comparison, "budget": budget, "profile": profile}


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text)


MANIFEST = ".report-files"
#: outputs an older report may have left without a manifest (never beside a new report)
LEGACY_OUTPUTS = (
    "verdict.md",
    "verdict.csv",
    "verdict_searches.csv",
    "comparison.csv",
    "comparison.md",
    "performance_profile.csv",
    "performance_profile.md",
    "budget_curves.csv",
)


def write_report(
    analysis: Analysis,
    out: str | os.PathLike,
    *,
    figures: bool = True,
    tuning_seed: int = TUNING_SEED,
    protocol: Path | None | str = "default",
) -> list[Path]:
    """Write every output file under ``out``, completely or not at all; returns the paths written.

    Everything is built in a hidden temporary folder next to ``out`` and then moved into place (one rename
    where ``out`` does not exist yet; otherwise file by file, ``report.md`` last). On any error the
    temporary folder and every parent folder this call created are removed and ``out`` is left as it was.
    ``out`` never mixes runs: the files of the previous report there (listed in its ``.report-files``, or
    the known output names) that this one does not write are removed. ``protocol``: the paper's table for
    the verdict section (``analysis.verdict``; "default": ``verdict.default_protocol()``; None: no paper).
    """
    if protocol == "default":
        protocol = verdict.default_protocol()
    out = Path(out)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        staged = _write_outputs(analysis, stage, figures=figures, tuning_seed=tuning_seed, protocol=protocol)
        relative = [p.relative_to(stage) for p in staged]
        write_atomic(stage / MANIFEST, "".join(f"{r.as_posix()}\n" for r in relative))
        if not out.exists():
            os.chmod(stage, 0o777 & ~_umask())
            stage.rename(out)
        else:
            if not out.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(out))
            for rel in sorted(relative, key=lambda r: r == Path("report.md")):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, out / rel)
            _remove_stale(out, set(relative))
            os.replace(stage / MANIFEST, out / MANIFEST)
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / rel for rel in relative]


def _remove_stale(out: Path, keep: set[Path]) -> None:
    """Remove the previous report's files under ``out`` that the new one did not write."""
    try:
        listed = [Path(line) for line in (out / MANIFEST).read_text(encoding="utf-8").splitlines() if line]
    except OSError:
        listed = [Path(n) for n in LEGACY_OUTPUTS]
        if (out / "figures").is_dir():
            listed += [p.relative_to(out) for p in (out / "figures").iterdir() if p.suffix in (".png", ".pdf")]
    for rel in listed:
        if rel not in keep and not rel.is_absolute() and ".." not in rel.parts:
            (out / rel).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_outputs(
    analysis: Analysis, out: Path, *, figures: bool, tuning_seed: int, protocol: Path | None = None
) -> list[Path]:
    """Every output file, written into the (empty, staging) folder ``out``."""
    written = []
    summary = analysis.summary
    results = analysis.settings.get("results trees", "these results")
    claims, searches, paper = verdict.evaluate(summary, protocol)
    line = verdict.headline(claims, results)
    written += verdict.write_verdict(
        out, claims, searches, line, results, None, str(protocol) if paper is not None else None
    )
    verdict_md = [
        "## Verdict: the paper's claims on these results",
        "",
        f"**{line}**",
        "",
        verdict.claims_markdown(claims),
        f"Per search (outcome within the paper's mean ± {verdict.K_SE:g} SE, chosen setting): verdict.md.",
        "",
    ]
    _write_text(out / "summary.csv", summary_csv_frame(summary).to_csv(index=False, float_format="%.17g"))
    written.append(out / "summary.csv")
    shown, columns, headers = view(summary, SUMMARY_VIEW)
    summary_md = markdown_table(shown, columns, headers)
    _write_text(out / "summary.md", summary_md)
    _write_text(out / "summary.tex", latex_table(shown, columns, headers))
    written += [out / "summary.md", out / "summary.tex"]
    comparison_md = ""
    if not analysis.comparison.empty:
        path = out / "comparison.csv"
        comparison_csv = analysis.comparison.drop(columns=[c for c in COMPARISON_INTERNAL if c in analysis.comparison])
        _write_text(path, comparison_csv.to_csv(index=False, float_format="%.17g"))
        shown, columns, headers = view(analysis.comparison, COMPARISON_VIEW)
        comparison_md = markdown_table(shown, columns, headers)
        _write_text(out / "comparison.md", comparison_md)
        written += [path, out / "comparison.md"]
    figure_paths = []
    if figures:

        def draw() -> list[Path]:
            paths = figs.all_figures(analysis.runs, summary, out / "figures", tuning_seed)
            paths += budget_figures(analysis.budget, summary, out / "figures")
            return paths + profile_figure(summary, out / "figures")

        figure_paths = figure_cache.cached(figure_cache.key(analysis.key, tuning_seed), out / "figures", draw)
        written += figure_paths
    extra_md = []
    if diverged_note(analysis.budget):
        extra_md += [diverged_note(analysis.budget), ""]
    if not analysis.budget.empty:
        _write_text(out / "budget_curves.csv", analysis.budget.to_csv(index=False, float_format="%.17g"))
        written.append(out / "budget_curves.csv")
        excerpt = html_report.budget_excerpt(analysis.budget)
        shown, columns, headers = view(excerpt, BUDGET_VIEW)
        extra_md += [
            "## Tuning-budget curves (expected over k random-search samples; budget_curves.csv has every k)",
            "",
            markdown_table(shown, columns, headers),
        ]
    profile_md = ""
    omitted = profile_omitted(analysis.profile)
    if omitted:
        extra_md += [omitted, ""]
    elif not analysis.profile.empty:
        _write_text(out / "performance_profile.csv", analysis.profile.to_csv(index=False, float_format="%.17g"))
        profile_md = markdown_table(analysis.profile, list(analysis.profile.columns))
        _write_text(out / "performance_profile.md", profile_md)
        written += [out / "performance_profile.csv", out / "performance_profile.md"]
        extra_md += [_profile_heading(analysis.profile), "", profile_md]
    _write_text(
        out / "report.md", render_report(analysis, summary_md, comparison_md, figure_paths, out, extra_md, verdict_md)
    )
    written.append(out / "report.md")
    _write_text(out / "report.html", render_html(analysis, figure_paths, (line, claims)))
    written.append(out / "report.html")
    return written


BUDGET_VIEW = [
    ("testproblem", "problem"),
    ("optimizer", "optimizer"),
    ("search", "search"),
    ("source", "source"),
    ("n_samples", "N"),
    ("k", "k"),
    ("expected_best_score", "expected best score"),
    ("expected_final_test", "expected final test"),
]


def profile_omitted(profile: pd.DataFrame) -> str | None:
    """The report's line saying why there is no performance profile (fewer than two problems), or None."""
    return omitted_reason(profile)


def diverged_note(budget: pd.DataFrame) -> str | None:
    """Which searches had diverged tuning samples (named and counted; the budget figure's curves count each
    as its search's worst converged sample instead of plotting it at, e.g., 1e12)."""
    if budget.empty or "n_diverged" not in budget:
        return None
    first = budget.drop_duplicates(["testproblem", "optimizer", "search", "source"])
    first = first[first["n_diverged"] > 0]
    if first.empty:
        return None
    parts = [
        f"{r.testproblem}/{label(r.optimizer)} {int(r.n_diverged)} of {int(r.n_samples)}" for r in first.itertuples()
    ]
    return (
        "Diverged tuning samples (non-finite, or a final validation loss above the untrained model's): "
        + ", ".join(parts)
        + ". The budget figures count each as its search's worst converged sample; "
        "budget_curves.csv has both versions."
    )


def _profile_heading(profile: pd.DataFrame) -> str:
    problems = profile.attrs.get("problems", [])
    excluded = profile.attrs.get("excluded", [])
    text = (
        f"## Performance profile over {len(problems)} problems (fraction within τ of the best; losses as "
        "they are, accuracies as error rates; a W optimizer counts as its base; score = area under the "
        "profile on τ in [1, 4], normalised)"
    )
    if excluded:
        text += f"\n\nLeft out (best cost not positive): {', '.join(excluded)}."
    return text


def render_html(analysis: Analysis, figure_paths: Sequence[Path], judged: tuple | None = None) -> str:
    """report.html: which tables, notes and figures the page holds (as ``render_report`` decides for report.md),
    laid out by ``html_report.page``; ``judged``: (headline, claims table)."""
    tables = []
    matrix = results_matrix(analysis.summary)
    if not matrix.empty:
        tables.append(
            (
                "matrix",
                "Final test metric of the chosen settings (mean ± population std (seeds))",
                matrix,
                list(matrix.columns),
                list(matrix.columns),
            )
        )
    tables.append(
        (
            "summary",
            "Summary (one row per search; 95% bootstrap CI of the mean; the seeds of each row)",
            *view(analysis.summary, [*SUMMARY_VIEW, ("seeds", "seeds")]),
        )
    )
    if not analysis.comparison.empty:
        tables.append(
            (
                "comparison",
                "Difference to the best baseline (BCa CI of the difference; Welch p, Holm-corrected)",
                *view(analysis.comparison, COMPARISON_VIEW),
            )
        )
    if not analysis.profile.empty and not profile_omitted(analysis.profile):
        tables.append(
            (
                "profile",
                _profile_heading(analysis.profile).lstrip("# ").split("\n")[0],
                analysis.profile,
                list(analysis.profile.columns),
                list(analysis.profile.columns),
            )
        )
    if not analysis.budget.empty:
        tables.append(
            (
                "budget",
                "Tuning-budget curves at selected k (budget_curves.csv has every k)",
                *view(html_report.budget_excerpt(analysis.budget), BUDGET_VIEW),
            )
        )
    settings = dict(analysis.settings)
    settings["performance-profile τ grid"] = ", ".join(f"{t:g}" for t in TAUS)
    notes = [n for n in (profile_omitted(analysis.profile), diverged_note(analysis.budget)) if n]
    return html_report.page(
        analysis, tables=tables, figure_paths=figure_paths, settings=settings, verdict=judged, notes=notes
    )


def render_report(
    analysis: Analysis,
    summary_md: str,
    comparison_md: str,
    figure_paths: Sequence[Path],
    out: Path,
    extra_md: Sequence[str] = (),
    verdict_md: Sequence[str] = (),
) -> str:
    lines = ["# Results report", ""]
    for report in analysis.reports:
        lines.append(
            f"- {', '.join(report.roots)}: {report.n_files} result files, "
            f"{report.n_duplicates} byte-identical copies counted once, "
            f"{report.n_superseded} older files of a repeated run superseded, "
            f"{len(report.skipped)} unreadable files or folders skipped"
        )
        for path, reason in report.skipped:
            lines.append(f"  - skipped `{path}`: {reason}")
    ties = analysis.summary[analysis.summary["tie"].astype(bool)]
    lines += [
        "",
        "Selection: each search's settings ranked by the tuning run's final validation accuracy (final "
        "validation loss where the problem has no accuracy); the chosen setting reported as mean and population "
        "std (ddof=0) of the final test metric over the tuning and rerun seeds, with the 95% bootstrap interval "
        "of the mean (scipy BCa, 10,000 resamples, random_state=0, seeds ascending; – with fewer than 2 seeds, "
        "the value itself when all seeds agree). Accuracies are fractions. The same report as one "
        "self-contained page: report.html.",
        "",
    ]
    if not ties.empty:
        lines.append(
            "Exact ties at the top (first in folder-name order chosen): "
            + ", ".join(f"{r.testproblem}/{r.optimizer}" for r in ties.itertuples())
            + "."
        )
        lines.append("")
    lines += list(verdict_md)
    matrix = results_matrix(analysis.summary)
    if not matrix.empty:
        lines += [
            "## Final test metric of the chosen settings (mean ± population std (seeds))",
            "",
            markdown_table(matrix, list(matrix.columns)),
            "",
        ]
    lines += [
        f'Labels: {PHI_LEGEND} (e.g. "GD φ_p" is PowKernelGradientDescentOptimizer, "SGD" its '
        "linear twin GradientDescentOptimizer).",
        "",
    ]
    lines += ["## Summary (one row per search)", "", summary_md]
    if comparison_md:
        lines += [
            "## Difference to the best baseline (BCa 95% CI of the difference; Welch t-test over seeds, "
            "Holm-corrected over the table's tests)",
            "",
            comparison_md,
        ]
    lines += list(extra_md)
    for root, caveat in analysis.caveats:
        lines += [f"### Caveat of the baseline tree `{root}`", "", caveat, ""]
    if figure_paths:
        lines += ["## Figures", ""]
        for path in figure_paths:
            if path.suffix == ".png":
                rel = path.relative_to(out)
                lines.append(f"![{path.stem}]({rel.as_posix()})")
        lines.append("")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """``'43-51'`` or ``'43,44,45'`` -> list of ints (ValueError for a reversed range or an empty list)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            low, high = part.split("-", 1) if not part.startswith("-") else (part, part)
            low, high = int(low), int(high)
            if high < low:
                raise ValueError(f"reversed range {part}")
            seeds.extend(range(low, high + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds")
    return seeds
