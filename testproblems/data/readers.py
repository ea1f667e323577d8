"""Readers of the DeepOBS 1.2 on-disk data formats (data.md §1-§5): IDX, CIFAR/SVHN binary records,
Tolstoi's arrays and the quadratic problem's arrays; decoded files are cached per process. The batching
pipeline on top is ``datasets.py``.
"""

from __future__ import annotations

import gzip
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._common import FOLDERS, data_error

# Official record counts (data.md §1-§5); used only to flag non-standard files in provenance().
OFFICIAL_COUNTS = {
    "mnist": (60000, 10000),
    "fmnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "svhn": (73257, 26032),
    "tolstoi": (2612948, 653237),
    "quadratic": (1000, 1000),
}
TOLSTOI_SEQ_LEN = 50
TOLSTOI_VOCAB = 83
QUADRATIC = {"dim": 100, "size": 1000, "noise": 0.6, "seeds": {"train": 42, "valid": 44, "test": 43}}

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _stat_key(paths) -> tuple:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _cached(kind: str, paths: list[Path], build):
    key = (kind, _stat_key(paths))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    value = build()
    with _CACHE_LOCK:
        _CACHE[key] = value
    return value


def clear_cache() -> None:
    """Forget all decoded files (tests; or after re-preparing data in the same process)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _require(name: str, data_dir: Path, paths: list[Path]) -> None:
    for p in paths:
        if not p.is_file():
            raise data_error(name, data_dir, p, "file missing")


def _read_idx(name: str, data_dir: Path, path: Path, magic: int) -> np.ndarray:
    """Decode one gzipped IDX file (data.md §2) to a uint8 array (count, [rows, cols])."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise data_error(name, data_dir, path, f"unreadable ({e})") from None
    ndim = {2051: 3, 2049: 1}[magic]
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise data_error(name, data_dir, path, "truncated (no IDX header)")
    dims = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(dims[0]) != magic:
        raise data_error(name, data_dir, path, f"corrupt (IDX magic {int(dims[0])}, expected {magic})")
    shape = tuple(int(d) for d in dims[1:])
    if len(raw) != header + int(np.prod(shape)):
        raise data_error(name, data_dir, path, f"corrupt ({len(raw) - header} payload bytes for shape {shape})")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    arr.flags.writeable = False
    return arr


def read_idx_split(name: str, data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of `<prefix>-{images,labels}-idx?-ubyte.gz`."""
    folder = data_dir / FOLDERS[name]
    ip, lp = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    _require(name, data_dir, [ip, lp])

    def build():
        images = _read_idx(name, data_dir, ip, 2051)
        labels = _read_idx(name, data_dir, lp, 2049)
        if images.shape[1:] != (28, 28):
            raise data_error(name, data_dir, ip, f"corrupt (images of shape {images.shape[1:]}, expected (28, 28))")
        if labels.ndim != 1:
            raise data_error(name, data_dir, lp, f"corrupt (labels of shape {labels.shape}, expected (N,))")
        if len(images) != len(labels):
            raise data_error(name, data_dir, lp, f"corrupt ({len(labels)} labels for {len(images)} images)")
        if labels.size and labels.max() > 9:
            raise data_error(name, data_dir, lp, f"corrupt (label {labels.max()} > 9)")
        return images, labels

    return _cached("idx", [ip, lp], build)


def _read_records(name: str, data_dir: Path, path: Path, record_bytes: int) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % record_bytes:
        raise data_error(name, data_dir, path, f"corrupt ({size} bytes is not a multiple of {record_bytes})")
    rec = np.fromfile(path, dtype=np.uint8).reshape(-1, record_bytes)
    return rec


def _svhn_train_files(folder: Path) -> list[Path]:
    files = []
    for p in folder.glob("data_batch_*.bin"):
        m = re.fullmatch(r"data_batch_(\d+)\.bin", p.name)
        if m:
            files.append((int(m.group(1)), p))
    return [p for _, p in sorted(files)]


@dataclass(frozen=True)
class _ImageFiles:
    """Decoded image files: `x` uint8 (N, H, W, C) and `y` uint8 (N,) of all training files in file order
    (`offsets[i]:offsets[i+1]` is file i), plus the test file."""

    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    files: tuple = field(default=())


def _cifar_like(
    name: str,
    data_dir: Path,
    train_paths,
    test_path,
    *,
    label_byte: int,
    image_start: int,
    record_bytes: int,
    chw: bool,
    num_classes: int,
) -> _ImageFiles:
    _require(name, data_dir, [*train_paths, test_path])

    def check(path, rec):
        y = rec[:, label_byte]
        if y.size and y.max() >= num_classes:
            raise data_error(name, data_dir, path, f"corrupt (label {y.max()} >= {num_classes})")

    def fill(rec, x_out, y_out):
        y_out[:] = rec[:, label_byte]
        pix = rec[:, image_start : image_start + 3072]
        x_out[:] = pix.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) if chw else pix.reshape(-1, 32, 32, 3)

    def build():
        recs = []
        for p in train_paths:
            recs.append(_read_records(name, data_dir, p, record_bytes))
            check(p, recs[-1])
        offsets = np.cumsum([0] + [len(r) for r in recs])
        x = np.empty((offsets[-1], 32, 32, 3), np.uint8)
        y = np.empty(offsets[-1], np.uint8)
        for i, r in enumerate(recs):
            fill(r, x[offsets[i] : offsets[i + 1]], y[offsets[i] : offsets[i + 1]])
        del recs
        trec = _read_records(name, data_dir, test_path, record_bytes)
        check(test_path, trec)
        test_x, test_y = np.empty((len(trec), 32, 32, 3), np.uint8), np.empty(len(trec), np.uint8)
        fill(trec, test_x, test_y)
        out = _ImageFiles(x, y, offsets, test_x, test_y, tuple(str(p) for p in [*train_paths, test_path]))
        for a in (out.x, out.y, out.test_x, out.test_y):
            a.flags.writeable = False
        return out

    return _cached(f"{name}:{image_start}", [*train_paths, test_path], build)


# the binary record of each image dataset: (label byte, record bytes, channels first, classes) (data.md §3, §4)
_RECORDS = {"cifar10": (0, 3073, True, 10), "cifar100": (1, 3074, True, 100), "svhn": (0, 3073, False, 10)}


def read_image_dataset(name: str, data_dir: Path, fidelity: str) -> _ImageFiles:
    """Decode the CIFAR-10 / CIFAR-100 / SVHN binaries (data.md §3, §4)."""
    folder = data_dir / FOLDERS[name]
    if name == "cifar10":
        train, test = [folder / f"data_batch_{i}.bin" for i in range(1, 6)], folder / "test_batch.bin"
    elif name == "cifar100":
        train, test = [folder / "train.bin"], folder / "test.bin"
    elif name == "svhn":
        train, test = _svhn_train_files(folder), folder / "test_batch.bin"
        if not train:
            raise data_error(name, data_dir, folder / "data_batch_0.bin", "file missing")
    else:
        raise AssertionError(name)
    label_byte, record_bytes, chw, num_classes = _RECORDS[name]
    # DeepOBS slices CIFAR-100's image from byte 1 (one byte early, data.md §3); 'corrected' uses byte 2.
    start = 2 if name == "cifar100" and fidelity != "deepobs" else 1
    return _cifar_like(
        name,
        data_dir,
        train,
        test,
        label_byte=label_byte,
        image_start=start,
        record_bytes=record_bytes,
        chw=chw,
        num_classes=num_classes,
    )


def read_tolstoi(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids) from tolstoi/train.npy and test.npy (data.md §5), as int32."""
    folder = data_dir / FOLDERS["tolstoi"]
    paths = [folder / "train.npy", folder / "test.npy"]
    _require("tolstoi", data_dir, paths)

    def load(p):
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise data_error("tolstoi", data_dir, p, f"unreadable ({e})") from None
        if a.ndim != 1 or a.dtype.kind not in "iu" or a.size < 2:
            raise data_error("tolstoi", data_dir, p, f"corrupt (expected a 1-D int array, got {a.dtype} {a.shape})")
        if a.min() < 0 or a.max() >= TOLSTOI_VOCAB:
            raise data_error("tolstoi", data_dir, p, f"corrupt (ids outside 0..{TOLSTOI_VOCAB - 1})")
        a = a.astype(np.int32)
        a.flags.writeable = False
        return a

    return _cached("tolstoi", paths, lambda: (load(paths[0]), load(paths[1])))


def quadratic_arrays() -> dict[str, np.ndarray]:
    """The DeepOBS quadratic data (data.md §6): a fresh RandomState per split, normal(0, 0.6), float32."""

    def build():
        out = {}
        for split, s in QUADRATIC["seeds"].items():
            x = np.float32(
                np.random.RandomState(s).normal(0.0, QUADRATIC["noise"], (QUADRATIC["size"], QUADRATIC["dim"]))
            )
            x.flags.writeable = False
            out[split] = x
        return out

    return _cached("quadratic", [], build)
