"""Media I/O on real clips and on a generated corpus of good and bad files."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tracemalloc
import wave

import numpy as np
import pytest
from conftest import SHARED
from helpers.mediagen import tone, write_media, write_wav

from avtag.io import MediaError, iter_windows, load_clip, probe, sample_times

SR = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    a48 = tone(3.0, 48000, 440)
    files = {
        "mp4": write_media(d / "clip.mp4", seconds=3, audio=a48, sample_rate=48000),
        "mkv": write_media(d / "clip.mkv", seconds=3, audio=a48, sample_rate=48000),
        "avi": write_media(d / "clip.avi", seconds=3, audio=a48, sample_rate=48000, audio_codec="mp3"),
        "webm": write_media(d / "clip.webm", seconds=3, audio=a48, sample_rate=48000, audio_codec="libopus",
                            video_codec="libvpx"),
        "wav8k": write_wav(d / "tone8k.wav", tone(3.0, 8000, 440), 8000),
        "flac": write_media(d / "tone.flac", seconds=3, audio=a48, sample_rate=48000, video=False, audio_codec="flac"),
        "mp3": write_media(d / "tone.mp3", seconds=3, audio=a48, sample_rate=48000, video=False, audio_codec="mp3"),
        "six": write_media(d / "six.mp4", seconds=3, audio=a48, sample_rate=48000, channels=6),
        "noaudio": write_media(d / "noaudio.mp4", seconds=3, audio=None),
        "audioonly": write_media(d / "audioonly.m4a", seconds=3, audio=a48, sample_rate=48000, video=False),
        "zero_audio": write_media(d / "zero_audio.mp4", seconds=2, audio=np.zeros(0, np.float32), sample_rate=48000),
    }
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    data = files["mp4"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    files.update(empty=d / "empty.mp4", text=d / "text.mp4", truncated=d / "truncated.mp4", missing=d / "nope.mp4")
    return files


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi", "webm"])
def test_video_containers_give_audio_and_frames(corpus, kind):
    clip = load_clip(corpus[kind], sample_rate=SR, fps=2, frame_short_side=32)
    assert clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
    assert abs(clip.waveform.size / SR - 3.0) < 0.1
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[1:] == (32, 43, 3)
    assert len(clip.frames) == 6 and np.all(np.diff(clip.frame_times) > 0)
    # the 440 Hz tone survives decoding and resampling
    spectrum = np.abs(np.fft.rfft(clip.waveform[SR // 2: SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2
    assert clip.warnings == []


@pytest.mark.parametrize("kind,rate", [("wav8k", 8000), ("flac", 48000), ("mp3", 48000)])
def test_audio_files_are_resampled(corpus, kind, rate):
    info = probe(corpus[kind])
    assert info.has_audio and not info.has_video and info.sample_rate == rate
    clip = load_clip(corpus[kind], sample_rate=SR)
    assert clip.frames is None and "no video stream" in clip.warnings
    assert abs(clip.waveform.size / SR - 3.0) < 0.1
    spectrum = np.abs(np.fft.rfft(clip.waveform[SR // 2: SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2


def test_six_channel_audio_is_mixed_to_mono_without_clipping(corpus):
    assert probe(corpus["six"]).channels == 6
    clip = load_clip(corpus["six"], video=False)
    assert np.isfinite(clip.waveform).all()
    assert 0.2 < np.abs(clip.waveform).max() < 0.6  # the channel mean of a 0.3 tone, not a sum


def _channel_tones(n: int, rate: int, seconds: float = 2.0):
    """``(samples, n)`` with a different frequency (Hz) and amplitude on every channel."""
    freqs = 250.0 + 375.0 * np.arange(n)  # all below 8 kHz, the Nyquist of the 16 kHz output
    amps = 0.9 * (0.5 + 0.5 * np.arange(n) / max(n - 1, 1))
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps, strict=True)], axis=1), freqs, amps


def _amplitudes(wave: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    seg = wave[SR // 2 : SR // 2 + SR]  # 1 s: 1 Hz bins, every frequency on a bin
    return (np.abs(np.fft.rfft(seg)) * 2 / seg.size)[freqs.astype(int)]


@pytest.mark.parametrize("channels,rate,codec", [
    (1, 8000, "wav"), (2, 44100, "wav"), (3, 22050, "wav"), (6, 48000, "wav"), (8, 48000, "wav"),
    (12, 96000, "wav"), (16, 192000, "wav"), (8, 192000, "flac"),  # FLAC stops at 8 channels
])
def test_any_channel_count_is_mixed_to_the_channel_mean(tmp_path, channels, rate, codec):
    """Every channel counts 1/N: each channel's own tone comes out at its amplitude / N (within 1 %).

    8 or more channels used to kill the process (SIGSEGV in PyAV's planar to_ndarray)."""
    x, freqs, amps = _channel_tones(channels, rate)
    path = write_wav(tmp_path / f"c{channels}.wav", x, rate)
    if codec == "flac":
        flac = tmp_path / f"c{channels}.flac"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-c:a", "flac", str(flac)], check=True)
        path = flac
    info = probe(path)
    assert (info.channels, info.sample_rate) == (channels, rate)
    wave = load_clip(path, sample_rate=SR).waveform
    assert abs(wave.size - 2 * SR) <= 2
    np.testing.assert_allclose(_amplitudes(wave, freqs), np.round(amps * 32767) / 32767 / channels, rtol=0.01)


def test_96khz_7_1_aac_video(tmp_path):
    """A 96 kHz 7.1 AAC track (FFmpeg puts a mono source on the centre channel): the tone comes out at 1/8."""
    path = tmp_path / "surround.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=96000", "-t", "2", "-c:v", "mpeg4", "-c:a", "aac",
                    "-ac", "8", "-channel_layout", "7.1", str(path)], check=True)
    info = probe(path)
    assert (info.channels, info.sample_rate) == (8, 96000)
    clip = load_clip(path, sample_rate=SR, fps=2)
    assert clip.frames is not None and len(clip.frames) == 4
    # lavfi's sine has amplitude 1/8; on one channel of eight it is 1/64 of full scale in the mix
    np.testing.assert_allclose(_amplitudes(clip.waveform, np.array([440.0])), [1 / 64], rtol=0.01)


def test_decoder_logs_do_not_reach_stderr(tmp_path):
    """decord's FFmpeg av_log and its C++ logger write to fd 2 directly; none of it may show."""
    good = write_media(tmp_path / "good.mp4", seconds=3, audio=tone(3.0, 48000), sample_rate=48000)
    fast = tmp_path / "fast.mp4"  # moov first, so a truncated copy opens and fails while decoding
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(good), "-c", "copy", "-movflags", "+faststart", str(fast)],
                   check=True)
    data = fast.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: int(len(data) * 0.6)])
    broken = bytearray(data)
    rng = np.random.default_rng(0)
    for i in rng.integers(len(broken) // 4, len(broken), 400):  # damage the media data, keep the headers
        broken[i] = rng.integers(0, 256)
    (tmp_path / "broken.mp4").write_bytes(bytes(broken))
    code = ("import sys\nfrom avtag.io import load_clip, MediaError\nfor p in sys.argv[1:]:\n"
            "    try:\n        load_clip(p)\n    except MediaError:\n        pass\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "truncated.mp4"), str(tmp_path / "broken.mp4")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == ""


def test_video_without_audio_is_degraded_not_failed(corpus):
    clip = load_clip(corpus["noaudio"])
    assert clip.waveform is None and clip.frames is not None
    assert "no audio track" in clip.warnings


def test_audio_only_container(corpus):
    clip = load_clip(corpus["audioonly"])
    assert clip.frames is None and clip.waveform is not None and "no video stream" in clip.warnings


def test_zero_length_audio_stream(corpus):
    clip = load_clip(corpus["zero_audio"])
    assert clip.frames is not None and clip.waveform is None
    assert any("audio" in w for w in clip.warnings)


@pytest.mark.parametrize("kind,problem", [
    ("missing", "file not found"),
    ("empty", "empty file"),
    ("text", "not a readable media file"),
    ("truncated", "not a readable media file"),
])
def test_bad_files_raise_one_line_media_error(corpus, kind, problem):
    with pytest.raises(MediaError) as info:
        load_clip(corpus[kind])
    message = str(info.value)
    assert message.startswith(str(corpus[kind])) and problem in message and "\n" not in message


def test_span_outside_file_is_an_error(corpus):
    with pytest.raises(MediaError, match="outside the file"):
        load_clip(corpus["mp4"], start=10.0, end=12.0)


def test_start_end_select_the_span(corpus):
    clip = load_clip(corpus["mp4"], start=1.0, end=2.5, fps=2)
    assert abs(clip.waveform.size - 1.5 * SR) <= 2
    assert np.all((clip.frame_times >= 0.9) & (clip.frame_times <= 2.5))


def test_sample_times_rate_and_count():
    assert np.allclose(sample_times(0, 10, fps=1), np.arange(10) + 0.5)
    assert np.allclose(sample_times(2, 4, num_frames=4), [2.25, 2.75, 3.25, 3.75])


def test_backends_agree_after_resampling(corpus):
    a = load_clip(corpus["mp4"], backend="decord", fps=2)
    b = load_clip(corpus["mp4"], backend="pyav", fps=2)
    assert abs(a.waveform.size - b.waveform.size) <= 64
    # 48 kHz -> 16 kHz: decord's resampler shifts its output by ~1 ms (16 samples)
    # after the first packets; PyAV's output stays in phase with the source
    x, y = a.waveform[4000:-100], b.waveform
    errors = [np.abs(x - y[4000 + lag: 4000 + lag + x.size]).max() for lag in range(-40, 41)]
    assert min(errors) < 0.05  # a fractional-sample offset remains (amplitude 0.3)
    assert a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 8


def test_default_audio_is_in_phase_with_the_source_whatever_the_file_name(tmp_path):
    """``auto`` decodes a video's audio with PyAV: resampled 44.1 -> 16 kHz it matches a reference
    resampler (soxr) on the native-rate samples with no lag, while decord's output lags by its
    resampler's filter delay. A file name that is not UTF-8 (decord cannot open it) gets the same
    samples, so the scores do not depend on the name."""
    import soxr
    from scipy.signal import correlate

    path = tmp_path / "sine.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
                    "-f", "lavfi", "-i", "sine=frequency=1250:duration=3", "-filter_complex", "amerge",
                    "-c:a", "aac", str(path)], check=True)
    auto = load_clip(path, sample_rate=SR, video=False).waveform
    native = load_clip(path, sample_rate=44100, backend="pyav", video=False).waveform
    reference = soxr.resample(native, 44100, SR)
    n = min(auto.size, reference.size)
    assert abs(auto.size - reference.size) <= 2
    lags, decord = {}, load_clip(path, sample_rate=SR, backend="decord", video=False).waveform
    for name, x in (("auto", auto), ("decord", decord)):
        c = correlate(x[:SR], reference[:SR], mode="full", method="fft")
        lags[name] = int(c.argmax()) - (SR - 1)
    assert lags["auto"] == 0 and lags["decord"] > 0, lags
    assert np.abs(auto[100:n - 100] - reference[100:n - 100]).max() < 0.01
    odd = tmp_path / os.fsdecode(b"caf\xe9.m4a")  # latin-1 bytes: not UTF-8
    odd.write_bytes(path.read_bytes())
    assert np.array_equal(load_clip(odd, sample_rate=SR, video=False).waveform, auto)


def test_a_fallback_decoder_is_named_in_the_clip_warnings(corpus, monkeypatch):
    """When PyAV fails on a file's audio (or frames) and decord reads it, the clip says so: the two
    decoders' audio differ by decord's resampler delay, so a result must say which one it came from."""
    from avtag.io.backends import PyAVBackend
    from avtag.io.common import media_error

    def refuse(self, info, *args, **kwargs):
        raise media_error(info.path, "stand-in decoder failure")

    assert not load_clip(corpus["mp4"], fps=1).warnings
    monkeypatch.setattr(PyAVBackend, "audio", refuse)
    monkeypatch.setattr(PyAVBackend, "frames", refuse)
    clip = load_clip(corpus["mp4"], sample_rate=SR, fps=1)
    assert clip.waveform is not None and clip.frames is not None
    assert [w.split(" after ")[0] for w in clip.warnings] == ["audio read by decord", "video read by decord"]
    assert all("stand-in decoder failure" in w for w in clip.warnings)
    windows = list(iter_windows(corpus["mp4"], window_s=2.0, sample_rate=SR, fps=1))
    assert [w for c in windows for w in c.warnings] == [clip.warnings[1]] * len(windows)  # frames per window


def test_backends_agree_exactly_at_the_native_rate(clips_dir):
    path = clips_dir / "-1hDIl9Udkw_30.000_40.000.mp4"  # 16 kHz stereo AAC
    a = load_clip(path, backend="decord", video=False).waveform
    b = load_clip(path, backend="pyav", video=False).waveform
    assert a.size == b.size and np.abs(a - b).max() < 1e-5


def test_one_hour_file_read_window_by_window(tmp_path):
    path = tmp_path / "hour.wav"
    rate, seconds = 8000, 3600
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        block = (tone(60.0, rate, 250, 0.2) * 32767).astype("<i2").tobytes()
        for _ in range(seconds // 60):
            w.writeframes(block)
    assert abs(probe(path).duration - seconds) < 1
    tracemalloc.start()
    count, total = 0, 0
    for clip in iter_windows(path, window_s=60.0, sample_rate=rate, video=False):
        count += 1
        total += clip.waveform.size
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 60 and abs(total - seconds * rate) <= rate
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB: the whole hour ({seconds * rate * 4 / 1e6:.0f} MB) was held"


def test_windows_of_a_video_carry_frames(corpus):
    windows = list(iter_windows(corpus["mp4"], window_s=1.0, fps=2))
    assert len(windows) == 3
    assert [round(w.start, 3) for w in windows] == [0.0, 1.0, 2.0]
    assert all(w.frames is not None and len(w.frames) == 2 for w in windows)


def _clips_csv():
    path = SHARED / "clips" / "clips.csv"
    if not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"real clips not found at {path}"))]
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", _clips_csv(), ids=lambda r: r["filename"])
def test_real_clips_match_their_metadata(row, clips_dir):
    path = clips_dir / row["filename"]
    info = probe(path)
    assert abs(info.duration - float(row["duration_s"])) < 0.1
    assert info.sample_rate == int(row["sample_rate"]) and info.channels == int(row["channels"])
    assert (info.width, info.height) == (int(row["width"]), int(row["height"]))
    clip = load_clip(path, fps=1, frame_short_side=224)
    assert abs(clip.waveform.size / SR - float(row["duration_s"])) < 0.15
    assert min(clip.frames.shape[1:3]) == 224 and len(clip.frames) == int(float(row["duration_s"]))


def test_real_clip_with_failing_audio_has_digital_silence(clips_dir):
    clip = load_clip(clips_dir / "video_with_failing_audio.mp4", video=False)
    head, tail = clip.waveform[: 4 * SR], clip.waveform[5 * SR:]
    assert np.abs(head).max() > 0.01 and np.abs(tail).max() < 1e-4


def test_real_ogg_recordings(shared_dir):
    clip = load_clip(shared_dir / "sounds" / "198-209-0000.ogg")
    assert clip.waveform is not None and clip.frames is None and clip.waveform.size > 10 * SR


def test_cli_reports_bad_media_in_one_line(corpus, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {metadata_dir: /nonexistent}\n")
    out = subprocess.run([sys.executable, "-m", "avtag", "prepare", str(config), "--splits", "test"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "testing_set.csv" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_audio_files_take_the_libsndfile_path_and_agree_with_pyav(tmp_path, suffix):
    """Plain audio files are read by libsndfile + soxr (much faster than a media pipeline): the same
    samples as PyAV within the two resamplers' differences, streamed or whole."""
    from avtag.io.backends import FallbackDecoder
    from avtag.io.soundfile_backend import SoundFileBackend

    rate = 44100
    t = np.arange(3 * rate) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1250 * t)], axis=1)
    path = write_wav(tmp_path / "s.wav", stereo, rate)
    if suffix != ".wav":
        other = tmp_path / f"s{suffix}"
        codec = ["-c:a", "libvorbis", "-q:a", "8"] if suffix == ".ogg" else []
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *codec, str(other)], check=True)
        path = other
    info = probe(path)
    assert SoundFileBackend().accepts_audio(info)
    fast = load_clip(path, sample_rate=SR).waveform
    slow = load_clip(path, sample_rate=SR, backend="pyav").waveform
    n = min(fast.size, slow.size)
    assert abs(fast.size - slow.size) <= 2
    snr = 10 * np.log10(np.sum(slow[:n] ** 2) / np.sum((fast[:n] - slow[:n]) ** 2))
    assert snr > (25 if suffix == ".ogg" else 40), snr
    streamed = np.concatenate(list(FallbackDecoder().stream_audio(path, SR)))
    assert abs(streamed.size - fast.size) <= 2 and np.abs(streamed[: n - 100] - fast[: n - 100]).max() < 1e-3
    video = write_media(tmp_path / "v.mp4", seconds=1.0, audio=tone(1.0, 48000), sample_rate=48000)
    assert not SoundFileBackend().accepts_audio(probe(video))  # video containers go to decord / PyAV


@pytest.mark.parametrize("settings, problem", [
    ({"sample_rate": -16000}, "sample_rate must be a positive whole number"),
    ({"sample_rate": 22050.5}, "sample_rate must be a positive whole number"),
    ({"fps": 0}, "fps must be a positive number"), ({"fps": float("nan")}, "fps must be a positive number"),
    ({"num_frames": 0}, "num_frames must be a positive whole number"),
    ({"frame_short_side": 0}, "frame_short_side must be a positive whole number"),
    ({"end": float("nan")}, "end must be a number of seconds"),
])
def test_bad_decode_settings_are_refused_before_decoding(corpus, settings, problem):
    with pytest.raises(MediaError, match=f"bad decode settings: {problem}"):
        load_clip(corpus["mp4"], **settings)
    if "end" not in settings:  # iter_windows has no span
        with pytest.raises(MediaError, match="bad decode settings"):
            next(iter_windows(corpus["mp4"], 1.0, **settings))


def test_a_zero_sample_rate_no_longer_kills_the_process(corpus):
    """decord divided by it: SIGFPE took the interpreter down. Run in a child, so a regression fails one test."""
    code = (f"import avtag\ntry:\n    avtag.load_clip({str(corpus['mp4'])!r}, sample_rate=0)\n"
            "except avtag.AvtagError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-500:])
    assert "sample_rate must be a positive whole number, got 0" in out.stdout


def _float_wav(path, samples, rate=16000):
    import soundfile as sf

    sf.write(path, np.asarray(samples, np.float32), rate, subtype="FLOAT")
    return path


def test_non_finite_and_over_full_scale_audio_is_made_safe_and_said(tmp_path):
    """A float WAV of 1e30 made the log-mel overflow (NaN scores, an unnamed numpy warning); NaN
    samples reached the network; a track of only NaN was called "empty"."""
    x = tone(2.0, 16000)  # peak 0.3
    partial = x.copy()
    partial[100:200] = np.nan
    clip = load_clip(_float_wav(tmp_path / "partial.wav", partial), video=False)
    assert np.isfinite(clip.waveform).all() and clip.waveform[150] == 0 and "100 NaN or infinite" in clip.warnings[0]
    loud = load_clip(_float_wav(tmp_path / "loud.wav", x * 1e30), video=False)
    assert np.abs(loud.waveform).max() <= 1 and "beyond full scale" in loud.warnings[0]
    quiet = load_clip(_float_wav(tmp_path / "ok.wav", x * 5), video=False)  # peak 1.5: a mild overshoot stays
    assert quiet.warnings == [] and np.abs(quiet.waveform).max() > 1.4
    for value in (np.nan, np.inf):
        with pytest.raises(MediaError, match=r"bad\.wav: nothing decodable: audio track holds only NaN or infinite"):
            load_clip(_float_wav(tmp_path / "bad.wav", np.full(16000, value)), video=False)
    windows = list(iter_windows(_float_wav(tmp_path / "long.wav", np.r_[np.full(16000, np.nan), x]), 1.0,
                                video=False))
    assert len(windows) == 3 and not windows[0].waveform.any() and windows[1].waveform.any()  # NaN window: silence
    assert "only NaN" in windows[0].warnings[0]


def test_broken_headers_and_pipes_are_one_line(tmp_path):
    """A WAV header of 0 bits per sample ended in "AttributeError: 'NoneType' ..."; a FIFO was "empty"."""
    import os
    import struct

    data = b"\0" * 2000
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 0, 0, 0)  # PCM, mono, 16 kHz, 0 bits per sample
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data))
    (tmp_path / "bits0.wav").write_bytes(header + data)
    with pytest.raises(MediaError, match=r"bits0\.wav: audio stream has no decoder"):
        load_clip(tmp_path / "bits0.wav")
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(MediaError, match=r"pipe\.mp4: not a regular file"):
        load_clip(tmp_path / "pipe.mp4")
