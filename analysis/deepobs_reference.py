"""DeepOBS' own analyzer code (the installed deepobs 1.1.2 wheel = the 1.2 beta reader), for cross-checks.

``import deepobs`` pulls in TensorFlow 1 code, so the module files needed are loaded directly under a private
package name. ``allow_problems`` registers problem names DeepOBS does not know (the paper's ``_nodecay``
problems crash its analyzer otherwise, deepobs-format §3) without changing any ranking.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterable
from pathlib import Path

_PACKAGE = "_deepobs_reference"


def deepobs_root() -> Path:
    spec = importlib.util.find_spec("deepobs")  # finds the package without executing its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the deepobs wheel is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shared_utils(allow_problems: Iterable[str] = ()):
    """DeepOBS' ``deepobs/analyzer/shared_utils.py`` (``create_setting_analyzer_ranking``, ``aggregate_runs``...)."""
    if f"{_PACKAGE}.analyzer.shared_utils" not in sys.modules:
        root = deepobs_root()
        for name, folder in ((_PACKAGE, root), (f"{_PACKAGE}.analyzer", root / "analyzer")):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        _load(f"{_PACKAGE}.config", root / "config.py")
        _load(f"{_PACKAGE}.analyzer.shared_utils", root / "analyzer" / "shared_utils.py")
    config = sys.modules[f"{_PACKAGE}.config"]
    for problem in allow_problems:
        data_set, _, net = problem.partition("_")
        config.DATA_SET_NAMING.setdefault(data_set, data_set)
        config.TP_NAMING.setdefault(net, net)
    return sys.modules[f"{_PACKAGE}.analyzer.shared_utils"]
