"""DeepOBS 1.2 names of result folders and files (deepobs-format §1.2-1.3) and of our provenance files.

DeepOBS builds a setting folder as ``num_epochs__E__batch_size__B[__weight_decay__X]`` followed by every
optimizer hyperparameter and every non-None training parameter in sorted name order. Floats are written with
``float2str`` ("{:.10e}" with trailing mantissa zeros stripped), everything else with ``str``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FOLDER_FIELDS",
    "PROVENANCE_SUFFIX",
    "RESULT_FILE_RE",
    "RUN_FIELD_DEFAULTS",
    "extra_tokens",
    "float2str",
    "format_value",
    "parse_result_file_name",
    "parse_setting_folder",
    "provenance_file_name",
    "result_file_name",
    "setting_folder_name",
]

RESULT_FILE_RE = re.compile(r"^random_seed__(-?\d+)__(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})\.json$")
PROVENANCE_SUFFIX = ".provenance.yaml"  # never ends in .json: DeepOBS' reader takes every *.json
#: the tokens DeepOBS itself writes before the hyperparameters (not optimizer hyperparameters)
FOLDER_FIELDS = ("num_epochs", "batch_size", "weight_decay")
#: defaults of the run fields that are not in DeepOBS' folder name; a run that differs gets a ``name__value``
#: token (after the hyperparameters), so the paper's defaults keep the paper's folder names
RUN_FIELD_DEFAULTS = {"fidelity": "deepobs", "train_log_interval": 10}


def float2str(x: float) -> str:
    """DeepOBS ``float2str``: ``0.6000000000000001 -> '6.e-01'``, ``0.0002303699023037864 -> '2.303699023e-04'``."""
    mantissa, exponent = f"{x:.10e}".split("e")
    return mantissa.rstrip("0") + "e" + exponent


def format_value(value: Any) -> str:
    """Folder token of one value: float2str for floats (not bools, not ints), str() for everything else."""
    return float2str(value) if isinstance(value, float) else str(value)


def setting_folder_name(
    num_epochs: int,
    batch_size: int,
    optimizer_hyperparams: Mapping[str, Any],
    weight_decay: float | None = None,
    training_params: Mapping[str, Any] | None = None,
) -> str:
    """The setting folder DeepOBS 1.2 writes for a run (AR ``generate_output_directory_name``)."""
    name = f"num_epochs__{num_epochs}__batch_size__{batch_size}"
    if weight_decay is not None:
        name += f"__weight_decay__{float2str(weight_decay)}"
    for key in sorted(optimizer_hyperparams):
        name += f"__{key}__{format_value(optimizer_hyperparams[key])}"
    for key in sorted(training_params or {}):
        value = training_params[key]
        if value is not None:
            name += f"__{key}__{format_value(value)}"
    return name


def parse_setting_folder(name: str) -> dict[str, str]:
    """Split a setting folder name into its ``{name: token}`` pairs (tokens stay strings)."""
    parts = name.split("__")
    if len(parts) % 2:
        raise ValueError(f"not a DeepOBS setting folder name (odd number of '__' tokens): {name!r}")
    return dict(zip(parts[0::2], parts[1::2]))


def extra_tokens(folder: str, hyperparams: Mapping[str, Any]) -> dict[str, str]:
    """Tokens of a setting folder beyond DeepOBS' fields and ``hyperparams`` (the JSON's values):
    ``momentum__5.e-01`` of a PowKernel run whose momentum is provenance-only, ``select__all``, ... The
    runners add them for values that change the math but are not recorded, so they are part of the setting's
    identity. Foreign folder names give none."""
    try:
        tokens = parse_setting_folder(folder)
    except ValueError:
        return {}
    return {k: v for k, v in tokens.items() if k not in FOLDER_FIELDS and k not in hyperparams}


def result_file_name(seed: int, timestamp: float | None = None) -> str:
    """``random_seed__<seed>__<YYYY-mm-dd-HH-MM-SS>.json`` in local time, as DeepOBS names it."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(timestamp))
    return f"random_seed__{seed:d}__{stamp}.json"


def parse_result_file_name(name: str) -> tuple[int, str] | None:
    """``(seed, timestamp)`` of a DeepOBS result file name, or None for any other file."""
    match = RESULT_FILE_RE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def provenance_file_name(result_name: str) -> str:
    """The provenance file beside a result: ``random_seed__42__<stamp>.json -> ...<stamp>.provenance.yaml``."""
    return result_name.removesuffix(".json") + PROVENANCE_SUFFIX
