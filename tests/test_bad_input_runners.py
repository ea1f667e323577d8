"""Bad input of ``python -m runners`` and ``python -m testproblems`` (issue 16, part B): a table-driven corpus.

Every case: exit code 2, stderr exactly one line and it starts with ``error:`` (no traceback, no TensorFlow
log line: everything is validated before TF is imported), nothing created under ``--out`` (or the existing
tree unchanged), the inputs (study file, data folder) byte-for-byte unchanged. Plus the symlink, umask and
prepared-marker promises.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tree_helpers import ONE_EPOCH, PK, run_args

ROOT = Path(__file__).resolve().parents[1]
Q = ONE_EPOCH
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def tree_digest(path: Path) -> dict[str, str]:
    """{relative path: sha256 (or 'dir'/'link -> target')} of everything below ``path`` (empty if absent)."""
    if not path.exists() and not path.is_symlink():
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_symlink():
            out[rel] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(module: str, args: list[str], cwd: Path, capsys=None) -> Proc:
    """``python -m module args``: in this process when ``capsys`` is given (fast: the corpus), else as a
    subprocess (the end-to-end cases: whole stderr, no TF start-up line, no traceback)."""
    if capsys is not None:
        main = {"runners": "runners.__main__", "testproblems": "testproblems.__main__"}[module]
        main = __import__(main, fromlist=["main"]).main
        capsys.readouterr()
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse --help etc.
            rc = exc.code
        captured = capsys.readouterr()
        return Proc(rc, captured.out, captured.err)
    env = {
        **os.environ,
        "NLWU_DATA_DIR": str(cwd / "nodata"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("NLWU_TF_LOGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    return Proc(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(autouse=True)
def no_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_DATA_DIR", str(tmp_path / "nodata"))


def assert_one_error(proc, match: str | None = None):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    if match is not None:
        assert match in lines[0], lines[0]


def study(tmp: Path, name: str = "s.yaml", **defaults) -> Path:
    data = {
        "defaults": {"budget": 2, "num_epochs": 1, "rerun_seeds": [43], **defaults},
        "problems": {"quadratic_deep": {"optimizers": [PK]}},
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def box(tmp_path):
    """A working folder with a file, an unwritable folder and a results root with a symlink out of it."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "quadratic_deep").symlink_to(tmp_path / "elsewhere")
    yield tmp_path
    (tmp_path / "ro").chmod(0o755)


# (id, extra run arguments (OUT = the case's --out), message fragment)
RUN_CASES = [
    ("seed-negative", ["--seed", "-1"], "seed must be in [0, 4294967295]"),
    ("seed-huge", ["--seed", "8589934592"], "seed must be in"),
    ("seed-text", ["--seed", "x"], "--seed"),
    ("batch-larger-than-train", ["--batch-size", "100000"], "larger than the training set"),
    ("batch-zero", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("epochs-zero", ["--epochs", "0"], "--epochs must be >= 1"),
    ("log-interval-zero", ["--train-log-interval", "0"], "--train-log-interval"),
    ("weight-decay-negative", ["--weight-decay", "-1"], "--weight-decay"),
    ("weight-decay-nan", ["--weight-decay", "nan"], "--weight-decay"),
    ("fidelity-bogus", ["--fidelity", "bogus"], "unknown fidelity 'bogus'"),
    ("select-bogus", ["--hp", "select=bogus"], "unknown selection rule 'bogus'"),
    ("decay-on-bogus", ["--hp", "decay_on=bogus"], "decay_on must be one of"),
    ("power-negative", ["--hp", "power=-1"], "power"),
    ("hp-nan", ["--hp", "weight_decay_opt=nan"], "not finite"),
    ("hp-unknown", ["--hp", "momentum=0.5"], "does not take 'momentum'"),
    ("hp-malformed", ["--hp", "power"], "expected name=value"),
    ("problem-unknown", ["--problem", "nope"], "unknown test problem 'nope'"),
    ("optimizer-unknown", ["--optimizer", "Nope"], "unknown optimizer 'Nope'"),
    ("option-unknown", ["--bogus"], "unrecognized arguments"),
    ("out-is-a-file", ["--out", "{box}/afile"], "is not a folder"),
    ("out-below-a-file", ["--out", "{box}/afile/x"], "is not a folder"),
    ("out-symlink-escape", ["--out", "{box}/linked"], "outside --out"),
    ("data-dir-is-a-file", ["--data-dir", "{box}/afile"], "--data-dir"),
]


@pytest.mark.parametrize("case, extra, match", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_bad_input(box, case, extra, match, capsys):
    out = box / "out"
    extra = [a.replace("{box}", str(box)) for a in extra]
    before = {p: tree_digest(box / p) for p in ("afile", "linked", "elsewhere")}
    proc = cli("runners", ["run", *Q, "--out", str(out), *extra], box, capsys)
    assert_one_error(proc, match)
    assert not out.exists()
    assert {p: tree_digest(box / p) for p in before} == before  # nothing written through the link


@pytest.mark.skipif(ROOT_USER, reason="root writes into a 0555 folder")
def test_run_unwritable_out_fails_before_training(box, capsys):
    proc = cli("runners", ["run", *Q, "--out", str(box / "ro" / "out")], box, capsys)
    assert_one_error(proc, "is not writable")


E2E_CASES = [
    ("runners", ["run", *Q, "--seed", "-1", "--out", "{box}/out"], "seed must be in"),
    ("runners", ["run", *Q, "--out", "{box}/linked"], "outside --out"),
    ("runners", ["status", "{cfg}", "--out", "{box}/afile"], "is not a folder"),
    ("testproblems", [], "required: command"),
]


@pytest.mark.parametrize("module, args, match", E2E_CASES, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(E2E_CASES)])
def test_whole_process_prints_one_error_line(box, module, args, match):
    """As a real process: stderr is exactly the one error line (no traceback, no absl/oneDNN line)."""
    cfg = study(box, budget=1000000000)
    args = [a.replace("{box}", str(box)).replace("{cfg}", str(cfg)) for a in args]
    assert_one_error(cli(module, args, box), match)
    assert not (box / "out").exists() and tree_digest(box / "elsewhere") == {}


def _idx(arr: np.ndarray) -> bytes:
    from testproblems.data.synthetic import idx_bytes

    return gzip.compress(idx_bytes(arr))


def test_run_idx_with_wrong_image_shape(box):
    from testproblems.data.synthetic import write_prepared

    data = box / "data"
    write_prepared("fmnist", data)
    images = next(data.rglob("train-images-idx3-ubyte.gz"))
    images.write_bytes(_idx(np.zeros((600, 27, 27), dtype=np.uint8)))
    before = tree_digest(data)
    proc = cli(
        "runners",
        [
            "run",
            *run_args(PK, "learning_rate=0.01", "power=0.5", problem="fmnist_2c2d"),
            "--epochs",
            "1",
            "--no-progress",
            "--data-dir",
            str(data),
            "--out",
            str(box / "out"),
        ],
        box,
    )
    assert_one_error(proc, "expected (28, 28)")
    assert "--force" in proc.stderr  # the fix command redoes a marker-complete folder
    assert tree_digest(data) == before and not (box / "out").exists()


def test_run_refuses_a_result_made_with_another_spec(box, capsys, result_text):
    """A result whose provenance records other values is not returned as this run's (one line says what)."""
    from deepobs_tree import provenance_file_name
    from runners.spec import RunSpec

    out = box / "out"
    spec = RunSpec("quadratic_deep", PK, {"learning_rate": 0.01, "power": 0.5}, num_epochs=1)
    folder = spec.setting_dir(out)
    folder.mkdir(parents=True)
    result = folder / "random_seed__42__2026-01-01-00-00-00.json"
    result.write_text(result_text(spec))
    other = spec.replace(options={"select": "all"})
    rec = {**other.to_dict(), "hyperparams": other.hyperparams_dict, "options": other.options_dict}
    folder.joinpath(provenance_file_name(result.name)).write_text(yaml.safe_dump({"spec": rec}))
    before = tree_digest(out)
    proc = cli("runners", ["run", *Q, "--out", str(out)], box, capsys)
    assert_one_error(proc, "hyperparams.select: recorded 'all', requested 'rank>=2'")
    assert tree_digest(out) == before


# (id, study defaults, message fragment)
STUDY_CASES = [
    ("fidelity-bogus", {"fidelity": "bogus"}, "fidelity: expected one of deepobs, corrected"),
    ("select-bogus", {"options": {"select": "bogus"}}, "unknown selection rule 'bogus'"),
    ("decay-on-bogus", {"options": {"decay_on": "bogus"}}, "decay_on must be one of"),
    ("option-unknown", {"options": {"bogus": "x"}}, "unknown key"),
    ("rerun-seed-huge", {"rerun_seeds": [4294967296]}, "rerun_seeds: expected a list of integer seeds in"),
    ("rerun-seed-negative", {"rerun_seeds": [-1]}, "rerun_seeds"),
    ("tuning-seed-huge", {"tuning_seed": 2**40}, "tuning_seed"),
    ("batch-larger-than-train", {"batch_size": 100000}, "larger than the training set"),
    ("budget-huge", {"budget": 1000000000}, "budget 1000000000 is larger than 10000"),
    ("budget-zero", {"budget": 0}, "budget"),
    (
        "power-range",
        {"search_space": {"learning_rate": {"log_uniform": [1e-4, 1.0]}, "power": {"uniform": [-1.0, 1.0]}}},
        "outside the allowed range",
    ),
    (
        "lr-range",
        {"search_space": {"learning_rate": {"uniform": [-1.0, 1.0]}, "power": {"uniform": [0.1, 1.0]}}},
        "learning_rate",
    ),
    ("fixed-power-negative", {"fixed": {"power": -0.5}}, "power"),
    ("fixed-axis-bad-value", {"fixed": {"power": [0.5, -0.5]}}, "power"),
    ("train-log-interval-zero", {"train_log_interval": 0}, "train_log_interval"),
    ("epochs-zero", {"num_epochs": 0}, "num_epochs"),
]


@pytest.mark.parametrize("command", ["status", "sweep --emit-commands"])
@pytest.mark.parametrize("case, defaults, match", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_study_bad_values_fail_at_load(box, command, case, defaults, match, capsys):
    cfg = study(box, **defaults)
    before = tree_digest(cfg)
    out = box / "out"
    proc = cli("runners", [*command.split(), str(cfg), "--out", str(out)], box, capsys)
    assert_one_error(proc, match)
    assert not out.exists() and tree_digest(cfg) == before


@pytest.mark.parametrize("command", ["status", "sweep", "sweep --emit-commands"])
@pytest.mark.parametrize(
    "where, match",
    [("{box}/afile", "is not a folder"), ("{box}/afile/x", "is not a folder"), ("{box}/linked", "outside --out")],
)
def test_sweep_and_status_bad_out(box, command, where, match, capsys):
    cfg = study(box)
    before = {p: tree_digest(box / p) for p in ("afile", "linked", "elsewhere")}
    proc = cli("runners", [*command.split(), str(cfg), "--out", where.replace("{box}", str(box))], box, capsys)
    assert_one_error(proc, match)
    assert {p: tree_digest(box / p) for p in before} == before


@pytest.mark.skipif(ROOT_USER, reason="root writes into a 0555 folder")
@pytest.mark.parametrize("command", ["status", "sweep"])
def test_sweep_and_status_unwritable_out(box, command, capsys):
    proc = cli("runners", [command, str(study(box)), "--out", str(box / "ro" / "out")], box, capsys)
    assert_one_error(proc, "is not writable")


TESTPROBLEMS_CASES = [
    ("no-args", [], "required: command"),
    ("bad-command", ["bogus"], "invalid choice"),
    ("bad-option", ["info", "--bogus"], "unrecognized arguments"),
    ("base-url-not-a-url", ["prepare-data", "--base-url", "fmnist=notaurl"], "is not an http(s):// or file:// URL"),
    ("base-url-unknown-set", ["prepare-data", "--base-url", "nope=http://x/"], "bad --base-url"),
    ("timeout-nan", ["prepare-data", "--timeout", "nan"], "--timeout a finite number > 0"),
    ("timeout-zero", ["prepare-data", "--timeout", "0"], "--timeout"),
    ("timeout-text", ["prepare-data", "--timeout", "x"], "--timeout"),
    ("retries-negative", ["prepare-data", "--retries", "-1"], "--retries"),
    ("only-unknown", ["prepare-data", "--only", "nope"], "unknown data set 'nope'"),
    ("source-missing", ["prepare-data", "--source", "/nonexistent/x"], "--source"),
]


@pytest.mark.parametrize("case, args, match", TESTPROBLEMS_CASES, ids=[c[0] for c in TESTPROBLEMS_CASES])
def test_testproblems_bad_input(box, case, args, match, capsys):
    data = box / "data"
    args = [*args, "--data-dir", str(data)] if args[:1] == ["prepare-data"] else args
    proc = cli("testproblems", args, box, capsys)
    assert_one_error(proc, match)
    assert not data.exists()


def test_prepared_marker_checks_checksums(tmp_path, capsys):
    """A corrupt file of the recorded size is not 'already prepared': the marker's sha256 catch it."""
    from testproblems.data import download, prepare
    from testproblems.data.synthetic import write_prepared

    data = tmp_path / "data"
    write_prepared("fmnist", data)
    folder = next(data.rglob("train-images-idx3-ubyte.gz")).parent
    files = sorted(p.name for p in folder.iterdir() if p.name != prepare.MARKER)
    marker = {
        "dataset": "fmnist",
        "files": {n: (folder / n).stat().st_size for n in files},
        "sha256": {n: download.digest(folder / n, "sha256") for n in files},
    }
    (folder / prepare.MARKER).write_text(__import__("json").dumps(marker))
    assert prepare._is_prepared(folder)
    victim = folder / files[0]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert not prepare._is_prepared(folder)


def test_result_files_honour_the_umask(tmp_path):
    """Result, provenance and failure files get 0666 & ~umask (mkstemp alone would give 0600)."""
    from deepobs_tree import atomic, write_atomic

    path = write_atomic(tmp_path / "a" / "random_seed__42__x.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == atomic.FILE_MODE == 0o666 & ~atomic._umask()
    mask = os.umask(0o022)
    os.umask(mask)
    code = (
        "import os, stat, sys; os.umask(0o027); from deepobs_tree import write_atomic; "
        "p = write_atomic(sys.argv[1], 'x'); print(oct(stat.S_IMODE(p.stat().st_mode)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b.json")], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.stdout.strip() == "0o640", proc.stderr
