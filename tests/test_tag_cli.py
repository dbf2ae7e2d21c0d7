"""``avtag tag`` end to end: one subprocess over every real clip in ../shared/clips (plus an
audio-only recording, a generated video without sound and a broken file), one with a real
(untrained) audio checkpoint, and the zero-shot Tagger and output formats in process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from helpers.mediagen import write_media

from avtag.labels import DCASE2017

RACE_CAR = "22olCB3wQaA.mp4"
AIRCRAFT = "video_with_failing_audio.mp4"
GUITAR = "-2RPPODqLy4_30.000_40.000.mp4"
VEHICLES = {"Car", "Car passing by", "Bus", "Truck", "Motorcycle", "Train", "Ambulance (siren)",
            "Fire engine, fire truck (siren)", "Police car (siren)"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocess environment: the session's avtag cache (never ~/.cache), offline HF."""
    cache = tmp_path_factory.getbasetemp() / "avtag_cache"
    old = os.environ.get("AVTAG_CACHE")
    os.environ["AVTAG_CACHE"] = str(cache)
    yield {**os.environ, "AVTAG_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "AVTAG_DEBUG": ""}
    if old is None:
        os.environ.pop("AVTAG_CACHE", None)
    else:
        os.environ["AVTAG_CACHE"] = old


@pytest.fixture(scope="module")
def extra_media(tmp_path_factory) -> dict[str, Path]:
    """A video without sound (frames of a real cat photo) and a file that is not media."""
    from skimage import data

    folder = tmp_path_factory.mktemp("media")
    cat = np.ascontiguousarray(data.chelsea()[:, :448])
    silent = write_media(folder / "silent_cat.mp4", seconds=3.0, audio=None, fps=5, size=(448, 300),
                         frame_fn=lambda i: np.roll(cat, 2 * i, axis=1))
    broken = folder / "broken.mp4"
    broken.write_text("this is not a video\n")
    return {"silent": silent, "broken": broken}


def run_tag(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avtag", "tag", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def records(stdout: str, failed: dict | None = None) -> dict[str, dict]:
    """The tagged files' records of a ``--format json`` run; ``{file, error}`` lines go to ``failed``."""
    out = {}
    for line in stdout.splitlines():
        rec = json.loads(line)  # every stdout line is one JSON object
        if "error" in rec:
            assert set(rec) == {"file", "error"} and rec["error"], rec
            (failed if failed is not None else {})[Path(rec["file"]).name] = rec["error"]
        else:
            out[Path(rec["file"]).name] = rec
    return out


def check_record(rec: dict) -> None:
    assert {"file", "tags", "objects", "notes", "branches"} <= rec.keys()
    scores = [t["score"] for t in rec["tags"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for t in rec["tags"]:
        assert t["label"] in DCASE2017 and {"audio_score", "video_score"} <= t.keys()
    assert 1 <= len(rec["objects"]) <= 5
    assert all(0.0 <= o["probability"] <= 1.0 and isinstance(o["label"], str) for o in rec["objects"])


@pytest.mark.slow
def test_tag_every_real_clip_one_process(env, extra_media):
    clips_dir = shared_path("clips")
    clips = sorted(p for p in clips_dir.iterdir() if p.suffix in (".mp4", ".webm"))
    assert len(clips) >= 10
    audio_only = shared_path("sounds", "train.wav")
    # the video branch alone, zero-shot on the 17 DCASE 2017 classes (the default audio model is
    # exercised on the same clips in test_default_model.py)
    proc = run_tag([*clips, audio_only, extra_media["silent"], extra_media["broken"], "--format", "json",
                    "--only", "video", "--labels", "dcase2017"], env)
    assert proc.returncode == 1, proc.stderr  # some files failed, the rest were tagged
    assert "Traceback" not in proc.stderr
    failed = {}
    recs = records(proc.stdout, failed)
    assert set(recs) == {c.name for c in clips} | {"silent_cat.mp4"}
    assert set(failed) == {extra_media["broken"].name, audio_only.name}  # {file, error}, as the help says
    for rec in recs.values():
        check_record(rec)
        # the audio branch is switched off: the video branch runs alone and every record says so
        assert rec["branches"] == {"audio": False, "video": True}
        assert any("audio branch off" in n for n in rec["notes"])
        assert all(t["audio_score"] is None and t["video_score"] == t["score"] for t in rec["tags"])
    assert "audio branch off" in proc.stderr  # said once up front, too
    race = recs[RACE_CAR]
    assert race["tags"] and race["tags"][0]["label"] in VEHICLES, race["tags"]
    assert {"Car", "Car passing by"} & {t["label"] for t in race["tags"][:3]}
    assert {"racer", "sports car", "go-kart", "minivan"} & {o["label"] for o in race["objects"]}
    assert {"airliner", "warplane"} & {o["label"] for o in recs[AIRCRAFT]["objects"]}
    assert recs[GUITAR]["objects"][0]["label"] == "acoustic guitar" and recs[GUITAR]["tags"] == []
    assert recs["silent_cat.mp4"]["objects"][0]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("avtag: error:")]
    assert len(errors) == 2, proc.stderr
    assert any("broken.mp4" in e and "not a readable media file" in e for e in errors)
    assert any("train.wav" in e and "video branch off: no video stream" in e for e in errors)
    assert "2 of 16 file(s) failed" in proc.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real audio-model file in the ``avtag train`` export format (untrained weights)."""
    from avtag.config import load_config
    from avtag.models.audio import build_audio_model
    from avtag.models.weights import save_audio_model

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "dcase2017.yaml")
    model = build_audio_model(config.model, config.audio, DCASE2017.names)
    return save_audio_model(model.state_dict(), config, tmp_path_factory.mktemp("ckpt") / "audio_model.pt")


@pytest.mark.slow
def test_tag_with_audio_checkpoint_and_segments(env, extra_media, checkpoint):
    race = shared_path("clips", RACE_CAR)
    audio_only = shared_path("sounds", "train.wav")
    proc = run_tag([race, audio_only, extra_media["silent"], "--checkpoint", checkpoint, "--format", "json",
                    "--segments", "--top-k", "0", "--threshold", "0", "--labels", "Car;Train;Dog"], env)
    assert proc.returncode == 0, proc.stderr
    recs = records(proc.stdout)
    both, audio, silent = recs[RACE_CAR], recs["train.wav"], recs["silent_cat.mp4"]
    assert both["branches"] == {"audio": True, "video": True}
    assert [t["label"] for t in both["tags"]] and {t["label"] for t in both["tags"]} == {"Car", "Train", "Dog"}
    by = {t["label"]: t for t in both["tags"]}
    assert by["Car"]["audio_score"] is not None and by["Car"]["video_score"] is not None
    a, v = by["Car"]["audio_score"], by["Car"]["video_score"]
    assert by["Car"]["score"] == pytest.approx(a + v - a * v, abs=2e-4)  # the default late fusion: noisy-OR
    assert by["Dog"]["audio_score"] is None and by["Dog"]["score"] == by["Dog"]["video_score"]  # zero-shot label
    assert any("does not know 1 of the labels" in n for n in both["notes"])
    assert isinstance(both["segments"], list)
    for seg in both["segments"]:
        assert seg["label"] in {"Car", "Train"} and 0 <= seg["onset"] < seg["offset"] <= both["duration"] + 0.05
    assert audio["branches"] == {"audio": True, "video": False} and audio["objects"] == []
    assert "video branch off: no video stream" in audio["notes"]
    assert all(t["video_score"] is None and t["audio_score"] is not None for t in audio["tags"] if t["label"] != "Dog")
    assert silent["branches"] == {"audio": False, "video": True}
    assert "audio branch off: no audio track" in silent["notes"]
    assert all(t["audio_score"] is None for t in silent["tags"]) and silent["segments"] == []


@pytest.fixture(scope="module")
def zero_shot(env):
    from avtag.inference.tagger import Tagger

    return Tagger.from_config(labels="Dog;Car;Aircraft;Music", use_audio=False)  # the zero-shot video branch alone


@pytest.mark.parametrize("clip, label", [("skateboarding_dog.mp4", "Dog"), (AIRCRAFT, "Aircraft")])
def test_zero_shot_labels(zero_shot, clip, label):
    result = zero_shot.tag_file(shared_path("clips", clip), top_k=1, threshold=0.0)
    assert result.tags[0].label == label and result.tags[0].video_score > 0.3


def test_formats(zero_shot):
    from rich.console import Console

    from avtag.inference.formats import format_json, format_tsv, render_table, tsv_header

    result = zero_shot.tag_file(shared_path("clips", AIRCRAFT), top_k=0, threshold=0.0)
    assert len(result.tags) == 4 and result.segments is None
    rec = json.loads(format_json(result))
    assert "segments" not in rec and rec["tags"][0]["label"] == "Aircraft" and rec["tags"][0]["audio_score"] is None
    rows = [r.split("\t") for r in format_tsv(result)]
    assert tsv_header().split("\t")[:4] == ["file", "kind", "label", "score"]
    assert len(rows) == 4 and all(len(r) == 8 and r[1] == "tag" and r[4] == "" for r in rows)
    console = Console(record=True, width=120)
    render_table(result, console)
    text = console.export_text()
    assert "Aircraft" in text and "objects seen:" in text and "audio branch off" in text


def test_no_media_found_is_one_line_error(env, tmp_path):
    proc = run_tag([tmp_path], env)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("avtag: error: no media files found")


def test_long_file_is_tagged_window_by_window(env, checkpoint):
    """Above tag.long_file_s the file is streamed in windows; events that touch across
    window boundaries are joined, and times stay in file seconds."""
    from avtag.config import load_config
    from avtag.inference.tagger import Tagger

    config = load_config(None, ["tag.long_file_s=5.0", "tag.window_s=4.0", "tag.segment_threshold=0.0",
                                "tag.min_duration_s=0.0"])
    tagger = Tagger.from_checkpoint(checkpoint, config=config)
    result = tagger.tag_file(shared_path("clips", RACE_CAR), segments=True, top_k=0, threshold=0.0)
    assert result.branches == {"audio": True, "video": True}
    assert len(result.tags) == len(DCASE2017)
    # threshold 0: every class is active throughout, as one event per class from 0 to the end
    assert sorted(lab for lab, _, _ in result.segments) == sorted(DCASE2017.names)
    for _, onset, offset in result.segments:
        assert onset == 0.0 and offset == pytest.approx(result.duration, abs=0.1)
    assert result.scores["Car"].video_score > 0.3  # frames from all three windows were seen


@pytest.mark.slow
def test_fast_path_changes_no_result(env, monkeypatch):
    """Both fast engines against the plain PyTorch modules of the same model, on every real clip:
    ONNX Runtime on the tagger's export (the default on a CPU when the ``fast`` extra is installed)
    and PyTorch with batch norms folded + channels-last (``AVTAG_ONNX=0``). The same top tags,
    scores within 1e-3, the same events."""
    from avtag.inference.tagger import Tagger

    clips = sorted(p for p in shared_path("clips").iterdir() if p.suffix in (".mp4", ".webm"))
    plain = Tagger.from_pretrained("default", device="cpu", fast=False)
    fast = [Tagger.from_pretrained("default", device="cpu")]
    monkeypatch.setenv("AVTAG_ONNX", "0")
    fast.append(Tagger.from_pretrained("default", device="cpu"))
    assert fast[1].engine.name == "pytorch" and plain.engine.name == "pytorch"
    for clip in clips:
        b = plain.tag_file(clip, top_k=0, threshold=0.0, segments=True)
        for tagger in fast:
            a = tagger.tag_file(clip, top_k=0, threshold=0.0, segments=True)
            assert [t.label for t in a.tags[:3]] == [t.label for t in b.tags[:3]], (clip.name, tagger.engine.name)
            assert a.segments == b.segments, (clip.name, tagger.engine.name)
            for name, tag in a.scores.items():
                other = b.scores[name]
                assert tag.score == pytest.approx(other.score, abs=1e-3), (clip.name, name)
                for x, y in ((tag.audio_score, other.audio_score), (tag.video_score, other.video_score)):
                    assert (x is None) == (y is None) and (x is None or x == pytest.approx(y, abs=1e-3))


def test_labels_longer_than_a_file_name_are_names(tmp_path):
    """``--labels`` with many names (longer than the OS allows a file name) is a list, not a crash."""
    from avtag.inference.tagger import parse_labels

    names = [f"Sound number {i}" for i in range(40)]
    assert parse_labels(";".join(names)).names == tuple(names)
    assert parse_labels("Dog;Cat\x00").names == ("Dog", "Cat\x00")  # a NUL byte is no path either
    long = ";".join(["Speech", "Music", *(f"Class {i} with a long AudioSet-style name" for i in range(20))])
    out = subprocess.run([sys.executable, "-m", "avtag", "labelmap", "--labels", long, "--top", "1", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr


def test_a_vocabulary_too_large_to_map_is_refused_at_once(tmp_path):
    """100,000 names ran for two minutes, then failed allocating 40 GB (an internal error)."""
    from avtag.inference.tagger import TagError, parse_labels
    from avtag.labels import MAX_CLASSES, LabelError, get_vocabulary

    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"c{i}" for i in range(100_000)))
    with pytest.raises(TagError, match=r"many\.txt: 100000 classes, at most 5000"):
        parse_labels(str(many))
    with pytest.raises(LabelError, match="at most"):
        get_vocabulary([f"c{i}" for i in range(MAX_CLASSES + 1)])
    assert len(get_vocabulary([f"c{i}" for i in range(MAX_CLASSES)])) == MAX_CLASSES
    out = subprocess.run([sys.executable, "-m", "avtag", "tag", "--labels", str(many), "x.mp4"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("avtag: error: --labels"), out.stderr


@pytest.mark.parametrize("override, problem", [
    ("tag.window_s=0", "tag.window_s must be > 0"), ("tag.long_file_s=-1", "tag.long_file_s must be > 0"),
    ("tag.batch_clips=0", "tag.batch_clips must be >= 1"), ("tag.decode_workers=-2", "tag.decode_workers must be >= 0"),
    ("tag.top_k=-1", "tag.top_k must be >= 0"),
    ("tag.segment_threshold=5", r"tag.segment_threshold must be in \[0, 1\]"),
    ("tag.min_duration_s=.nan", "tag.min_duration_s must be >= 0"),
    ("evaluate.frame_threshold=2", r"evaluate.frame_threshold must be in \[0, 1\]"),
])
def test_tag_settings_are_checked_at_config_load(override, problem):
    """A zero window used to blame the media file ("window and hop must be positive") after decoding it."""
    from avtag.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=problem):
        load_config(None, [override])
