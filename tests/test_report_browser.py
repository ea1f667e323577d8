"""report.html in a real headless browser (Debian's ``chromium``; ``.ci/run`` installs it): the page loads
from disk with no network, every embedded figure decodes, the tables are there, a screenshot is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis.report import analyse, write_report

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless browser installed "
                                "(apt-get install chromium; .ci/run does)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
         "--disable-background-networking", "--virtual-time-budget=10000"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def _browser(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_report_html_in_headless_chromium(tmp_path, crowded_valley_tree):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_stats_tests", Path(__file__).with_name("test_analysis_stats.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    write_run = helpers.write_run

    tree = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for i, lr in enumerate((0.01, 0.02, 0.05)):
        write_run(tree, "quadratic_deep", "PowKernelMomentumOptimizer", {"learning_rate": lr, "power": 0.5 + i / 10},
                  42, [100.0, 90.0, 86 + i], [100.0, 91.0, 87 + i])
    for seed in range(43, 52):
        write_run(tree, "quadratic_deep", "PowKernelMomentumOptimizer", {"learning_rate": 0.01, "power": 0.5},
                  seed, [100.0, 90.0, 86.0], [100.0, 91.0, 87 + rng.normal(0, 0.1)])
    out = tmp_path / "report"
    written = write_report(analyse([tree], [crowded_valley_tree], progress=False), out)
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) >= 3
    page = out / "report.html"
    # self-contained: no file or network reference outside data: URIs
    text = page.read_text()
    assert not re.search(r'(src|href)="(?!data:)', text)
    url = page.resolve().as_uri()

    dom = _browser("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-figures-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load check did not run"
    assert int(loaded.group(1)) == int(loaded.group(2)) == len(pngs), loaded.group(0)
    for table in ("table-summary", "table-comparison", "table-profile", "table-budget", "table-matrix"):
        assert f'id="{table}"' in dom.stdout, table
    assert dom.stdout.count("<tr>") > 10

    shot = tmp_path / "shot.png"
    result = _browser(f"--screenshot={shot}", "--window-size=1280,1600", url, cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 5  # text and tables drawn, not a blank page
