"""The one cache (deepobs_tree/cache.py): entries are folders of plain files checked against their hashes,
keys follow the inputs and the code, the reference trees unpack again only for other archives, and
`make clean-cache` removes the caches and nothing else."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from deepobs_tree import cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLWU_CACHE", str(tmp_path / "cache"))


def test_entry_round_trip_and_damage_is_a_miss(tmp_path):
    key = cache.key("analysis-figures", ["inputs", 1], code="v1")
    assert (
        key
        != cache.key("analysis-figures", ["inputs", 2], code="v1")
        != cache.key("analysis-figures", ["inputs", 1], code="v2")
    )
    assert cache.read("analysis-figures", key) is None
    assert cache.write("analysis-figures", key, {"a.png": b"\x89PNG", "b.pdf": b"%PDF"})
    assert cache.read("analysis-figures", key) == {"a.png": b"\x89PNG", "b.pdf": b"%PDF"}
    (tmp_path / "cache" / "analysis-figures" / key / "a.png").write_bytes(b"\x89PNX")
    assert cache.read("analysis-figures", key) is None  # fails its hash
    assert cache.write("analysis-figures", key, {"a.png": b"\x89PNG"})  # a damaged entry is replaced
    assert cache.read("analysis-figures", key) == {"a.png": b"\x89PNG"}
    with pytest.raises(ValueError, match="unknown cache kind"):
        cache.folder("pickles")


def test_code_version_follows_the_source(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n")
    before = cache.code_version([tmp_path])
    (tmp_path / "m.py").write_text("x = 2\n")
    assert cache.code_version([tmp_path]) != before


def _archive(path: Path, text: bytes) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        info = tarfile.TarInfo("tree/file.json")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return path


def test_unpack_once_per_archive_content(tmp_path):
    archive = _archive(tmp_path / "a.tar.xz", b"{}")
    dest = cache.unpack([archive], tmp_path / "ref")
    assert (dest / "tree" / "file.json").read_bytes() == b"{}"
    (dest / "tree" / "file.json").write_bytes(b"touched")
    cache.unpack([archive], dest)
    assert (dest / "tree" / "file.json").read_bytes() == b"touched"  # same archives: not unpacked again
    _archive(archive, b"[1]")
    cache.unpack([archive], dest)
    assert (dest / "tree" / "file.json").read_bytes() == b"[1]"  # other content: unpacked again


def test_make_clean_cache_removes_the_caches_only(tmp_path):
    base = tmp_path / "c"
    for kind in (*cache.KINDS, "fidelity"):
        (base / kind).mkdir(parents=True)
        (base / kind / "x").write_text("x")
    proc = subprocess.run(
        ["make", "-s", "clean-cache", f"CACHE={base}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in base.iterdir()) == ["fidelity"]
