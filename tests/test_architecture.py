"""The layers of .importlinter hold on the tree, and the contract does fail on a violation: a lower layer
importing a higher one (inside a function too) or an import cycle inside a package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deepobs_tree", "optimizers", "testproblems", "runners", "analysis", "studies", "nlwu")
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The packages' sources and the contract, copied (nothing of the checkout is changed)."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    shutil.copyfile(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_every_contract():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_copy_keeps_the_contracts(tree_copy):
    assert lint(tree_copy).returncode == 0  # the copy is complete: a failure below is the planted import's


@pytest.mark.parametrize(
    "module, planted, needle",
    [
        # the bottom layer importing the top one, hidden inside a function
        (
            "deepobs_tree/naming.py",
            "def _planted():\n    from studies import sweep  # noqa\n",
            "deepobs_tree.naming -> studies",
        ),
        # the writer importing the reader (siblings of one layer are independent)
        ("runners/spec.py", "import analysis  # noqa\n", "runners.spec -> analysis"),
        # a cycle inside a package: the registry importing the module that imports it
        (
            "optimizers/registry.py",
            "def _planted():\n    from . import space  # noqa\n",
            "No cycles are allowed in optimizers",
        ),
    ],
)
def test_a_planted_violation_breaks_a_contract(tree_copy, module, planted, needle):
    path = tree_copy / module
    path.write_text(path.read_text() + "\n\n" + planted)
    proc = lint(tree_copy)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "BROKEN" in proc.stdout and needle in proc.stdout, proc.stdout[-3000:]


def test_every_error_of_the_suite_has_the_one_base_class():
    """Each public exception class of the packages derives from deepobs_tree.NlwuError, so one handler
    (``deepobs_tree.fail``: one ``error:`` line, exit 2) reports them all."""
    import importlib
    import inspect
    import pkgutil

    from deepobs_tree import NlwuError

    found = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            if info.name.endswith("__main__") or ".deepobs_reference" in info.name:
                continue
            module = importlib.import_module(info.name)
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Exception) and cls.__module__ == info.name and not name.startswith("_"):
                    found[f"{info.name}.{name}"] = cls
    internal = {"analysis.derived.Unencodable"}  # control flow (a table is then not cached), never reported
    assert len(found) >= 12
    assert [n for n, cls in found.items() if not issubclass(cls, NlwuError) and n not in internal] == []


#: heavy or optional dependencies a function may import on first use (with a one-line reason), and the project
#: modules that import one of them at their top
HEAVY = {
    "keras",
    "tensorflow",
    "jax",
    "scipy",
    "ray",
    "matplotlib",
    "torch",
    "testproblems.data",
    ".models",
    ".kernel_map",
    "optimizers.kernel_map",
    "studies.sweep",
    "studies.status",
    "runners.executors.ray",
}


def test_function_local_imports_are_heavy_dependencies_with_a_reason():
    import ast

    bad = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            lines = path.read_text().splitlines()
            for fn in ast.walk(ast.parse(path.read_text())):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        module = (
                            ("." * node.level + (node.module or node.names[0].name))
                            if isinstance(node, ast.ImportFrom)
                            else node.names[0].name
                        )
                        heavy = module in HEAVY or module.split(".")[0] in HEAVY
                        if not heavy or "#" not in lines[node.lineno - 1]:
                            bad.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert bad == []
