"""Real-data evidence (issue 17 §5): our first 5 epochs on the real Fashion-MNIST files against the paper's
10 seeds of the same settings; ``make fidelity`` prints the same table (runs kept in .cache/fidelity)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("deepobs_oracle_fidelity", HERE / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fidelity
_spec.loader.exec_module(fidelity)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(4 * 3600),
    pytest.mark.skipif(
        not (fidelity.DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
        reason=f"real Fashion-MNIST absent ({fidelity.DEBIAN}); apt-get install dataset-fashion-mnist",
    ),
    pytest.mark.skipif(
        not (fidelity.REFERENCE / "paper_results_medium_budget.tar.xz").is_file(),
        reason="the paper's released results (../shared/reference) are absent",
    ),
]


def test_first_five_epochs_inside_the_papers_band(tmp_path):
    rows = fidelity.evidence(tmp_path, epochs=5, seeds=(42, 43, 44))
    assert len(rows) == 3 * 2 * 6 + 6  # 2c2d: loss and accuracy x epochs 0-5 per optimizer; vae: loss
    outside = [r for r in rows if not r["inside"]]
    assert not outside, "outside the paper's mean ± 3 se:\n" + fidelity.format_table(outside)
