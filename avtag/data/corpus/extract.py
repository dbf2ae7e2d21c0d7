"""Readers for the archives that hold audio inside the packages.

Plain zip files (``.zip``, ``.pk3``, Warzone 2100's ``.wz``) are read with
:mod:`zipfile`. Three game formats have no library, so they are read here from
their specifications:

* **Qt resource collection** (``.rcc``, binary form; gcompris-qt-data). Spec:
  Qt's ``rcc.cpp`` (``RCCResourceLibrary::writeHeader`` / ``writeDataBlobs`` /
  ``writeDataNames`` / ``writeDataStructure``). Header, all integers big-endian:
  ``"qres"``, u32 format version (1-3), u32 tree offset, u32 data offset, u32
  names offset, and (version >= 3) u32 overall flags. The tree is an array of
  nodes, 14 bytes (version 1) or 22 bytes (version >= 2, an added u64
  modification time): u32 name offset, u16 flags (1 = zlib-compressed, 2 =
  directory, 4 = zstd-compressed), then for a directory u32 child count + u32
  index of the first child node, for a file u16 territory + u16 language + u32
  data offset. Node 0 is the root directory. A name is u16 length (UTF-16 code
  units) + u32 hash + the UTF-16BE characters. A data blob is u32 size + bytes;
  a zlib-compressed blob is ``qCompress`` output: u32 uncompressed size + a zlib
  stream.
* **Flight of the Amazon Queen resource table** (``queen.1c``; ScummVM
  ``engines/queen/resource.cpp``, ``readTableCompResource``). ``"QTBL"``, an
  8-byte version string (``"CEM10"`` + NULs), u8 compression of the sound
  entries (0 none, 1 MP3, 2 Ogg Vorbis, 3 FLAC), u16 BE entry count, then per
  entry a 12-byte NUL-padded name, u8 bundle, u32 BE absolute offset, u32 BE
  size. Uncompressed ``.SB`` entries (ScummVM ``engines/queen/sound.cpp``,
  ``SBSound::playSoundData``) carry a header (110 bytes for version 104, 122 for
  version 110; version = u16 LE at byte 2) before unsigned 8-bit mono PCM played
  at 11 840 Hz; they are rewrapped here as WAV.
* **OpenClonk C4Group** (``.ocg``, ``.ocd``, ``.ocf``, ``.ocs``; OpenClonk
  ``src/c4group/C4Group.cpp``). The file is one gzip stream whose first two
  magic bytes are ``1E 8C`` instead of ``1F 8B``. Inside, a group is a 204-byte
  header scrambled by ``MemScramble`` (XOR 237, then bytes 0 and 2 of every
  3-byte triple swapped; the operation is its own inverse): 28-byte id
  ``"RedWolf Design GrpFolder"``, s32 LE versions 1 and 2, s32 LE entry count,
  164 reserved bytes. Then one 316-byte entry per member: 260-byte NUL-padded
  file name, s32 LE packed, s32 LE child-group flag, s32 LE size, s32 unused,
  s32 LE offset (from the end of the entry table), then CRC and reserved
  fields. A member with the child-group flag is itself a group (not gzipped
  again) and is walked recursively; its members are named
  ``Parent.ocg/Child.ocg/file``.

Every reader yields :class:`Member` records. A member whose bytes cannot be recovered (truncated, bad
zlib stream, unsupported compression, or more than :data:`MAX_MEMBER_BYTES` once inflated: a bomb is
never inflated further) is yielded with ``error`` set instead of ``data``, so the build records it as
dropped and goes on; a file that is not an archive of the claimed kind raises :class:`ArchiveError`.
"""
from __future__ import annotations

import io
import struct
import wave
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from avtag.data.corpus import CorpusError
from avtag.io.common import flat

#: package and archive members over this are dropped, unread or not inflated further (the largest real one is ~60 MB)
MAX_MEMBER_BYTES = 1 << 30
#: OpenClonk groups nested deeper than this are refused (real ones nest 2-3 deep)
C4_MAX_DEPTH = 32


def flat_reason(exc: BaseException) -> str:
    """An exception's message with all its lines on one (archive libraries write several), cut to 300 characters."""
    return flat(exc, 300) or type(exc).__name__


class ArchiveError(CorpusError):
    """A file that is not a readable archive of the kind its name or magic claims."""


class TooLarge(ValueError):
    """A member that inflates past the member limit (the message says so)."""

    def __init__(self, limit: int):
        super().__init__(f"inflates to more than {limit:,} bytes (the per-member limit)")


def inflate(data: bytes, wbits: int = 15, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """A zlib (``wbits`` 15) or gzip (31; concatenated members too) stream inflated to at most ``limit`` bytes.

    Raises:
        TooLarge: it inflates to more than ``limit`` bytes (only ``limit`` + 1 are ever produced).
        zlib.error: a corrupt or truncated stream.
    """
    parts, size = [], 0
    while True:
        d = zlib.decompressobj(wbits)
        parts.append(d.decompress(data, limit + 1 - size))
        size += len(parts[-1])
        if size > limit:
            raise TooLarge(limit)
        if not d.eof:
            raise zlib.error("incomplete or truncated stream")
        data = d.unused_data
        if wbits != 31 or not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True)
class Member:
    """One file inside an archive.

    Attributes:
        path: the member's path inside the archive, ``/``-separated.
        data: its bytes, or None when ``error`` says why they could not be read.
        fmt: a container hint for the decoder (``"mp3"``, ``"wav"``, ...) where the
            name does not tell (FOTAQ ``.SB`` entries); None otherwise.
        error: why the member is unreadable, or None.
    """

    path: str
    data: bytes | None
    fmt: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- zip
def read_zip(path: str | Path, limit: int = MAX_MEMBER_BYTES) -> Iterator[Member]:
    """Members of a zip file (``.zip``, ``.pk3``, ``.wz``), with :mod:`zipfile`; one over ``limit`` bytes
    is yielded with ``error`` set, unread (:mod:`zipfile` never inflates past a member's stated size).

    Raises:
        ArchiveError: not a zip file.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({flat_reason(exc)})") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            try:
                if info.file_size > limit:
                    raise TooLarge(limit)
                yield Member(info.filename, archive.read(info))
            except TooLarge as exc:
                yield Member(info.filename, None, error=str(exc))
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                yield Member(info.filename, None, error=f"corrupt zip member: {flat_reason(exc)}")


# ----------------------------------------------------------------------------- Qt rcc
def read_rcc(data: bytes, name: str = "<rcc>", limit: int = MAX_MEMBER_BYTES) -> Iterator[Member]:
    """Files of a binary Qt resource collection (see module docstring for the layout); a compressed one
    that inflates past ``limit`` bytes is yielded with ``error`` set.

    Raises:
        ArchiveError: no ``qres`` magic, an unknown version, or a tree node or name outside the file.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise ArchiveError(f"{name}: not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">4I", data[4:20])
    if version not in (1, 2, 3):
        raise ArchiveError(f"{name}: Qt resource format version {version} is not supported (1-3)")
    node_size = 14 if version == 1 else 22
    if tree + node_size > len(data) or names > len(data) or payload > len(data):
        raise ArchiveError(f"{name}: offsets point outside the file ({len(data)} bytes)")

    def node(i: int) -> tuple[int, int, int, int]:
        at = tree + i * node_size
        if at + 14 > len(data):
            raise ArchiveError(f"{name}: tree node {i} lies outside the file")
        name_off, flags = struct.unpack(">IH", data[at : at + 6])
        if flags & 2:
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            return name_off, flags, count, first
        return name_off, flags, struct.unpack(">I", data[at + 10 : at + 14])[0], -1

    def node_name(off: int) -> str:
        at = names + off
        if at + 6 > len(data):
            raise ArchiveError(f"{name}: a file name at offset {off} lies outside the file")
        (length,) = struct.unpack(">H", data[at : at + 2])
        return data[at + 6 : at + 6 + 2 * length].decode("utf-16-be", errors="replace")

    def blob(i: int, flags: int, off: int, path: str) -> Member:
        at = payload + off
        if at + 4 > len(data):
            return Member(path, None, error="data offset outside the file")
        (size,) = struct.unpack(">I", data[at : at + 4])
        raw = data[at + 4 : at + 4 + size]
        if len(raw) < size:
            return Member(path, None, error=f"truncated: {len(raw)} of {size} bytes")
        try:
            if flags & 4:
                try:
                    import zstandard
                except ImportError:
                    return Member(path, None, error="zstd-compressed resource (the zstandard module is not installed)")
                try:
                    return Member(path, _unzstd(zstandard, raw, limit))
                except zstandard.ZstdError as exc:
                    return Member(path, None, error=f"corrupt zstd stream: {exc}")
            if flags & 1:
                try:
                    return Member(path, inflate(raw[4:], 15, limit))
                except zlib.error as exc:
                    return Member(path, None, error=f"corrupt zlib stream: {exc}")
        except TooLarge as exc:
            return Member(path, None, error=str(exc))
        return Member(path, raw)

    stack, seen = [(0, "")], set()
    while stack:
        index, prefix = stack.pop()
        _, flags, count, first = node(index)
        if not flags & 2:
            continue
        for child in range(first, first + count):
            if child in seen:
                raise ArchiveError(f"{name}: the resource tree has a cycle at node {child}")
            seen.add(child)
            name_off, cflags, value, _ = node(child)
            path = prefix + node_name(name_off)
            if cflags & 2:
                stack.append((child, path + "/"))
            else:
                yield blob(child, cflags, value, path)


def _unzstd(zstandard, raw: bytes, limit: int) -> bytes:
    """A zstd frame inflated to at most ``limit`` bytes (a frame's stated size is not trusted)."""
    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        while chunk := reader.read(min(1 << 20, limit + 1 - len(out))):
            out += chunk
            if len(out) > limit:
                raise TooLarge(limit)
    return bytes(out)


# ----------------------------------------------------------------------------- FOTAQ queen.1c
QUEEN_CODECS = {0: None, 1: "mp3", 2: "ogg", 3: "flac"}
SB_RATE = 11840  # Hz, ScummVM SBSound


def read_queen_table(data: bytes, name: str = "queen.1c") -> Iterator[Member]:
    """Entries of a Flight of the Amazon Queen resource table (see module docstring).

    Sound entries (``.SB``) get ``fmt`` set to their codec; uncompressed ones are
    returned as WAV. Other entries (graphics, scripts) are yielded as they are.

    Raises:
        ArchiveError: no ``QTBL`` magic or a table that runs past the file.
    """
    if len(data) < 15 or data[:4] != b"QTBL":
        raise ArchiveError(f"{name}: not a Flight of the Amazon Queen resource table (no 'QTBL' magic)")
    compression = data[12]
    (count,) = struct.unpack(">H", data[13:15])
    if 15 + 21 * count > len(data):
        raise ArchiveError(f"{name}: table of {count} entries runs past the end of the file")
    if compression not in QUEEN_CODECS:
        raise ArchiveError(f"{name}: unknown sound compression {compression}")
    for i in range(count):
        at = 15 + 21 * i
        entry = data[at : at + 12].split(b"\0")[0].decode("latin-1")
        offset, size = struct.unpack(">II", data[at + 13 : at + 21])
        body = data[offset : offset + size]
        if len(body) < size:
            yield Member(entry, None, error=f"truncated: {len(body)} of {size} bytes")
        elif not entry.upper().endswith(".SB"):
            yield Member(entry, body)
        elif QUEEN_CODECS[compression]:
            yield Member(entry, body, fmt=QUEEN_CODECS[compression])
        else:
            yield sb_to_wav(entry, body)


def sb_to_wav(entry: str, body: bytes) -> Member:
    """An uncompressed ``.SB`` sound (header + unsigned 8-bit PCM, 11 840 Hz) as WAV bytes."""
    if len(body) < 4:
        return Member(entry, None, error="SB entry shorter than its header")
    (version,) = struct.unpack("<H", body[2:4])
    header = 122 if version == 110 else 110
    if len(body) <= header:
        return Member(entry, None, error="SB entry has no samples after its header")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)  # WAV 8-bit PCM is unsigned, as SB is
        w.setframerate(SB_RATE)
        w.writeframes(body[header:])
    return Member(entry, out.getvalue(), fmt="wav")


# ----------------------------------------------------------------------------- OpenClonk C4Group
C4_MAGIC = b"\x1e\x8c"
C4_ID = b"RedWolf Design GrpFolder"
C4_HEADER = 204
C4_ENTRY = 316


def mem_scramble(block: bytes) -> bytes:
    """OpenClonk's ``MemScramble`` (XOR 237, swap bytes 0 and 2 of each triple); its own inverse."""
    out = bytearray(b ^ 237 for b in block)
    for i in range(0, len(out) - 2, 3):
        out[i], out[i + 2] = out[i + 2], out[i]
    return bytes(out)


def read_c4group(data: bytes, name: str = "<c4group>", limit: int = MAX_MEMBER_BYTES) -> Iterator[Member]:
    """Files of an OpenClonk group file, child groups included (see module docstring).

    ``data`` is the file as stored (gzip with the ``1E 8C`` magic) or an already
    unpacked group. A child group that is damaged is yielded as one member with
    ``error`` set; the other members are still read.

    Raises:
        ArchiveError: neither magic nor a group header, a gzip stream that cannot be read or inflates past
            ``limit`` bytes, groups nested deeper than :data:`C4_MAX_DEPTH`, or child groups that overlap.
    """
    if data[:2] == C4_MAGIC:
        try:
            data = inflate(b"\x1f\x8b" + data[2:], 31, limit)
        except (zlib.error, TooLarge) as exc:
            raise ArchiveError(f"{name}: C4Group gzip stream is unreadable ({exc})") from None
    try:
        yield from _c4_walk(data, 0, len(data), "", name, set())
    except _C4Damage as exc:
        raise ArchiveError(f"{name}: {exc}") from None


class _C4Damage(Exception):
    pass


def _c4_walk(data: bytes, start: int, end: int, prefix: str, name: str, seen: set[int]) -> Iterator[Member]:
    if prefix.count("/") > C4_MAX_DEPTH:
        raise ArchiveError(f"{name}: groups nested deeper than {C4_MAX_DEPTH} levels at {prefix[:200]}")
    if start in seen:  # two entries sharing one child group would multiply the walk at every level
        raise ArchiveError(f"{name}: child groups overlap at {prefix[:200]}")
    seen.add(start)
    head = mem_scramble(data[start : start + C4_HEADER])
    if len(head) < C4_HEADER or not head.startswith(C4_ID):
        raise _C4Damage(f"{prefix or 'top level'}: not a C4Group header")
    (count,) = struct.unpack("<i", head[36:40])
    table = start + C4_HEADER
    body = table + C4_ENTRY * count
    if count < 0 or body > end:
        raise _C4Damage(f"{prefix or 'top level'}: entry table of {count} entries runs past the group")
    for i in range(count):
        at = table + C4_ENTRY * i
        fname = data[at : at + 260].split(b"\0")[0].decode("latin-1")
        _, child, size, _, offset = struct.unpack("<5i", data[at + 260 : at + 280])
        path = prefix + fname
        a, b = body + offset, body + offset + size
        if offset < 0 or size < 0 or b > end:
            yield Member(path, None, error=f"entry runs past its group ({size} bytes at {offset})")
        elif child:
            try:
                yield from _c4_walk(data, a, b, path + "/", name, seen)
            except _C4Damage as exc:
                yield Member(path, None, error=f"damaged child group: {exc}")
        else:
            yield Member(path, data[a:b])


# ----------------------------------------------------------------------------- dispatch
ARCHIVE_SUFFIXES: dict[str, str] = {
    ".zip": "zip", ".pk3": "zip", ".wz": "zip", ".rcc": "rcc",
    ".ocg": "c4group", ".ocd": "c4group", ".ocf": "c4group", ".ocs": "c4group", ".1c": "queen",
}

_READERS: dict[str, Callable[..., Iterator[Member]]] = {
    "rcc": read_rcc, "queen": read_queen_table, "c4group": read_c4group,
}


def archive_kind(path: str | Path) -> str | None:
    """The archive kind of a file by its suffix (``zip``, ``rcc``, ``c4group``, ``queen``), or None."""
    return ARCHIVE_SUFFIXES.get(Path(path).suffix.lower())


def iter_archive(path: str | Path, limit: int = MAX_MEMBER_BYTES) -> Iterator[Member]:
    """Every member of the archive at ``path`` (its kind from :func:`archive_kind`); members over ``limit``
    bytes (inflated) come with ``error`` set.

    Raises:
        ArchiveError: not an archive kind this module reads, or not a valid one.
    """
    kind = archive_kind(path)
    if kind is None:
        raise ArchiveError(f"{path}: not an archive kind avtag reads (zip, rcc, C4Group, queen.1c)")
    if kind == "zip":
        yield from read_zip(path, limit)
        return
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read ({exc.strerror})") from None
    if kind == "queen":  # entries are slices of the file: nothing is inflated
        yield from read_queen_table(data, str(path))
    else:
        yield from _READERS[kind](data, str(path), limit=limit)
