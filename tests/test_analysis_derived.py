"""The derived-table cache (``analysis.derived``, issue 18's bench targets): a warm run writes byte-identical
tables, any changed input (a result file, an option, a registry label, the code) is a different key, a damaged
entry is recomputed, and the entries are plain type-tagged JSON written only when they round-trip exactly."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tree_helpers import small_tree

from analysis import derived
from analysis.report import analyse, write_report
from deepobs_tree import cache as cache_module

ROOT = Path(__file__).resolve().parents[1]

# one problem: no performance profile (issue 27); the verdict's files instead
TABLE_FILES = (
    "summary.csv",
    "summary.md",
    "summary.tex",
    "comparison.csv",
    "comparison.md",
    "budget_curves.csv",
    "verdict.md",
    "verdict.csv",
    "verdict_searches.csv",
    "report.md",
    "report.html",
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def run_cli(python, tree: Path, out: Path, cache: Path, *extra: str) -> None:
    env = {"NLWU_CACHE": str(cache), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [
            python,
            "-m",
            "analysis",
            str(tree),
            "--out",
            str(out),
            "--quiet",
            "--no-figures",
            "--rerun-seeds",
            "43-45",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLE_FILES if (out / name).exists()}


def entries(cache: Path) -> list[Path]:
    folder = cache / "analysis-derived"
    return sorted(folder.glob("*/tables.json")) if folder.is_dir() else []


def test_warm_run_writes_byte_identical_tables_and_a_changed_file_invalidates(tmp_path, python, monkeypatch):
    tree, cache = small_tree(tmp_path / "tree"), tmp_path / "cli-cache"
    run_cli(python, tree, tmp_path / "cold", cache)
    [entry] = entries(cache)
    run_cli(python, tree, tmp_path / "warm", cache)
    assert entries(cache) == [entry]  # read, not recomputed under another key
    cold, warm = tables(tmp_path / "cold"), tables(tmp_path / "warm")
    assert set(cold) == set(TABLE_FILES) and warm == cold
    run_cli(python, tree, tmp_path / "uncached", cache, "--no-cache")
    assert tables(tmp_path / "uncached") == cold
    # a planted entry under the key proves the warm run reads the cache (and only the cache)
    data = json.loads(entry.read_text())
    summary = derived.decode_frame(data["tables"]["summary"])
    summary.loc[0, "final_test_mean"] = 12.345
    data["tables"]["summary"] = derived.encode_frame(summary)
    monkeypatch.setenv("NLWU_CACHE", str(cache))
    cache_module.write("analysis-derived", entry.parent.name, {"tables.json": json.dumps(data).encode()})
    run_cli(python, tree, tmp_path / "planted", cache)
    assert "12.345" in (tmp_path / "planted" / "summary.csv").read_text()
    # edit one result file's final test loss (quadratic_deep's metric) in a copy: a new key, a new summary, as
    # without any cache
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    [path] = sorted(copy.glob("quadratic_deep/PowKernelGradientDescentOptimizer/*/random_seed__43__*.json"))
    run = json.loads(path.read_text())
    run["test_losses"][-1] = 99.5
    path.write_text(json.dumps(run, indent=4))
    run_cli(python, copy, tmp_path / "edited", cache)
    run_cli(python, copy, tmp_path / "edited-uncached", cache, "--no-cache")
    assert len(entries(cache)) == 2
    edited = tables(tmp_path / "edited")
    assert edited == tables(tmp_path / "edited-uncached")
    before = pd.read_csv(tmp_path / "cold" / "summary.csv").set_index("optimizer")["final_test_mean"]
    after = pd.read_csv(tmp_path / "edited" / "summary.csv").set_index("optimizer")["final_test_mean"]
    name = "PowKernelGradientDescentOptimizer"
    assert after[name] != before[name] and after.drop(name).equals(before.drop(name))


def test_every_input_is_in_the_key(tmp_path, monkeypatch):
    tree = small_tree(tmp_path / "tree")
    base = analyse([tree], rerun_seeds=range(43, 46), progress=False)
    [entry] = entries(tmp_path / "cache")
    same = analyse([tree], rerun_seeds=range(43, 46), progress=False)
    assert entries(tmp_path / "cache") == [entry]
    for name in derived.TABLES:
        pd.testing.assert_frame_equal(getattr(same, name), getattr(base, name), check_exact=True)
    assert same.profile.attrs == base.profile.attrs
    analyse([tree], rerun_seeds=range(43, 45), progress=False)  # an option
    analyse([tree], rerun_seeds=range(43, 46), mode="best", progress=False)
    analyse([tree], rerun_seeds=range(43, 46), where={"power": "0.5"}, progress=False)
    assert len(entries(tmp_path / "cache")) == 4
    from analysis import tables as tables_module

    label = tables_module.short_name
    monkeypatch.setattr(tables_module, "short_name", lambda o: "X" if o.startswith("Pow") else label(o))
    analyse([tree], rerun_seeds=range(43, 46), progress=False)  # a registry label (a plugin's, say)
    assert len(entries(tmp_path / "cache")) == 5
    monkeypatch.undo()
    runs = base.runs.drop(columns="source")
    key = derived.key([runs], {"a": 1}, {})
    assert derived.key([runs], {"a": 1}, {}) == key
    assert derived.key([runs], {"a": 2}, {}) != key
    curve = runs["test_accuracies"].copy()
    curve[0] = curve[0].copy()
    curve[0][-1] = np.nextafter(curve[0][-1], math.inf)  # one ulp of one curve value
    assert derived.key([runs.assign(test_accuracies=curve)], {"a": 1}, {}) != key
    monkeypatch.setattr(derived, "_versions", lambda: ["scipy=0"])
    assert derived.key([runs], {"a": 1}, {}) != key  # library versions (bootstrap results depend on scipy)
    monkeypatch.undo()
    source = tmp_path / "pkg"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(derived, "_PACKAGES", (source,))
    code_key = derived.key([runs], {"a": 1}, {})
    (source / "a.py").write_text("x = 2\n")
    assert derived.key([runs], {"a": 1}, {}) != code_key  # the code


def test_damaged_entries_are_recomputed_and_no_cache_writes_none(tmp_path):
    tree = small_tree(tmp_path / "tree")
    analyse([tree], rerun_seeds=range(43, 46), progress=False, cache=False)
    assert not (tmp_path / "cache").exists()
    reference = analyse([tree], rerun_seeds=range(43, 46), progress=False)
    [entry] = entries(tmp_path / "cache")
    for damage in (
        b"",
        b"\x80garbage",
        b'{"schema": 1}',
        b"[]",
        b'{"schema": 1, "key": "other", "tables": {}}',
        json.dumps({**json.loads(entry.read_text()), "schema": 99}).encode(),
        entry.read_bytes().replace(b'"t"', b'"zz"', 1),
    ):
        entry.write_bytes(damage)
        again = analyse([tree], rerun_seeds=range(43, 46), progress=False)
        pd.testing.assert_frame_equal(again.summary, reference.summary, check_exact=True)
        assert derived.load(entry.parent.name) is not None  # rewritten whole
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    write_report(reference, out1, figures=False)
    write_report(again, out2, figures=False)
    assert tables(out1) == tables(out2)


def test_codec_is_exact_and_refuses_what_it_cannot_hold():
    frame = pd.DataFrame(
        {
            "name": pd.Series(["a", "b", "c"], dtype="str"),
            "x": [1.0, math.nan, -math.inf],
            "n": [1, 2, 3],
            "flag": [True, False, True],
            "mixed": pd.Series([None, 0.5, 2], dtype=object),
            "values": [[1.0, 2.0], [], [math.nan]],
            "key": [("a", ("b", "1")), (), ("c",)],
            "hp": [{"lr": 0.1, "p": None}, {}, {"s": "x", "b": True}],
        }
    )
    frame.attrs = {"problems": ["p1", "p2"], "excluded": []}
    encoded = derived.encode_frame(frame)
    back = derived.decode_frame(json.loads(json.dumps(encoded, allow_nan=False)))
    pd.testing.assert_frame_equal(back.drop(columns="values"), frame.drop(columns="values"), check_exact=True)
    assert back["values"].tolist()[:2] == [[1.0, 2.0], []] and math.isnan(back.loc[2, "values"][0])
    assert back.attrs == frame.attrs
    assert [type(v) for v in back["key"]] == [tuple] * 3 and isinstance(back.loc[0, "key"][1], tuple)
    assert [type(v) for v in back["mixed"]] == [type(None), float, int]
    assert derived._exact(frame, encoded)
    empty = pd.DataFrame()
    assert derived._exact(empty, derived.encode_frame(empty))
    for bad in (
        pd.DataFrame({"a": [np.float32(1.0)]}, dtype=object),
        pd.DataFrame({"a": [object()]}),
        pd.DataFrame({"a": [1]}, index=[5]),
        pd.DataFrame({0: [1]}),
    ):
        with pytest.raises(derived.Unencodable):
            derived.encode_frame(bad)
    assert not derived.store("k", {name: bad for name in derived.TABLES})
