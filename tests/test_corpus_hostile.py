"""Hostile rule tables and packages for ``avtag corpus build``: each ends in one line naming the file and the
problem (or drops the one bad file with the reason), never a traceback, a hang or unbounded memory. The crafted
packages are npm tarballs, Debian ``ar`` files and game archives built here."""
from __future__ import annotations

import io
import random
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_corpus_extract import _c4_group, make_ocg

from avtag.cli import main
from avtag.data.corpus.build import build_corpus, read_jsonl
from avtag.data.corpus.extract import ArchiveError, read_c4group, read_rcc
from avtag.data.corpus.rules import RulesError, load_rules

REPO = Path(__file__).resolve().parents[1]
ONTOLOGY = {"roots": ["Sounds of things"], "parents": {"Animal": [], "Dog": ["Animal"], "Bark": ["Dog"]}}
SOURCE = {"name": "evil", "registry": "npm", "version": "1.0.0", "licence": "CC0-1.0", "use": "default", "checked": "t"}
RULE = {"package": "evil", "path": ".", "labels": ["Bark"], "checked": "t"}


def _wav(seconds: float = 0.5, f: float = 440.0) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def _rules(tmp: Path, rules=(RULE,), sources=(SOURCE,)) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"sources": list(sources), "rules": list(rules), "ontology": ONTOLOGY}))
    return path


def _npm(tmp: Path, members: dict[str, bytes], **tar_options) -> Path:
    """An npm tarball ``evil-1.0.0.tgz`` holding ``package/package.json`` and ``{name: bytes}``."""
    folder = tmp / "pkgs"
    folder.mkdir(exist_ok=True)
    with tarfile.open(folder / "evil-1.0.0.tgz", "w:gz", **tar_options) as tf:
        for name, data in {"package/package.json": b'{"version": "1.0.0"}', **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return folder


def _cli(tmp: Path, rules: Path, pkgs: Path, capsys, source: str = "evil") -> tuple[int, list[str]]:
    code = main(["corpus", "build", str(tmp / "out"), "--rules", str(rules), "--package-dir", str(pkgs),
                 "--sources", source, "--no-construct", "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def _finishes(code: str, seconds: float) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; a hang (the bug) fails the test instead of stalling the suite."""
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {seconds} s: {code}")


# ----------------------------------------------------------------------------- ReDoS
def test_stem_of_is_linear_and_agrees_with_the_old_regex():
    """``stem_of`` used ``([-_ .]?\\d+[a-z]?|...)+$``, exponential on a long digit run that fails at its end
    (``sounds/a`` + 40 digits + ``#.wav`` never finished)."""
    done = _finishes("from avtag.data.corpus.rules import stem_of; print(stem_of('sounds/a' + '1' * 5000 + '#.wav'))",
                     30)
    assert done.returncode == 0 and done.stdout.strip() == "a" + "1" * 5000 + "#"
    from avtag.data.corpus.rules import stem_of

    old = re.compile(r"([-_ .]?\d+[a-z]?|[-_ .](hardest|softest|hard|soft|med|medium|loud|quiet|left|right|l|r))+$",
                     re.I)
    alphabet = list("0123456789-_ .abklrs\u017f\u0663") + ["hard", "soft", "est", "med", "ium", "left", "right"]
    rng = random.Random(0)
    for _ in range(20000):  # short names: the old regex is quick on them
        path = "d/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) + ".wav"
        name = path[2:].split(".")[0].lower()
        assert stem_of(path) == (old.sub("", name) or name), path
    assert stem_of("Kick_Hard_02.wav") == "kick" and stem_of("snare-l3b.ogg") == "snare"


def test_a_backtracking_rule_regex_is_one_rules_error_naming_the_rule(tmp_path, capsys):
    """A user's ``path: '(d+)+$'`` on a member ``ddd...d!.wav`` ran for ever: now a time limit, then one line."""
    rules = _rules(tmp_path, [{**RULE, "path": "nomatch"}, {**RULE, "path": "(d+)+$"}])
    pkgs = _npm(tmp_path, {"package/" + "d" * 3000 + "!.wav": _wav()})
    code = (f"from avtag.cli import main; raise SystemExit(main(['corpus', 'build', {str(tmp_path / 'o')!r}, "
            f"'--rules', {str(rules)!r}, '--package-dir', {str(pkgs)!r}, '--sources', 'evil', '--no-construct', "
            "'--no-progress']))")
    done = _finishes(code, 60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert re.match(r"avtag: error: .*rules\.yaml: rule 2: path regex '\(d\+\)\+\$' ran over .* on 'package/dd",
                    err[0])
    assert "rewrite the pattern" in err[0]


# ----------------------------------------------------------------------------- rule-table entries
@pytest.mark.parametrize("rule, message", [
    ({"group": "{package:>10000000000}"}, r"group template .*not allowed"),   # a 10 GB string
    ({"group": "{package.__class__.__mro__}"}, r"group template .*not allowed"),  # attribute access
    ({"group": "{package[0]}"}, r"group template .*not allowed"),
    ({"group": "{package!z}"}, r"group template .*not allowed"),
    ({"group": "{"}, r"group template '\{': Single '\{'"),
    ({"group": "{nosuch}"}, r"field \{nosuch\} is not allowed"),
    ({"group": "{2}", "path": "(a)"}, r"field \{2\} is not allowed"),
    ({"group": [1]}, r"'group' must be a text template"),
    ({"path": 5}, r"'package' and 'path' must be text"),
    ({"package": 5}, r"'package' and 'path' must be text"),
    ({"default_vars": [1, 2, 3]}, r"'default_vars' must be a mapping"),
    ({"licence": 5}, r"'licence' must be text"),
    ({"labels": "Bark"}, r"'labels' must be a list of class names"),
    ({"labels": {"Bark": 1}}, r"'labels' must be a list of class names"),
    ({"labels": [5]}, r"'labels' must be a list of class names"),
    ({"labels": None, "exclude": 5}, r"'exclude' must be text"),
    ({"background": "no"}, r"'background' must be true or false"),
    ({"path": "(" * 5000 + ")" * 5000}, r"bad path regex"),
])
def test_bad_rule_entries_are_refused_when_the_table_is_loaded(tmp_path, rule, message):
    with pytest.raises(RulesError, match=r"rules\.yaml: rule 1\b.*" + message):
        load_rules(_rules(tmp_path, [{**RULE, **rule}]))


@pytest.mark.parametrize("sources, message", [
    ([{**SOURCE, "licence": 5}], r"source 'evil': 'licence' and 'checked' must be text"),
    ([{**SOURCE, "kind": 7}], r"source 'evil': kind '7' is not one of public-domain"),
    ([{**SOURCE, "kind": "free"}], r"source 'evil': kind 'free' is not one of"),
    ([SOURCE, {**SOURCE, "registry": "deb", "version": "2.0"}], r"source evil: listed twice \(entries 1 and 2\)"),
    ([{**SOURCE, "foo": 1}], r"source 1: needs name, registry, version, licence .*got .*foo"),
    (["evil"], r"source 1: needs name"),
])
def test_bad_sources_are_refused_when_the_table_is_loaded(tmp_path, sources, message):
    with pytest.raises(RulesError, match=r"rules\.yaml: " + message):
        load_rules(_rules(tmp_path, sources=sources))


def test_a_bad_licence_stops_the_build_before_anything_is_fetched_or_written(tmp_path, capsys):
    """``licence: 5`` failed in licence_kind after the first FLAC was written; ``kind: 7`` only in the summary."""
    pkgs = _npm(tmp_path, {"package/sounds/dog.wav": _wav()})
    for i, (rule, source) in enumerate([({"licence": 5}, {}), ({}, {"licence": 5}), ({}, {"kind": 7})]):
        rules = _rules(tmp_path, [{**RULE, **rule}], [{**SOURCE, **source}])
        code = main(["corpus", "build", str(tmp_path / f"out{i}"), "--rules", str(rules), "--package-dir", str(pkgs),
                     "--sources", "evil", "--no-construct", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith(f"avtag: error: {rules}: "), err
        assert not (tmp_path / f"out{i}").exists()


def test_group_templates_are_filled_without_str_format(tmp_path):
    rules = _rules(tmp_path, [{**RULE, "path": r"sounds/(?P<kind>\w+)/(\w+)_(?P<who>x)?", "default_vars": {"who": 7},
                               "group": "{{{kind}}}:{2}:{who}:{0}{package}/{dir}/{stem}/{file}"}])
    table = load_rules(rules)
    assert table.match("evil", "package/sounds/dog/bark_02.wav").group == "{dog}:bark:7:evil/dog/bark/bark_02"
    assert table.match("evil", "package/sounds/dog/bark_x.wav").group == "{dog}:bark:x:evil/dog/bark_x/bark_x"


# ----------------------------------------------------------------------------- decompression bombs
def _zlib_bomb(size: int) -> bytes:
    c = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join([c.compress(block) for _ in range(size >> 20)] + [c.flush()])


def _rcc_v1(name: str, blob: bytes, flags: int) -> bytes:
    """A version-1 Qt resource file with one file node (``flags`` 1: qCompress'd) at the root."""
    names = struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    data_off = 20
    names_off = data_off + len(blob)
    tree_off = names_off + len(names)
    nodes = struct.pack(">IHII", 0, 2, 1, 1) + struct.pack(">IHHHI", 0, flags, 0, 0, 0)
    return b"qres" + struct.pack(">4I", 1, tree_off, data_off, names_off) + blob + names + nodes


def test_compressed_archive_members_are_never_inflated_past_the_member_limit(tmp_path, monkeypatch):
    """An .rcc (zlib), C4Group (gzip) or .wz (zip) member that inflates to 9 GiB ended in MemoryError; now each
    inflates to the per-member limit at most (MAX_MEMBER_BYTES, 1 GiB; 1 MB here) and the member is dropped."""
    from avtag.data.corpus import build as build_module

    monkeypatch.setattr(build_module, "MAX_MEMBER_BYTES", 1 << 20)
    bomb = _zlib_bomb(64 << 20)
    rcc = _rcc_v1("boom.wav", struct.pack(">II", len(bomb) + 4, 64 << 20) + bomb, 1)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    ocg = b"\x1e\x8c" + b"".join([gz.compress(bytes(1 << 20)) for _ in range(64)] + [gz.flush()])[2:]
    wz = io.BytesIO()
    with zipfile.ZipFile(wz, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("audio/boom.wav", "w") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
        z.writestr("audio/dog.wav", _wav())
    pkgs = _npm(tmp_path, {"package/res/voices.rcc": rcc, "package/Sound.ocg": ocg, "package/base.wz": wz.getvalue()})
    build_corpus(tmp_path / "out", ["evil"], _rules(tmp_path), [pkgs], construct=False, progress=False,
                 log=lambda s: None)
    dropped = {d["path"]: d["reason"] for d in read_jsonl(tmp_path / "out" / "dropped.jsonl")}
    limit = "inflates to more than 1,048,576 bytes (the per-member limit)"
    assert dropped["package/res/voices.rcc/boom.wav"] == f"unreadable archive member: {limit}"
    assert dropped["package/base.wz/audio/boom.wav"] == f"unreadable archive member: {limit}"
    assert dropped["package/Sound.ocg"].endswith(f"C4Group gzip stream is unreadable ({limit})")
    assert [r["path"] for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")] == ["package/base.wz/audio/dog.wav"]
    with pytest.raises(ArchiveError, match="inflates to more than 1,000 bytes"):  # the readers take the limit
        list(read_c4group(ocg, "Sound.ocg", limit=1000))


# ----------------------------------------------------------------------------- damaged packages and archives
def test_damaged_archives_are_archive_errors():
    """An .rcc name offset past the end (struct.error) and 1500 nested C4 groups (RecursionError)."""
    bad_name = _rcc_v1("a.wav", struct.pack(">I", 4) + b"abcd", 0)
    bad_name = bad_name[:-14] + struct.pack(">IHHHI", 0xFFFF0, 0, 0, 0, 0)
    with pytest.raises(ArchiveError, match=r"voices\.rcc: a file name at offset 1048560 lies outside the file"):
        list(read_rcc(bad_name, "voices.rcc"))
    group = _c4_group([("x.wav", _wav(), False)])
    for _ in range(1500):
        group = _c4_group([("d.ocg", group, True)])
    with pytest.raises(ArchiveError, match=r"Deep\.ocg: groups nested deeper than 32 levels"):
        list(read_c4group(make_ocg([("d.ocg", group, True)]), "Deep.ocg"))
    shared = _c4_group([("x.wav", _wav(), False)])  # two entries sharing one child: a walk that multiplies
    twice = bytearray(_c4_group([("a.ocg", shared, True), ("b.ocg", b"", True)]))
    twice[204 + 316 + 260 : 204 + 316 + 280] = struct.pack("<5i", 0, 1, len(shared), 0, 0)
    with pytest.raises(ArchiveError, match="child groups overlap"):
        list(read_c4group(bytes(twice), "Twice.ocg"))


def test_a_non_utf8_member_name_is_recorded_escaped_and_recognised_on_resume(tmp_path):
    """A tar member named ``b\\xffad.wav`` ended in UnicodeEncodeError after its FLAC was written."""
    pkgs = _npm(tmp_path, {"package/sounds/b\udcffad.wav": _wav()}, format=tarfile.GNU_FORMAT,
                encoding="utf-8", errors="surrogateescape")
    rules = _rules(tmp_path)
    first = build_corpus(tmp_path / "out", ["evil"], rules, [pkgs], construct=False, progress=False,
                         log=lambda s: None)
    (rec,) = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert first.kept == 1 and rec["path"] == "package/sounds/b\\xffad.wav"
    for state in (tmp_path / "out" / "state").iterdir():
        state.unlink()
    again = build_corpus(tmp_path / "out", ["evil"], rules, [pkgs], construct=False, progress=False,
                         log=lambda s: None)
    assert (again.kept, again.dropped, again.total_kept) == (0, 0, 1)


def _ar(path: Path, members: list[tuple[str, bytes, str | None]]) -> Path:
    out = b"!<arch>\n"
    for name, data, size in members:
        size = str(len(data)) if size is None else size
        out += (name.ljust(16) + "0".ljust(12) + "0".ljust(6) + "0".ljust(6) + "100644".ljust(8) + size.ljust(10)
                + "`\n").encode() + data + (b"\n" if len(data) % 2 else b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path.parent


@pytest.mark.parametrize("case, message", [
    ("size", r": malformed ar header \(member 'data\.tar\.gz' has size b'12abc'\)$"),
    ("negative", r": malformed ar header \(member 'data\.tar\.gz' has size b'-5'\)$"),
    ("garbage", r": unreadable package \(ReadError: file could not be opened successfully: - method gz: .*\)$"),
    ("folder", r"evildeb_1\.0-1_all\.deb: is a folder, not a deb package file$"),
])
def test_broken_debian_packages_are_one_line(tmp_path, capsys, case, message):
    deb = tmp_path / "pkgs" / "evildeb_1.0-1_all.deb"
    if case == "folder":
        deb.mkdir(parents=True)
    else:
        data, size = {"size": (b"xx", "12abc"), "negative": (b"xx", "-5"), "garbage": (b"not xz" * 10, None)}[case]
        _ar(deb, [("debian-binary", b"2.0\n", None), ("data.tar.xz" if case == "garbage" else "data.tar.gz",
                                                       data, size)])
    source = {**SOURCE, "name": "evildeb", "registry": "deb", "version": "1.0-1"}
    rules = _rules(tmp_path, [{**RULE, "package": "evildeb"}], [source])
    code, err = _cli(tmp_path, rules, deb.parent, capsys, "evildeb")
    assert code == 2 and len(err) == 1, err
    assert re.search(message, err[0]) and err[0].startswith(f"avtag: error: {deb}"), err[0]


def test_a_truncated_npm_tarball_is_one_line(tmp_path, capsys):
    """A .tgz cut short: EOFError in package_version (a traceback), then the unreadable member."""
    pkgs = _npm(tmp_path, {"package/sounds/a.wav": _wav(3), "package/sounds/b.wav": _wav(3, 800)})
    tgz = pkgs / "evil-1.0.0.tgz"
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size * 2 // 3])
    code, err = _cli(tmp_path, _rules(tmp_path), pkgs, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"avtag: error: {tgz}: unreadable package") and "Error" in err[0]


def test_package_json_that_is_not_an_object_falls_back_to_the_file_name(tmp_path):
    from avtag.data.corpus.fetch import package_version
    from avtag.data.corpus.rules import Source

    folder = tmp_path / "p"
    folder.mkdir()
    with tarfile.open(folder / "evil-1.0.0.tgz", "w:gz") as tf:
        info = tarfile.TarInfo("package/package.json")
        info.size = 9
        tf.addfile(info, io.BytesIO(b"[1, 2, 3]"))
    assert package_version(folder / "evil-1.0.0.tgz", Source("evil", "npm", "1.0.0", "CC0-1.0")) == ""
