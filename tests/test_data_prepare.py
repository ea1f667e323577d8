"""`prepare-data` end to end against a local HTTP server on 127.0.0.1 serving synthetic archives in the
official formats: every data set, an interrupted download that resumes, a checksum mismatch, --source,
and the conversions compared with DeepOBS' own preprocessing scripts (data.md §4, §5)."""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import hashlib
import http.server
import importlib.util
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from testproblems.data import FOLDERS, load_dataset, prepare, synthetic

DEEPOBS_SCRIPTS = Path(sys.prefix) / "lib" / "python3.11" / "site-packages" / "deepobs" / "scripts"
NAMES = ("mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.ignore_range = False
        self.log: list[tuple[str, str | None, int]] = []


def _handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            data = state.files.get(name)
            rng = None if state.ignore_range else self.headers.get("Range")
            if data is None:
                state.log.append((name, rng, 404))
                self.send_error(404)
                return
            start = 0
            if rng:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(data):
                    state.log.append((name, rng, 416))
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            status = 206 if rng else 200
            if name in state.cut_once:  # announce everything, send half, close the connection
                state.cut_once.discard(name)
                state.log.append((name, rng, -status))  # logged before the client can see the response
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            state.log.append((name, rng, status))
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = _State()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/files/"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def archives(tmp_path, monkeypatch):
    """Synthetic official archives of every data set, and SPECS whose checksums are theirs."""
    src = tmp_path / "archives"
    paths = {}
    for name in NAMES:
        got = synthetic.write_archives(name, src / name, seed=NAMES.index(name))
        paths[name] = got
        files = tuple(prepare.Remote(f, md5=hashlib.md5(p.read_bytes()).hexdigest()) for f, p in got.items())
        monkeypatch.setitem(prepare.SPECS, name, dataclasses.replace(prepare.SPECS[name], files=files))
    return paths


def _run(*argv, capsys=None, quiet=True):
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    rc = prepare.run(parser.parse_args([*argv, "--quiet"] if quiet else list(argv)))
    out = capsys.readouterr() if capsys else None
    return rc, out


def _load_module(name):
    spec = importlib.util.spec_from_file_location(f"deepobs_{name}", DEEPOBS_SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", NAMES)
def test_prepare_each_dataset_over_http(name, server, archives, tmp_path, capsys):
    for fname, p in archives[name].items():
        server.files[fname] = p.read_bytes()
    data = tmp_path / "data"
    rc, out = _run("--data-dir", str(data), "--only", name, "--base-url", f"{name}={server.url}", capsys=capsys)
    assert rc == 0, out.err
    assert f"{name}: prepared in" in out.out and out.err == ""
    folder = data / FOLDERS[name]
    assert (folder / prepare.MARKER).is_file()
    assert not (data / prepare.DOWNLOADS).exists()  # archives removed after preparation
    assert {n for n, _, status in server.log if status == 200} == set(archives[name])
    ds = load_dataset(name, data, batch_size=5, seed=0)
    assert all(ds.num_batches(p) > 0 for p in ("train", "train_eval", "valid", "test"))
    if name in ("mnist", "fmnist"):
        for fname, p in archives[name].items():
            assert (folder / fname).read_bytes() == p.read_bytes()
    elif name in ("cifar10", "cifar100"):
        (tgz,) = archives[name].values()
        with tarfile.open(tgz) as tar:
            members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}
        for fname, payload in members.items():  # `tar --strip 1`: every member, without the top folder
            assert (folder / fname).read_bytes() == payload
    elif name == "svhn":
        # DeepOBS' own converter on the same .mat files (its record counts capped to the synthetic sizes)
        ref = tmp_path / "deepobs_svhn"
        ref.mkdir()
        limits = iter([90, 30])
        mod = _load_module("_svhn_preprocess")
        mod.range = lambda a, b: builtins.range(a, min(b, next(limits)))
        mod.preprocess(file_path=str(archives[name]["train_32x32.mat"].parent), save_path=str(ref))
        assert sorted(p.name for p in folder.glob("*.bin")) == ["data_batch_0.bin", "test_batch.bin"]
        for fname in ("data_batch_0.bin", "test_batch.bin"):
            assert (folder / fname).read_bytes() == (ref / fname).read_bytes()
    else:
        # prep's sed deletions with the real sed, then DeepOBS' tol-prep, on the same text
        ref = tmp_path / "deepobs_tolstoi"
        ref.mkdir()
        shutil.copy(archives[name]["war-and-peace.txt"], ref / "input.txt")
        for a, b in prepare.TOLSTOI_SED:
            subprocess.run(["sed", "-i", f"{a},{b}d", str(ref / "input.txt")], check=True)
        assert (folder / "input.txt").read_bytes() == (ref / "input.txt").read_bytes()
        assert (folder / "input.txt").read_bytes().startswith(b"WAR AND PEACE\r\n")
        _load_module("_tolstoi_preprocess").preprocess(file_path=str(ref), encoding="utf-8", test_size=0.2)
        for fname in ("train.npy", "test.npy"):
            ours, theirs = np.load(folder / fname), np.load(ref / fname)
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        assert pickle.loads((folder / "vocab.pkl").read_bytes()) == pickle.loads((ref / "vocab.pkl").read_bytes())


def test_interrupted_download_resumes_on_rerun(server, archives, tmp_path, capsys):
    ((fname, path),) = archives["cifar10"].items()
    server.files[fname] = payload = path.read_bytes()
    server.cut_once.add(fname)
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--only", "cifar10", "--base-url", f"cifar10={server.url}")
    rc, out = _run(*args, "--retries", "0", capsys=capsys)
    assert rc == 2
    (line,) = out.err.strip().splitlines()
    assert "interrupted" in line and "rerun" in line and fname in line
    part = data / prepare.DOWNLOADS / "cifar10" / (fname + ".part")
    assert part.stat().st_size == len(payload) // 2
    assert not (data / "cifar-10" / prepare.MARKER).exists()
    rc, out = _run(*args, capsys=capsys)
    assert rc == 0, out.err
    assert server.log[-1] == (fname, f"bytes={len(payload) // 2}-", 206)  # resumed, not restarted
    assert not part.exists()
    assert load_dataset("cifar10", data, batch_size=10, seed=0).sizes["train"] == 80


def test_interrupted_download_is_retried_within_a_run(server, archives, tmp_path, capsys):
    for fname, p in archives["fmnist"].items():
        server.files[fname] = p.read_bytes()
    server.cut_once.add("train-images-idx3-ubyte.gz")
    rc, out = _run(
        "--data-dir",
        str(tmp_path),
        "--only",
        "fmnist",
        "--base-url",
        f"fmnist={server.url}",
        "--retries",
        "1",
        capsys=capsys,
        quiet=False,
    )
    assert rc == 0, out.err
    assert "train-images-idx3-ubyte.gz" in out.err and "B/s" in out.err  # the tqdm progress bar
    ranged = [e for e in server.log if e[0] == "train-images-idx3-ubyte.gz"]
    assert [s for _, _, s in ranged] == [-200, 206] and ranged[1][1].startswith("bytes=")


def test_server_without_range_support_restarts_the_download(server, archives, tmp_path, capsys):
    ((fname, path),) = archives["cifar10"].items()
    server.files[fname] = path.read_bytes()
    server.cut_once.add(fname)
    server.ignore_range = True  # answers 200 with the whole file to a Range request
    rc, out = _run(
        "--data-dir",
        str(tmp_path),
        "--only",
        "cifar10",
        "--base-url",
        f"cifar10={server.url}",
        "--retries",
        "1",
        capsys=capsys,
    )
    assert rc == 0, out.err
    assert [s for _, _, s in server.log] == [-200, 200]
    assert load_dataset("cifar10", tmp_path, batch_size=10, seed=0).sizes["train"] == 80


def test_checksum_mismatch_is_one_clear_error(server, archives, tmp_path, capsys):
    ((fname, path),) = archives["cifar100"].items()
    bad = bytearray(path.read_bytes())
    bad[1000] ^= 0xFF
    server.files[fname] = bytes(bad)
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--only", "cifar100", "--base-url", f"cifar100={server.url}")
    rc, out = _run(*args, capsys=capsys)
    assert rc == 2
    (line,) = out.err.strip().splitlines()
    assert line.startswith("error: cifar100: checksum mismatch") and fname in line and "md5" in line
    assert not (data / prepare.DOWNLOADS / "cifar100" / fname).exists()  # bad download deleted
    assert not (data / "cifar-100" / "train.bin").exists()
    server.files[fname] = path.read_bytes()
    rc, out = _run(*args, capsys=capsys)
    assert rc == 0, out.err


def test_source_folder_then_skip_when_prepared(archives, tmp_path, capsys):
    src = archives["svhn"]["train_32x32.mat"].parent
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    data = tmp_path / "data"
    rc, out = _run(
        "--data-dir",
        str(data),
        "--only",
        "svhn",
        "--source",
        str(src),
        "--base-url",
        "svhn=http://127.0.0.1:9/",
        capsys=capsys,
    )  # never contacted: everything is in --source
    assert rc == 0, out.err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched
    rc, out = _run("--data-dir", str(data), "--only", "svhn", "--source", str(src), capsys=capsys)
    assert rc == 0 and "already prepared" in out.out


def test_svhn_keeps_all_training_images_12800_per_file(archives, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare, "SVHN_PER_FILE", 40)  # 90 synthetic images -> 40 + 40 + 10
    src = archives["svhn"]["train_32x32.mat"].parent
    rc, out = _run("--data-dir", str(tmp_path), "--only", "svhn", "--source", str(src), capsys=capsys)
    assert rc == 0, out.err
    sizes = [(tmp_path / "svhn" / f"data_batch_{k}.bin").stat().st_size // 3073 for k in range(3)]
    assert sizes == [40, 40, 10] and not (tmp_path / "svhn" / "data_batch_3.bin").exists()
    import scipy.io

    mat = scipy.io.loadmat(src / "train_32x32.mat")
    rec = np.concatenate([np.fromfile(tmp_path / "svhn" / f"data_batch_{k}.bin", np.uint8) for k in range(3)])
    rec = rec.reshape(90, 3073)
    labels = mat["y"].ravel() % 10
    np.testing.assert_array_equal(rec[:, 0], labels)
    np.testing.assert_array_equal(rec[:, 1:].reshape(90, 32, 32, 3), mat["X"].transpose(3, 0, 1, 2))


def test_unreachable_server_and_bad_arguments(tmp_path, capsys):
    rc, out = _run(
        "--data-dir",
        str(tmp_path),
        "--only",
        "mnist",
        "--base-url",
        "mnist=http://127.0.0.1:9/",
        "--timeout",
        "5",
        capsys=capsys,
    )
    assert rc == 2
    (line,) = out.err.strip().splitlines()
    assert "cannot download http://127.0.0.1:9/train-images-idx3-ubyte.gz" in line and "--source" in line
    for argv, words in (
        (["--only", "imagenet"], "unknown data set 'imagenet'"),
        (["--base-url", "cifar10"], "bad --base-url"),
        (["--source", str(tmp_path / "nope")], "no such folder"),
    ):
        rc, out = _run("--data-dir", str(tmp_path), *argv, capsys=capsys)
        assert rc == 2 and len(out.err.strip().splitlines()) == 1 and words in out.err
    r = subprocess.run(
        [sys.executable, "-m", "testproblems.data.prepare", "--only", "nope", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "unknown data set" in r.stderr
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    ns = parser.parse_args(["--base-url", "mnist=http://a", "svhn=http://b/", "--base-url", "tolstoi=http://c"])
    assert prepare._parse_base_urls(ns.base_url) == {"mnist": "http://a/", "svhn": "http://b/", "tolstoi": "http://c/"}
    rc, out = _run("--data-dir", str(tmp_path), "--only", "quadratic", capsys=capsys)
    assert rc == 0 and "nothing to prepare" in out.out


def test_sed_delete_and_tolstoi_vocab_rules():
    text = b"".join(b"line %d\r\n" % i for i in range(1, 41)) + b"tail"
    got = prepare.sed_delete(text, ((1, 3), (2, 4)))
    assert got.startswith(b"line 4\r\nline 8\r\n") and got.endswith(b"tail")
    chars, ids = prepare.tolstoi_ids("abbccc\r\n")
    assert chars == ("c", "b", "a", "\r", "\n")  # by count; ties in first-occurrence order
    np.testing.assert_array_equal(ids, [2, 1, 1, 0, 0, 0, 3, 4])


# `make data` composing its command (DATA_DIR, SOURCE, ONLY, defaults): tests/test_makefile_quoting.py
# ::test_data_and_bench_args runs the recipe with a recording interpreter (make -n no longer shows the values).
