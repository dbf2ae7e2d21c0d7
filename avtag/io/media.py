"""Media I/O: one seam between files and the rest of avtag.

``load_clip`` reads a video (mp4, webm, mkv, avi, ...) or audio file (wav, flac,
ogg, mp3, ...) into a :class:`Clip`: a mono float32 waveform resampled to a
given rate and RGB frames sampled at a given rate or count, with timestamps.
decord is the primary decoder, PyAV (FFmpeg's libraries) the fallback where
decord declines or fails (:mod:`avtag.io.backends`). Decoders are opened inside each
call, never at import, so worker processes never share a decord reader (they are
not fork-safe). To survive a decoder that crashes or hangs, decode through
:class:`avtag.io.IsolatedDecoder` (:mod:`avtag.io.isolation`), which runs these
functions in worker processes.

Long files are read window by window with :func:`iter_windows`, which streams
audio with PyAV so a 1-hour file never sits in memory whole.

Every problem with a file is raised as one :class:`MediaError` whose message
starts with the file name; a file that lacks one modality gives a degraded
:class:`Clip` with ``warnings`` saying what is missing.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avtag.io.backends import EMPTY_FRAMES, FallbackDecoder, PyAVBackend
from avtag.io.common import Clip, MediaError, MediaInfo, check_decode_settings, media_error, sanitize_decoded

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS


def probe(path: str | Path) -> MediaInfo:
    """Read the container headers of ``path`` with PyAV (no decoding).

    Returns:
        :class:`MediaInfo`: duration in seconds, audio rate (Hz) and channels, video fps and size.

    Raises:
        MediaError: missing, empty, unreadable or stream-less file.
    """
    return PyAVBackend().probe(path)


def sample_times(start: float, end: float, fps: float | None = None, num_frames: int | None = None) -> np.ndarray:
    """Timestamps (seconds) at which to sample video frames in ``[start, end)``.

    ``num_frames`` evenly spaced frames (centres of equal parts) take precedence
    over ``fps`` (one frame per ``1/fps`` seconds, first at ``start + 0.5/fps``).
    """
    span = max(end - start, 0.0)
    if span <= 0:
        return np.zeros(0)
    if num_frames:
        n = int(num_frames)
    else:
        n = max(1, int(math.floor(span * float(fps or 1.0) + 1e-6)))
    return start + (np.arange(n) + 0.5) * (span / n)


def load_clip(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    audio: bool = True,
    video: bool = True,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    frame_short_side: int | None = None,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    longer_than: float | None = None,
    frame_part: tuple[int, int] | None = None,
) -> Clip:
    """Decode a span of a media file into a :class:`Clip`.

    Args:
        path: video or audio file.
        sample_rate: output rate of the mono waveform, Hz.
        audio, video: which modalities to decode.
        fps: video frames per second to sample (ignored if ``num_frames``).
        num_frames: sample this many evenly spaced frames instead.
        frame_short_side: resize frames so the shorter side has this many pixels
            (aspect kept); None keeps the coded size.
        start, end: span in seconds (default: the whole file).
        backend: ``"auto"`` (see :class:`~avtag.io.backends.FallbackDecoder`), ``"decord"`` or ``"pyav"``.
        longer_than: seconds; a file longer than this is not decoded: the clip has its full
            ``duration`` and neither waveform nor frames (the caller reads it window by window).
        frame_part: ``(index, parts)``: only this part of the frames (see :func:`split_at_keyframes`),
            so that several processes decode one file's frames side by side; a part without frames
            is no problem. Concatenated in part order, the parts are the frames of the whole span.

    Returns:
        A Clip; a missing modality is None and named in ``clip.warnings``.

    Raises:
        MediaError: the file is missing, empty, not media, undecodable, or the span
            lies outside the file; or a setting no decoder can take (a sample rate, frame rate,
            frame count or frame size that is not a positive number: a sample rate of 0 used to
            crash decord with SIGFPE).
    """
    check_decode_settings(sample_rate, fps, num_frames, frame_short_side, start, end)
    info = probe(path)
    path = info.path
    t0 = float(start or 0.0)
    duration = info.duration
    if longer_than is not None and duration > longer_than:
        return Clip(path=path, start=0.0, duration=duration)
    t1 = float(end) if end is not None else duration
    if end is not None and t1 <= t0:
        raise media_error(path, f"requested span {t0:.3f}-{t1:.3f} s is empty: the end must come after the start")
    if duration > 0:
        t1 = min(t1, duration)
    if t0 < 0 or (duration > 0 and t0 >= duration) or t1 <= t0:
        raise media_error(path, f"requested span {t0:.3f}-{t1:.3f} s lies outside the file ({duration:.3f} s)")
    clip = Clip(path=path, start=t0, duration=t1 - t0)
    decoder = FallbackDecoder(backend)
    if audio:
        if not info.has_audio:
            clip.warnings.append("no audio track")
        else:
            wav, notes = sanitize_decoded(decoder.audio(info, sample_rate, t0, t1))
            clip.warnings += notes
            if wav is not None:
                clip.waveform, clip.sample_rate = wav, sample_rate
    if video:
        if not info.has_video:
            clip.warnings.append("no video stream")
        else:
            times = sample_times(t0, t1, fps, num_frames)
            if frame_part is not None:
                times = split_at_keyframes(info, times, frame_part[1])[frame_part[0]]
            frames, times = decoder.frames(info, times, frame_short_side) if len(times) else EMPTY_FRAMES
            if len(frames) == 0 and (frame_part is None or len(times)):
                clip.warnings.append("video stream has no decodable frames")
            elif len(frames):
                clip.frames, clip.frame_times = frames, times
    clip.warnings += decoder.notes  # a fallback decoder took over: which, and why
    if frame_part is not None and frame_part[0] > 0 and clip.frames is None:
        return clip  # a later part without frames of its own (its warnings say why, if there is a problem)
    if clip.waveform is None and clip.frames is None and (audio or video):
        raise media_error(path, "nothing decodable: " + "; ".join(clip.warnings))
    return clip


def split_at_keyframes(info: MediaInfo, times: np.ndarray, parts: int) -> list[np.ndarray]:
    """``times`` (seconds, ascending) cut into ``parts`` runs that start at keyframes, so that each run
    can be decoded from its own keyframe by its own process; the cut points balance the decoding
    (from a run's keyframe to its last time). Runs may be empty (too few keyframes)."""
    import av

    if parts <= 1 or len(times) < 2:
        return [times] + [times[:0]] * (parts - 1)
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            keys = sorted(float(p.pts * p.time_base) for p in container.demux(stream)
                          if p.is_keyframe and p.pts is not None)
    except Exception:  # noqa: BLE001 - no split then: the whole decodes as one part
        keys = []
    cuts = [0.0]
    for k in range(1, parts):  # greedy: the keyframe nearest the k-th equal share of the span
        goal = times[0] + (times[-1] - times[0]) * k / parts
        later = [t for t in keys if cuts[-1] < t <= times[-1] and t > times[0]]
        if later:
            cuts.append(min(later, key=lambda t: abs(t - goal)))
    bounds = cuts[1:] + [np.inf]
    runs = [times[(times >= lo) & (times < hi)] for lo, hi in zip(cuts, bounds)]
    return runs + [times[:0]] * (parts - len(runs))


# ----------------------------------------------------------------------------- windows
def iter_windows(
    path: str | Path,
    window_s: float,
    hop_s: float | None = None,
    *,
    sample_rate: int = 16000,
    audio: bool = True,
    video: bool = True,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    frame_short_side: int | None = None,
    backend: str = "auto",
) -> Iterator[Clip]:
    """Read a long file as consecutive windows of ``window_s`` seconds.

    Audio is streamed once through PyAV and cut into windows (hop ``hop_s``,
    default ``window_s``); frames are decoded per window. Memory stays
    proportional to one window, whatever the file's length. The last window may
    be shorter.

    Yields:
        :class:`Clip` per window, with ``start`` in seconds from the file start.
    """
    check_decode_settings(sample_rate, fps, num_frames, frame_short_side)
    info = probe(path)
    hop_s = float(hop_s or window_s)
    if window_s <= 0 or hop_s <= 0:
        raise media_error(info.path, "window and hop must be positive")
    win, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    starts = np.arange(0.0, max(info.duration, 1e-9), hop_s)
    decoder = FallbackDecoder(backend)
    audio_stream = decoder.stream_audio(info.path, sample_rate) if (audio and info.has_audio) else None
    buffer = np.zeros(0, dtype=np.float32)
    exhausted = False
    for t0 in starts:
        t1 = min(t0 + window_s, info.duration)
        clip = Clip(path=info.path, start=float(t0), duration=float(t1 - t0))
        if audio_stream is not None:
            while not exhausted and buffer.size < win:
                try:
                    buffer = np.concatenate([buffer, next(audio_stream)])
                except StopIteration:
                    exhausted = True
            raw = buffer[:win].copy()
            if raw.size:
                segment, notes = sanitize_decoded(raw)
                clip.warnings += notes  # a window of NaN is kept as silence: later ones may hold sound
                clip.waveform, clip.sample_rate = (np.zeros_like(raw) if segment is None else segment), sample_rate
            buffer = buffer[hop:]
        elif audio:
            clip.warnings.append("no audio track")
        if video and info.has_video:
            times = sample_times(t0, t1, fps, num_frames)
            frames, ftimes = decoder.frames(info, times, frame_short_side)
            if len(frames):
                clip.frames, clip.frame_times = frames, ftimes
            clip.warnings += decoder.notes
            decoder.notes.clear()
        elif video:
            clip.warnings.append("no video stream")
        if clip.waveform is None and clip.frames is None:
            break
        yield clip


def stream_audio(path: str | Path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
    """Decode the audio of ``path`` from ``start`` seconds on as mono float32 chunks at ``sample_rate`` Hz.

    Streams with PyAV (one packet in memory at a time); mono is the channel mean.

    Raises:
        MediaError: unreadable file, no audio track, a decoding error, or bad settings.
    """
    check_decode_settings(sample_rate, start=start)
    return FallbackDecoder().stream_audio(path, sample_rate, start)


__all__ = ["AUDIO_EXTENSIONS", "Clip", "MEDIA_EXTENSIONS", "MediaError", "MediaInfo", "VIDEO_EXTENSIONS",
           "iter_windows", "load_clip", "probe", "sample_times", "stream_audio"]
