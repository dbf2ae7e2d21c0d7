"""Soundscapes from the real recordings in ../shared/sounds (avtag.data.soundscapes / recordings)."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import shared_path

from avtag import AvtagError
from avtag.config import load_config
from avtag.data.dcase2017 import read_class_list, read_split, resolve_media
from avtag.data.mixdown import event_stem, render
from avtag.data.recordings import (
    build_vocabulary,
    classify_licence,
    group_of,
    read_recordings,
    redistributable,
    source_groups,
)
from avtag.data.soundscapes import (
    PlacedEvent,
    Soundscape,
    SoundscapeConfig,
    generate_soundscapes,
    load_sources,
)
from avtag.labels import Vocabulary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sounds_dir() -> Path:
    return shared_path("sounds")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, sounds_dir):
    out = tmp_path_factory.mktemp("soundscapes") / "set"
    result = generate_soundscapes(out, sounds_dir, n_train=24, n_test=12, seed=3)
    return result


def _recipes(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "soundscapes.jsonl").read_text().splitlines()]


def _config(root: Path) -> SoundscapeConfig:
    raw = json.loads((root / "summary.json").read_text())["config"]
    return SoundscapeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def test_layout_is_read_by_the_dcase_reader(generated):
    vocab = Vocabulary(generated.vocabulary)
    assert read_class_list(generated.metadata_dir).names == vocab.names
    train = read_split(generated.metadata_dir, "train_full", vocabulary=vocab)
    test = read_split(generated.metadata_dir, "test", vocabulary=vocab)
    assert len(train) == 24 and len(test) == 12
    for records, split in ((train, "train"), (test, "test")):
        found, missing = resolve_media(records, generated.media_dirs[split])
        assert not missing and len(found) == len(records)
        for r, path in found:
            assert path.name == f"Y{r.name}.wav" and r.name.endswith("_0.000_10.000")
            info = sf.info(path)
            assert info.samplerate == 16000 and info.frames == 160000 and info.subtype == "PCM_16"
    recipes = {r["name"]: r for r in _recipes(generated.root)}
    for r in test:  # strong labels = the recipe's labelled events; weak labels = their union
        events = sorted((lab, e["onset"], e["offset"]) for e in recipes[r.name]["events"] for lab in e["labels"])
        assert sorted(r.events) == events
        assert set(r.labels) == {lab for lab, _, _ in events} and r.labels
    # train + validation partition the training list, as for the official release
    val = read_split(generated.metadata_dir, "validation", validation_fraction=0.25, vocabulary=vocab)
    rest = read_split(generated.metadata_dir, "train", validation_fraction=0.25, vocabulary=vocab)
    assert len(val) + len(rest) == 24


def test_onsets_and_offsets_are_exact_in_the_written_audio(generated, sounds_dir):
    """Removing every event, rebuilt from its recorded onset/offset/gain, leaves only the background."""
    cfg = _config(generated.root)
    used = {e["file"] for r in _recipes(generated.root) for e in r["events"]}
    sources = load_sources([r for r in read_recordings(sounds_dir) if r.filename in used], cfg.sample_rate, cfg.trim_db)
    checked = 0
    for rec in _recipes(generated.root)[:10] + _recipes(generated.root)[-6:]:
        wav, _ = sf.read(generated.media_dirs[rec["split"]] / f"Y{rec['name']}.wav", dtype="float64")
        stems = [event_stem(sources[e["file"]], PlacedEvent(**{**e, "labels": tuple(e["labels"])}), cfg)
                 for e in rec["events"]]
        residual = wav - np.sum(stems, axis=0)
        bg_db = rec["background_dbfs"] + 20 * np.log10(rec["scale"])
        assert 20 * np.log10(np.sqrt(np.mean(residual**2))) == pytest.approx(bg_db, abs=0.25)
        for e, stem in zip(rec["events"], stems):
            a, b = round(e["onset"] * 16000), round(e["offset"] * 16000)
            assert not stem[:a].any() and not stem[b:].any()
            assert np.abs(stem[a : a + 160]).max() > 0 and np.abs(stem[b - 160 : b]).max() > 0
            # inside the event the mixture is louder than the background by about the drawn SNR
            level = 20 * np.log10(np.sqrt(np.mean(stem[a:b] ** 2)))
            assert level - bg_db == pytest.approx(e["snr_db"], abs=0.1)
        checked += len(stems)
    assert checked > 10


def test_render_mixture_is_background_plus_stems():
    cfg = SoundscapeConfig()
    rng = np.random.default_rng(0)
    source = np.sin(np.arange(64000) * 0.05 + 0.3).astype(np.float32)
    scape = Soundscape("x_0.000_10.000", "train", 1.0, -50.0, [
        PlacedEvent("a.wav", ("Music",), 1.25, 3.0, 0.5, 20.0), PlacedEvent("a.wav", (), 9.0, 10.0, 0.0, 10.0)])
    mix, bg, stems = render(scape, {"a.wav": source}, cfg, rng)
    assert np.allclose(mix, bg + stems[0] + stems[1], atol=1e-6)
    assert np.flatnonzero(stems[0])[[0, -1]].tolist() == [20000, 47999]
    assert np.flatnonzero(stems[1])[[0, -1]].tolist() == [144000, 159999]
    rms = np.sqrt(np.mean(stems[0][20000:48000] ** 2))
    assert 20 * np.log10(rms) == pytest.approx(-30.0, abs=0.01)


def test_train_and_test_use_disjoint_source_recordings(generated):
    rows = list(csv.DictReader(open(generated.root / "recordings.csv")))
    side = {r["filename"]: r["split"] for r in rows}
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["source_group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    # edits of one original ("crash.wav") and byte-identical files stay together
    assert side["osfx_17.wav"] == side["osfx_19.wav"] and side["osfx_52.wav"] == side["osfx_57.wav"]
    for rec in _recipes(generated.root):
        assert {side[e["file"]] for e in rec["events"]} == {rec["split"]}
    for c in generated.vocabulary:  # every class has recordings on both sides
        assert generated.recordings_per_class["train"][c] >= 1 and generated.recordings_per_class["test"][c] >= 1


def test_licence_filter_keeps_only_redistributable_recordings(sounds_dir, generated):
    assert classify_licence("CC BY-NC 3.0 (ESC-50 dataset) - NON-COMMERCIAL") == ("non-commercial", False)
    assert classify_licence("CC BY-NC-SA 4.0 (ImageBind repository licence)")[1] is False
    assert classify_licence('CC BY-SA 3.0 - Original "x.wav"') == ("share-alike", False)
    assert classify_licence("CC Sampling+ 1.0 - freesound.org sound 36815")[1] is False
    assert classify_licence("UNKNOWN - not listed")[1] is False
    assert classify_licence('CC0 1.0 - Original "a.wav" by "NC"') == ("CC0", True)
    assert classify_licence("CC BY 4.0 - LibriSpeech SLR12") == ("CC BY", True)
    assert classify_licence("Public domain - NPS") == ("public domain", True)
    used = {r["filename"] for r in csv.DictReader(open(generated.root / "recordings.csv"))}
    for name in ("car_audio.wav", "cat_3-95694-A-5.wav", "pibble.ogg", "osfx_24.wav", "dog.wav", "gunshots.wav"):
        assert name in generated.excluded and name not in used
    assert all(classify_licence(r.licence)[1] for r in read_recordings(sounds_dir) if r.filename in used)
    assert "non-commercial" not in (generated.root / "ATTRIBUTION.md").read_text().lower()
    all_recs, _ = redistributable(read_recordings(sounds_dir), allow_noncommercial=True)
    assert len(all_recs) == len(read_recordings(sounds_dir))


def test_vocabulary_groups_rare_classes_under_their_audioset_parent(sounds_dir):
    recs, _ = redistributable(read_recordings(sounds_dir))
    sv = build_vocabulary(recs, min_recordings=3)
    by_class = {r.filename: r.audioset_label for r in recs}
    assert {"Speech", "Music", "Vehicle", "Animal", "Water"} <= set(sv.vocabulary.names)
    label = {by_class[f]: sv.labels[f] for f in sv.labels}
    assert label["Trumpet"] == ("Music",) and label["Propeller, airscrew"] == ("Vehicle",)
    assert label["Jet engine"] == ("Vehicle", "Jet engine") and label["Steam"] == ("Water",)
    assert label["Wind"] == ()  # one recording, and Wind has no other: out of vocabulary
    assert group_of("Toot") == "Vehicle" and group_of("Bird vocalization, bird call, bird song") == "Animal"
    for c, n in sv.recordings_per_class.items():
        assert n >= 3, c
    groups = source_groups(recs)
    assert groups["osfx_52.wav"] == groups["osfx_57.wav"]  # identical bytes count once
    assert len({groups[f] for f in ("osfx_25.wav", "osfx_26.wav", "osfx_60.wav", "osfx_62.wav")}) == 1
    strict = build_vocabulary(recs, min_recordings=5)
    assert set(strict.vocabulary.names) < set(sv.vocabulary.names)


def test_same_seed_same_files_other_seed_other_files(tmp_path, sounds_dir, generated, monkeypatch):
    """Also when the second build is killed in its test split and run again (it resumes)."""
    from helpers.faults import killed_at

    import avtag.data.soundscapes as soundscapes

    render = soundscapes.render
    monkeypatch.setattr(soundscapes, "render", killed_at(30, render))
    with pytest.raises(KeyboardInterrupt):
        generate_soundscapes(tmp_path / "again", sounds_dir, n_train=24, n_test=12, seed=3)
    monkeypatch.setattr(soundscapes, "render", render)
    assert len((tmp_path / "again" / ".mixing" / "test.jsonl").read_text().splitlines()) == 5
    again = generate_soundscapes(tmp_path / "again", sounds_dir, n_train=24, n_test=12, seed=3)
    assert not (tmp_path / "again" / ".mixing").exists()
    assert (again.root / "soundscapes.jsonl").read_text() == (generated.root / "soundscapes.jsonl").read_text()
    for split in ("train", "test"):
        for a in sorted(generated.media_dirs[split].iterdir()):
            assert (again.media_dirs[split] / a.name).read_bytes() == a.read_bytes()
    meta = "groundtruth_release/groundtruth_strong_label_testing_set.csv"
    assert (again.metadata_dir / meta).read_text() == (generated.metadata_dir / meta).read_text()
    other = generate_soundscapes(tmp_path / "other", sounds_dir, n_train=2, n_test=2, seed=4)
    first = sorted(generated.media_dirs["train"].iterdir())[0]
    assert (other.media_dirs["train"] / first.name).read_bytes() != first.read_bytes()
    with pytest.raises(AvtagError, match="already holds"):
        generate_soundscapes(tmp_path / "other", sounds_dir, n_train=2, n_test=2)


def test_v1_model_config_lists_the_generated_vocabulary(generated):
    """The v1 default model was trained on these soundscapes
    (v2 on corpus soundscapes, configs/data/soundscapes_v2.yaml)."""
    config = load_config(REPO / "configs" / "default_model_v1.yaml")
    classes = config.data.classes
    assert tuple(classes) == generated.vocabulary


def test_cli(tmp_path, sounds_dir, capsys):
    from avtag.commands import soundscapes

    parser = argparse.ArgumentParser()
    soundscapes.register(parser.add_subparsers())
    args = parser.parse_args(["soundscapes", str(tmp_path / "s"), "--sounds", str(sounds_dir), "--n-train", "3",
                              "--n-test", "2", "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrote 3 training and 2 test soundscapes" in out and "Speech" in out and "pibble.ogg" in out
    assert len(list((tmp_path / "s" / "audio" / "test").glob("Y*.wav"))) == 2
    for flags, problem in ((["--test-fraction", "1.5"], "test-fraction"), (["--max-minutes", "-1"], "max-minutes"),
                           (["--renditions", "0"], "renditions"), (["--n-test", "-1"], "n-test")):
        bad = parser.parse_args(["soundscapes", str(tmp_path / "t"), *flags])
        with pytest.raises(AvtagError, match=problem):
            bad.func(bad)


def test_speed_perturbation_changes_pitch_and_keeps_the_labelled_span():
    cfg = SoundscapeConfig()
    tone = np.sin(2 * np.pi * 400 * np.arange(48000) / 16000).astype(np.float32)
    for speed, hz in ((1.0, 400), (1.1, 440), (0.9, 360)):
        e = PlacedEvent("t.wav", ("Music",), 2.0, 4.0, 0.25, 20.0, gain=1.0, speed=speed)
        stem = event_stem(tone, e, cfg)
        assert np.flatnonzero(stem)[[0, -1]].tolist() == [32000, 63999]
        spectrum = np.abs(np.fft.rfft(stem[32000:64000]))
        assert np.fft.rfftfreq(32000, 1 / 16000)[spectrum.argmax()] == pytest.approx(hz, abs=1)


def test_a_sounds_table_names_only_files_of_its_folder(tmp_path):
    """A row '../../../etc/passwd' was opened and decoded as a recording."""
    from avtag.data.recordings import RecordingsError

    (tmp_path / "sounds.csv").write_text("filename,label,audioset_label,duration_s,licence,source\n"
                                         "../../../etc/passwd,x,Dog,1.0,CC0,nowhere\n")
    with pytest.raises(RecordingsError, match=r"sounds\.csv:2: '\.\./\.\./\.\./etc/passwd' lies outside"):
        read_recordings(tmp_path)
