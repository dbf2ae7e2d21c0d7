"""The DCASE 2017 set on real sounds (avtag.data.corpus.dcase2017_real) and its constructed warning signals
(avtag.data.corpus.warning_signals). The corpus here is a few generated stand-ins written in the manifest format
`avtag corpus build` produces; the last test reads the real corpus when cache/corpus exists."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avtag.cli import main
from avtag.data.corpus.dcase2017_real import CONSTRUCTED, dcase_labels, generate_dcase2017_real
from avtag.data.corpus.rules import load_rules
from avtag.data.corpus.warning_signals import Device, air_absorption, draw_device, render, render_dry
from avtag.data.dcase2017 import in_validation, read_class_list, read_split, resolve_media
from avtag.labels import DCASE2017, DCASE2017_CLASSES

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def _tone(rng, f0: float, seconds: float) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    return (0.3 * x / np.max(np.abs(x)) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def make_corpus(root: Path) -> Path:
    """Car 3 groups (one a car horn), Train 4 groups + a Train horn, Bus 2, Screaming and Police siren 1 each,
    traffic and rain beds, speech/bark distractors, and two recordings that must not become distractors."""
    table, rng, rows = load_rules(), np.random.default_rng(5), []

    def add(rid, classes, group, audio, background=False):
        rel = f"audio/test/{rid}.flac"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, audio, SR, subtype="PCM_16")
        rows.append({"id": rid, "file": rel, "package": "test", "registry": "deb", "version": "1",
                     "path": f"x/{rid}.wav", "classes": classes, "labels": list(table.expand(classes)), "group": group,
                     "licence": "CC-BY-3.0", "licence_source": "test", "licence_kind": "attribution",
                     "share_alike": False, "training": True, "background": background, "constructed": False,
                     "construction": None, "components": [], "component_groups": [], "duration_s": len(audio) / SR,
                     "rms_dbfs": -20.0, "peak_dbfs": -3.0, "source_rate": SR, "channels": 1, "codec": "flac",
                     "rule": 1})

    for g in range(3):
        add(f"car{g}", ["Car"] if g else ["Vehicle horn, car horn, honking"], f"car{g}", _tone(rng, 90 + 20 * g, 3.0))
    for g in range(4):
        add(f"train{g}", ["Train"], f"train{g}", _tone(rng, 60 + 10 * g, 4.0))
    add("trainhorn", ["Train horn"], "trainhorn", _tone(rng, 311, 2.0))
    for g in range(2):
        add(f"bus{g}", ["Bus"], f"bus{g}", _tone(rng, 130 + 15 * g, 3.0))
    add("comedybus", ["Squeak"], "bus0", _tone(rng, 900, 1.0))  # shares a bus recording: never a distractor
    add("traffic-event", ["Traffic noise, roadway noise"], "road", _tone(rng, 70, 3.0))  # vehicle-like: neither
    add("scream", ["Screaming"], "scream", _tone(rng, 700, 1.0))
    add("police", ["Police car (siren)"], "police", _tone(rng, 1000, 3.0))
    for g in range(2):
        add(f"traffic{g}", ["Traffic noise, roadway noise"], f"traffic{g}",
            (rng.standard_normal(SR * 4) * 0.05).astype(np.float32), background=True)
    for g in range(3):
        add(f"rain{g}", ["Rain"], f"rain{g}", (rng.standard_normal(SR * 4) * 0.03).astype(np.float32), background=True)
        add(f"spk{g}", ["Speech"], f"speaker:{g}", _tone(rng, 120 + 30 * g, 2.0))
        add(f"bark{g}", ["Bark"], f"dog{g}", _tone(rng, 400 + 50 * g, 0.6))
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("dcase") / "set"
    return generate_dcase2017_real(out, corpus, None, n_train=24, n_validation=6, n_test=10, seed=0, devices=4,
                                   renditions=1)


def test_layout_is_read_by_the_dcase2017_reader(built):
    meta = built.metadata_dir
    assert read_class_list(meta).names == DCASE2017_CLASSES
    assert (meta / "sound_event_list_17_classes.txt").read_text().splitlines()[1] == "/m/0284vy3\t10\tTrain horn"
    splits = {s: read_split(meta, s, 0.1, 0, DCASE2017) for s in ("train", "validation", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 24, "validation": 6, "test": 10}
    assert all(in_validation(r.name, 0.1, 0) for r in splits["validation"])
    assert all(r.events for r in splits["test"] if r.labels)  # strong labels attached
    for split, folder in (("train", "train"), ("validation", "train"), ("test", "test")):
        found, missing = resolve_media(splits[split], built.media_dirs[folder])
        assert not missing and all(p.name.startswith("Y") and p.suffix == ".wav" for _, p in found)
    assert sf.info(str(found[0][1])).samplerate == SR and sf.info(str(found[0][1])).duration == 10.0


def test_coverage_table_says_real_constructed_and_missing(built):
    cov = {r["class"]: r for r in built.coverage}
    assert list(cov) == list(DCASE2017_CLASSES)
    real = {"Car", "Train", "Train horn", "Bus", "Screaming", "Police car (siren)"}
    for c, r in cov.items():
        want = "real" if c in real else "constructed" if c in CONSTRUCTED else "missing"
        assert r["status"] == want, c
    assert cov["Car"]["real_files"] == 3 and cov["Car"]["source_groups"] == 3  # the car horn counts for Car
    assert cov["Train"]["real_files"] == 5  # a train horn is a train sound too
    assert [len(cov["Train"]["groups"][s]) for s in ("train", "validation", "test")] == [3, 1, 1]
    assert cov["Screaming"]["note"].startswith("1 source group: training only")
    assert cov["Bus"]["note"] == "no validation source" and len(cov["Bus"]["groups"]["test"]) == 1
    for c in CONSTRUCTED:
        assert cov[c]["constructed_files"] == 4 and cov[c]["real_files"] == 0
    for c in ("Bicycle", "Skateboard", "Motorcycle"):
        assert cov[c]["clips"] == {"train": 0, "validation": 0, "test": 0}
    assert "| Reversing beeps | constructed | 0 + 4 | 2/1/1 |" in (built.root / "coverage.md").read_text()
    assert cov["Car"]["sources"] == {"test": 3} and cov["Car passing by"]["sources"] == {}


def test_split_by_source_group_and_constructed_marks(built):
    rows = list(csv.DictReader(open(built.root / "recordings.csv")))
    sides: dict[str, set] = {}
    for r in rows:
        sides.setdefault(r["source_group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    ids = {r["id"] for r in rows}
    assert "comedybus" not in ids and "traffic-event" not in ids  # never unlabelled vehicle sounds
    assert {"spk0", "bark0", "traffic0"} <= ids
    made = [r for r in rows if r["constructed"] == "1"]
    assert len(made) == 16 and all(r["id"].startswith("constructed:") for r in made)
    split_of = {r["id"]: r["split"] for r in rows}
    marked = 0
    for line in (built.root / "soundscapes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for e in rec["events"]:
            assert e["constructed"] == e["file"].startswith("constructed:")
            if e["bed"] and rec["split"] == "validation":  # may borrow a training bed (unlabelled ambience)
                assert split_of[e["file"]] in ("train", "validation")
            else:
                assert split_of[e["file"]] == rec["split"]
            marked += e["constructed"]
    assert marked >= 3
    recipes = [json.loads(x) for x in (built.root / "constructed.jsonl").read_text().splitlines()]
    assert {r["label"] for r in recipes} == set(CONSTRUCTED) and all(r["constructed"] for r in recipes)


def _envelope_period(x: np.ndarray, lo: float, hi: float) -> float:
    env = np.sqrt(np.convolve(x**2, np.ones(160) / 160, mode="same"))[::16]  # 1 ms steps
    env = env - env.mean()
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :]
    lags = np.arange(len(ac)) / 1000.0
    ok = (lags >= lo) & (lags <= hi)
    return float(lags[ok][np.argmax(ac[ok])])


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)])


def test_reversing_beeps_keep_their_pitch_and_cadence_outdoors():
    dev = Device("reversing-beeps", "tonal", {"f0": 1120.0, "period": 0.9, "duty": 0.5})
    rng = np.random.default_rng(0)
    for outdoors in (False, True):
        x = render(dev, 6.0, SR, rng, outdoors=outdoors).audio.astype(np.float64)
        assert _peak_hz(x) == pytest.approx(1120.0, rel=0.03)  # Doppler at <= 2 m/s shifts < 0.6 %
        assert _envelope_period(x, 0.5, 1.5) == pytest.approx(0.9, rel=0.03)
    dry = render_dry(dev, 6.0, SR, rng)
    assert np.mean(np.abs(dry) < 1e-6) == pytest.approx(0.5, abs=0.05)  # half of each period silent at the source


def test_sirens_sweep_their_documented_ranges():
    rng = np.random.default_rng(1)
    p = {"f_lo": 700.0, "f_hi": 1500.0, "wail_period": 4.0, "yelp_period": 0.3, "f1": 440.0, "f2": 585.0,
         "hilo_step": 0.6, "phaser_period": 0.1}
    wail = render_dry(Device("ambulance-siren", "wail", p), 8.0, SR, rng)
    frames = wail[: 8 * SR].reshape(-1, SR // 10)  # 100 ms frames
    track = np.array([_peak_hz(f) for f in frames])
    assert track.min() == pytest.approx(700, rel=0.06) and track.max() == pytest.approx(1500, rel=0.06)
    assert np.argmax(track[:40]) == pytest.approx(20, abs=1)  # top of the sweep half a period (2 s) in
    hilo = render_dry(Device("ambulance-siren", "hi-lo", p), 2.4, SR, rng)
    tones = [_peak_hz(hilo[int(a * SR) : int((a + 0.4) * SR)]) for a in (0.1, 0.7)]
    assert tones == pytest.approx([440, 585], rel=0.03)
    alert = Device("civil-defence-siren", "mechanical-alert",
                   {"f_max": 520.0, "dual": False, "spin_up": 3.0, "waver_period": 6.0, "rotation_period": 8.0})
    steady = render_dry(alert, 12.0, SR, np.random.default_rng(2))[10 * SR :]  # after any spin-up
    assert _peak_hz(steady) == pytest.approx(520, rel=0.02)
    for kind in ("car-alarm", "ambulance-siren", "civil-defence-siren", "reversing-beeps"):
        r = render(draw_device(kind, rng), 4.0, SR, rng)
        assert r.audio.dtype == np.float32 and len(r.audio) == 4 * SR and np.max(np.abs(r.audio)) == pytest.approx(0.9)


def test_air_absorption_follows_iso_9613():
    t = np.arange(SR) / SR
    for f, db_per_km in ((1000, 5.0), (4000, 22.9)):
        x = np.sin(2 * np.pi * f * t)
        y = air_absorption(x, SR, 1000.0)
        assert 20 * np.log10(np.std(x) / np.std(y)) == pytest.approx(db_per_km, abs=0.3)


def test_command_needs_a_corpus_for_the_dcase_vocabulary(tmp_path, capsys):
    assert main(["soundscapes", str(tmp_path / "o"), "--vocabulary", "dcase2017", "--no-progress"]) == 2
    assert "--vocabulary dcase2017 needs --corpus DIR" in capsys.readouterr().err


@pytest.mark.skipif(not (REPO / "cache" / "corpus" / "manifest.jsonl").is_file(),
                    reason="cache/corpus not built (avtag corpus build cache/corpus); CI has no corpus")
def test_real_corpus_covers_the_expected_dcase_classes():
    from avtag.data.corpus.vocabulary import join_groups, read_corpus

    items = read_corpus(REPO / "cache" / "corpus")
    groups = join_groups(items)
    found: dict[str, set] = {}
    for it in items:
        for c in dcase_labels(it):
            found.setdefault(c, set()).add(groups[it.id])
    assert set(found) == {"Fire engine, fire truck (siren)", "Police car (siren)", "Screaming", "Car",
                          "Car passing by", "Bus", "Truck", "Motorcycle", "Train"}
    assert len(found["Screaming"]) == 5 and len(found["Fire engine, fire truck (siren)"]) == 2
