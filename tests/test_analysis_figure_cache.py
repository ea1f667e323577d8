"""The figure cache (``analysis.figure_cache``, issue 18's bench target with the figures): a warm run copies
byte-identical figures and report without drawing one, a changed result file or option redraws, a damaged
cached file is caught by its hash and redrawn, and an unwritable cache folder only means no caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tree_helpers import small_tree, write_run

from analysis import figure_cache
from analysis import figures as figs
from analysis.report import analyse, write_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def report(tree: Path, out: Path, **options) -> dict[str, bytes]:
    analysis = analyse([tree], progress=False, rerun_seeds=range(43, 46), **options)
    write_report(analysis, out)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def count_draws(monkeypatch) -> list[str]:
    """Every figure drawn from now on (figures.save is the one place a figure becomes files)."""
    drawn: list[str] = []
    save = figs.save

    def counting(fig, out_dir, stem):
        drawn.append(stem)
        return save(fig, out_dir, stem)

    monkeypatch.setattr(figs, "save", counting)
    return drawn


def entry_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "analysis-figures").glob("*/*.png"))


def test_warm_run_copies_identical_figures_without_drawing(tmp_path, monkeypatch):
    tree = small_tree(tmp_path / "tree")
    cold = report(tree, tmp_path / "cold")
    figures = [name for name in cold if name.startswith("figures/")]
    assert any(n.endswith(".png") for n in figures) and any(n.endswith(".pdf") for n in figures)
    drawn = count_draws(monkeypatch)
    warm = report(tree, tmp_path / "warm")
    assert drawn == []
    assert warm == cold  # figures, report.md and report.html (figures embedded) byte for byte


def test_changed_result_or_option_redraws(tmp_path, monkeypatch):
    tree = small_tree(tmp_path / "tree")
    report(tree, tmp_path / "cold")
    drawn = count_draws(monkeypatch)
    report(tree, tmp_path / "other_seeds", tuning_seed=43)
    assert drawn, "another tuning seed must redraw"
    drawn.clear()
    write_run(
        tree, "quadratic_deep", "GradientDescentOptimizer", {"learning_rate": 0.01}, 45, [100.0, 86.5], [100.0, 90.0]
    )  # one rerun's test loss edited
    report(tree, tmp_path / "edited")
    assert drawn, "an edited result file must redraw"


def test_changed_matplotlib_style_redraws(tmp_path, monkeypatch):
    """A matplotlibrc or style the user sets changes the figures without changing our source: a new key."""
    import matplotlib

    tree = small_tree(tmp_path / "tree")
    cold = report(tree, tmp_path / "cold")
    drawn = count_draws(monkeypatch)
    with matplotlib.rc_context({"lines.linewidth": 4.0}):
        styled = report(tree, tmp_path / "styled")
    assert drawn, "another rcParams value must redraw"
    assert styled["figures/" + drawn[0] + ".png"] != cold["figures/" + drawn[0] + ".png"]
    drawn.clear()
    assert report(tree, tmp_path / "again") == cold and drawn == []  # the default style: the first entry


def test_damaged_entry_is_redrawn_and_replaced(tmp_path, monkeypatch):
    tree = small_tree(tmp_path / "tree")
    cold = report(tree, tmp_path / "cold")
    png = entry_files(tmp_path)[0]
    png.write_bytes(png.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    drawn = count_draws(monkeypatch)
    again = report(tree, tmp_path / "again")
    assert drawn, "a cached file that fails its hash must be redrawn"
    assert {k: v for k, v in again.items() if k.endswith(".png")} == {
        k: v for k, v in cold.items() if k.endswith(".png")
    }
    manifest = json.loads((png.parent / "manifest.json").read_text())
    assert hashlib.sha256(png.read_bytes()).hexdigest() == dict(manifest["files"])[png.name]  # entry replaced


def test_unwritable_cache_still_writes_figures(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("NLWU_CACHE", str(blocker))
    tree = small_tree(tmp_path / "tree")
    out = report(tree, tmp_path / "out")
    assert any(name.endswith(".png") for name in out)


def test_no_derived_key_means_no_figure_cache():
    assert figure_cache.key(None, 42) is None
    assert figure_cache.key("a" * 64, 42) != figure_cache.key("a" * 64, 43) != figure_cache.key("b" * 64, 43)
