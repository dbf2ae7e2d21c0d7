"""Soundscapes from a built corpus (avtag.data.corpus.mixing, vocabulary v2, degradation); the corpus here is
written directly in the manifest format the builder produces."""
from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.data.corpus.degrade import codec, lowpass, mulaw, reverb, room_response
from avtag.data.corpus.mixing import CLASS_BOOST, class_weights, generate_corpus_soundscapes
from avtag.data.corpus.rules import load_rules
from avtag.data.corpus.turns import join_turn
from avtag.data.corpus.vocabulary import choose_vocabulary, read_corpus
from avtag.data.dcase2017 import in_validation, read_split
from avtag.data.mixdown import event_stem
from avtag.data.soundscapes import PlacedEvent, SoundscapeConfig, sample_soundscape
from avtag.labels import Vocabulary

SR = 16000


def _tone(rng, f0: float, seconds: float, decay: float) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8)) * np.exp(-t / decay)
    return (0.3 * x / np.max(np.abs(x)) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def make_corpus(root: Path) -> Path:
    """A corpus folder: 5 groups each of Bark, Church bell, Speech, Music, Rain beds; 2 of Meow; babble from 2
    speakers."""
    table = load_rules()
    rng = np.random.default_rng(3)
    rows = []

    def add(rid, classes, group, audio, background=False, constructed=False, components=()):
        rel = f"audio/test/{rid}.flac"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, audio, SR, subtype="PCM_16")
        rows.append({"id": rid, "file": rel, "package": "test", "registry": "deb", "version": "1", "path": rid,
                     "classes": classes, "labels": list(table.expand(classes)), "group": group,
                     "licence": "CC-BY-3.0", "licence_source": "test", "licence_kind": "attribution",
                     "share_alike": False, "training": True, "background": background, "constructed": constructed,
                     "construction": None, "components": [], "component_groups": list(components),
                     "duration_s": len(audio) / SR, "rms_dbfs": -20.0, "peak_dbfs": -3.0, "source_rate": SR,
                     "channels": 1, "codec": "flac", "rule": 1})

    for g in range(5):
        for k in range(2):
            add(f"bark{g}{k}", ["Bark"], f"dog{g}", _tone(rng, 400 + 60 * g, 0.8, 0.15))
            add(f"bell{g}{k}", ["Church bell"], f"bell{g}", _tone(rng, 700 + 90 * g, 3.0, 1.0))
            add(f"spk{g}{k}", ["Speech"], f"speaker:{g}", _tone(rng, 110 + 30 * g, 2.5, 5.0))
            add(f"mus{g}{k}", ["Music"], f"track{g}", _tone(rng, 220 + 45 * g, 12.0, 30.0))
        add(f"rain{g}", ["Rain"], f"rain{g}", (rng.standard_normal(SR * 6) * 0.05).astype(np.float32), background=True)
    for g in range(2):  # a rare class: grouped under its parent
        add(f"meow{g}", ["Meow"], f"cat{g}", _tone(rng, 600 + 100 * g, 0.7, 0.3))
    add("babble0", ["Hubbub, speech noise, speech babble"], "constructed:babble:pool00",
        _tone(rng, 150, 10.0, 50.0), constructed=True, components=["speaker:0", "speaker:1"])
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, corpus):
    cfg = replace(SoundscapeConfig(), min_recordings=4, test_fraction=0.2, lowpass_probability=0.5,
                  codec_probability=0.5, bed_probability=0.6, reverb_probability=0.5)
    out = tmp_path_factory.mktemp("mixed") / "set"
    return generate_corpus_soundscapes(out, corpus, None, n_train=10, n_validation=4, n_test=6, seed=1, config=cfg,
                                       max_minutes=30)


def _recipes(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "soundscapes.jsonl").read_text().splitlines()]


def test_vocabulary_v2_groups_rare_classes_under_parents_and_joins_babble_with_its_speakers(corpus):
    table = load_rules()
    items = read_corpus(corpus)
    vocab = choose_vocabulary(items, table, min_groups=4)
    assert set(vocab.classes) == {"Domestic animals, pets", "Bark", "Speech", "Music", "Church bell", "Rain"}
    # one class per identical set of sources: Dog = Bark, Animal = Domestic animals, pets, Water = Rain, ...
    assert vocab.labels["bark00"] == ("Domestic animals, pets", "Bark")
    assert vocab.labels["meow1"] == ("Domestic animals, pets",)  # Meow and Cat: 2 groups, grouped under the parent
    assert "grouped under Domestic animals, pets" in vocab.folded["Cat"]
    assert vocab.labels["babble0"] == ()  # one babble group: below the threshold, a distractor
    assert vocab.groups["babble0"] == vocab.groups["spk00"] == vocab.groups["spk10"]
    assert vocab.classes.index("Domestic animals, pets") < vocab.classes.index("Bark")


def test_split_is_three_way_by_source_group_and_validation_names_hash_into_validation(mixed):
    rows = list(csv.DictReader(open(mixed.root / "recordings.csv")))
    sides: dict[str, set] = {}
    for r in rows:
        sides.setdefault(r["source_group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    split_of = {r["id"]: r["split"] for r in rows}
    for rec in _recipes(mixed.root):
        assert {split_of[e["file"]] for e in rec["events"]} == {rec["split"]}
    for c in mixed.vocabulary:
        assert all(mixed.recordings_per_class[s][c] >= 1 for s in ("train", "validation", "test")), c
    vocab = Vocabulary(mixed.vocabulary)
    val = read_split(mixed.metadata_dir, "validation", validation_fraction=0.1, seed=0, vocabulary=vocab)
    train = read_split(mixed.metadata_dir, "train", validation_fraction=0.1, seed=0, vocabulary=vocab)
    assert len(val) == 4 and len(train) == 10 and all(r.name.startswith("ssva") for r in val)
    assert all(in_validation(r.name, 0.1, 0) for r in val) and not any(in_validation(r.name, 0.1, 0) for r in train)
    assert len(list(mixed.media_dirs["train"].glob("Y*.wav"))) == 14
    assert len(list(mixed.media_dirs["test"].glob("Y*.wav"))) == 6


def test_mixture_is_exact_with_beds_and_degraded_events(mixed, corpus):
    """Each clip minus its events and beds, rebuilt from the recipe (degradation included), is the noise floor."""
    summary = json.loads((mixed.root / "summary.json").read_text())
    cfg = SoundscapeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in summary["config"].items()})
    sources = {r["id"]: sf.read(corpus / r["file"], dtype="float32")[0]
               for r in map(json.loads, (corpus / "manifest.jsonl").read_text().splitlines())}
    beds = degraded = reverberant = 0
    for rec in _recipes(mixed.root):
        folder = mixed.media_dirs["test" if rec["split"] == "test" else "train"]
        wav, sr = sf.read(folder / f"Y{rec['name']}.wav", dtype="float64")
        assert sr == SR and len(wav) == 10 * SR
        events = [PlacedEvent(**{**e, "labels": tuple(e["labels"])}) for e in rec["events"]]
        stems = [event_stem(sources[e.file], e, cfg) for e in events]
        residual = wav - np.sum(stems, axis=0)
        floor = rec["background_dbfs"] + 20 * np.log10(rec["scale"])
        assert 20 * np.log10(np.sqrt(np.mean(residual**2))) == pytest.approx(floor, abs=0.3)
        for e in events:
            if e.bed:
                beds += 1
                assert (e.onset, e.offset) == (0.0, 10.0) and "Rain" in e.labels
            degraded += bool(e.lowpass_hz or e.codec)
            reverberant += bool(e.room)
    assert beds >= 3 and degraded >= 5 and reverberant >= 5
    strong = (mixed.metadata_dir / "groundtruth_release" / "groundtruth_strong_label_testing_set.csv").read_text()
    test_beds = [r["name"] for r in _recipes(mixed.root) for e in r["events"] if r["split"] == "test" and e["bed"]]
    assert test_beds and all(f"{name}.wav\t0.000\t10.000\tRain\n" in strong for name in test_beds)


def test_speech_turns_join_one_speaker_and_rebuild_exactly(tmp_path, corpus):
    """--speech-turns: a speech event is an excerpt of one speaker's chained utterances, rebuilt from turns.jsonl."""
    cfg = replace(SoundscapeConfig(), min_recordings=4, test_fraction=0.2, events=(2, 4))
    res = generate_corpus_soundscapes(tmp_path / "s", corpus, None, 16, 4, 6, seed=1, config=cfg, speech_turns=True)
    turns = [json.loads(line) for line in (res.root / "turns.jsonl").read_text().splitlines()]
    rows = {r["id"]: r for r in csv.DictReader(open(res.root / "recordings.csv"))}
    speech = {i for i, r in rows.items() if "Speech" in r["labels"].split(";")}
    assert turns and sorted(i for t in turns for i, _ in t["parts"]) == sorted(speech)  # each utterance once
    manifest = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    sources = {r["id"]: sf.read(corpus / r["file"], dtype="float32")[0] for r in manifest}
    speaker = {r["id"]: r["group"] for r in manifest}
    for t in turns:
        assert {speaker[i] for i, _ in t["parts"]} == {t["group"]}  # one speaker per turn
        assert {rows[i]["split"] for i, _ in t["parts"]} == {t["split"]} and "Speech" in t["labels"]
        for (i, a), (_, b) in zip(t["parts"], t["parts"][1:]):  # pauses of 0.15-0.8 s between utterances
            assert 0.15 * SR <= b - a - len(sources[i]) <= 0.8 * SR
        sources[t["id"]] = join_turn([tuple(p) for p in t["parts"]], sources)
    summary = json.loads((res.root / "summary.json").read_text())
    assert summary["speech_turns"] == len(turns)
    events = [(rec, e) for rec in _recipes(res.root) for e in rec["events"]]
    spoken = [e for _, e in events if "Speech" in e["labels"]]
    assert spoken and all(e["file"].startswith("turn:") for e in spoken)
    assert max(e["offset"] - e["onset"] for e in spoken) > 2.5 + 0.15  # longer than any single utterance
    for rec in _recipes(res.root):
        folder = res.media_dirs["test" if rec["split"] == "test" else "train"]
        wav, _ = sf.read(folder / f"Y{rec['name']}.wav", dtype="float64")
        stems = [event_stem(sources[e["file"]], PlacedEvent(**{**e, "labels": tuple(e["labels"])}), cfg)
                 for e in rec["events"]]
        floor = rec["background_dbfs"] + 20 * np.log10(rec["scale"])
        assert 20 * np.log10(np.sqrt(np.mean((wav - np.sum(stems, axis=0)) ** 2))) == pytest.approx(floor, abs=0.3)
    plain = generate_corpus_soundscapes(tmp_path / "p", corpus, None, 3, 2, 2, seed=1, config=cfg)
    assert not (plain.root / "turns.jsonl").exists()
    assert json.loads((plain.root / "summary.json").read_text())["speech_turns"] == 0


def test_killed_build_resumes_to_the_same_files(tmp_path, corpus, monkeypatch):
    """A build killed mid-way (here in the validation split, a log line cut short) resumes where it stopped and
    writes byte-identical clips and recipes; other settings refuse to resume the partial folder."""
    import hashlib

    from helpers.faults import killed_at

    from avtag.data.corpus import mixing
    from avtag.data.soundscapes import SoundscapeError

    cfg = replace(SoundscapeConfig(), min_recordings=4, test_fraction=0.2, bed_probability=0.5, codec_probability=0.3)

    def build(out):
        return generate_corpus_soundscapes(out, corpus, None, 6, 3, 3, seed=2, config=cfg, speech_turns=True)

    def digest(root):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}

    whole = build(tmp_path / "whole").root
    render = mixing.render
    monkeypatch.setattr(mixing, "render", killed_at(8, render))
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "killed")
    monkeypatch.setattr(mixing, "render", render)
    log = tmp_path / "killed" / ".mixing"
    assert len((log / "train.jsonl").read_text().splitlines()) == 6
    with open(log / "validation.jsonl", "a") as f:
        f.write('{"recipe": {"name": "ssva')  # the kill came while the line was being written
    with pytest.raises(SoundscapeError, match="other settings"):
        generate_corpus_soundscapes(tmp_path / "killed", corpus, None, 6, 3, 3, seed=3, config=cfg)
    monkeypatch.setattr(mixing, "render", killed_at(3, render))
    with pytest.raises(KeyboardInterrupt):  # killed again: two more clips written after the cut line
        build(tmp_path / "killed")
    monkeypatch.setattr(mixing, "render", render)
    assert len([json.loads(x) for x in (log / "validation.jsonl").read_text().splitlines()]) == 3  # none lost
    resumed = build(tmp_path / "killed").root
    assert not log.exists() and digest(resumed) == digest(whole)


def test_cap_limits_minutes_per_class_and_keeps_every_group(tmp_path, corpus):
    cfg = replace(SoundscapeConfig(), min_recordings=4, test_fraction=0.2)
    res = generate_corpus_soundscapes(tmp_path / "s", corpus, None, 3, 2, 2, seed=0, config=cfg, max_minutes=0.05)
    summary = json.loads((res.root / "summary.json").read_text())
    assert summary["source_minutes_per_class"]["Music"] <= 3 * (0.05 + 0.2)  # <= cap + one 12 s track per split
    rows = list(csv.DictReader(open(res.root / "recordings.csv")))
    assert len(rows) < 45 and {r["split"] for r in rows if "Music" in r["labels"]} == {"train", "validation", "test"}


def test_degradation_low_passes_and_codecs_keep_alignment():
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 500 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    spec = lambda y, f: np.abs(np.fft.rfft(y))[f]  # 1 s: bin = Hz
    y = lowpass(x, SR, 3000)
    assert spec(y, 500) / spec(x, 500) > 0.95 and spec(y, 6000) / spec(x, 6000) < 0.01
    clap = np.zeros(SR, np.float32)
    clap[4000:4400] = np.random.default_rng(0).standard_normal(400) * 0.5
    for name in ("mp3-24", "mp3-48"):
        z = codec(clap, SR, name)
        assert len(z) == SR and np.argmax(np.abs(z)) in range(4000, 4400)
        assert np.abs(z[:3500]).max() < 0.05
    # 64 ms of low-passed noise whose MP3 FFmpeg's format probe does not recognise (a soundscape build died on
    # such an event): the decoder is told the format
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(107)
    n = int(rng.integers(800, 3000))
    short = sosfilt(butter(4, rng.uniform(200, 4000), fs=SR, output="sos"), rng.standard_normal(n))
    short = 0.3 * short / np.abs(short).max()
    assert len(codec(short, SR, "mp3-32")) == n == 1031
    m = mulaw(x)
    assert 10 * np.log10(np.sum(x**2) / np.sum((x - m) ** 2)) > 30
    with pytest.raises(ValueError, match="unknown codec"):
        codec(x, SR, "aac")


def test_reverb_is_a_seeded_room_decaying_60_db_in_rt60():
    click = np.zeros(2 * SR, np.float32)
    click[100] = 1.0
    y = reverb(click, SR, 0.8, 0.5, seed=7)
    assert y.dtype == np.float32 and len(y) == len(click)
    assert np.array_equal(y, reverb(click, SR, 0.8, 0.5, seed=7))
    assert not np.array_equal(y, reverb(click, SR, 0.8, 0.5, seed=8))
    ir = room_response(0.8, SR, np.random.default_rng(7))
    assert np.sum(ir**2) == pytest.approx(1.0) and len(ir) == int(0.8 * SR)
    expected = 0.5 * ir.copy()
    expected[0] += 0.5  # the dry click
    assert np.allclose(y[100 : 100 + len(ir)], expected, atol=1e-6)
    tail = y[101:]
    energy = lambda a, b: np.mean(tail[int(a * SR) : int(b * SR)].astype(np.float64) ** 2)
    # 60 dB per 0.8 s: the energy 0.4 s later is about 30 dB lower; nothing after the response ends
    assert 10 * np.log10(energy(0.05, 0.15) / energy(0.45, 0.55)) == pytest.approx(30, abs=4)
    assert np.abs(tail[int(0.81 * SR) :]).max() < 1e-6


def test_class_draw_shares_each_branch_and_boosts_speech():
    table = load_rules()
    classes = ("Animal", "Dog", "Cat", "Bird", "Human voice", "Speech", "Music")
    w = class_weights(classes, table.ancestors)
    assert w["Animal"] == w["Dog"] == pytest.approx(0.5)  # a branch of 4 classes weighs 2, shared by 4
    assert w["Music"] == 1.0 and w["Human voice"] == pytest.approx(2**-0.5)
    assert w["Speech"] == pytest.approx(CLASS_BOOST["Speech"] * 2**-0.5)
    # sample_soundscape draws classes in those proportions
    pools = {c: [c] for c in classes}
    sources = {c: np.zeros(SR, np.float32) for c in classes}
    labels = {c: (c,) for c in classes}
    cfg = replace(SoundscapeConfig(), distractor_probability=0.0)
    rng = np.random.default_rng(0)
    drawn = [e.file for k in range(3000)
             for e in sample_soundscape(rng, f"c{k}", "train", pools, [], sources, labels, cfg, w).events]
    share = {c: drawn.count(c) / len(drawn) for c in classes}
    total = sum(w.values())
    for c in classes:
        assert share[c] == pytest.approx(w[c] / total, abs=0.02), c


def test_soundscapes_cli_with_corpus(tmp_path, corpus, capsys):
    from avtag.commands import soundscapes

    parser = argparse.ArgumentParser()
    soundscapes.register(parser.add_subparsers())
    args = parser.parse_args(["soundscapes", str(tmp_path / "s"), "--corpus", str(corpus), "--no-sounds",
                              "--n-train", "3", "--n-validation", "2", "--n-test", "2", "--min-recordings", "4",
                              "--no-progress", "--reverb-probability", "0.5", "--class-draw", "branch",
                              "--speech-turns"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrote 3 training, 2 validation and 2 test soundscapes" in out and "Bark" in out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["config"]["reverb_probability"] == 0.5 and summary["config"]["lowpass_probability"] == 0.5
    assert summary["class_weights"]["Speech"] > summary["class_weights"]["Music"] and summary["speech_turns"] > 0
    bad = parser.parse_args(["soundscapes", str(tmp_path / "t"), "--corpus", str(corpus), "--bed-probability", "2"])
    assert bad.reverb_probability == 0.0 and bad.class_draw == "uniform" and not bad.speech_turns  # the default recipe
    with pytest.raises(Exception, match="bed-probability"):
        bad.func(bad)
    bad = parser.parse_args(["soundscapes", str(tmp_path / "t"), "--corpus", str(corpus), "--reverb-probability", "-1"])
    with pytest.raises(Exception, match="reverb-probability"):
        bad.func(bad)


@pytest.mark.parametrize("change, problem", [
    ({"file": "../../../etc/passwd"}, "lies outside the corpus folder"),  # was opened and decoded
    ({"file": "/etc/passwd"}, "lies outside the corpus folder"),
    ({"duration_s": float("nan")}, "is not a positive number of seconds"), ({"duration_s": -5}, "is not a positive"),
])
def test_a_manifest_names_only_files_of_its_own_corpus(tmp_path, corpus, change, problem):
    from avtag.data.corpus import CorpusError

    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "audio").symlink_to(corpus / "audio")  # a corpus folder whose audio is a link stays readable
    rows[1] = {**rows[1], **change}
    (hostile / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusError, match=r"manifest\.jsonl:2: .*" + problem):
        read_corpus(hostile)
    rows[1] = json.loads((corpus / "manifest.jsonl").read_text().splitlines()[1])
    (hostile / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_corpus(hostile)) == len(read_corpus(corpus))
