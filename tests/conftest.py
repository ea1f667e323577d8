"""Shared fixtures. The paper's released results are unpacked once into .cache/reference (never committed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tree_helpers import valid_result_text

from deepobs_tree import cache

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
CACHE = ROOT / ".cache" / "reference"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _unpack_reference() -> Path:
    archives = [REFERENCE / name for name in ("paper_results_medium_budget.tar.xz", "paper_results_removed_l2.tar.xz")]
    if not all(a.exists() for a in archives):
        pytest.skip(f"reference archives not found under {REFERENCE}")
    return cache.unpack(archives, CACHE)  # again only when the archives' content changed


@pytest.fixture(scope="session")
def paper_tree() -> Path:
    """The paper's released medium-budget tree (1,623 files)."""
    return _unpack_reference() / "paper_results_medium_budget"


@pytest.fixture(scope="session")
def l2_tree() -> Path:
    """The L2-in-the-loss cifar10_3c3d tree (118 files)."""
    return _unpack_reference() / "paper_results_removed_l2"


@pytest.fixture(scope="session")
def crowded_valley_tree() -> Path:
    path = REFERENCE / "crowded_valley_quadratic_deep"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def python() -> str:
    """The project's interpreter (for CLI subprocess tests)."""
    return sys.executable


@pytest.fixture(scope="session")
def result_text():
    """``result_text(spec)``: a trusted result file's JSON for ``spec`` (for planting results in a tree)."""
    return valid_result_text
