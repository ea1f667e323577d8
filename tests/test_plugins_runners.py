"""Issue 15 part B: plugins in the runners (study files, the CLI, local-pool workers, Ray, provenance)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runners.config import DEFAULT_SPACE, load_study

ROOT = Path(__file__).resolve().parents[1]

# sha256 of the JSON of configs/reproduce_default.yaml's tuning specs, computed before the search space moved
# from DEFAULTS["search_space"] into the optimizers' declarations (must never change: same draws, same folders)
REPRODUCE_DEFAULT_SPECS = "d919b0cdb8c1cddf9288d41e56c6e1947695ee60ea874b671e911d6778ac7edc"


def test_reproduce_default_gives_exactly_the_run_specs_of_before():
    study = load_study(ROOT / "configs" / "reproduce_default.yaml")
    specs = study.tuning_specs()
    digest = hashlib.sha256(json.dumps([s.to_dict() for s in specs], sort_keys=True).encode()).hexdigest()
    assert len(specs) == 300 and digest == REPRODUCE_DEFAULT_SPECS
    for entry in study.entries:  # the old default space, restricted to what the optimizer records, in order
        assert [n for n, _ in entry.space] == [n for n in DEFAULT_SPACE if n in dict(entry.space)]
        assert dict(entry.space) == {n: d for n, d in DEFAULT_SPACE.items() if n in dict(entry.space)}
