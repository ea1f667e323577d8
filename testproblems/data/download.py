"""Fetching and checking the official data files: HTTP(S) download with resume, SHA-256 / MD5 verification,
local `--source` lookup and archive extraction (``prepare`` converts what this fetches)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deepobs_tree.errors import NlwuError

from ._common import FOLDERS, AtomicFile

DOWNLOADS = ".downloads"
CHUNK = 1 << 20


class PrepareError(NlwuError):
    """A failure with a one-line message for the user."""


@dataclass(frozen=True)
class Remote:
    """One official file: name, accepted digests and (optionally) its byte size.

    `md5` / `sha256` check the file itself; `payload_md5` checks a .gz file's decompressed content
    (torchvision's `raw_data` MD5s), which accepts repackaged archives such as Debian's
    dataset-fashion-mnist (same IDX bytes, different gzip header).
    """

    name: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    payload_md5: str | None = None


def digest(path: Path, algo: str) -> str:
    """Hex digest (``hashlib`` algorithm ``algo``) of the file at ``path``, read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> str:
    """Check `path` against the accepted digests of `remote`; returns a short note, raises PrepareError."""
    checks = []
    if remote.sha256:
        got = digest(path, "sha256")
        if got == remote.sha256:
            return "sha256 ok"
        checks.append(f"sha256 {got}, expected {remote.sha256}")
    if remote.md5:
        got = digest(path, "md5")
        if got == remote.md5:
            return "md5 ok"
        checks.append(f"md5 {got}, expected {remote.md5}")
    if remote.payload_md5:
        try:
            h = hashlib.md5()
            with gzip.open(path, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
            got = h.hexdigest()
        except (OSError, EOFError) as e:
            got = f"unreadable gzip ({e})"
        if got == remote.payload_md5:
            return "decompressed md5 ok"
        checks.append(f"decompressed md5 {got}, expected {remote.payload_md5}")
    if not checks:
        return "no checksum"
    raise PrepareError(f"checksum mismatch for {path}: " + "; ".join(checks))


def download(
    url: str, dest: Path, *, size: int | None = None, retries: int = 2, timeout: float = 60.0, progress: bool = True
) -> None:
    """Download `url` to `dest`, via `dest.part`, resuming a partial file with an HTTP Range request."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            _download_once(url, part, size=size, timeout=timeout, progress=progress)
            os.replace(part, dest)
            return
        except _Interrupted as e:
            attempt += 1
            if attempt > retries:
                raise PrepareError(
                    f"download of {url} interrupted at {e.have} of {e.total or '?'} bytes "
                    f"({e.reason}); partial file kept, rerun the same command to resume"
                ) from None
            time.sleep(min(2.0**attempt * 0.1, 5.0))


class _Interrupted(Exception):
    def __init__(self, have, total, reason):
        super().__init__(reason)
        self.have, self.total, self.reason = have, total, reason


def _download_once(url: str, part: Path, *, size, timeout, progress) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "nlwu-bench prepare-data"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and (size is None or have == size):
            return  # the partial file is already complete
        raise PrepareError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise PrepareError(f"cannot download {url}: {reason} (no network? use --source DIR or --base-url)") from None
    with resp:
        if have and resp.status == 206:
            mode = "ab"
        else:
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        bar = None
        if progress:
            bar = tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[:-5],
                leave=False,
                file=sys.stderr,
            )
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as e:
                        f.flush()
                        raise _Interrupted(part.stat().st_size, total, type(e).__name__) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Interrupted(got, total, "connection closed early")
    if total is not None and got > total:
        part.unlink()
        raise PrepareError(f"download of {url} returned {got} bytes, expected {total}; deleted, rerun")


def fetch(spec, data_dir: Path, *, source, base_url, retries, timeout, progress) -> dict[str, Path]:
    """Verified local paths of the official files of `spec` (source folder, earlier download or new one).

    `spec` names the data set (`name`), its files (`Remote`s) and the base URLs to try (`base_urls`);
    downloads go to `data_dir/.downloads/<name>/`, a stale one (wrong checksum) is fetched again.
    """
    paths = {}
    dl = data_dir / DOWNLOADS / spec.name
    for remote in spec.files:
        candidates = []
        if source is not None:
            candidates += [Path(source) / remote.name, Path(source) / FOLDERS[spec.name] / remote.name]
        candidates.append(dl / remote.name)
        path = next((c for c in candidates if c.is_file()), None)
        if path is not None:
            try:
                note = verify(path, remote)
                paths[remote.name] = path
                if progress:
                    print(f"{spec.name}: using {path} ({note})", file=sys.stderr)
                continue
            except PrepareError:
                if path.parent != dl:
                    raise
                path.unlink()  # a stale download: fetch again
        urls = [base_url] if base_url else list(spec.base_urls)
        errors = []
        for base in urls:
            try:
                download(
                    base + remote.name,
                    dl / remote.name,
                    size=remote.size,
                    retries=retries,
                    timeout=timeout,
                    progress=progress,
                )
                break
            except PrepareError as e:
                errors.append(str(e))
                if "interrupted" in str(e):
                    raise
        else:
            raise PrepareError(errors[-1] if len(errors) == 1 else " | ".join(errors))
        path = dl / remote.name
        try:
            verify(path, remote)
        except PrepareError as e:
            path.unlink()
            raise PrepareError(f"{e} (downloaded from {base}; file deleted, check --base-url and rerun)") from None
        paths[remote.name] = path
    return paths


def copy_atomic(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` through the atomic writer (a crash leaves no half-written `dest`)."""
    with open(src, "rb") as fi, AtomicFile(dest) as fo:
        shutil.copyfileobj(fi, fo, CHUNK)


def extract_stripped(archive: Path, folder: Path, wanted: set[str]) -> list[str]:
    """Extract the files of the tar.gz `archive` whose path below its top folder is in `wanted`
    (`tar --strip 1`) atomically into `folder`; returns their names in archive order."""
    written = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/", 1)
                base = parts[1] if len(parts) == 2 else ""
                if not member.isfile() or base not in wanted:
                    continue
                with tar.extractfile(member) as fi, AtomicFile(folder / base) as fo:
                    shutil.copyfileobj(fi, fo, CHUNK)
                written.append(base)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PrepareError(f"cannot extract {archive}: {e}") from None
    return written
