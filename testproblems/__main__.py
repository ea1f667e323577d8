"""``python -m testproblems``: ``info`` (the registered problems) and ``prepare-data`` (download the data).

``info`` builds every model to count its trainable parameters; ``prepare-data`` is implemented in
``testproblems.data.prepare`` (imported only when that subcommand is used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import testproblems
from deepobs_tree import UsageError, fail
from testproblems.quiet import import_keras


def info_rows(names=None) -> list[dict]:
    """One dict per problem: name, trainable_params (counted on the built model), batch_size, num_epochs, l2."""
    keras = import_keras()  # Keras only for `info` (it builds each model), without TF's start-up lines

    rows = []
    for name in names or testproblems.names():
        problem = testproblems.get(name)
        model = problem.build_model()
        count = sum(math.prod(v.shape) for v in model.trainable_weights)
        rows.append(
            {
                "name": name,
                "trainable_params": count,
                "batch_size": problem.batch_size,
                "num_epochs": problem.spec.num_epochs,
                "l2": problem.l2,
            }
        )
        del model
        keras.backend.clear_session()
    return rows


def _info(args) -> int:
    rows = info_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "trainable_params", "batch_size", "num_epochs", "l2")
    table = [header] + [
        (r["name"], f"{r['trainable_params']:,}", str(r["batch_size"]), str(r["num_epochs"]), f"{r['l2']:g}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return 0


def _prepare_module():
    try:
        from testproblems.data import prepare  # optional: a missing one is one error line
    except ImportError as exc:
        return None, exc
    return prepare, None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (--help lists the options)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=os.environ.get("NLWU_PROG", "python -m testproblems"),
        description="DeepOBS test problems on Keras 3: metadata and data preparation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_info = sub.add_parser("info", help="list the problems: trainable parameters, batch size, epochs, L2 factor")
    p_info.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p_info.set_defaults(func=_info)
    p_prep = sub.add_parser("prepare-data", help="download, verify and preprocess the data sets")
    prepare, _ = _prepare_module()
    if prepare is not None:
        prepare.add_arguments(p_prep)
        p_prep.set_defaults(func=prepare.run)
    else:
        p_prep.set_defaults(func=_prepare_missing)
    return parser


def _prepare_missing(args) -> int:
    _, exc = _prepare_module()
    return fail(f"prepare-data is unavailable (testproblems.data.prepare cannot be imported: {exc})")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return fail(exc)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
