"""``avtag prepare``: the feature cache on a generated DCASE-layout dataset."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from avtag.config import load_config
from avtag.data.cache import CacheError, FeatureCache, prepare_split
from avtag.features.logmel import LogMel, LogMelConfig
from synthdata import make_dcase_dataset


@pytest.fixture()
def dataset(tmp_path):
    ds = make_dcase_dataset(tmp_path / "data", n_train=16, n_test=6, n_eval=3, video_every=4, seed=3)
    bad = ds.clips["train"][0]
    bad["path"].write_text("not audio at all\n")  # a corrupt clip: a text file under a media name
    return ds


def _config(ds, tmp_path, **cache):
    path = ds.config(tmp_path, cache={"workers": 0, "video": False, **cache})
    return load_config(path)


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
    front_end = LogMel(LogMelConfig.from_dict(config["audio"]))
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
    config = _config(dataset, tmp_path)
    config["audio"]["n_mels"] = 40
    with pytest.raises(CacheError, match="other settings"):
        prepare_split(config, "eval", progress=False)


def test_parallel_workers_and_video_logits(dataset, tmp_path):
    config = _config(dataset, tmp_path, workers=2, video=True)
    report = prepare_split(config, "test", progress=False)
    assert report.written == 6 and not report.failed
    cache = FeatureCache(tmp_path / "cache", "test")
    with_video = [n for n in cache.names() if cache.entry(n)["video_frames"]]
    mp4 = [c["name"] for c in dataset.clips["test"] if c["path"].suffix == ".mp4"]
    assert sorted(with_video) == sorted(mp4) and mp4
    logits = cache.video_logits(with_video[0])
    assert logits.shape == (10, 1000) and np.isfinite(logits).all()


def test_killed_prepare_loses_nothing(dataset, tmp_path):
    config_path = dataset.config(tmp_path, cache={"workers": 0, "video": False})
    cmd = [sys.executable, "-m", "avtag", "prepare", str(config_path), "--splits", "train", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = tmp_path / "cache" / "train" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
