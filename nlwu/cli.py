"""``nlwu SUBCOMMAND ...``: dispatches to the existing module mains, so every subcommand behaves exactly as
its ``python -m`` form (same options, same one-line ``error:`` and exit code 2 for bad input), with error
hints naming the command typed (``NLWU_PROG``, derived once here from ``sys.argv[0]``).

    nlwu run | sweep | status ...     python -m runners run | sweep | status
    nlwu report RESULTS... ...        python -m analysis          (alias: figures)
    nlwu verdict RESULTS ...          python -m analysis.verdict
    nlwu problems info | prepare-data python -m testproblems
    nlwu list [WHAT]                  problems, optimizers (with their hyperparameters), presets, plugins

Study files given by name (``reproduce_default``) or as ``configs/NAME.yaml`` are found in the checkout's
``configs/`` or, after ``pip install .``, in the installed copy, so the command works from any folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

import optimizers
from analysis.__main__ import main as analysis_main
from analysis.verdict import main as verdict_main
from optimizers import plugins
from studies.__main__ import main as runners_main  # what `python -m runners` forwards to
from testproblems import registry
from testproblems.__main__ import main as problems_main

SUBCOMMANDS = {
    "run": "one training run -> one DeepOBS JSON (python -m runners run)",
    "sweep": "a YAML study: random searches, selection, reruns (python -m runners sweep)",
    "status": "done / running / failed / missing runs of a study (python -m runners status)",
    "report": "tables, figures, report.html and the verdict from DeepOBS trees (python -m analysis)",
    "verdict": "judge the paper's claims on a results tree (python -m analysis.verdict)",
    "problems": "test-problem metadata and data preparation: info | prepare-data (python -m testproblems)",
    "list": "list problems, optimizers with their hyperparameters, presets, plugins",
}
ALIASES = {"figures": "report"}
LIST_WHAT = ("problems", "optimizers", "presets", "plugins")


def prog_name(argv0: str | None = None) -> str:
    """The command as the user typed it: ``nlwu`` for the console script, ``python -m nlwu`` otherwise."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "python -m nlwu" if name in ("__main__.py", "cli.py", "") or name.startswith("python") else name


def configs_dirs() -> list[Path]:
    """Where study files live: the checkout's ``configs/``, then the installed copy (``pip install .``)."""
    here = Path(__file__).resolve().parents[1] / "configs"
    installed = Path(sys.prefix) / "share" / "nlwu-bench" / "configs"
    return [d for d in (here, installed) if d.is_dir()]


def resolve_config(ref: str) -> str:
    """``ref`` as given when it exists; else the study file of that name (or ``configs/...`` path) in
    ``configs_dirs()``; else ``ref`` unchanged (the runner then names the missing file)."""
    if Path(ref).exists():
        return ref
    rel = Path(ref)
    rel = Path(*rel.parts[1:]) if rel.parts and rel.parts[0] == "configs" else rel
    for base in configs_dirs():
        for candidate in (base / rel, base / rel.with_suffix(".yaml")):
            if candidate.is_file():
                return str(candidate)
    return ref


def _help(prog: str) -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        f"usage: {prog} SUBCOMMAND [ARGS...]   ({prog} SUBCOMMAND --help for its options)",
        "",
        "Reproduce and extend the DeepOBS study of 'On the Benefits of Non-Linear Weight Updates'.",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += [
        "",
        "examples:",
        f"  {prog} list optimizers",
        f"  {prog} sweep reproduce_default --preset smoke --out results/smoke",
        f"  {prog} report results/smoke --out reports/smoke",
        f"  {prog} run --problem quadratic_deep --optimizer PowKernelGradientDescentOptimizer "
        "--hp learning_rate=0.01 --hp power=0.5 --epochs 2 --out results",
    ]
    return "\n".join(lines)


def _fail(prog: str, message: str) -> int:
    print(f"error: {message} (see {prog} --help)", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------------ list


def list_problems() -> list[str]:
    rows = [("problem", "dataset", "batch", "epochs", "L2", "accuracy")]
    for name in registry.names():
        s = registry.spec(name)
        rows.append(
            (name, s.dataset, str(s.batch_size), str(s.num_epochs), f"{s.l2:g}", "yes" if s.has_accuracy else "no")
        )
    return _columns(rows)


def list_optimizers() -> list[str]:
    rows = [("optimizer", "label", "kind", "hyperparameters (searched*)")]
    for name in optimizers.names():
        s = optimizers.spec(name)
        searched = set(getattr(s, "search", {}) or {})
        hps = " ".join(h + ("*" if h in searched else "") for h in s.hyperparams)
        kind = (
            "baseline"
            if s.baseline
            else f"non-linear (twin {optimizers.linear_twin(name)})"
            if s.twin
            else "non-linear"
        )
        rows.append((name, s.display_label, kind, hps))
    return _columns(rows)


def list_presets() -> list[str]:
    rows = [("study file", "presets (default first)", "problems")]
    for base in configs_dirs()[:1]:
        for path in sorted(base.rglob("*.yaml")):
            try:
                top = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(top, dict):
                continue
            presets = list(top.get("presets") or {})
            default = top.get("default_preset")
            if default in presets:
                presets = [default] + [p for p in presets if p != default]
            rows.append(
                (
                    str(path.relative_to(base.parent)),
                    " ".join(presets) or "–",
                    " ".join(top.get("problems") or {}) or "–",
                )
            )
    return _columns(rows)


def list_plugins() -> list[str]:
    base = Path(__file__).resolve().parents[1] / "examples" / "plugins"
    lines = ["example plugins (pass with --plugin FILE, or PLUGINS= to make):"]
    for path in sorted(base.glob("*.py")) if base.is_dir() else []:
        doc = path.read_text(encoding="utf-8").split('"""')
        first = doc[1].strip().splitlines()[0] if len(doc) > 2 else ""
        lines.append(f"  {path.relative_to(base.parents[1])}  {first}")
    loaded = plugins.loaded()
    lines.append("loaded in this process: " + (", ".join(p.module for p in loaded) if loaded else "none"))
    return lines


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _list(prog: str, args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(f"usage: {prog} [{'|'.join(LIST_WHAT)}]  (default: all four)")
        return 0
    unknown = [a for a in args if a not in LIST_WHAT]
    if unknown:
        return _fail(prog, f"unknown list '{unknown[0]}': use one of {', '.join(LIST_WHAT)}")
    listers = {
        "problems": list_problems,
        "optimizers": list_optimizers,
        "presets": list_presets,
        "plugins": list_plugins,
    }
    for i, what in enumerate(args or LIST_WHAT):
        if len(args) != 1:
            print(("\n" if i else "") + f"{what}:")
        print("\n".join(listers[what]()))
    return 0


# ------------------------------------------------------------------------------------------------ main


def quiet_startup() -> None:
    """No TensorFlow/absl/CUDA start-up lines on machines without a GPU (real errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; output piped into a command that stops reading (``| head``) ends quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog_name()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(prog))
        return 0 if argv else 2
    sub, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if sub not in SUBCOMMANDS:
        return _fail(prog, f"unknown subcommand '{argv[0]}': use one of {', '.join(SUBCOMMANDS)}")
    quiet_startup()
    if sub == "list":
        return _list(f"{prog} list", rest)
    if sub in ("run", "sweep", "status"):
        if sub in ("sweep", "status") and rest and not rest[0].startswith("-"):
            rest = [resolve_config(rest[0]), *rest[1:]]
        os.environ["NLWU_PROG"] = prog
        return int(runners_main([sub, *rest]) or 0)
    os.environ["NLWU_PROG"] = f"{prog} {sub}"
    if sub == "report":
        return int(analysis_main(rest) or 0)
    if sub == "verdict":
        return int(verdict_main(rest) or 0)
    return int(problems_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
