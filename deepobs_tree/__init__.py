"""The DeepOBS 1.2 results format, the one thing writer (``runners``) and reader (``analysis``) share.

A leaf package (imports nothing of this project): folder and file names (``naming``), the result keys and
the result dict (``result``), the protocol's seeds (``seeds``), the one atomic file writer every package
uses (``atomic``) and the suite's error base class with the one place that reports errors (``errors``).
Named ``deepobs_tree`` because ``deepobs`` is the installed wheel and ``results`` the default output folder.
"""

from .atomic import AtomicFile, write_atomic
from .errors import NlwuError, UsageError, fail, help_hint, make_target
from .naming import (
    FOLDER_FIELDS,
    PROVENANCE_SUFFIX,
    RESULT_FILE_RE,
    RUN_FIELD_DEFAULTS,
    extra_tokens,
    float2str,
    format_value,
    parse_result_file_name,
    parse_setting_folder,
    provenance_file_name,
    result_file_name,
    setting_folder_name,
)
from .result import ACCURACY_KEYS, CURVE_KEYS, CURVES, deepobs_output, dump_deepobs_json
from .seeds import RERUN_SEEDS, TUNING_SEED

__all__ = [
    "ACCURACY_KEYS",
    "AtomicFile",
    "CURVES",
    "CURVE_KEYS",
    "FOLDER_FIELDS",
    "NlwuError",
    "PROVENANCE_SUFFIX",
    "RERUN_SEEDS",
    "RESULT_FILE_RE",
    "RUN_FIELD_DEFAULTS",
    "TUNING_SEED",
    "UsageError",
    "deepobs_output",
    "dump_deepobs_json",
    "extra_tokens",
    "fail",
    "help_hint",
    "make_target",
    "float2str",
    "format_value",
    "parse_result_file_name",
    "parse_setting_folder",
    "provenance_file_name",
    "result_file_name",
    "setting_folder_name",
    "write_atomic",
]
