"""runners.run: the DeepOBS training loop, output dict, divergence padding and atomic writes (no TF here)."""

import json
import math
import os
from pathlib import Path

import pytest
from tree_helpers import CURVE_KEYS, LOSS_FILE_KEYS

from deepobs_tree import (
    PROVENANCE_SUFFIX,
    deepobs_output,
    dump_deepobs_json,
    parse_result_file_name,
    write_atomic,
)
from runners.commandline import parse_hp, parse_value
from runners.run import RunError, train_curves
from runners.spec import RunSpec


class FakeTrainer:
    """A trainer whose loss halves every epoch and becomes NaN in epoch ``nan_epoch`` (steps 0..steps-1)."""

    def __init__(self, steps=25, nan_epoch=None, nan_only_early=False, accuracy=True):
        self.steps_per_epoch = steps
        self.nan_epoch = nan_epoch
        self.nan_only_early = nan_only_early
        self.accuracy = accuracy
        self.loss = 8.0
        self.calls = []

    def evaluate(self, phase):
        self.calls.append(("eval", phase))
        offset = {"train_eval": 0.0, "valid": 0.1, "test": 0.2}[phase]
        return {"loss": self.loss + offset, "accuracy": (1 / (1 + self.loss)) if self.accuracy else None}

    def train_epoch(self, epoch, log_interval=10, on_step=None):
        self.calls.append(("train", epoch))
        logged = []
        for s in range(self.steps_per_epoch):
            value = self.loss * (1 - s / 100)
            if epoch == self.nan_epoch and (not self.nan_only_early or s == 0):
                value = math.nan
            if s % log_interval == 0:
                logged.append(value)
        self.loss /= 2
        return logged


def test_loop_order_and_lengths_without_divergence():
    t = FakeTrainer(steps=25)
    c = train_curves(t, num_epochs=3, train_log_interval=10)
    assert c["diverged_epoch"] is None
    # epoch 0 evaluation first, TRAIN, VALID, TEST, then training; no training after the last evaluation
    assert t.calls[:4] == [("eval", "train_eval"), ("eval", "valid"), ("eval", "test"), ("train", 0)]
    assert t.calls[-3:] == [("eval", "train_eval"), ("eval", "valid"), ("eval", "test")]
    assert [c for c in t.calls if c[0] == "train"] == [("train", 0), ("train", 1), ("train", 2)]
    for key in ("train_losses", "valid_losses", "test_losses", "train_accuracies", "test_accuracies"):
        assert len(c[key]) == 4
    # steps 0, 10, 20 logged once each (the TF runner appended each twice)
    assert len(c["minibatch_train_losses"]) == 3 * 3
    assert c["minibatch_train_losses"][:3] == [8.0, 8.0 * 0.9, 8.0 * 0.8]
    assert c["train_losses"] == [8.0, 4.0, 2.0, 1.0] and c["test_losses"][0] == pytest.approx(8.2)


@pytest.mark.parametrize("n", [0, 2, 4])
def test_divergence_pads_every_list_with_its_first_element(n):
    """deepobs-format §2.5: stop after epoch n, append element [0] num_epochs - n times."""
    num_epochs, per_epoch = 5, 3
    t = FakeTrainer(steps=25, nan_epoch=n)
    c = train_curves(t, num_epochs=num_epochs, train_log_interval=10)
    assert c["diverged_epoch"] == n
    assert [x for x in t.calls if x[0] == "train"][-1] == ("train", n)
    for key in CURVE_KEYS[:-1]:
        values = c[key]
        assert len(values) == num_epochs + 1
        assert values[n + 1 :] == [values[0]] * (num_epochs - n)  # not NaN: the untrained value
        assert all(math.isfinite(v) for v in values)
    mb = c["minibatch_train_losses"]
    assert len(mb) == per_epoch * (n + 1) + num_epochs - n
    assert math.isnan(mb[per_epoch * (n + 1) - 1])
    assert mb[per_epoch * (n + 1) :] == [mb[0]] * (num_epochs - n)


def test_only_the_last_logged_loss_decides():
    # NaN at step 0 of epoch 1 only: the last logged value (step 20) is finite -> DeepOBS goes on
    t = FakeTrainer(steps=25, nan_epoch=1, nan_only_early=True)
    c = train_curves(t, num_epochs=3)
    assert c["diverged_epoch"] is None and len(c["train_losses"]) == 4
    assert math.isnan(c["minibatch_train_losses"][3])


def _output(curves, has_accuracy, wd=None):
    return deepobs_output(
        testproblem="quadratic_deep",
        batch_size=128,
        num_epochs=2,
        random_seed=42,
        weight_decay=wd,
        optimizer_name="PowKernelGradientDescentOptimizer",
        optimizer_hyperparams={"learning_rate": 0.01, "power": 0.6000000000000001},
        curves=curves,
        has_accuracy=has_accuracy,
    )


def test_output_keys_in_deepobs_order_and_accuracy_dropped():
    curves = train_curves(FakeTrainer(accuracy=False), num_epochs=2)
    out = _output(curves, has_accuracy=False)
    assert list(out) == LOSS_FILE_KEYS
    assert out["weight_decay"] is None and out["training_params"] == {}
    text = dump_deepobs_json(out)
    assert '"weight_decay": null' in text and not text.endswith("\n")
    assert text == json.dumps(json.loads(text), indent=4)  # re-serialises byte-identically (§2.7)
    with_acc = _output(train_curves(FakeTrainer(), num_epochs=2), has_accuracy=True, wd=0.0)
    assert list(with_acc)[8:] == list(CURVE_KEYS)
    assert with_acc["weight_decay"] == 0.0


def test_nan_is_written_as_bare_literal():
    curves = train_curves(FakeTrainer(nan_epoch=0), num_epochs=2)
    text = dump_deepobs_json(_output(curves, has_accuracy=False))
    assert "NaN" in text
    assert math.isnan(json.loads(text)["minibatch_train_losses"][2])


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a" / "random_seed__42__2026-01-01-00-00-00.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]

    # a failing replace leaves the old file intact and no temp behind; temp names never end in .json
    seen = []

    def boom(src, dst):
        seen.append(Path(src).name)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, "three")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert seen and not seen[0].endswith(".json") and seen[0].startswith(".")
    assert parse_result_file_name(seen[0]) is None


def test_provenance_name_is_never_read_as_a_result():
    name = "random_seed__42__2026-01-01-00-00-00" + PROVENANCE_SUFFIX
    assert parse_result_file_name(name) is None and not name.endswith(".json") and "json" not in name


def test_cli_values():
    assert parse_hp(["learning_rate=1", "power=0.5", "select=rank>=2", "use_nesterov=True"]) == {
        "learning_rate": 1.0,
        "power": 0.5,
        "select": "rank>=2",
        "use_nesterov": True,
    }
    assert isinstance(parse_value("1"), float)
    for bad in (["learning_rate"], ["=3"], ["lr=1", "lr=2"], ["lr=nan"]):
        with pytest.raises(RunError):
            parse_hp(bad)


def test_existing_result_skips(tmp_path, result_text):
    spec = RunSpec(
        "quadratic_deep",
        "PowKernelGradientDescentOptimizer",
        {"learning_rate": 0.01, "power": 0.5},
        num_epochs=2,
        seed=43,
    )
    folder = spec.setting_dir(tmp_path)
    assert folder == tmp_path / "quadratic_deep" / "PowKernelGradientDescentOptimizer" / (
        "num_epochs__2__batch_size__128__learning_rate__1.e-02__power__5.e-01"
    )
    assert spec.existing_result(tmp_path) is None
    folder.mkdir(parents=True)
    (folder / "random_seed__42__2026-01-01-00-00-00.json").write_text("{}")  # other seed
    (folder / ("random_seed__43__2026-01-01-00-00-00" + PROVENANCE_SUFFIX)).write_text("x")
    (folder / ".random_seed__43__2026-01-01-00-00-00.json.abc.tmp").write_text("partial")
    assert spec.existing_result(tmp_path) is None
    (folder / "random_seed__43__2026-01-01-00-00-09.json").write_text("{}")  # not a result: never trusted
    assert spec.existing_result(tmp_path) is None
    done = folder / "random_seed__43__2026-01-01-00-00-05.json"
    done.write_text(result_text(spec))
    assert spec.existing_result(tmp_path) == done
    (folder / "random_seed__43__2026-01-01-00-00-09.json").unlink()
    from runners.run import execute

    assert execute(spec, tmp_path, progress=False) == done  # no training, no import of the problem


def test_runspec_json_round_trip_and_id():
    a = RunSpec(
        "quadratic_deep",
        "PowKernelMomentumOptimizer",
        {"power": 0.5, "learning_rate": 0.01},
        options={"select": "rank>=2"},
        data_dir="/x",
    )
    b = RunSpec.from_json(a.to_json())
    assert a == b and a.run_id == b.run_id and len(a.run_id) == 16
    assert a.hyperparams == (("learning_rate", 0.01), ("power", 0.5))
    assert a.replace(data_dir="/elsewhere").run_id == a.run_id  # data location is not part of the run
    assert a.replace(seed=43).run_id != a.run_id
    with pytest.raises(ValueError, match="unknown RunSpec field"):
        RunSpec.from_dict({"testproblem": "q", "optimizer": "o", "lr": 1})
    with pytest.raises(ValueError, match="num_epochs"):
        RunSpec("q", "o", num_epochs=0)
