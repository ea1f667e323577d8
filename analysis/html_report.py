"""``report.html``: the whole report as one self-contained page (figures as data: URIs, inline CSS, no
network, no JavaScript needed to read it).

The page holds every table of the run (results matrix, summary with confidence intervals, comparison with
the difference's interval and Holm p-values, performance profile, tuning-budget curves at selected k), every
PNG figure, and the provenance of the numbers: each tree with its file counts and skipped files, the
selection rule, mode, tuning and rerun seeds, the bootstrap settings. A two-line inline script only marks
on ``<body data-figures-loaded="n/m">`` how many images decoded (for the browser test); the page reads
the same without it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import stats
from .tables import PHI_LEGEND, _fmt
from .verdict import CLAIM_VIEW, RULES

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:0.82em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td:first-child,td:nth-child(2),th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.85em;color:#555}
code{background:#f5f5f5;padding:0 3px}.scroll{overflow-x:auto}
#table-verdict td{text-align:left}#verdict-headline{font-size:1.05em}
"""

LOADED_CHECK = (
    "<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
    "document.body.setAttribute('data-figures-loaded',i.filter(function(x){return x.complete&&x.naturalWidth>0})"
    ".length+'/'+i.length);});</script>"
)


def table_html(
    frame: pd.DataFrame, columns: Sequence[str], headers: Sequence[str] | None = None, table_id: str | None = None
) -> str:
    headers = list(headers or columns)
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    out = [f'<div class="scroll"><table{ident}><thead><tr>']
    out += [f"<th>{html.escape(str(h))}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for _, row in frame.iterrows():
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in columns) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def verdict_html(line: str, claims: pd.DataFrame) -> str:
    """The verdict section: the headline, the judged claims, the rules, how many were not run."""
    judged = claims[claims["status"] != "not run"]
    parts = [
        '<section id="verdict"><h2>Verdict: the paper\'s claims on these results</h2>',
        f'<p id="verdict-headline"><strong>{html.escape(line)}</strong></p>',
    ]
    if not judged.empty:
        parts.append(
            table_html(judged, [c for c, _ in CLAIM_VIEW], [h for _, h in CLAIM_VIEW], table_id="table-verdict")
        )
    not_run = claims[claims["status"] == "not run"]
    if not not_run.empty:
        parts.append(
            f"<p>{len(not_run)} claims not run (no search with reruns in these results), on: "
            f"{html.escape(', '.join(sorted(set(not_run['testproblem']))))}.</p>"
        )
    parts.append(f"<p>{html.escape(RULES)}</p></section>")
    return "".join(parts)


def image_html(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def budget_excerpt(curves: pd.DataFrame, ks: Sequence[int] = (1, 2, 5, 10, 20, 50)) -> pd.DataFrame:
    """The budget curves at a few k (and each search's full N)."""
    if curves.empty:
        return curves
    keep = curves["k"].isin(ks) | (curves["k"] == curves["n_samples"])
    return curves[keep]


def page(
    analysis,
    *,
    tables: Sequence[tuple[str, str, pd.DataFrame, list[str], list[str]]],
    figure_paths: Sequence[Path],
    settings: dict,
    title: str = "Results report",
    verdict: tuple[str, pd.DataFrame] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The page's HTML from its parts, chosen by ``report.render_html`` (which tables, notes and figures the
    report holds): this function only lays them out. ``tables``: (anchor id, heading, frame, columns,
    headers) in order of appearance; ``verdict``: (headline, judged claims), the section after the title."""
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if verdict is not None:
        parts.append(verdict_html(*verdict))
    parts.append('<h2 id="provenance">Provenance</h2><ul>')
    for report in analysis.reports:
        parts.append(
            f"<li><code>{html.escape(', '.join(report.roots))}</code>: {report.n_files} result files, "
            f"{report.n_duplicates} byte-identical copies counted once, {report.n_superseded} older files of a "
            f"repeated run superseded, {len(report.skipped)} unreadable files skipped"
        )
        if report.skipped:
            parts.append(
                "<ul>"
                + "".join(
                    f"<li>skipped <code>{html.escape(str(p))}</code>: {html.escape(str(r))}</li>"
                    for p, r in report.skipped
                )
                + "</ul>"
            )
        parts.append("</li>")
    parts.append("</ul><ul>")
    for key, value in settings.items():
        parts.append(f"<li>{html.escape(str(key))}: {html.escape(str(value))}</li>")
    parts.append(
        f"<li>confidence intervals: 95% bootstrap of the mean over the reported seeds (ascending seed order), "
        f"scipy.stats.bootstrap {stats.METHOD}, {stats.N_RESAMPLES:,} resamples, random_state={stats.RANDOM_STATE}; "
        "fewer than 2 seeds or a non-finite value: no interval (–); all seeds equal: the point itself</li>"
        "<li>comparison p-values: Welch t-test over seeds, Holm-corrected over the table's tests</li>"
        f"<li>labels: {html.escape(PHI_LEGEND)}</li></ul>"
    )
    for anchor, heading, frame, columns, headers in tables:
        if frame is None or frame.empty:
            continue
        parts.append(f'<h2 id="{html.escape(anchor)}">{html.escape(heading)}</h2>')
        parts.append(table_html(frame, columns, headers, table_id=f"table-{anchor}"))
    for note in notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for root, caveat in getattr(analysis, "caveats", []):
        parts.append(
            f"<h3>Caveat of the baseline tree <code>{html.escape(root)}</code></h3><p>{html.escape(caveat)}</p>"
        )
    pngs = [p for p in figure_paths if Path(p).suffix == ".png"]
    if pngs:
        parts.append('<h2 id="figures">Figures</h2>')
        for path in pngs:
            parts.append(image_html(Path(path), Path(path).stem.replace("_", " ")))
    parts.append(LOADED_CHECK)
    parts.append("</body></html>\n")
    return "".join(parts)
