"""Small synthetic files in the exact DeepOBS formats, for tests (no downloads needed).

`write_prepared(name, data_dir)` writes the prepared layout the readers expect (data.md §1 table);
`write_archives(name, folder)` writes stand-ins for the official archives that `prepare-data` consumes
(IDX .gz, CIFAR binary .tar.gz, SVHN .mat, War-and-Peace-like .txt). Contents are random but
deterministic in `seed`; sizes are small by default.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np

from ._common import FOLDERS, atomic_write_bytes


def idx_bytes(arr: np.ndarray) -> bytes:
    """An uncompressed IDX file for a uint8 array (images (N, 28, 28): magic 2051; labels (N,): 2049)."""
    magic = 2051 if arr.ndim == 3 else 2049
    header = np.array([magic, *arr.shape], dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def cifar_records(labels, images_hwc: np.ndarray, *, coarse=None) -> bytes:
    """CIFAR binary records: [coarse,] label, then the image as 3 channel planes (R, G, B), row-major."""
    n = len(labels)
    planes = np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)).reshape(n, 3072)
    cols = [np.asarray(labels, np.uint8)[:, None], planes]
    if coarse is not None:
        cols.insert(0, np.asarray(coarse, np.uint8)[:, None])
    return np.concatenate(cols, axis=1).tobytes()


def svhn_bytes(labels, images_hwc: np.ndarray) -> bytes:
    """svhn-prep records: 1 label byte (0-9), then the image in (row, col, channel) order."""
    n = len(labels)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], images_hwc.reshape(n, 3072)], axis=1).tobytes()


def _images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write_batches(folder: Path, rng, records, sizes: dict[int, int], n_test: int) -> None:
    """10-class 32x32x3 files ``data_batch_<i>.bin`` (``sizes``: i -> records) and ``test_batch.bin``; the
    draws happen in file order, so the bytes stay what they were when each file was written inline."""
    for i, n in sizes.items():
        atomic_write_bytes(
            folder / f"data_batch_{i}.bin", records(rng.integers(0, 10, n), _images(rng, n, (32, 32, 3)))
        )
    atomic_write_bytes(
        folder / "test_batch.bin", records(rng.integers(0, 10, n_test), _images(rng, n_test, (32, 32, 3)))
    )


def write_prepared(
    name: str, data_dir, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0
) -> Path:
    """Write dataset `name` in the prepared on-disk layout below `data_dir`; returns its folder.

    Defaults: MNIST/Fashion-MNIST 600 train + 100 test images; CIFAR-10 5 files x 60 + 60 test;
    CIFAR-100 300 + 60; SVHN 3 files (64, 64, 40) + 60 test; Tolstoi 20,000 + 4,000 ids.
    """
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / FOLDERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    if name in ("mnist", "fmnist"):
        n_train, n_test = n_train or 600, n_test or 100
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            atomic_write_bytes(
                folder / f"{prefix}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(_images(rng, n, (28, 28))))
            )
            atomic_write_bytes(
                folder / f"{prefix}-labels-idx1-ubyte.gz",
                gzip.compress(idx_bytes(rng.integers(0, 10, n, dtype=np.uint8))),
            )
    elif name == "cifar10":
        n_train, n_test = n_train or 300, n_test or 60
        per = n_train // 5
        _write_batches(folder, rng, cifar_records, {i: per for i in range(1, 6)}, n_test)
    elif name == "cifar100":
        n_train, n_test = n_train or 300, n_test or 60
        for fname, n in (("train.bin", n_train), ("test.bin", n_test)):
            atomic_write_bytes(
                folder / fname,
                cifar_records(rng.integers(0, 100, n), _images(rng, n, (32, 32, 3)), coarse=rng.integers(0, 20, n)),
            )
    elif name == "svhn":
        n_train, n_test = n_train or 168, n_test or 60
        sizes = [64, 64, n_train - 128] if n_train > 128 else [n_train]
        _write_batches(folder, rng, svhn_bytes, dict(enumerate(sizes)), n_test)
    elif name == "tolstoi":
        n_train, n_test = n_train or 20000, n_test or 4000
        for fname, n in (("train.npy", n_train), ("test.npy", n_test)):
            buf = io.BytesIO()
            np.save(buf, rng.integers(0, 83, n).astype(np.int64))
            atomic_write_bytes(folder / fname, buf.getvalue())
    else:
        raise ValueError(f"no files to write for dataset {name!r}")
    return folder


def war_and_peace_like(seed: int = 0, body_lines: int = 400) -> bytes:
    """A stand-in for the Tolstoi download: BOM line, CRLF lines, enough lines for prep's sed deletions
    (1-29, then 5-775) to leave a 'WAR AND PEACE' head and a body of `body_lines` random sentences."""
    rng = np.random.default_rng(seed)
    words = ["the", "prince", "said", "and", "Natasha", "war", "peace", "Moscow", "he", "she", "was", "é"]
    lines = ["\ufeffThe Project Gutenberg EBook of War and Peace"] + [f"header {i}" for i in range(2, 30)]
    lines += ["WAR AND PEACE", "", "By Leo Tolstoy/Tolstoi", ""]
    lines += [f"CONTENTS line {i}" for i in range(771)]
    for _ in range(body_lines):
        lines.append(" ".join(rng.choice(words, size=int(rng.integers(3, 12)))).capitalize() + ".")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def write_archives(name: str, folder, *, seed: int = 0) -> dict[str, Path]:
    """Write synthetic stand-ins of the official archives of `name` into `folder` (flat, official file
    names); returns {file name: path}."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    if name in ("mnist", "fmnist"):
        for prefix, n in (("train", 120), ("t10k", 20)):
            out[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(_images(rng, n, (28, 28))))
            out[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(rng.integers(0, 10, n, dtype=np.uint8)))
    elif name in ("cifar10", "cifar100"):
        if name == "cifar10":
            top, members = "cifar-10-batches-bin", {f"data_batch_{i}.bin": 20 for i in range(1, 6)}
            members["test_batch.bin"] = 20
            extra = {"batches.meta.txt": b"airplane\nautomobile\n", "readme.html": b"<html></html>"}
        else:
            top, members = "cifar-100-binary", {"train.bin": 100, "test.bin": 20}
            extra = {"coarse_label_names.txt": b"aquatic_mammals\n", "fine_label_names.txt": b"apple\n"}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for fname, n in members.items():
                if name == "cifar10":
                    data = cifar_records(rng.integers(0, 10, n), _images(rng, n, (32, 32, 3)))
                else:
                    data = cifar_records(
                        rng.integers(0, 100, n), _images(rng, n, (32, 32, 3)), coarse=rng.integers(0, 20, n)
                    )
                for member, payload in ((fname, data),):
                    info = tarfile.TarInfo(f"{top}/{member}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
            for member, payload in extra.items():
                info = tarfile.TarInfo(f"{top}/{member}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        out[{"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}[name]] = buf.getvalue()
    elif name == "svhn":
        import scipy.io  # SciPy (~0.8 s) only to write SVHN's .mat files

        for fname, n in (("train_32x32.mat", 90), ("test_32x32.mat", 30)):
            x = np.asfortranarray(_images(rng, n, (32, 32, 3)).transpose(1, 2, 3, 0))  # (32, 32, 3, N)
            y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # 1..10, 10 = digit 0
            buf = io.BytesIO()
            scipy.io.savemat(buf, {"X": x, "y": y})
            out[fname] = buf.getvalue()
    elif name == "tolstoi":
        out["war-and-peace.txt"] = war_and_peace_like(seed)
    else:
        raise ValueError(f"no archives for dataset {name!r}")
    paths = {}
    for fname, data in out.items():
        atomic_write_bytes(folder / fname, data)
        paths[fname] = folder / fname
    return paths
