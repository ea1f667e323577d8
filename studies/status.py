"""``python -m runners status``: which runs of a study are done, running, failed or missing.

Read-only: it looks at the results tree (result files), ``<out>/.nlwu/locks`` (runs a live process holds) and
``<out>/.nlwu/failed`` (runs that raised, with their error), and never writes. Done runs whose provenance
records a plugin whose source has changed (or is gone) since the run are flagged (``plugin_changes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import yaml
from tabulate import tabulate

from deepobs_tree import provenance_file_name
from optimizers import plugins
from runners.config import Study
from runners.ledger import live_lock, read_failure
from runners.spec import RunSpec
from studies.sweep import choose, load_results, search_label

STATES = ("done", "running", "failed", "missing")


@dataclasses.dataclass
class RunState:
    spec: RunSpec
    phase: str  # 'tuning' | 'rerun'
    state: str  # one of STATES
    detail: str = ""


def run_state(spec: RunSpec, out: Path, phase: str) -> RunState:
    path = spec.existing_result(out)
    if path is not None:
        return RunState(spec, phase, "done", str(path.relative_to(out)))
    lock = live_lock(out, spec.run_id)
    if lock is not None:
        return RunState(spec, phase, "running", f"pid {lock.get('pid')} on {lock.get('host')}")
    failure = read_failure(out, spec.run_id)
    if failure is not None:
        error = (failure.get("error") or "").strip().splitlines()
        return RunState(spec, phase, "failed", error[0] if error else "")
    return RunState(spec, phase, "missing")


def study_status(study: Study, out: str | Path) -> tuple[list[dict], list[RunState]]:
    """(one row per search with counts, every run's state). Reruns are listed once their search is selected."""
    out = Path(out)
    runs = load_results(out) if out.is_dir() else None
    rows, states = [], []
    for entry in study.entries:
        tuning = [run_state(s, out, "tuning") for s in entry.tuning_specs()]
        choice = choose(entry, runs, out) if out.is_dir() else None
        reruns = [run_state(s, out, "rerun") for s in choice.rerun_specs()] if choice else []
        states += tuning + reruns
        expected_reruns = len([s for s in entry.rerun_seeds if s != entry.tuning_seed])
        row = {"search": search_label(entry), "tuning": f"{_count(tuning, 'done')}/{len(tuning)}"}
        row["reruns"] = (f"{_count(reruns, 'done')}/{len(reruns)}" if choice
                         else f"0/{expected_reruns} (after tuning)")
        for state in ("running", "failed"):
            row[state] = _count(tuning + reruns, state)
        row["missing"] = _count(tuning + reruns, "missing") + (0 if choice else expected_reruns)
        row["chosen"] = choice.chosen["setting"] if choice else "-"
        rows.append(row)
    return rows, states


def plugin_changes(states: Sequence[RunState], out: str | Path) -> dict[str, list[str]]:
    """{change line (``plugins.changed``): run labels} over the done runs whose provenance records plugins."""


    cache: dict[str, list[str]] = {}
    flagged: dict[str, list[str]] = {}
    for st in states:
        if st.state != "done":
            continue
        result = Path(out) / st.detail
        try:
            records = (yaml.safe_load((result.parent / provenance_file_name(result.name)).read_text()) or {}).get(
                "plugins") or []
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # no (readable) provenance: nothing to compare
        for record in records:
            key = repr(sorted(record.items()))
            if key not in cache:
                cache[key] = plugins.changed([record])
            for line in cache[key]:
                flagged.setdefault(line, []).append(st.spec.label())
    return flagged


def _count(states: Sequence[RunState], state: str) -> int:
    return sum(s.state == state for s in states)


def format_status(study: Study, out: str | Path, verbose: bool = False) -> str:
    rows, states = study_status(study, out)
    lines = [f"study {study.name}{f' (preset {study.preset})' if study.preset else ''} in {out}",
             tabulate(rows, headers="keys")]
    total = {s: _count(states, s) for s in STATES}
    total["missing"] += sum(int(str(r["reruns"]).split("/")[1].split()[0]) for r in rows if r["chosen"] == "-")
    lines.append("total: " + ", ".join(f"{total[s]} {s}" for s in STATES))
    for line, labels in plugin_changes(states, out).items():
        lines.append(f"warning: {line}: {len(labels)} result(s) made with the old source"
                     + "".join(f"\n  changed  {label}" for label in labels if verbose))
    for st in states:
        if st.state == "failed" or (verbose and st.state != "done"):
            lines.append(f"  {st.state:8s} {st.phase:6s} {st.spec.label()}  [{st.spec.run_id}] {st.detail}")
    return "\n".join(lines)
