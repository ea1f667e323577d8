"""report.html in a real headless browser (Debian's ``chromium``; ``.ci/run`` installs it): the page loads
from disk with no network, every embedded figure decodes, the verdict section comes first, the tables are
there, a screenshot is not blank; and the figures it embeds give each optimizer one colour everywhere and
never let a diverged sample set a y range."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis.report import analyse, write_report

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "deepobs_results_medium_budget"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no headless browser installed (apt-get install chromium; .ci/run does)"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-extensions",
    "--no-first-run",
    "--disable-background-networking",
    "--virtual-time-budget=10000",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def _browser(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _drawn_figures(monkeypatch) -> dict:
    """Record every figure the report draws (stem -> matplotlib figure), then save it as usual."""
    from analysis import figures

    drawn, save = {}, figures.save

    def recording(fig, out_dir, stem):
        drawn[stem] = {"axes": [(ax.get_ylim(), ax.get_yscale(), _colours(ax)) for ax in fig.axes]}
        return save(fig, out_dir, stem)

    monkeypatch.setattr(figures, "save", recording)
    return drawn


def _colours(ax) -> dict[str, tuple]:
    """label -> RGB of what the axes draws per optimizer: labelled lines, or the overview's markers by tick."""
    from matplotlib.colors import to_rgb

    out = {}
    for line in ax.get_lines():
        text = line.get_label()
        if text and not text.startswith("_") and text != "chosen":
            out[re.sub(r" \(\d+/\d+ diverged\)$", "", text)] = to_rgb(line.get_color())
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    markers = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_label().startswith("_")]
    if ticks and len(markers) == len(ticks) and all(ticks):
        out.update({t.rstrip("*"): to_rgb(m.get_color()) for t, m in zip(ticks, markers)})
    return out


def test_report_html_in_headless_chromium(tmp_path, monkeypatch):
    drawn = _drawn_figures(monkeypatch)
    out = tmp_path / "report"
    # the committed quadratic_deep study: 22 of its 150 non-linear tuning runs diverged (final losses up to 1e14)
    written = write_report(analyse([COMMITTED], progress=False), out)
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 5 and len(drawn) == 5  # no performance profile over one problem

    # one colour per optimizer across all figures, and distinct optimizers distinct colours
    seen: dict[str, set] = {}
    for figure in drawn.values():
        for _, _, colours in figure["axes"]:
            for label, rgb in colours.items():
                seen.setdefault(label, set()).add(rgb)
    assert {"GD φ_p", "M φ_p", "MN φ_p", "SGD", "Momentum", "NAG"} <= set(seen), seen
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({next(iter(c)) for c in seen.values()}) == len(seen)
    # no y range set by a diverged sample (their values lie above the untrained loss, 353.8, up to 1e14)
    for stem, figure in drawn.items():
        for (low, high), scale, _ in figure["axes"]:
            assert high < 1e4, (stem, low, high, scale)
    budget = drawn["budget_curves_quadratic_deep"]["axes"]
    assert all(high < 353.8 for (_, high), _, _ in budget[:2])

    page = out / "report.html"
    text = page.read_text()
    assert not re.search(r'(src|href)="(?!data:)', text)  # self-contained: data: URIs only
    url = page.resolve().as_uri()
    dom = _browser("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-figures-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load check did not run"
    assert int(loaded.group(1)) == int(loaded.group(2)) == len(pngs), loaded.group(0)
    # the verdict first: its headline and the judged claims before the provenance
    verdict = dom.stdout.find('id="verdict"')
    assert 0 < verdict < dom.stdout.find('id="provenance"')
    # with the paper's table (../shared beside the checkout): 3 comparisons + 3 chosen powers of 54 claims;
    # without it the 3 comparisons of protocol §1's 26 pairs
    expected = "6 of 54" if (ROOT.parent / "shared" / "spec" / "protocol.md").is_file() else "3 of 26"
    assert f'id="verdict-headline"><strong>VERDICT: {expected} paper claims checked' in dom.stdout
    assert 'id="table-verdict"' in dom.stdout and "GD φ_p vs SGD" in dom.stdout
    for table in ("table-summary", "table-comparison", "table-budget", "table-matrix"):
        assert f'id="{table}"' in dom.stdout, table
    assert "Performance profile omitted" in dom.stdout and "Diverged tuning samples" in dom.stdout

    shot = tmp_path / "shot.png"
    result = _browser(f"--screenshot={shot}", "--window-size=1280,1600", url, cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 5  # text and tables drawn, not a blank page
