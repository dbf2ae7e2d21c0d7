"""The Python API at the top level: ``avtag.Tagger`` on NumPy arrays and files, ``TagResult``.

Runs on the demo clip shipped in ``assets/`` (no ../shared needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import avtag

DEMO = Path(__file__).resolve().parents[1] / "assets" / "big_buck_bunny_10s.webm"


@pytest.fixture(scope="module")
def tagger():
    return avtag.Tagger.from_pretrained("default", device="cpu")


@pytest.fixture(scope="module")
def clip():
    return avtag.load_clip(DEMO, sample_rate=44100, fps=1.0, frame_short_side=256)


def test_top_level_names_are_lazy_and_documented():
    assert avtag.__version__ and issubclass(avtag.AvtagError, Exception)
    for name in ("Tagger", "TagResult", "AudioVisualTagger", "load_clip", "load_config", "WEIGHTS"):
        assert getattr(avtag, name).__doc__, name
    with pytest.raises(AttributeError):
        avtag.NotAThing  # noqa: B018


def test_arrays_give_the_same_tags_as_the_file(tagger, clip):
    from_file = tagger.tag_file(DEMO, top_k=0, threshold=0.0)
    at_16k = avtag.load_clip(DEMO, sample_rate=16000, video=False)
    from_arrays = tagger(at_16k.waveform, sample_rate=16000, frames=clip.frames, frame_times=clip.frame_times,
                         top_k=0, threshold=0.0)
    assert from_arrays.classes == tagger.classes == from_file.classes  # names travel with the scores
    for name, tag in from_file.scores.items():  # the same samples and frames: the same scores
        assert from_arrays.scores[name].video_score == pytest.approx(tag.video_score, abs=1e-4)
        assert from_arrays.scores[name].audio_score == pytest.approx(tag.audio_score, abs=1e-4)
    assert from_arrays.branches == {"audio": True, "video": True} and from_arrays.file is None
    # 44.1 kHz in: resampled inside (torchaudio) to the model's rate, close to the decoder's own resampling
    resampled = tagger(clip.waveform, sample_rate=44100, top_k=0, threshold=0.0)
    assert resampled.top(2)[0].label in {t.label for t in from_file.top(3)}
    import torch
    import torchaudio

    native = avtag.load_clip(DEMO, sample_rate=44100, video=False, backend="pyav").waveform
    swr = avtag.load_clip(DEMO, sample_rate=16000, video=False, backend="pyav").waveform  # FFmpeg's resampler
    ours = torchaudio.functional.resample(torch.from_numpy(native), 44100, 16000).numpy()
    n = min(len(ours), len(swr))
    residual = ours[:n] - swr[:n]
    assert 10 * np.log10(np.sum(swr[:n] ** 2) / np.sum(residual**2)) > 30  # SNR > 30 dB


def test_one_branch_at_a_time_and_stereo(tagger, clip):
    audio_only = tagger(np.stack([clip.waveform, clip.waveform]), sample_rate=44100)  # (channels, samples)
    assert audio_only.branches == {"audio": True, "video": False}
    assert all(t.video_score is None for t in audio_only.scores.values())
    video_only = tagger(frames=clip.frames)
    assert video_only.branches == {"audio": False, "video": True} and video_only.objects
    assert all(t.audio_score is None and t.score == t.video_score for t in video_only.scores.values())


def test_result_top_and_to_dict(tagger, clip):
    result = tagger(clip.waveform, sample_rate=44100, frames=clip.frames, segments=True)
    best = result.top(k=2)
    assert len(best) == 2 and best[0].score >= best[1].score
    assert all(t.score >= 0.3 for t in result.top(k=0, threshold=0.3))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["file"] is None and d["tags"] and isinstance(d["segments"], list)
    assert {"label", "score", "audio_score", "video_score"} <= d["tags"][0].keys()


def test_bad_arrays_are_one_line_errors(tagger, clip):
    from avtag.inference.tagger import TagError

    with pytest.raises(TagError, match="sample_rate"):
        tagger(clip.waveform)
    with pytest.raises(TagError, match="uint8"):
        tagger(frames=clip.frames.astype(np.float32))
    with pytest.raises(TagError, match="nothing to tag"):
        tagger()
    result = tagger(np.zeros(100, np.float32), sample_rate=16000, frames=clip.frames)  # 6 ms: too short for audio
    assert result.branches == {"audio": False, "video": True}
    assert any("too short" in n for n in result.notes)
    wave = clip.waveform[:44100 * 3]
    for bad, problem in ((np.full(32000, np.nan, np.float32), "NaN or infinite"),
                         (np.array(["a", "b"]), "must hold numbers"), (np.zeros(9, bool), "must hold numbers")):
        with pytest.raises(TagError, match=problem):
            tagger(bad, sample_rate=16000)
    for rate in (float("nan"), -1, "44100", float("inf"), 1, True, 1e30):  # 1 Hz: 2 GB; 1e30: soxr never ended
        with pytest.raises(TagError, match=r"sample_rate in Hz, 1000\.\.768000"):
            tagger(wave, sample_rate=rate)
    with pytest.raises(TagError, match=r"\(channels, samples\) expected .* pass waveform\.T"):
        tagger(np.zeros((32000, 2), np.float32), sample_rate=16000)
    with pytest.raises(TagError, match="uint8"):
        tagger(frames=np.zeros((2, 0, 0, 3), np.uint8))  # ZeroDivisionError in the frame crop
    with pytest.raises(TagError, match="one time per frame"):
        tagger(frames=clip.frames, frame_times=clip.frame_times[:1])
    for kw, problem in (({"top_k": -1}, "top_k must be a whole number"), ({"threshold": 1.5}, "threshold must lie"),
                        ({"threshold": float("nan")}, "threshold must lie")):
        with pytest.raises(TagError, match=problem):
            tagger(wave, sample_rate=44100, **kw)
        with pytest.raises(TagError, match=problem):
            tagger.tag_file(DEMO, **kw)
    with pytest.raises(ValueError, match="k must be >= 0"):
        tagger(wave, sample_rate=44100).top(k=-1)
    for threshold in (float("nan"), -1.0, 2.0):  # NaN returned [] silently
        with pytest.raises(ValueError, match="threshold must lie in"):
            tagger(wave, sample_rate=44100).top(threshold=threshold)


def test_tag_files_takes_one_path_as_one_file(tagger):
    """A str is a path, not a sequence of one-letter paths."""
    assert [Path(r.file).name for r in tagger.tag_files(str(DEMO))] == [Path(DEMO).name]


def test_integer_pcm_is_scaled_by_its_type(tagger, clip):
    """int16 / int32 / uint8 audio (as soundfile or scipy read it) tags like the same float samples."""
    wave = np.clip(clip.waveform[:44100 * 4], -1, 1 - 2 ** -15)
    as_float = tagger(wave, sample_rate=44100).scores
    for pcm, back in (((wave * 32768).astype(np.int16), lambda p: p / 32768),
                      ((wave * 2 ** 31).astype(np.int32), lambda p: p / 2 ** 31),
                      (np.round(wave * 127 + 128).astype(np.uint8), lambda p: (p.astype(float) - 128) / 128)):
        got = tagger(pcm, sample_rate=44100).scores
        want = tagger(back(pcm).astype(np.float32), sample_rate=44100).scores
        assert all(got[c].score == pytest.approx(want[c].score, abs=1e-4) for c in got), pcm.dtype
    int16 = tagger((wave * 32768).astype(np.int16), sample_rate=44100).scores
    assert all(int16[c].score == pytest.approx(as_float[c].score, abs=0.02) for c in int16)


def test_tag_files_returns_failures_as_values(tagger, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    results = list(tagger.tag_files([bad, DEMO], top_k=3))
    assert [r.ok for r in results] == [False, True]
    assert results[0].error.startswith(str(bad)) and "\n" not in results[0].error
    assert results[0].to_dict() == {"file": str(bad), "error": results[0].error}
    assert len(results[1].tags) <= 3


@pytest.mark.slow
def test_a_script_without_a_main_guard_works(tmp_path):
    """Decode workers are spawned without re-running the caller's script (no ``if __name__`` needed)."""
    import subprocess
    import sys

    script = tmp_path / "tag_it.py"
    script.write_text("import avtag\n"
                      "print('script body ran')\n"
                      f"r = avtag.Tagger.from_pretrained('default', device='cpu').tag_file({str(DEMO)!r}, top_k=1)\n"
                      "print('tagged', r.tags[0].label)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("script body ran") == 1 and "tagged " in proc.stdout


def test_tag_files_gives_one_result_per_path_in_order(tagger, tmp_path):
    """More files than a frame batch (tag.batch_clips), a failure and a long file among them."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    paths = [DEMO, DEMO, bad, DEMO, DEMO, DEMO, DEMO]
    results = list(tagger.tag_files(paths, top_k=1))
    assert [r.file for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, True, False, True, True, True, True]
    scores = {round(r.tags[0].score, 5) for r in results if r.ok}
    assert len(scores) == 1  # the same clip gives the same result wherever it sits in a batch
