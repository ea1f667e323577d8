"""Run identity against the committed tree: every result there is recognised as the requested spec (its
provenance records it, the sampler's last-bit float differences between machines aside), and a value that
differs beyond round-off is a mismatch."""

import math
import subprocess
import sys
from pathlib import Path

from runners.spec import same_value

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tree_is_complete_under_the_identity_rule():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners",
            "status",
            "configs/reproduce_default.yaml",
            "--out",
            "deepobs_results_medium_budget",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "total: 354 done, 0 running, 0 failed, 0 missing" in result.stdout


def test_same_value_tolerates_last_bits_only():
    lr = (
        0.07726718477963426  # the earlier committed tree's np.power value; the paper's (and now ours) is the next float
    )
    assert same_value(lr, math.nextafter(lr, 1.0))
    assert not same_value(lr, lr * (1 + 1e-9))
    assert same_value({"hp": [lr, "rank>=2"]}, {"hp": (math.nextafter(lr, 0.0), "rank>=2")})
    assert not same_value(True, 1.0) and not same_value("0.9", 0.9) and not same_value(0.9, 0.5)


def test_committed_tree_records_exactly_the_sampled_hyperparameters():
    """Every tuning run of the committed tree records the sampler's values to the last bit (the sampler is
    correctly rounded, the same on every CPU), so a fresh `make reproduce` writes the same file contents."""
    import json

    from runners.config import load_study

    tree = ROOT / "deepobs_results_medium_budget"
    specs = load_study(ROOT / "configs" / "reproduce_default.yaml").tuning_specs()
    off = []
    for spec in specs:
        path = spec.existing_result(tree)
        assert path is not None, spec
        recorded = json.loads(path.read_text())["optimizer_hyperparams"]
        off += [(path.parent.name, k, v, recorded[k]) for k, v in spec.hyperparams if recorded[k] != v]
    assert len(specs) == 300 and off == []
