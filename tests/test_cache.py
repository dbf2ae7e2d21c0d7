"""``avtag prepare``: the feature cache on a generated DCASE-layout dataset."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.synthdata import make_dcase_dataset

from avtag.config import load_config
from avtag.data.cache import CacheError, FeatureCache, cache_settings, prepare_split
from avtag.features.logmel import LogMel, LogMelConfig


@pytest.fixture()
def dataset(tmp_path):
    ds = make_dcase_dataset(tmp_path / "data", n_train=16, n_test=6, n_eval=3, video_every=4, seed=3)
    bad = ds.clips["train"][0]
    bad["path"].write_text("not audio at all\n")  # a corrupt clip: a text file under a media name
    return ds


def _config(ds, tmp_path, overrides=(), **cache):
    path = ds.config(tmp_path, cache={"workers": 0, "video": False, **cache})
    return load_config(path, list(overrides))


def test_prepare_caches_every_clip_and_lists_the_corrupt_one(dataset, tmp_path):
    config = _config(dataset, tmp_path)
    reports = {s: prepare_split(config, s, progress=False) for s in ("train", "validation")}
    bad = dataset.clips["train"][0]["name"]
    failed = {**reports["train"].failed, **reports["validation"].failed}
    assert failed.keys() == {bad}
    assert "not a readable media file" in failed[bad]
    caches = {s: FeatureCache(tmp_path / "cache", s) for s in reports}
    assert any(bad in c.failed() for c in caches.values())
    assert set(caches["train"].names()) | set(caches["validation"].names()) == \
        {c["name"] for c in dataset.clips["train"]} - {bad}
    assert not set(caches["train"].names()) & set(caches["validation"].names())
    cache = caches["train"]
    name = cache.names()[0]
    wav = cache.waveform(name)
    assert wav.dtype == np.float32 and wav.shape == (160000,)
    assert isinstance(np.load(cache.dir / "audio" / f"{name}.npy", mmap_mode="r"), np.memmap)
    # stored log-mel is what the model's own front end computes from the stored waveform
    front_end = LogMel(LogMelConfig(**cache_settings(config)["audio"]))
    import torch
    expected_mel = front_end(torch.from_numpy(wav))[0].numpy()
    assert cache.logmel(name).shape == (1001, 64)
    assert np.abs(cache.logmel(name) - expected_mel).max() < 0.05
    source = {c["name"]: c for c in dataset.clips["train"]}[name]
    assert cache.labels(name) == source["labels"]


def test_prepare_resumes_and_skips_done_clips(dataset, tmp_path):
    config = _config(dataset, tmp_path)
    first = prepare_split(config, "test", progress=False, limit=3)
    assert first.written == 3
    second = prepare_split(config, "test", progress=False)
    assert second.already_done == 3 and second.written == 3
    third = prepare_split(config, "test", progress=False)
    assert third.written == 0 and third.already_done == 6
    cache = FeatureCache(tmp_path / "cache", "test")
    assert len(cache) == 6 and len(set(cache.names())) == 6
    assert all(cache.events(n) for n in cache.names())  # strong labels travel with the clip


def test_other_settings_are_refused(dataset, tmp_path):
    prepare_split(_config(dataset, tmp_path), "eval", progress=False)
    config = _config(dataset, tmp_path, ["audio.n_mels=40"])
    with pytest.raises(CacheError, match="other settings"):
        prepare_split(config, "eval", progress=False)


def test_parallel_workers_and_video_logits(dataset, tmp_path):
    from avtag.io import load_clip
    from avtag.models.video import VideoBranch

    config = _config(dataset, tmp_path, workers=2, video=True)
    with pytest.raises(CacheError, match="no frame encoder"):  # data/ builds no network itself
        prepare_split(config, "test", progress=False)
    branch = VideoBranch().eval()
    calls = []

    def encoder(frames):
        calls.append(len(frames))
        return branch.frame_logits(frames)

    report = prepare_split(config, "test", progress=False, frame_encoder=encoder)
    assert report.written == 6 and not report.failed
    cache = FeatureCache(tmp_path / "cache", "test")
    with_video = [n for n in cache.names() if cache.entry(n)["video_frames"]]
    mp4 = [c["name"] for c in dataset.clips["test"] if c["path"].suffix == ".mp4"]
    assert sorted(with_video) == sorted(mp4) and mp4
    logits = cache.video_logits(with_video[0])
    assert logits.shape == (10, 1000) and np.isfinite(logits).all()
    # one encoder call per batch of clips (frames of several clips at once), same logits as clip by clip
    assert sum(calls) == 10 * len(mp4) and len(calls) < len(mp4) or len(mp4) == 1
    s = cache_settings(config)["video_sampling"]
    clip = load_clip(cache.entry(with_video[0])["file"], fps=s["fps"], num_frames=s["num_frames"],
                     frame_short_side=s["frame_short_side"], end=10.0)
    assert np.abs(logits - branch.frame_logits(clip.frames).numpy()).max() < 0.05


@pytest.mark.slow
def test_killed_prepare_loses_nothing(dataset, tmp_path):
    config_path = dataset.config(tmp_path, cache={"workers": 0, "video": False})
    cmd = [sys.executable, "-m", "avtag", "prepare", str(config_path), "--splits", "train", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = tmp_path / "cache" / "train" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    # decode workers hold the pipes: communicate() returns once they are gone too, and they print nothing
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
    done_before = manifest.read_text().count("\n")
    assert done_before >= 2
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    done_at_kill = int(out.stdout.split(" already cached")[0].rsplit(" ", 1)[-1])
    assert done_at_kill >= done_before
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    cache = FeatureCache(tmp_path / "cache", "train")
    for n in cache.names():
        assert cache.waveform(n).shape == (160000,)
    assert not [p for p in (tmp_path / "cache" / "train" / "audio").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- hostile clips and stale state
@pytest.fixture()
def guard():
    """Kill this test process (with a traceback) rather than let a hang stall the suite."""
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _faulty_decoder(monkeypatch, jobs_seen: list):
    """Decode workers with a real native crash (8-channel audio) and a hang; records the files decoded."""
    from helpers import faults

    import avtag.io
    from avtag.io import isolation

    monkeypatch.setattr(isolation, "TIMEOUT_BASE_S", 2.0)
    monkeypatch.setattr(isolation, "TIMEOUT_PER_MEDIA_S", 0.1)

    class Faulty(avtag.io.IsolatedDecoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, initializer=faults.crash_and_hang, **kwargs)

        def imap(self, jobs, **kwargs):
            jobs = list(jobs)
            jobs_seen.extend(str(j.path) for j in jobs)
            return super().imap(jobs, **kwargs)

    monkeypatch.setattr(avtag.io, "IsolatedDecoder", Faulty)


def _tsv_names(path):
    return [line.split("\t")[0] for line in path.read_text().splitlines()]


def test_crashing_and_hanging_clips_are_recorded_once_and_retried_on_request(dataset, tmp_path, monkeypatch, guard):
    from helpers.mediagen import tone, write_media

    clips = dataset.clips["test"]
    crash, hang = clips[0], clips[1]
    crash["path"].unlink()
    # 8 channels, audio only, in Matroska (read by PyAV, not libsndfile): SIGSEGV in the old PyAV downmix
    crash["path"] = write_media(crash["path"].with_suffix(".mkv"), seconds=10.0, audio=tone(10.0, 16000), channels=8,
                                video=False, audio_codec="pcm_s16le")
    monkeypatch.setenv("AVTAG_TEST_HANG", hang["path"].stem)
    seen: list[str] = []
    _faulty_decoder(monkeypatch, seen)
    config = _config(dataset, tmp_path, workers=2)

    t0 = time.monotonic()
    report = prepare_split(config, "test", progress=False)
    assert time.monotonic() - t0 < 60
    assert report.written == 4 and report.failed.keys() == {crash["name"], hang["name"]}
    assert "decoder crashed (signal 11, SIGSEGV)" in report.failed[crash["name"]]
    assert "timed out" in report.failed[hang["name"]]
    assert all(r.startswith(str(dataset.media_dirs["test"])) for r in report.failed.values())
    failed_tsv = tmp_path / "cache" / "test" / "failed.tsv"
    assert sorted(_tsv_names(failed_tsv)) == sorted([crash["name"], hang["name"]])

    seen.clear()  # a rerun does not try them again
    again = prepare_split(config, "test", progress=False)
    assert again.written == 0 and seen == [] and again.failed.keys() == report.failed.keys()

    monkeypatch.setenv("AVTAG_TEST_HANG", "no file has this name")  # the clips are repaired
    write_media(crash["path"], seconds=10.0, audio=tone(10.0, 16000), video=False, audio_codec="pcm_s16le")
    for _ in range(2):  # --retry-failed twice: the entries go and never come back
        retried = prepare_split(config, "test", progress=False, retry_failed=True)
        assert not retried.failed
        assert failed_tsv.read_text() == ""
    cache = FeatureCache(tmp_path / "cache", "test")
    assert len(cache) == 6 and not cache.failed()


def test_stale_failed_entries_are_dropped(dataset, tmp_path):
    config = _config(dataset, tmp_path)
    prepare_split(config, "eval", progress=False)
    split_dir = tmp_path / "cache" / "eval"
    cached = FeatureCache(tmp_path / "cache", "eval").names()
    # an old failed.tsv: a clip that is cached since, listed twice, and a duplicate of a real failure
    (split_dir / "failed.tsv").write_text(f"{cached[0]}\told reason\n{cached[0]}\told reason\nghost\tx\nghost\ty\n")
    assert FeatureCache(tmp_path / "cache", "eval").failed() == {"ghost": "y"}  # readers see only what is failed now
    prepare_split(config, "eval", progress=False)
    assert (split_dir / "failed.tsv").read_text() == "ghost\ty\n"


def test_half_written_manifest_line_is_recovered_in_one_rerun(dataset, tmp_path):
    config = _config(dataset, tmp_path)
    prepare_split(config, "test", progress=False, limit=3)
    manifest = tmp_path / "cache" / "test" / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed while writing line 3
    report = prepare_split(config, "test", progress=False)
    assert report.already_done == 2 and report.written == 4
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]  # every line parses
    assert len(entries) == 6 == len({e["name"] for e in entries})


def test_full_disk_is_one_error_and_resumable(dataset, tmp_path, monkeypatch):
    import errno

    config = _config(dataset, tmp_path)
    split_dir = tmp_path / "cache" / "test"
    split_dir.joinpath("audio").mkdir(parents=True)
    stale = split_dir / "audio" / ".Yold.npy.999999999.tmp"  # left by a run that was killed
    stale.write_bytes(b"partial")
    real_save, calls = np.save, []

    def save(file, array, *args, **kwargs):  # the disk fills up during the 4th array
        calls.append(1)
        if len(calls) == 4:
            file.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(CacheError) as err:
        prepare_split(config, "test", progress=False)
    message = str(err.value)
    assert message.startswith(str(split_dir)) and "no space left on device" in message and "\n" not in message
    assert not list(split_dir.rglob("*.tmp")), "temporary files must not outlive the run"
    monkeypatch.setattr(np, "save", real_save)
    report = prepare_split(config, "test", progress=False)
    assert report.already_done >= 1 and report.already_done + report.written == 6
    assert len(FeatureCache(tmp_path / "cache", "test")) == 6


def test_damaged_cache_entries_are_one_line_skipped_in_training_and_redone_by_prepare(dataset, tmp_path):
    """A cache .npy cut short, pickled, of another shape or not an array at all (a disk filled up, a
    hand-edited folder) is named in one line; training leaves the clip out and prepare redoes it."""
    import pickle

    from avtag.training.datamodule import AudioDataModule

    config = _config(dataset, tmp_path, logmel=False)
    prepare_split(config, "test", progress=False)
    cache = FeatureCache(tmp_path / "cache", "test")
    names = cache.names()
    audio = cache.dir / "audio"
    whole = (audio / f"{names[0]}.npy").read_bytes()
    (audio / f"{names[0]}.npy").write_bytes(whole[:90])  # header cut
    (audio / f"{names[1]}.npy").write_bytes(whole[: len(whole) // 2])  # data cut: mmap longer than the file
    with open(audio / f"{names[2]}.npy", "wb") as f:
        np.save(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(audio / f"{names[3]}.npy", np.zeros((2, 3), np.int16))
    (audio / f"{names[4]}.npy").write_bytes(pickle.dumps([1, 2, 3]))
    for name in names[:5]:
        with pytest.raises(CacheError) as err:
            cache.waveform(name)
        line = str(err.value)
        assert "\n" not in line and f"{name}.npy" in line and "damaged cache entry" in line and len(line) < 400
    assert set(cache.damaged()) == set(names[:5])
    assert cache.waveform(names[5]).shape == (160000,)
    # a manifest line that is JSON but no clip entry is not a clip (it used to be a KeyError)
    with open(cache.dir / "manifest.jsonl", "a") as f:
        f.write('[1, 2]\n{"labels": []}\n')
    assert FeatureCache(tmp_path / "cache", "test").names() == names

    # training leaves the damaged clips out, naming them, instead of dying in a loader worker
    data = AudioDataModule.from_config(load_config(
        dataset.config(tmp_path, cache={"workers": 0, "video": False, "logmel": False},
                       training={"train_split": "test", "val_split": "test"})))
    data.setup()
    assert set(data.datasets["train"].names) == {names[5]}
    assert set(data.skipped["train"]) == set(names[:5])

    report = prepare_split(config, "test", progress=False)
    assert report.written == 5
    redone = FeatureCache(tmp_path / "cache", "test")
    assert not redone.damaged() and sorted(redone.names()) == sorted(names)
    assert all(redone.waveform(n).shape == (160000,) for n in names)
