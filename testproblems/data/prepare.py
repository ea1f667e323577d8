"""`python -m testproblems prepare-data`: download, verify and prepare the DeepOBS data sets (data.md §1-§5).

For each data set: fetch the official files (from `--source DIR` when they are there, else from the
base URL, resuming a partial download with an HTTP Range request), verify their checksums, convert
them into the layout `testproblems.data` reads (the same as DeepOBS' `deepobs_prepare_data.sh`, except
that SVHN keeps all 73,257 training images, data.md §4), write every output atomically and finish with a
marker file `.nlwu-prepared.json`. A prepared data set is skipped unless `--force`.

Here: the CLI, the table of official files (`SPECS`) and the per-dataset conversions; fetching, checksums
and archive extraction are in `download`.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepobs_tree.errors import fail

from ._common import DATASETS, FOLDERS, atomic_write_bytes, default_data_dir
from .download import DOWNLOADS, PrepareError, Remote, copy_atomic, digest, extract_stripped, fetch
from .readers import clear_cache

MARKER = ".nlwu-prepared.json"


@dataclass(frozen=True)
class Spec:
    name: str
    files: tuple[Remote, ...]
    base_urls: tuple[str, ...]
    outputs: tuple[str, ...] = field(default=())


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

SPECS: dict[str, Spec] = {
    "mnist": Spec(
        "mnist",
        (
            Remote(
                "train-images-idx3-ubyte.gz",
                md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
                payload_md5="6bbc9ace898e44ae57da46a324031adb",
            ),
            Remote(
                "train-labels-idx1-ubyte.gz",
                md5="d53e105ee54ea40749a09fcbcd1e9432",
                payload_md5="a25bea736e30d166cdddb491f175f624",
            ),
            Remote(
                "t10k-images-idx3-ubyte.gz",
                md5="9fb629c4189551a2d022fa330f9573f3",
                payload_md5="2646ac647ad5339dbf082846283269ea",
            ),
            Remote(
                "t10k-labels-idx1-ubyte.gz",
                md5="ec29112dd5afa0611ce80d1b7f02629c",
                payload_md5="27ae3e4e09519cfbb04c329615203637",
            ),
        ),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        tuple(f"{n}.gz" for n in _IDX),
    ),
    "fmnist": Spec(
        "fmnist",
        (
            Remote(
                "train-images-idx3-ubyte.gz",
                md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                payload_md5="f4a8712d7a061bf5bd6d2ca38dc4d50a",
            ),
            Remote(
                "train-labels-idx1-ubyte.gz",
                md5="25c81989df183df01b3e8a0aad5dffbe",
                payload_md5="9018921c3c673c538a1fc5bad174d6f9",
            ),
            Remote(
                "t10k-images-idx3-ubyte.gz",
                md5="bef4ecab320f06d8554ea6380940ec79",
                payload_md5="8181f5470baa50b63fa0f6fddb340f0a",
            ),
            Remote(
                "t10k-labels-idx1-ubyte.gz",
                md5="bb300cfdad3c16e7a12a480ee83cd310",
                payload_md5="15d484375f8d13e6eb1aabb0c3f46965",
            ),
        ),
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        tuple(f"{n}.gz" for n in _IDX),
    ),
    "cifar10": Spec(
        "cifar10",
        (Remote("cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530", size=170052171),),
        ("https://www.cs.toronto.edu/~kriz/",),
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",),
    ),
    "cifar100": Spec(
        "cifar100",
        (Remote("cifar-100-binary.tar.gz", md5="03b5dce01913d631647c71ecec9e9cb8", size=168513733),),
        ("https://www.cs.toronto.edu/~kriz/",),
        ("train.bin", "test.bin"),
    ),
    "svhn": Spec(
        "svhn",
        (
            Remote("train_32x32.mat", md5="e26dedcc434d2e4c54c9b2d4a06d8373", size=182040794),
            Remote("test_32x32.mat", md5="eb5a983be6a315427106f1b164d9cef3", size=64275384),
        ),
        ("http://ufldl.stanford.edu/housenumbers/",),
    ),
    "tolstoi": Spec(
        "tolstoi",
        (
            Remote(
                "war-and-peace.txt",
                md5="80737bfbfc7e820768045ac8cf654c0c",
                sha256="3ed0f41cfdf660846878943bad5b9d575bcae1e4a92ee9a7f43d3c9dba2af344",
                size=3291641,
            ),
        ),
        ("https://github.com/AllenDowney/fluent-python-notebooks/raw/master/attic/sequences/",),
        ("train.npy", "test.npy", "vocab.pkl", "input.txt"),
    ),
}

# SHA-256 of the raw little-endian int64 id arrays prepared from the official text (data.md §5).
TOLSTOI_ID_SHA256 = {
    "train": "02898bcaf34fa62145a5f7e55ad339588fbaf6670e0f8bba0ff7dc56c9470d5e",
    "test": "fe534d84e1402459edd771e594f9b2891484335a0c363ce42454e3f30c4ce1cc",
}
SVHN_PER_FILE = 12800
# prep's sed deletions, applied one after another (1-based inclusive line ranges).
TOLSTOI_SED = ((1, 29), (5, 775), (63850, 64207))


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m testproblems prepare-data`."""
    parser.add_argument("--data-dir", default=None, help="target folder (default: $NLWU_DATA_DIR or ./data)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"prepare only this data set (repeatable or comma-separated; one of {', '.join(DATASETS)}); default: all",
    )
    parser.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="folder holding official files (e.g. /usr/share/datasets/fashion-mnist from "
        "Debian's dataset-fashion-mnist); files found there are used instead of downloading",
    )
    parser.add_argument(
        "--base-url",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=URL",
        help="download data set NAME from this base URL (file names are appended; repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    parser.add_argument(
        "--keep-downloads",
        action="store_true",
        help="keep the downloaded archives (in DATA_DIR/.downloads) after preparation",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="resume an interrupted download this many times before giving up (default 2)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _parse_only(values) -> list[str]:
    if not values:
        return [d for d in DATASETS if d != "quadratic"]
    names = []
    for v in values:
        for n in v.split(","):
            n = n.strip()
            if n not in DATASETS:
                raise PrepareError(f"unknown data set {n!r} in --only; choose from {', '.join(DATASETS)}")
            if n not in names:
                names.append(n)
    return names


def _parse_base_urls(values) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, url = v.partition("=")
        parsed = urllib.parse.urlparse(url)
        if not sep or not url or name not in SPECS:
            raise PrepareError(f"bad --base-url {v!r}; expected NAME=URL with NAME one of {', '.join(SPECS)}")
        if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.netloc):
            raise PrepareError(f"bad --base-url {v!r}: {url!r} is not an http(s):// or file:// URL")
        out[name] = url if url.endswith("/") else url + "/"
    return out


def run(args: argparse.Namespace) -> int:
    """Prepare the selected data sets; 0 on success, 2 (after one line per failure on stderr) otherwise."""
    try:
        names = _parse_only(args.only)
        base_urls = _parse_base_urls(args.base_url)
        if args.source is not None and not Path(args.source).is_dir():
            raise PrepareError(f"--source {args.source}: no such folder")
        if args.retries < 0 or not 0 < args.timeout < float("inf"):
            raise PrepareError(
                f"--retries must be >= 0 and --timeout a finite number > 0, got {args.retries}, {args.timeout}"
            )
    except PrepareError as e:
        return fail(e)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    failed = 0
    for name in names:
        if name == "quadratic":
            print("quadratic: generated in memory (data.md §6), nothing to prepare")
            continue
        try:
            msg = prepare(
                name,
                data_dir,
                source=args.source,
                base_url=base_urls.get(name),
                force=args.force,
                keep_downloads=args.keep_downloads,
                retries=args.retries,
                timeout=args.timeout,
                progress=not args.quiet,
            )
            print(f"{name}: {msg}")
        except (PrepareError, OSError) as e:
            fail(f"{name}: {e}")
            failed += 1
        except KeyboardInterrupt:
            return fail(f"{name}: interrupted; rerun the same command to resume")
    clear_cache()
    return 2 if failed else 0


# --------------------------------------------------------------------------------------------- prepare
def _is_prepared(folder: Path) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        if not all((folder / n).is_file() and (folder / n).stat().st_size == s for n, s in info["files"].items()):
            return False
        # the checksums too (markers of older versions have none): a corrupt file with the right size is redone
        return all(digest(folder / n, "sha256") == d for n, d in (info.get("sha256") or {}).items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def prepare(
    name: str,
    data_dir: Path,
    *,
    source=None,
    base_url=None,
    force=False,
    keep_downloads=False,
    retries=2,
    timeout=60.0,
    progress=True,
) -> str:
    """Fetch, verify and convert data set `name` into `data_dir`; returns a one-line summary."""
    spec = SPECS[name]
    folder = data_dir / FOLDERS[name]
    if not force and _is_prepared(folder):
        return f"already prepared in {folder} (use --force to redo)"
    paths = fetch(spec, data_dir, source=source, base_url=base_url, retries=retries, timeout=timeout, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)  # a conversion that fails half way leaves no marker behind
    if progress:
        print(f"{name}: converting into {folder} ...", file=sys.stderr)
    outputs = {
        "mnist": _prep_idx,
        "fmnist": _prep_idx,
        "cifar10": _prep_cifar,
        "cifar100": _prep_cifar,
        "svhn": _prep_svhn,
        "tolstoi": _prep_tolstoi,
    }[name](name, paths, folder)
    marker = {
        "dataset": name,
        "files": {n: (folder / n).stat().st_size for n in outputs},
        "sha256": {n: digest(folder / n, "sha256") for n in outputs},
        "sources": {n: str(p) for n, p in paths.items()},
        "prepared_by": "nlwu-bench prepare-data",
    }
    atomic_write_bytes(folder / MARKER, (json.dumps(marker, indent=1, sort_keys=True) + "\n").encode())
    if not keep_downloads:
        shutil.rmtree(data_dir / DOWNLOADS / name, ignore_errors=True)
        try:
            (data_dir / DOWNLOADS).rmdir()
        except OSError:
            pass
    return f"prepared in {folder} ({len(outputs)} files)"


def _prep_idx(name, paths, folder) -> list[str]:
    """MNIST / Fashion-MNIST: the .gz files are kept as they are (data.md §1); downloads are moved,
    files from --source copied."""
    for fname, src in paths.items():
        dest = folder / fname
        if src.resolve() == dest.resolve():
            continue
        if src.parent.name == name and src.parent.parent.name == DOWNLOADS:
            os.replace(src, dest)
        else:
            copy_atomic(src, dest)
    return list(paths)


def _prep_cifar(name, paths, folder) -> list[str]:
    """Extract the binary batches from the tar.gz, dropping its top folder (`tar --strip 1`)."""
    (archive,) = paths.values()
    required = set(SPECS[name].outputs)
    optional = {
        "cifar10": {"batches.meta.txt", "readme.html"},
        "cifar100": {"coarse_label_names.txt", "fine_label_names.txt"},
    }[name]
    written = extract_stripped(archive, folder, required | optional)
    missing = required - set(written)
    if missing:
        raise PrepareError(f"{archive} lacks {', '.join(sorted(missing))}")
    return written


def svhn_records(mat: dict, path) -> np.ndarray:
    """svhn-prep's conversion (data.md §4), vectorised: per image 1 label byte (10 -> 0) + HWC bytes."""
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise PrepareError(f"{path} is not an SVHN format-2 file (X 32x32x3xN, y Nx1)")
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise PrepareError(f"{path}: labels outside 1..10")
    labels[labels == 10] = 0
    images = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)).astype(np.uint8)).reshape(len(labels), 3072)
    return np.concatenate([labels.astype(np.uint8)[:, None], images], axis=1)


def _prep_svhn(name, paths, folder) -> list[str]:
    """SVHN .mat -> CIFAR-style records: all 73,257 training images, 12,800 per data_batch_k.bin (the last
    file holds the remaining 9,257), and test_batch.bin with all 26,032 test images."""
    import scipy.io  # SciPy (~0.8 s) only to read SVHN's .mat files

    out = []
    for fname, kind in (("train_32x32.mat", "train"), ("test_32x32.mat", "test")):
        try:
            mat = scipy.io.loadmat(paths[fname])
        except (ValueError, OSError, TypeError) as e:
            raise PrepareError(f"cannot read {paths[fname]}: {e}") from None
        rec = svhn_records(mat, paths[fname])
        del mat
        if kind == "train":
            chunks = [rec[i : i + SVHN_PER_FILE] for i in range(0, len(rec), SVHN_PER_FILE)]
            names = [f"data_batch_{k}.bin" for k in range(len(chunks))]
            for old in folder.glob("data_batch_*.bin"):  # stale files would join the training stream
                if old.name not in names:
                    old.unlink()
            for n, c in zip(names, chunks):
                atomic_write_bytes(folder / n, c.tobytes())
            out += names
        else:
            atomic_write_bytes(folder / "test_batch.bin", rec.tobytes())
            out.append("test_batch.bin")
    return out


def sed_delete(data: bytes, ranges=TOLSTOI_SED) -> bytes:
    """`sed -i 'A,Bd'` for each range in turn (lines end at \\n; a \\r stays part of its line)."""
    lines = data.split(b"\n")
    tail = lines.pop()  # text after the last \n ('' if the file ends with a newline)
    lines = [line + b"\n" for line in lines] + ([tail] if tail else [])
    for a, b in ranges:
        del lines[a - 1 : b]
    return b"".join(lines)


def tolstoi_ids(text: str) -> tuple[tuple[str, ...], np.ndarray]:
    """tol-prep's vocabulary (characters by count, descending, ties in first-occurrence order) and ids."""
    counter = collections.Counter(text)
    chars = tuple(c for c, _ in sorted(counter.items(), key=lambda x: -x[1]))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    lut = {ord(c): i for i, c in enumerate(chars)}
    keys = np.array(sorted(lut), dtype=np.uint32)
    vals = np.array([lut[k] for k in keys], dtype=np.int64)
    return chars, vals[np.searchsorted(keys, codes)]


def _prep_tolstoi(name, paths, folder) -> list[str]:
    """prep's sed deletions, then tol-prep: vocabulary, ids, 80/20 split without shuffling (data.md §5)."""
    (src,) = paths.values()
    raw = sed_delete(src.read_bytes())
    atomic_write_bytes(folder / "input.txt", raw)
    with codecs.open(str(folder / "input.txt"), "r", encoding="utf-8") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise PrepareError(f"{src} is not UTF-8 text: {e}") from None
    chars, ids = tolstoi_ids(text)
    train_size = int(np.ceil((1.0 - 0.2) * np.size(ids)))
    train, test = ids[:train_size], ids[train_size:]
    if digest(src, "sha256") == SPECS["tolstoi"].files[0].sha256:
        for split, arr in (("train", train), ("test", test)):
            got = hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()
            if got != TOLSTOI_ID_SHA256[split]:
                raise PrepareError(f"tolstoi {split} ids differ from DeepOBS' (sha256 {got}); please report")
    for fname, arr in (("train.npy", train), ("test.npy", test)):
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(folder / fname, buf.getvalue())
    atomic_write_bytes(folder / "vocab.pkl", pickle.dumps(chars))
    return ["train.npy", "test.npy", "vocab.pkl", "input.txt"]


def main(argv=None) -> int:
    """Stand-alone entry point (the CLI is `python -m testproblems prepare-data`)."""
    parser = argparse.ArgumentParser(prog="python -m testproblems prepare-data", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
