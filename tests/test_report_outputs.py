"""`reports/` never mixes outputs of different runs: a rewrite removes what the previous report wrote and the
new one does not (listed in `.report-files`, or the known output names for a report older than the manifest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.report import MANIFEST, analyse, write_report

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "deepobs_results_medium_budget"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def test_rewrite_removes_the_previous_reports_files(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    # an older report without a manifest: its verdict and a figure the new one does not draw
    (out / "verdict.md").write_text("# Verdict\n\n**NOT REPRODUCED: old run**\n")
    (out / "verdict.csv").write_text("old\n")
    (out / "figures").mkdir()
    (out / "figures" / "old_figure.png").write_bytes(b"\x89PNG")
    (out / "notes.txt").write_text("mine")  # not an output name: left alone
    analysis = analyse([COMMITTED], progress=False)
    written = write_report(analysis, out, figures=False, protocol=None)
    assert not (out / "figures" / "old_figure.png").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert "old run" not in (out / "verdict.md").read_text() and (out / "verdict.md") in written
    listed = set((out / MANIFEST).read_text().split())
    assert listed == {p.relative_to(out).as_posix() for p in written}
    # a file the manifest lists and the next report does not write goes
    (out / "comparison.md").unlink()
    (out / "stale.csv").write_text("x")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "stale.csv\n")
    write_report(analysis, out, figures=False, protocol=None)
    assert not (out / "stale.csv").exists() and (out / "comparison.md").is_file()


def test_provenance_lists_only_the_rerun_seeds_that_ran(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_verdict_tests", Path(__file__).with_name("test_reproduce_verdict.py")
    )
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    tree = helpers.tree(tmp_path / "tree", gd_final=87.0, sgd_final=87.5, epochs=2, seeds=2)  # seeds 42, 43
    analysis = analyse([tree], progress=False)
    assert analysis.settings["rerun seeds"] == "43 (of the requested 43-51; the others have no result file)"
    write_report(analysis, tmp_path / "out", figures=False, protocol=None)
    assert "rerun seeds: 43 (of the requested 43-51" in (tmp_path / "out" / "report.html").read_text()
    full = analyse([COMMITTED], progress=False)
    assert full.settings["rerun seeds"] == "43 44 45 46 47 48 49 50 51"
