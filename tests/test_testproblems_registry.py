"""Registry metadata of the test problems: values from DeepOBS' config and the paper, import cost, errors."""

import subprocess
import sys
import warnings

import pytest
from tree_helpers import PAPER_PROBLEMS

import testproblems

BASE = list(PAPER_PROBLEMS)
NODECAY = ["cifar10_3c3d_nodecay", "cifar100_allcnnc_nodecay", "svhn_wrn164_nodecay"]

# testproblems.md §10 (DeepOBS DEFAULT_TEST_PROBLEMS_SETTINGS; the paper's files use the same values).
EXPECTED = {
    "quadratic_deep": ("quadratic", 128, 100, 0.0, False),
    "mnist_vae": ("mnist", 64, 50, 0.0, False),
    "fmnist_vae": ("fmnist", 64, 100, 0.0, False),
    "fmnist_2c2d": ("fmnist", 128, 100, 0.0, True),
    "cifar10_3c3d": ("cifar10", 128, 100, 0.002, True),
    "cifar10_3c3d_nodecay": ("cifar10", 128, 100, 0.0, True),
    "cifar100_allcnnc": ("cifar100", 256, 350, 5e-4, True),
    "cifar100_allcnnc_nodecay": ("cifar100", 256, 350, 0.0, True),
    "svhn_wrn164": ("svhn", 128, 160, 5e-4, True),
    "svhn_wrn164_nodecay": ("svhn", 128, 160, 0.0, True),
    "tolstoi_char_rnn": ("tolstoi", 50, 200, 0.0, True),
}


def test_names_are_the_8_problems_then_the_nodecay_variants():
    assert testproblems.names() == BASE + NODECAY


@pytest.mark.parametrize("name", BASE + NODECAY)
def test_spec_values(name):
    s = testproblems.spec(name)
    assert (s.dataset, s.batch_size, s.num_epochs, s.l2, s.has_accuracy) == EXPECTED[name]
    assert s.name == name
    assert s.base_name == name.removesuffix("_nodecay")
    assert s.dataset in testproblems.DATASETS


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        testproblems.spec("quadratic_deep").batch_size = 1


def test_unknown_problem_lists_known_names():
    with pytest.raises(ValueError, match="unknown test problem 'mnist_2c2d'.*fmnist_2c2d.*svhn_wrn164_nodecay"):
        testproblems.spec("mnist_2c2d")
    with pytest.raises(ValueError, match="unknown test problem"):
        testproblems.get("nope")


def test_get_options_and_validation():
    p = testproblems.get("cifar10_3c3d", batch_size=32, l2=0.01, seed=7, fidelity="corrected", data_dir="/x")
    assert (p.batch_size, p.l2, p.seed, p.fidelity, p.data_dir) == (32, 0.01, 7, "corrected", "/x")
    d = testproblems.get("cifar10_3c3d")
    assert (d.batch_size, d.l2, d.seed, d.fidelity) == (128, 0.002, 42, "deepobs")
    assert testproblems.get("cifar10_3c3d_nodecay").l2 == 0.0
    assert testproblems.get("svhn_wrn164_nodecay", l2=5e-4).l2 == 5e-4
    for bad in (
        {"fidelity": "exact"},
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"l2": -1.0},
        {"l2": float("nan")},
        {"l2": "x"},
        {"seed": -1},
    ):
        with pytest.raises(ValueError):
            testproblems.get("cifar10_3c3d", **bad)


def test_l2_on_a_problem_without_regulariser_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="no L2 regulariser"):
        p = testproblems.get("fmnist_2c2d", l2=0.1)
    assert p.l2 == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert testproblems.get("fmnist_2c2d", l2=0.0).l2 == 0.0


def test_metadata_imports_without_tensorflow_or_keras():
    code = (
        "import sys, testproblems\n"
        "p = testproblems.get('svhn_wrn164', seed=3)\n"
        "assert testproblems.spec('tolstoi_char_rnn').has_accuracy\n"
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cli_dispatches_prepare_data_to_the_data_package(monkeypatch, tmp_path):
    from testproblems import __main__ as cli
    from testproblems.data import prepare

    seen = {}

    def fake_run(args):
        seen["args"] = args
        return 2

    monkeypatch.setattr(prepare, "run", fake_run)
    assert cli.main(["prepare-data", "--data-dir", str(tmp_path), "--only", "fmnist"]) == 2
    assert seen["args"].data_dir == str(tmp_path) and seen["args"].only == ["fmnist"]


def test_cli_rejects_unknown_commands_with_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "testproblems", "frobnicate"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr
