"""``python -m runners status``: which runs of a study are done, running, failed or missing.

Read-only: it looks at the results tree (result files), ``<out>/.nlwu/locks`` (runs a process holds: live,
or "stale (host X, age Y)" for another host's lock silent for the stale age) and ``<out>/.nlwu/failed`` (runs
that raised, with their error), and never writes. A file named like a run's result that cannot be trusted
(``RunSpec.result_files``) makes the run "corrupt" (one warning line each: the next sweep moves it aside and
retrains the run); other files the analysis would skip are warned about too. Done runs whose provenance
records a plugin whose source has changed (or is gone) since the run are flagged (``plugin_changes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import yaml
from tabulate import tabulate

from analysis import AnalysisError, load_runs
from deepobs_tree import provenance_file_name
from deepobs_tree.safe_io import MAX_YAML_BYTES, load_yaml, read_regular
from optimizers import plugins
from runners.config import Study
from runners.ledger import (
    DEFAULT_POLICY,
    LockPolicy,
    describe_lock,
    format_age,
    lock_host,
    lock_state,
    read_failure,
)
from runners.spec import RunSpec
from studies.sweep import choose, load_results, search_label

STATES = ("done", "running", "failed", "missing")
#: states shown only when some run is in them (so the usual total line stays as it was)
EXTRA_STATES = ("stale", "corrupt")


@dataclasses.dataclass
class RunState:
    spec: RunSpec
    phase: str  # 'tuning' | 'rerun'
    state: str  # one of STATES or EXTRA_STATES
    detail: str = ""
    rejected: tuple = ()  # files named like its result that cannot be trusted (spec.Rejected)


def run_state(spec: RunSpec, out: Path, phase: str, policy: LockPolicy = DEFAULT_POLICY) -> RunState:
    path, rejected = spec.result_files(out)
    rejected = tuple(rejected)
    if path is not None:
        return RunState(spec, phase, "done", str(path.relative_to(out)), rejected)
    lock = lock_state(out, spec.run_id, policy)
    if lock is not None:
        state, info, age = lock
        if state == "stale":
            return RunState(spec, phase, "stale", f"stale (host {lock_host(info)}, age {format_age(age)})", rejected)
        return RunState(spec, phase, "running", describe_lock(info, age), rejected)
    if rejected:
        return RunState(spec, phase, "corrupt", f"{rejected[-1].path.name}: {rejected[-1].reason}", rejected)
    failure = read_failure(out, spec.run_id)
    if failure is not None:
        error = (failure.get("error") or "").strip().splitlines()
        return RunState(spec, phase, "failed", error[0] if error else "")
    return RunState(spec, phase, "missing")


def study_status(
    study: Study, out: str | Path, policy: LockPolicy = DEFAULT_POLICY
) -> tuple[list[dict], list[RunState]]:
    """(one row per search with counts, every run's state). Reruns are listed once their search is selected."""
    out = Path(out)
    runs = load_results(out, warn=False) if out.is_dir() else None
    rows, states = [], []
    for entry in study.entries:
        tuning = [run_state(s, out, "tuning", policy) for s in entry.tuning_specs()]
        choice = choose(entry, runs, out) if out.is_dir() else None
        reruns = [run_state(s, out, "rerun", policy) for s in choice.rerun_specs()] if choice else []
        states += tuning + reruns
        expected_reruns = len([s for s in entry.rerun_seeds if s != entry.tuning_seed])
        row = {"search": search_label(entry), "tuning": f"{_count(tuning, 'done')}/{len(tuning)}"}
        row["reruns"] = f"{_count(reruns, 'done')}/{len(reruns)}" if choice else f"0/{expected_reruns} (after tuning)"
        for state in ("running", "failed", *EXTRA_STATES):
            if state in ("running", "failed") or _count(tuning + reruns, state):
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
            text = read_regular(result.parent / provenance_file_name(result.name), MAX_YAML_BYTES).decode()
            records = (load_yaml(text) or {}).get("plugins") or []
        except (OSError, ValueError, yaml.YAMLError, AttributeError):  # ValueError: YAML limits, not UTF-8
            continue  # no (readable) provenance: nothing to compare
        for record in records:
            key = repr(sorted(record.items()))
            if key not in cache:
                cache[key] = plugins.changed([record])
            for line in cache[key]:
                flagged.setdefault(line, []).append(st.spec.label())
    return flagged


def untrusted_warnings(states: Sequence[RunState], out: str | Path) -> list[str]:
    """One warning line per file in the tree that is not trusted: each run's rejected files, then every other
    file the analysis skips (foreign JSON, FIFOs, symlink loops, unreadable folders)."""
    lines, named = [], set()
    for st in states:
        for bad in st.rejected:
            named.add(str(bad.path))
            lines.append(
                f"warning: {bad.path}: {bad.reason} (not counted as done; the next sweep moves it "
                "aside and trains the run again)"
            )
    try:
        runs = load_runs([out], progress=False, cache=False, warn=False) if Path(out).is_dir() else None
        skipped = runs.attrs["report"].skipped if runs is not None else []
    except AnalysisError:
        skipped = []
    for path, reason in skipped:
        if path not in named:
            lines.append(f"warning: {path}: {reason} (not a usable result; ignored)")
    return lines


def _count(states: Sequence[RunState], state: str) -> int:
    return sum(s.state == state for s in states)


def format_status(study: Study, out: str | Path, verbose: bool = False, policy: LockPolicy = DEFAULT_POLICY) -> str:
    rows, states = study_status(study, out, policy)
    lines = [
        f"study {study.name}{f' (preset {study.preset})' if study.preset else ''} in {out}",
        tabulate(rows, headers="keys"),
    ]
    total = {s: _count(states, s) for s in (*STATES, *EXTRA_STATES)}
    total["missing"] += sum(int(str(r["reruns"]).split("/")[1].split()[0]) for r in rows if r["chosen"] == "-")
    shown = [*STATES, *(s for s in EXTRA_STATES if total[s])]
    lines.append("total: " + ", ".join(f"{total[s]} {s}" for s in shown))
    lines += untrusted_warnings(states, out)
    if total["stale"]:
        lines.append(
            f"warning: {total['stale']} run(s) hold a stale lock (another host's, not touched for "
            f"{format_age(policy.stale_age)}); if that sweep is gone, `sweep --break-stale-locks` takes "
            "them over"
        )
    for line, labels in plugin_changes(states, out).items():
        lines.append(
            f"warning: {line}: {len(labels)} result(s) made with the old source"
            + "".join(f"\n  changed  {label}" for label in labels if verbose)
        )
    for st in states:
        if st.state in ("failed", "stale") or (verbose and st.state != "done"):
            lines.append(f"  {st.state:8s} {st.phase:6s} {st.spec.label()}  [{st.spec.run_id}] {st.detail}")
    return "\n".join(lines)
