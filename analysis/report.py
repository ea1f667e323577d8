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

from . import figures as figs
from .loader import LoadReport, load_runs
from .select import DEFAULT_SEARCHED, summarize
from .tables import (
    COMPARISON_VIEW,
    SUMMARY_VIEW,
    compare_to_baselines,
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
    tuning_seed: int = 42,
    rerun_seeds: Iterable[int] = range(43, 52),
    searched: Sequence[str] = DEFAULT_SEARCHED,
    mode: str = "final",
    where: Mapping[str, object] | None = None,
    progress: bool = True,
    cache: bool = True,
) -> Analysis:
    """Load the trees, select and aggregate (protocol §4-5), compare with the baselines."""
    rerun_seeds = list(rerun_seeds)
    runs = load_runs(results, progress=progress, cache=cache)
    reports = [runs.attrs["report"]]
    summary = summarize(runs, tuning_seed=tuning_seed, rerun_seeds=rerun_seeds, searched=searched, mode=mode,
                        where=where, source="results")
    runs = runs.assign(source="results")
    caveats = []
    if baselines:
        base_runs = load_runs(baselines, progress=progress, cache=cache)
        reports.append(base_runs.attrs["report"])
        base_summary = summarize(base_runs, tuning_seed=tuning_seed, rerun_seeds=rerun_seeds, searched=searched,
                                 mode=mode, where=where, source="baselines")
        runs = pd.concat([runs, base_runs.assign(source="baselines")], ignore_index=True)
        summary = pd.concat([summary, base_summary], ignore_index=True)
        for root in baselines:
            caveat = readme_caveat(Path(root))
            if caveat:
                caveats.append((str(root), caveat))
    summary = summary.sort_values(["testproblem", "source", "optimizer", "search"], kind="stable").reset_index(
        drop=True
    )
    comparison = compare_to_baselines(summary)
    return Analysis(runs=runs, summary=summary, comparison=comparison, reports=reports, caveats=caveats)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(analysis: Analysis, out: str | os.PathLike, *, figures: bool = True,
                 tuning_seed: int = 42) -> list[Path]:
    """Write every output file under ``out``, completely or not at all; returns the paths written.

    Everything is built in a hidden temporary folder next to ``out`` and then moved into place (one rename
    where ``out`` does not exist yet; otherwise file by file, ``report.md`` last). On any error the
    temporary folder and every parent folder this call created are removed and ``out`` is left as it was.
    """
    out = Path(out)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        staged = _write_outputs(analysis, stage, figures=figures, tuning_seed=tuning_seed)
        relative = [p.relative_to(stage) for p in staged]
        if not out.exists():
            os.chmod(stage, 0o777 & ~_umask())
            stage.rename(out)
        else:
            if not out.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(out))
            for rel in sorted(relative, key=lambda r: r == Path("report.md")):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, out / rel)
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / rel for rel in relative]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_outputs(analysis: Analysis, out: Path, *, figures: bool, tuning_seed: int) -> list[Path]:
    """Every output file, written into the (empty, staging) folder ``out``."""
    written = []
    summary = analysis.summary
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
        _write_text(path, analysis.comparison.to_csv(index=False, float_format="%.17g"))
        shown, columns, headers = view(analysis.comparison, COMPARISON_VIEW)
        comparison_md = markdown_table(shown, columns, headers)
        _write_text(out / "comparison.md", comparison_md)
        written += [path, out / "comparison.md"]
    figure_paths = []
    if figures:
        figure_paths = figs.all_figures(analysis.runs, summary, out / "figures", tuning_seed)
        written += figure_paths
    _write_text(out / "report.md", render_report(analysis, summary_md, comparison_md, figure_paths, out))
    written.append(out / "report.md")
    return written


def render_report(analysis: Analysis, summary_md: str, comparison_md: str, figure_paths: Sequence[Path],
                  out: Path) -> str:
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
        "std (ddof=0) of the final test metric over the tuning and rerun seeds. Accuracies are fractions.",
        "",
    ]
    if not ties.empty:
        lines.append("Exact ties at the top (first in folder-name order chosen): " + ", ".join(
            f"{r.testproblem}/{r.optimizer}" for r in ties.itertuples()) + ".")
        lines.append("")
    matrix = results_matrix(analysis.summary)
    if not matrix.empty:
        lines += ["## Final test metric of the chosen settings (mean ± population std (seeds))", "",
                  markdown_table(matrix, list(matrix.columns)), ""]
    lines += ["## Summary (one row per search)", "", summary_md]
    if comparison_md:
        lines += ["## Difference to the best baseline (Welch t-test over seeds)", "", comparison_md]
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
