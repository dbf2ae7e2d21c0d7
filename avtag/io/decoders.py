"""Low-level decoders behind :mod:`avtag.io.media`: decord first, PyAV as fallback.

decord 0.6 reads video frames by index with seeking and decodes a whole audio
track at once; PyAV (FFmpeg's libraries) streams packets, so it also serves long
files and the cases decord gets wrong (see ``_decord_audio``). Every failure is a
:class:`MediaError` whose message starts with the file name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from avtag import AvtagError

#: decord decodes a whole audio track at once; above this length PyAV streams instead.
DECORD_AUDIO_MAX_S = 600.0

class MediaError(AvtagError):
    """A media file that cannot be read; the message names the file and the problem."""


@dataclass
class MediaInfo:
    """What a container holds, read from its headers (no decoding).

    ``duration`` is in seconds; audio fields are None without an audio track and
    video fields None without a video stream (cover art does not count).
    """

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int | None = None
    channels: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None


def _fail(path: Path, problem: str) -> MediaError:
    return MediaError(f"{path}: {problem}")


def _quiet_ffmpeg() -> None:
    import av

    av.logging.set_level(av.logging.PANIC)


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file not found")
    if path.is_dir():
        raise _fail(path, "is a folder, not a media file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    return path


def _container_duration(container, audio, video) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000  # av.time_base is 1e-6
    for stream in (audio, video):
        if stream is not None and stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    return 0.0


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


# ----------------------------------------------------------------------------- audio
def _with_fallback(path: Path, what: str, backend: str, try_decord: bool, decord_fn, pyav_fn):
    """Run ``decord_fn`` (when ``try_decord``), else or on failure ``pyav_fn``.

    ``backend="decord"`` makes a decord failure final; every failure becomes one
    :class:`MediaError` naming the file, ``what`` and each decoder's reason.
    """
    errors = []
    if try_decord:
        try:
            return decord_fn()
        except ImportError as exc:
            errors.append(f"decord: {exc}")
        except Exception as exc:
            errors.append(f"decord: {_reason(exc)}")
            if backend == "decord":
                raise _fail(path, f"{what} could not be decoded ({errors[-1]})") from None
    try:
        return pyav_fn()
    except MediaError:
        raise
    except Exception as exc:
        errors.append(f"pyav: {_reason(exc)}")
        raise _fail(path, f"{what} could not be decoded (" + "; ".join(errors) + ")") from None


def _decode_audio(info: MediaInfo, sample_rate: int, t0: float, t1: float, backend: str) -> np.ndarray:
    channels = info.channels or 1
    try_decord = backend in ("auto", "decord") and info.duration <= DECORD_AUDIO_MAX_S and channels <= 2
    return _with_fallback(info.path, "audio", backend, try_decord,
                          lambda: _decord_audio(info.path, sample_rate, t0, t1, channels),
                          lambda: _pyav_audio(info.path, sample_rate, t0, t1))


def _decord_audio(path: Path, sample_rate: int, t0: float, t1: float, channels: int) -> np.ndarray:
    import decord

    # decord 0.6's multi-channel output holds uninitialised samples, so only its
    # swresample mono downmix is used: (L + R) / sqrt(2) for stereo, rescaled here to
    # the channel mean that the PyAV path gives. Files with > 2 channels go to PyAV.
    reader = decord.AudioReader(str(path), sample_rate=sample_rate, mono=True)
    a, b = int(round(t0 * sample_rate)), int(round(t1 * sample_rate))
    data = reader[a:b].asnumpy().reshape(-1)
    if channels == 2:
        data = data / np.sqrt(2.0)
    return np.ascontiguousarray(data, dtype=np.float32)


def _pyav_audio(path: Path, sample_rate: int, t0: float, t1: float) -> np.ndarray:
    chunks = []
    need = int(round((t1 - t0) * sample_rate))
    got = 0
    for chunk in stream_audio(path, sample_rate, start=t0):
        chunks.append(chunk)
        got += chunk.size
        if got >= need:
            break
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)[:need]


def stream_audio(path: str | Path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
    """Decode audio from ``start`` seconds onward as a stream of mono float32 chunks.

    Uses PyAV's resampler (FFmpeg swresample) to resample to ``sample_rate`` Hz,
    then mixes down to mono as the mean of the channels (as ``librosa.to_mono``
    does, so 5.1 audio cannot clip); memory use is one decoded packet at a time. The first
    chunk begins exactly at ``start`` (samples before it are dropped).
    """
    import av

    path = _check_file(path)
    _quiet_ffmpeg()
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise _fail(path, f"not a readable media file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise _fail(path, "no audio track")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        if start > 0:
            container.seek(int(start * 1_000_000), any_frame=False, backward=True)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        skip_until = int(round(start * sample_rate))
        position = None  # absolute sample index of the next output sample
        try:
            for frame in container.decode(stream):
                if position is None:
                    t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    position = int(round(t * sample_rate))
                for out in resampler.resample(frame):
                    yield from _trim(out.to_ndarray().mean(axis=0), position, skip_until)
                    position += out.samples
            for out in resampler.resample(None):
                yield from _trim(out.to_ndarray().mean(axis=0), position or 0, skip_until)
        except av.error.FFmpegError as exc:
            raise _fail(path, f"audio decoding failed ({_reason(exc)})") from None


def _trim(samples: np.ndarray, position: int, skip_until: int) -> Iterator[np.ndarray]:
    if position + samples.size <= skip_until:
        return
    if position < skip_until:
        samples = samples[skip_until - position :]
    yield np.ascontiguousarray(samples, dtype=np.float32)


# ----------------------------------------------------------------------------- video
def _target_size(info: MediaInfo, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``short_side``; (-1, -1) keeps size."""
    if not short_side or not info.width or not info.height:
        return -1, -1
    scale = short_side / min(info.width, info.height)
    return max(1, int(round(info.width * scale))), max(1, int(round(info.height * scale)))


def _decode_frames(info: MediaInfo, times: np.ndarray, short_side: int | None, backend: str):
    return _with_fallback(info.path, "video", backend, backend in ("auto", "decord"),
                          lambda: _decord_frames(info, times, short_side),
                          lambda: _pyav_frames(info, times, short_side))


def _decord_frames(info: MediaInfo, times: np.ndarray, short_side: int | None):
    import decord

    width, height = _target_size(info, short_side)
    reader = decord.VideoReader(str(info.path), width=width, height=height, num_threads=1)
    n = len(reader)
    if n == 0 or len(times) == 0:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0)
    fps = reader.get_avg_fps() or info.fps or 25.0
    index = np.clip(np.floor(times * fps).astype(int), 0, n - 1)
    frames = reader.get_batch(list(index)).asnumpy()
    frame_times = reader.get_frame_timestamp(list(index))[:, 0]
    return np.ascontiguousarray(frames, dtype=np.uint8), frame_times.astype(np.float64)


def _pyav_frames(info: MediaInfo, times: np.ndarray, short_side: int | None):
    """Decode frames sequentially, keeping the first frame at or after each target time."""
    import av

    width, height = _target_size(info, short_side)
    out, out_times = [], []
    if len(times) == 0:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0)
    with av.open(str(info.path)) as container:
        stream = next(s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic))
        stream.thread_type = "AUTO"
        if times[0] > 1.0:
            container.seek(int(times[0] * 1_000_000), backward=True, any_frame=False)
        k = 0
        last = None
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            while k < len(times) and t + 1e-3 >= times[k] - _half_frame(info):
                last = frame
                out.append(_rgb(frame, width, height))
                out_times.append(t)
                k += 1
            if k >= len(times):
                break
            last = frame
        while k < len(times) and last is not None:  # stream ended early: repeat the last frame
            out.append(_rgb(last, width, height))
            out_times.append(float(last.pts * last.time_base) if last.pts is not None else 0.0)
            k += 1
    if not out:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0)
    return np.stack(out), np.asarray(out_times, dtype=np.float64)


def _half_frame(info: MediaInfo) -> float:
    return 0.5 / info.fps if info.fps else 0.0


def _rgb(frame, width: int, height: int) -> np.ndarray:
    if width > 0:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    return frame.to_ndarray(format="rgb24")
