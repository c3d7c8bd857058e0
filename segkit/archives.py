"""Archive plumbing for dataset acquisition: sha256 of files, safe .tar(.gz)/.zip extraction and an
opt-in download that fails with a clear "download it manually" message."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder (or is a device file)."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str | None) -> str:
    """Compare ``path``'s sha256 with ``expected`` (when given) and return the computed digest.

    Raises ``ChecksumError`` naming the file on a mismatch.
    """
    digest = sha256_file(path)
    if expected is not None and digest != expected.lower():
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected}, got {digest}")
    return digest


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _inside(rel: str) -> bool:
    """Whether a relative POSIX path stays inside its root once ``..`` are resolved."""
    depth = 0
    for part in PurePosixPath(rel).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def _check_name(name: str) -> str:
    """Reject absolute / drive / escaping member names; return the normalised name."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: absolute path")
    if not _inside(norm):
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: escapes the target folder")
    return norm


def _check_link(name: str, target: str, relative_to_member: bool) -> None:
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise UnsafeArchiveError(
            f"unsafe archive member {name!r}: link to absolute path {target!r}"
        )
    base = str(PurePosixPath(name).parent) if relative_to_member else "."
    if not _inside(f"{base}/{target}"):
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: link {target!r} escapes")


def _under_link(name: str, links: set[str]) -> bool:
    parts = PurePosixPath(name).parts
    return any(str(PurePosixPath(*parts[:i])) in links for i in range(1, len(parts)))


def _check_tar(tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    links: set[str] = set()
    members = tf.getmembers()
    for m in members:
        name = _check_name(m.name)
        if m.isdev():  # character / block device or fifo
            raise UnsafeArchiveError(f"unsafe archive member {m.name!r}: device or fifo")
        if _under_link(name, links):
            raise UnsafeArchiveError(f"unsafe archive member {m.name!r}: written through a link")
        if m.issym():
            _check_link(m.name, m.linkname, relative_to_member=True)
            links.add(str(PurePosixPath(name)))
        elif m.islnk():
            _check_link(m.name, m.linkname, relative_to_member=False)
    return members


def _check_zip(zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _check_link(info.filename, zf.read(info).decode(errors="replace"), True)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            raise UnsafeArchiveError(f"unsafe archive member {info.filename!r}: device or fifo")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .tar.gz/.tgz/.tar/.zip into the new folder ``dest``, refusing unsafe members.

    Every member is checked before anything is written (absolute paths, ``..``, links leaving the
    folder, device files raise ``UnsafeArchiveError`` naming the member). Extraction goes into a
    temporary folder next to ``dest`` that is renamed at the end, so ``dest`` is all or nothing.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"extraction target {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf)
                for info in tqdm(zf.infolist(), desc=f"extract {archive.name}", leave=False):
                    zf.extract(info, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = _check_tar(tf)
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                try:
                    for m in tqdm(members, desc=f"extract {archive.name}", leave=False):
                        tf.extract(m, tmp, **kw)
                except tarfile.TarError as e:  # the stdlib filter as a second line of defence
                    raise UnsafeArchiveError(f"unsafe archive member in {archive}: {e}") from e
        else:
            raise ValueError(f"{archive} is not a .zip or .tar(.gz) archive")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def download(url: str, dest: str | os.PathLike, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (temporary file + rename) with a progress bar.

    Raises ``RuntimeError`` telling the user to download the file by hand when it fails.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := r.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, dest)
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        raise RuntimeError(
            f"could not download {url} ({e}). Download it manually from {url} and pass its path "
            f"with --source PATH (or source=...), or put it at {dest}"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
