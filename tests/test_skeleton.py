"""The project's own tests are collected, not the `tests` package the deepobs wheel installs."""

from pathlib import Path


def test_collected_from_the_project():
    assert Path(__file__).resolve().parent == Path(__file__).resolve().parents[1] / "tests"
    assert not (Path(__file__).parent / "__init__.py").exists()


def test_conftest_is_ours(paper_tree):
    assert paper_tree.name == "paper_results_medium_budget"
    assert ".cache" in paper_tree.parts
