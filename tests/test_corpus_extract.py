"""Archive extractors of the corpus builder (avtag.data.corpus.extract): each format is written here from its
specification, then read back; corrupt members are reported, not fatal."""
from __future__ import annotations

import gzip
import io
import struct
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from avtag.data.corpus.extract import (
    ArchiveError,
    iter_archive,
    mem_scramble,
    read_c4group,
    read_queen_table,
    read_rcc,
    read_zip,
)

REPO = Path(__file__).resolve().parents[1]


def _qt_hash(name: str) -> int:  # qt_hash of rcc.cpp (ELF-style over UTF-16 code units)
    h = 0
    for ch in name:
        h = ((h << 4) + ord(ch)) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def make_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A binary Qt resource file (rcc.cpp layout) holding ``{path: (bytes, compress)}``."""
    tree: dict = {}
    for path, spec in files.items():
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = spec
    names, name_off = bytearray(), {}

    def name_offset(n: str) -> int:
        if n not in name_off:
            name_off[n] = len(names)
            names.extend(struct.pack(">HI", len(n), _qt_hash(n)) + n.encode("utf-16-be"))
        return name_off[n]

    data = bytearray()
    nodes: list = [None]  # node 0 = root; breadth-first, children contiguous (as rcc writes them)
    queue = [(tree, 0)]
    while queue:
        d, index = queue.pop(0)
        first = len(nodes)
        kids = sorted(d.items())
        nodes.extend([None] * len(kids))
        for j, (name, value) in enumerate(kids):
            if isinstance(value, dict):
                nodes[first + j] = ("dir", name_offset(name), value)
                queue.append((value, first + j))
            else:
                blob, compress = value
                payload = struct.pack(">I", len(blob)) + zlib.compress(blob) if compress else blob
                nodes[first + j] = ("file", name_offset(name), len(data), 1 if compress else 0)
                data.extend(struct.pack(">I", len(payload)) + payload)
        node = nodes[index]
        nodes[index] = ("dir", node[1] if node else 0, d, first, len(kids))
    size = 14 if version == 1 else 22
    header_len = 20 if version < 3 else 24
    data_off = header_len
    names_off = data_off + len(data)
    tree_off = names_off + len(names)
    tree_bytes = bytearray()
    for n in nodes:
        if n[0] == "dir":
            first, count = (n[3], n[4]) if len(n) == 5 else (0, 0)
            tree_bytes += struct.pack(">IHII", n[1], 2, count, first)
        else:
            tree_bytes += struct.pack(">IHHHI", n[1], n[3], 0, 0, n[2])
        if version >= 2:
            tree_bytes += struct.pack(">Q", 0)
        assert len(tree_bytes) % size == 0
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return bytes(header + data + names + tree_bytes)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_round_trip_with_compressed_and_plain_files(version):
    ogg = b"OggS" + bytes(range(256)) * 40
    wav = b"RIFF" + b"\x01\x02" * 999
    blob = make_rcc({"gcompris/src/activities/instruments/resource/violin.ogg": (ogg, True),
                     "gcompris/src/activities/instruments/resource/piano.ogg": (ogg[::-1], False),
                     "gcompris/src/core/resource/sounds/win.wav": (wav, True)}, version)
    got = {m.path: m.data for m in read_rcc(blob, "x.rcc")}
    assert got == {"gcompris/src/activities/instruments/resource/violin.ogg": ogg,
                   "gcompris/src/activities/instruments/resource/piano.ogg": ogg[::-1],
                   "gcompris/src/core/resource/sounds/win.wav": wav}


def test_rcc_corrupt_member_is_reported_and_bad_magic_raises():
    blob = bytearray(make_rcc({"a/ok.wav": (b"RIFFdata" * 50, False), "a/bad.ogg": (b"OggS" * 500, True)}))
    at = blob.find(b"x\x9c")  # the zlib stream of bad.ogg
    blob[at + 2 : at + 12] = b"\xff" * 10
    members = {m.path: m for m in read_rcc(bytes(blob), "x.rcc")}
    assert members["a/ok.wav"].data == b"RIFFdata" * 50
    assert members["a/bad.ogg"].data is None and "zlib" in members["a/bad.ogg"].error
    with pytest.raises(ArchiveError, match=r"y\.rcc: not a Qt resource file"):
        list(read_rcc(b"PK\x03\x04" + bytes(40), "y.rcc"))


def _sb_uncompressed(samples: np.ndarray) -> bytes:
    header = bytearray(110)
    header[2:4] = struct.pack("<H", 104)
    return bytes(header) + samples.astype(np.uint8).tobytes()


def make_queen(entries: list[tuple[str, bytes]], compression: int) -> bytes:
    """A FOTAQ resource table: 'QTBL', 8-byte version, compression, u16 count, 21-byte entries, data."""
    head = b"QTBL" + b"CEM10\0\0\0" + bytes([compression]) + struct.pack(">H", len(entries))
    offset = len(head) + 21 * len(entries)
    table, body = bytearray(), bytearray()
    for name, data in entries:
        table += name.encode().ljust(12, b"\0") + b"\x01" + struct.pack(">II", offset + len(body), len(data))
        body += data
    return head + bytes(table) + bytes(body)


def test_queen_table_mp3_entries_and_uncompressed_sb_to_wav():
    mp3 = b"\xff\xe3\x20\xc4" + bytes(500)
    blob = make_queen([("020006J1.SB", mp3), ("ROOM1.PCX", b"pcx!"), ("1026SSSS.SB", mp3[::-1])], compression=1)
    got = {m.path: m for m in read_queen_table(blob)}
    assert got["020006J1.SB"].data == mp3 and got["020006J1.SB"].fmt == "mp3"
    assert got["ROOM1.PCX"].data == b"pcx!" and got["ROOM1.PCX"].fmt is None
    ramp = (np.arange(2000) % 256).astype(np.uint8)
    raw = make_queen([("030009P1.SB", _sb_uncompressed(ramp))], compression=0)
    (m,) = list(read_queen_table(raw))
    with wave.open(io.BytesIO(m.data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (11840, 1, 1)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), np.uint8), ramp)
    truncated = make_queen([("A.SB", mp3)], 1)[:-100]
    assert "truncated" in list(read_queen_table(truncated))[0].error
    with pytest.raises(ArchiveError, match="no 'QTBL' magic"):
        list(read_queen_table(b"QTB" + bytes(100)))


def _c4_group(entries: list[tuple[str, bytes, bool]]) -> bytes:
    """An unpacked C4Group: scrambled 204-byte header, 316-byte entries, then the member data."""
    head = bytearray(204)
    head[:24] = b"RedWolf Design GrpFolder"
    head[28:40] = struct.pack("<3i", 1, 2, len(entries))
    table, body = bytearray(), bytearray()
    for name, data, child in entries:
        e = bytearray(316)
        e[: len(name)] = name.encode()
        e[260:280] = struct.pack("<5i", 0, int(child), len(data), 0, len(body))
        table += e
        body += data
    return mem_scramble(bytes(head)) + bytes(table) + bytes(body)


def make_ocg(entries) -> bytes:
    """A C4Group file as OpenClonk stores it: gzip with the magic 1E 8C."""
    return b"\x1e\x8c" + gzip.compress(_c4_group(entries))[2:]


def test_c4group_nested_groups_and_damaged_child():
    bat = _c4_group([("Chirp.wav", b"RIFF-chirp", False), ("Noise1.wav", b"RIFF-noise", False)])
    animals = _c4_group([("Bat.ocg", bat, True), ("MosquitoBuzz.ogg", b"OggS-mosquito", False)])
    blob = make_ocg([("Animals.ocg", animals, True), ("authors.txt", b"CC-BY-3.0", False)])
    got = {m.path: m.data for m in read_c4group(blob, "Sound.ocg")}
    assert got == {"Animals.ocg/Bat.ocg/Chirp.wav": b"RIFF-chirp", "Animals.ocg/Bat.ocg/Noise1.wav": b"RIFF-noise",
                   "Animals.ocg/MosquitoBuzz.ogg": b"OggS-mosquito", "authors.txt": b"CC-BY-3.0"}
    assert mem_scramble(mem_scramble(b"any bytes at all!")) == b"any bytes at all!"
    broken = make_ocg([("Fire.ocg", b"\0" * 300, True), ("Fire.ogg", b"OggS-fire", False)])
    members = {m.path: m for m in read_c4group(broken, "Sound.ocg")}
    assert members["Fire.ogg"].data == b"OggS-fire" and "damaged child group" in members["Fire.ocg"].error
    with pytest.raises(ArchiveError, match="Sound.ocg: C4Group gzip stream"):
        list(read_c4group(b"\x1e\x8c" + b"\x08junk" * 20, "Sound.ocg"))


def test_zip_and_wz_members_with_a_corrupt_one(tmp_path):
    path = tmp_path / "base.wz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("audio/tutorial/tut11.ogg", b"OggS" + bytes(3000))
        z.writestr("audio/countdown/30min.ogg", b"OggS" + bytes(range(200)) * 20)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"audio/countdown/30min.ogg") + len("audio/countdown/30min.ogg")
    raw[at + 5 : at + 25] = b"\x00" * 20
    path.write_bytes(bytes(raw))
    got = {m.path: m for m in iter_archive(path)}
    assert got["audio/tutorial/tut11.ogg"].data == b"OggS" + bytes(3000)
    assert got["audio/countdown/30min.ogg"].error.startswith("corrupt zip member")
    (tmp_path / "x.pk3").write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match=r"x\.pk3: not a readable zip archive"):
        list(read_zip(tmp_path / "x.pk3"))


def test_real_gcompris_rcc_when_the_package_was_downloaded():
    """The extractor against the real gcompris-qt-data package (if a build left it in cache/)."""
    from avtag.data.corpus.fetch import iter_package

    debs = sorted((REPO / "cache" / "corpus" / "downloads" / "deb").glob("gcompris-qt-data_*.deb"))
    if not debs:
        pytest.skip("gcompris-qt-data .deb not in cache/corpus/downloads (run avtag corpus build first)")
    for pf in iter_package(debs[0], "deb"):
        if pf.path.endswith("rcc/instruments.rcc"):
            members = {m.path: m.data for m in read_rcc(pf.read(), pf.path)}
            violin = members["gcompris/src/activities/instruments/resource/violin.ogg"]
            assert violin[:4] == b"OggS" and len(violin) > 10_000
            return
    pytest.fail("instruments.rcc not found in gcompris-qt-data")
