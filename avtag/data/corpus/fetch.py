"""Fetch packages with the registries' own clients and read their files without unpacking to disk.

* Debian: ``apt-get download NAME=VERSION`` (the pinned version; when the
  archive no longer carries it, the current candidate, reported as a warning).
* PyPI: ``python -m pip download --no-deps --only-binary=:all: NAME==VERSION`` (wheels only: pip
  would run an sdist's ``setup.py`` to read its metadata; an sdist can be given in ``package_dirs``).
* npm: ``npm pack --ignore-scripts NAME@VERSION`` (no lifecycle scripts).

Names and versions were checked by the rule table (:data:`avtag.data.corpus.rules.PACKAGE_NAMES`):
never a path, URL or git spec, which the clients would fetch from elsewhere or build.

A package file already in the downloads folder, or in one of the extra
``package_dirs`` (an offline mirror, or a test's fake package), is used as it
is, so a resumed build downloads nothing twice. Package files are read in
place: a ``.deb`` is an ``ar`` archive whose ``data.tar.{xz,gz,bz2}`` member is
streamed with :mod:`tarfile` (format: deb(5)); wheels are zip files; npm
tarballs are gzip tar files.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

from avtag.data.corpus import CorpusError
from avtag.data.corpus.extract import flat_reason
from avtag.data.corpus.rules import Source
from avtag.io.common import MAX_TEXT_BYTES


class FetchError(CorpusError):
    """A package that cannot be downloaded or read."""


#: what reading a damaged package file raises (a truncated stream, a bad CRC, a corrupt deflate block)
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, RuntimeError)


def clean_name(name: str) -> str:
    """A member name as text that JSON and UTF-8 files take: bytes that were not UTF-8 (kept by tarfile as
    surrogate escapes) become ``\\xff`` escapes, the same ones every time (a resumed build recognises them)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        try:
            return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return name.encode("utf-8", "backslashreplace").decode("utf-8")


SUFFIXES = {"deb": (".deb",), "pypi": (".whl", ".tar.gz", ".zip"), "npm": (".tgz",)}


def _file_prefix(source: Source) -> str:
    if source.registry == "deb":
        return f"{source.name}_"
    if source.registry == "pypi":
        return re.sub(r"[-_.]+", "_", source.name).lower() + "-"
    return source.name.lstrip("@").replace("/", "-") + "-"  # npm pack's file name for @scope/name


def find_package_file(source: Source, dirs: list[Path]) -> Path | None:
    """A package file for ``source`` in ``dirs`` (pinned version preferred), or None."""
    prefix = _file_prefix(source)
    found = []
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.iterdir()):
                name = f.name
                if source.registry == "pypi":  # wheel/sdist names normalise the project name
                    name = re.sub(r"[-_.]+", "_", f.name.split("-")[0]).lower() + "-"
                if name.startswith(prefix) and f.name.endswith(SUFFIXES[source.registry]):
                    found.append(f)
    pinned = [f for f in found if source.version and _version_in_name(f.name, source) == source.version]
    return (pinned or found or [None])[0]


def _version_in_name(filename: str, source: Source) -> str | None:
    if source.registry == "deb":
        parts = filename.split("_")
        return unquote(parts[1]) if len(parts) >= 3 else None
    if source.registry == "pypi":
        parts = filename.split("-")
        return parts[1].removesuffix(".tar.gz").removesuffix(".zip") if len(parts) >= 2 else None
    m = re.search(r"-(\d[^-]*?)\.tgz$", filename)
    return m.group(1) if m else None


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
        raise FetchError(f"{what}: '{cmd[0]}' is not installed on this machine")
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: '{' '.join(cmd)}' did not finish within an hour") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip() and not ln.startswith("W: ")]
        raise FetchError(f"{what}: '{' '.join(cmd)}' failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def fetch_package(source: Source, downloads: Path, package_dirs: list[Path] = ()) -> tuple[Path, str | None]:
    """Get the package file of ``source``: ``(path, warning or None)``.

    Looks in ``downloads/<registry>/`` and ``package_dirs`` first; otherwise runs
    the registry's client into ``downloads/<registry>/``.

    Raises:
        FetchError: the client is missing, fails (unreachable registry, unknown
            package) or leaves no package file.
    """
    target = Path(downloads).resolve() / source.registry
    target.mkdir(parents=True, exist_ok=True)
    have = find_package_file(source, [target, *map(Path, package_dirs)])
    if have is not None:
        return have, None
    what = f"{source.registry} package {source.name}"
    warning = None
    if source.registry == "deb":
        try:
            _run(["apt-get", "download", f"{source.name}={source.version}"], target, what)
        except FetchError as exc:
            if "version" not in str(exc).lower() and "can't select" not in str(exc).lower():
                raise
            _run(["apt-get", "download", source.name], target, what)
            warning = f"{source.name}: pinned version {source.version} is not in the archive; used the current one"
    elif source.registry == "pypi":
        # wheels only: pip builds an sdist's metadata by running its setup.py (a sdist goes in --package-dir)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "-q", f"{source.name}=={source.version}", "-d", str(target)],
             target, what)
    else:  # no lifecycle scripts (prepack of a local folder or git spec would run the package's code)
        _run(["npm", "pack", "--silent", "--ignore-scripts", f"{source.name}@{source.version}"], target, what)
    have = find_package_file(source, [target])
    if have is None:
        raise FetchError(f"{what}: the client succeeded but left no package file in {target}")
    return have, warning


# ----------------------------------------------------------------------------- reading package files
@dataclass(frozen=True)
class PackageFile:
    """One regular file of a package: ``path`` relative to the package root, ``read()`` returns its bytes."""

    path: str
    size: int
    _data: object

    def read(self) -> bytes:
        """The file's bytes (for a streamed tar member: call before moving to the next member)."""
        return self._data() if callable(self._data) else self._data


def package_version(path: Path, source: Source) -> str:
    """The version of a package file (from its name, or ``package.json`` for npm)."""
    if source.registry == "npm":
        try:
            with tarfile.open(path, "r:gz") as tf:
                info = tf.getmember("package/package.json")
                member = tf.extractfile(info) if info.size <= MAX_TEXT_BYTES else None
                meta = json.load(member) if member else None
                return str(meta.get("version", ""))[:200] if isinstance(meta, dict) else ""
        except (*READ_ERRORS, KeyError, ValueError, RecursionError):  # a damaged package fails when it is read
            pass
    return _version_in_name(path.name, source) or ""


def _deb_data(path: Path) -> tuple[bytes, str]:
    """The ``data.tar.*`` member of a .deb (an ``ar`` archive: ``!<arch>\\n``, 60-byte headers)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{path}: not a Debian package (no ar magic)")
        while True:
            head = f.read(60)
            if len(head) < 60:
                break
            name = head[:16].decode("ascii", "replace").strip().rstrip("/")
            field = head[48:58].strip()
            if not (field.isdigit() or not field):
                raise FetchError(f"{path}: malformed ar header (member {name[:16]!r} has size {field[:10]!r})")
            size = int(field or 0)
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                return body, name
    raise FetchError(f"{path}: Debian package without a data.tar member")


def _reader(path: Path, member: str, read) -> bytes:
    """``read()``, with a damaged package's errors as one :class:`FetchError` line."""
    try:
        return read()
    except READ_ERRORS as exc:
        raise FetchError(f"{path}: unreadable package at {clean_name(member)[:200]} "
                         f"({type(exc).__name__}: {flat_reason(exc)})") from None


def _tar_files(tf: tarfile.TarFile, path: Path) -> Iterator[PackageFile]:
    for m in tf:
        if m.isfile():  # read() must be called before the next member (the stream is compressed)
            yield PackageFile(clean_name(m.name.removeprefix("./")), m.size,
                              lambda m=m: _reader(path, m.name, lambda: tf.extractfile(m).read()))


def iter_package(path: Path, registry: str) -> Iterator[PackageFile]:
    """Regular files of a package file, streamed (paths without a leading ``./``).

    Raises:
        FetchError: an unreadable package or a compression Python cannot read (zstd).
    """
    if path.is_dir():
        raise FetchError(f"{path}: is a folder, not a {registry} package file")
    try:
        if registry == "deb":
            data, name = _deb_data(path)
            if name.endswith(".zst"):
                raise FetchError(f"{path}: {name} is zstd-compressed, which Python's tarfile cannot read")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                yield from _tar_files(tf, path)
        elif path.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield PackageFile(info.filename, info.file_size,
                                          lambda i=info, zf=zf: _reader(path, i.filename, lambda: zf.read(i)))
        else:
            with tarfile.open(path, "r:*") as tf:
                yield from _tar_files(tf, path)
    except (*READ_ERRORS, ValueError) as exc:  # ValueError: a zip member name that is not the UTF-8 it claims
        raise FetchError(f"{path}: unreadable package ({type(exc).__name__}: {flat_reason(exc)})") from None
