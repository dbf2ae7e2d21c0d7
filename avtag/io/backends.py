"""Decoder backends behind :mod:`avtag.io.media`: one interface, two implementations.

:class:`DecoderBackend` is what a decoder offers: mono audio of a span, RGB frames
at given times, and a bounded-memory audio stream. :class:`DecordBackend` (decord
0.6) reads frames by index with seeking and decodes a whole audio track at once;
:class:`PyAVBackend` (FFmpeg's libraries through PyAV) streams packets, so it also
serves long files, any channel count and the cases decord gets wrong.
:class:`FallbackDecoder` is the one place that decides which is tried first and
which takes over when the first declines or fails. Every failure is a :class:`MediaError`
whose message starts with the file name.

Both libraries log through FFmpeg's ``av_log`` and decord also through its own
C++ logger straight to file descriptor 2; :func:`quiet_decoders` turns the first
off and decord calls run inside :func:`silenced_stderr` for the second.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from avtag.io.common import MediaError, MediaInfo, check_file, media_error, reason
from avtag.io.quiet import quiet_decoders, silenced_stderr
from avtag.io.soundfile_backend import SoundFileBackend

#: decord decodes a whole audio track at once; above this length PyAV streams instead.
DECORD_AUDIO_MAX_S = 600.0
#: decord 0.6's multi-channel output is unreliable and its mono downmix is not the channel mean.
DECORD_AUDIO_MAX_CHANNELS = 2

#: ``(frames (0, 1, 1, 3) uint8, times (0,))``: no frames
EMPTY_FRAMES = (np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0))


class DecoderBackend(Protocol):
    """What a decoder library offers to :func:`avtag.io.load_clip`.

    Every method raises :class:`MediaError` (message starting with the file name)
    or any other exception, which :class:`FallbackDecoder` turns into one.
    """

    name: str

    def accepts_audio(self, info: MediaInfo) -> bool:
        """False when this backend should not even try the audio of ``info``."""

    def audio(self, info: MediaInfo, sample_rate: int, t0: float, t1: float) -> np.ndarray:
        """Mono float32 ``(samples,)`` at ``sample_rate`` Hz of the span ``[t0, t1)`` seconds."""

    def frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(n, H, W, 3)`` uint8 RGB nearest to ``times`` (seconds) and their times ``(n,)`` float64."""

    def stream_audio(self, path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
        """Mono float32 chunks at ``sample_rate`` Hz from ``start`` seconds to the end of the file."""


# ----------------------------------------------------------------------------- PyAV
class PyAVBackend:
    """FFmpeg's libraries through PyAV: any container, codec and channel count; streams audio.

    Audio is resampled by swresample to float32 (packed, the source's channel
    layout kept) and mixed to mono here as the plain mean of the channels, as
    ``librosa.to_mono`` does, so 5.1 cannot clip and a tone on one channel of N
    comes out at ``1/N`` of its amplitude. swresample's own mono downmix is not
    used: its matrix weighs channels unequally (centre 1, front 0.707, surround
    0.5, LFE 0 for 7.1), which no single rescale turns into the mean. Packed
    output also avoids ``AudioFrame.to_ndarray()`` on planar frames with 8 or more
    channels, which crashes PyAV 18 (SIGSEGV).
    """

    name = "pyav"

    def accepts_audio(self, info: MediaInfo) -> bool:
        """Always True: PyAV reads any channel count and length."""
        return True

    def probe(self, path) -> MediaInfo:
        """Read the container headers of ``path`` (no decoding).

        Raises:
            MediaError: missing, empty, unreadable or stream-less file.
        """
        import av

        path = check_file(path)
        quiet_decoders("av")
        try:
            container = av.open(str(path))
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise media_error(path, f"not a readable media file ({reason(exc)})") from None
        with container:
            audio = next(iter(container.streams.audio), None)
            video = _video_stream(container)
            for kind, stream, other in (("audio", audio, video), ("video", video, audio)):
                if stream is not None and stream.codec_context is None:  # e.g. a WAV header of 0 bits per sample
                    if other is None:
                        raise media_error(path, f"{kind} stream has no decoder (broken or unsupported format header)")
                    audio, video = (None, video) if kind == "audio" else (audio, None)
            if audio is None and video is None:
                raise media_error(path, "contains no audio or video stream")
            info = MediaInfo(path=path, duration=_container_duration(container, audio, video),
                             has_audio=audio is not None, has_video=video is not None)
            if audio is not None:
                info.sample_rate = audio.codec_context.sample_rate or audio.rate
                info.channels = audio.codec_context.channels
            if video is not None:
                rate = video.average_rate or video.guessed_rate or video.base_rate
                info.fps = float(rate) if rate else None
                info.width, info.height = video.codec_context.width, video.codec_context.height
        return info

    def audio(self, info: MediaInfo, sample_rate: int, t0: float, t1: float) -> np.ndarray:
        """Mono float32 ``(samples,)`` at ``sample_rate`` Hz of ``[t0, t1)`` seconds (streamed, channel mean)."""
        need = int(round((t1 - t0) * sample_rate))
        chunks, got = [], 0
        for chunk in self.stream_audio(info.path, sample_rate, start=t0):
            chunks.append(chunk)
            got += chunk.size
            if got >= need:
                break
        return np.concatenate(chunks)[:need] if chunks else np.zeros(0, dtype=np.float32)

    def stream_audio(self, path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
        """Decode audio from ``start`` seconds onward as mono float32 chunks at ``sample_rate`` Hz.

        Memory use is one decoded packet at a time; the first chunk begins exactly
        at ``start`` (samples before it are dropped).

        Raises:
            MediaError: unreadable file, no audio track, or a decoding error.
        """
        import av

        path = check_file(path)
        quiet_decoders("av")
        try:
            container = av.open(str(path))
        except Exception as exc:
            raise media_error(path, f"not a readable media file ({reason(exc)})") from None
        with container:
            if not container.streams.audio:
                raise media_error(path, "no audio track")
            stream = container.streams.audio[0]
            stream.thread_type = "AUTO"
            skip_until = int(round(start * sample_rate))
            position = None  # absolute sample index of the next output sample
            try:
                if start > 0:
                    container.seek(int(start * 1_000_000), any_frame=False, backward=True)
                resampler = av.AudioResampler(format="flt", rate=sample_rate)  # packed, source layout kept
                for frame in container.decode(stream):
                    if position is None:
                        t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                        position = int(round(t * sample_rate))
                    for out in resampler.resample(frame):
                        yield from _trim(_packed_mean(out), position, skip_until)
                        position += out.samples
                for out in resampler.resample(None):
                    yield from _trim(_packed_mean(out), position or 0, skip_until)
                    position = (position or 0) + out.samples
            except MediaError:
                raise
            except Exception as exc:  # av.error.FFmpegError, ValueError on a layout change, ...
                raise media_error(path, f"audio decoding failed ({reason(exc)})") from None

    def frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Decode frames sequentially, keeping the first frame at or after each target time.

        Frames no other frame refers to (B-frames, mostly) are not decoded at all
        (``skip_frame = "NONREF"``): 15-20 % less decoding on the real clips, and a kept frame
        is at most a few frames later than the one at its target time. Should that leave a gap
        (a stream whose frames are mostly non-reference), the file is decoded again in full."""
        frames, out_times = self._frames(info, times, short_side, skip="NONREF")
        gap = max(0.25, 3.0 / info.fps if info.fps else 0.25)
        if len(out_times) and np.any(out_times - np.asarray(times)[: len(out_times)] > gap):
            frames, out_times = self._frames(info, times, short_side, skip=None)
        return frames, out_times

    def _frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None, skip: str | None):
        import av

        if len(times) == 0:
            return EMPTY_FRAMES
        quiet_decoders("av")
        width, height = target_size(info, short_side)
        half = 0.5 / info.fps if info.fps else 0.0
        out, out_times = [], []
        with av.open(str(info.path)) as container:
            stream = _video_stream(container)
            # one decoder thread: with FFmpeg's frame threading ("AUTO") a decode worker hung twice in about
            # 400 decodes of the real clips (none in 390 without); tagging runs one worker per core anyway
            if skip:
                stream.codec_context.skip_frame = skip
            if times[0] > 1.0:
                container.seek(int(times[0] * 1_000_000), backward=True, any_frame=False)
            k, last = 0, None
            for frame in container.decode(stream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                while k < len(times) and t + 1e-3 >= times[k] - half:
                    out.append(_rgb(frame, width, height))
                    out_times.append(t)
                    k += 1
                last = frame
                if k >= len(times):
                    break
            while k < len(times) and last is not None:  # stream ended early: repeat the last frame
                out.append(_rgb(last, width, height))
                out_times.append(float(last.pts * last.time_base) if last.pts is not None else 0.0)
                k += 1
        if not out:
            return EMPTY_FRAMES
        return np.stack(out), np.asarray(out_times, dtype=np.float64)


def _video_stream(container):
    import av

    attached = av.stream.Disposition.attached_pic
    return next((s for s in container.streams.video if not (s.disposition & attached)), None)


def _container_duration(container, audio, video) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000  # av.time_base is 1e-6
    for stream in (audio, video):
        if stream is not None and stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    return 0.0


def _packed_mean(frame) -> np.ndarray:
    """Mono mean of a packed float32 audio frame: ``to_ndarray()`` is ``(1, samples * channels)``."""
    if frame.samples == 0:
        return np.zeros(0, np.float32)
    return frame.to_ndarray().reshape(frame.samples, -1).mean(axis=1, dtype=np.float32)


def _trim(samples: np.ndarray, position: int, skip_until: int) -> Iterator[np.ndarray]:
    if position + samples.size <= skip_until:
        return
    if position < skip_until:
        samples = samples[skip_until - position :]
    yield np.ascontiguousarray(samples, dtype=np.float32)


def _rgb(frame, width: int, height: int) -> np.ndarray:
    if width > 0:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    return frame.to_ndarray(format="rgb24")


def target_size(info: MediaInfo, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``short_side`` pixels; (-1, -1) keeps the size."""
    if not short_side or not info.width or not info.height:
        return -1, -1
    scale = short_side / min(info.width, info.height)
    return max(1, int(round(info.width * scale))), max(1, int(round(info.height * scale)))


# ----------------------------------------------------------------------------- decord
class DecordBackend:
    """decord 0.6: frames by index with seeking (fast sparse sampling); whole-track audio.

    Audio: only files of at most :data:`DECORD_AUDIO_MAX_CHANNELS` channels and
    :data:`DECORD_AUDIO_MAX_S` seconds are accepted. decord's multi-channel output
    holds uninitialised samples, so its swresample mono downmix is used, which is
    ``(L + R) / sqrt(2)`` for stereo: rescaled here to the channel mean PyAV gives.
    """

    name = "decord"

    def accepts_audio(self, info: MediaInfo) -> bool:
        """At most 2 channels and :data:`DECORD_AUDIO_MAX_S` seconds."""
        channels = info.channels or 1
        return info.duration <= DECORD_AUDIO_MAX_S and channels <= DECORD_AUDIO_MAX_CHANNELS

    def audio(self, info: MediaInfo, sample_rate: int, t0: float, t1: float) -> np.ndarray:
        """Mono float32 ``(samples,)`` at ``sample_rate`` Hz of ``[t0, t1)`` seconds (whole track decoded)."""
        import decord

        quiet_decoders("decord")
        with silenced_stderr():
            reader = decord.AudioReader(str(info.path), sample_rate=sample_rate, mono=True)
            a, b = int(round(t0 * sample_rate)), int(round(t1 * sample_rate))
            data = reader[a:b].asnumpy().reshape(-1)
        if (info.channels or 1) == 2:
            data = data / np.sqrt(2.0)
        return np.ascontiguousarray(data, dtype=np.float32)

    def stream_audio(self, path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
        """Whole-track decode cut into 1 s chunks (decord has no streaming; memory is the whole track)."""
        info = PyAVBackend().probe(path)
        data = self.audio(info, sample_rate, start, max(info.duration, start) + 1.0)
        for i in range(0, data.size, sample_rate):
            yield data[i : i + sample_rate]

    def frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(n, H, W, 3)`` uint8 at the indices ``floor(times * fps)`` and their times ``(n,)`` s."""
        import decord

        quiet_decoders("decord")
        width, height = target_size(info, short_side)
        with silenced_stderr():
            reader = decord.VideoReader(str(info.path), width=width, height=height, num_threads=1)
            n = len(reader)
            if n == 0 or len(times) == 0:
                return EMPTY_FRAMES
            fps = reader.get_avg_fps() or info.fps or 25.0
            index = list(np.clip(np.floor(np.asarray(times) * fps).astype(int), 0, n - 1))
            frames = reader.get_batch(index).asnumpy()
            frame_times = reader.get_frame_timestamp(index)[:, 0]
        return np.ascontiguousarray(frames, dtype=np.uint8), frame_times.astype(np.float64)


# ----------------------------------------------------------------------------- fallback
BACKENDS = ("auto", "decord", "pyav")


class FallbackDecoder:
    """Which decoder reads what, and in which order: the only place this is decided. ``auto``: audio
    files by libsndfile, other audio by PyAV then decord, frames by PyAV (it skips non-reference
    frames) then decord.

    Args:
        backend: ``"auto"`` (see above), ``"decord"`` (a decord failure is
            final; audio decord declines still goes to PyAV) or ``"pyav"``.

    Raises:
        MediaError: unknown backend name.
    """

    def __init__(self, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise MediaError(f"unknown decoder backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.backend, self.soundfile = backend, SoundFileBackend()
        self.decord, self.pyav = DecordBackend(), PyAVBackend()
        self.notes: list[str] = []  # "audio read by decord after pyav: ..." when a later decoder took over

    def audio(self, info: MediaInfo, sample_rate: int, t0: float, t1: float) -> np.ndarray:
        """Mono float32 ``(samples,)`` at ``sample_rate`` Hz of ``[t0, t1)`` seconds; raises :class:`MediaError`.
        ``auto``: audio files through libsndfile (much faster), others through PyAV (in phase with the source;
        decord's resampled output lags by its filter delay, 0.5-5 ms, and took twice the time), then decord."""
        call = lambda b: b.audio(info, sample_rate, t0, t1)  # noqa: E731
        takes_decord = self.decord.accepts_audio(info)
        if self.backend == "auto":
            if self.soundfile.accepts_audio(info):
                try:
                    return self.soundfile.audio(info, sample_rate, t0, t1)
                except Exception:  # noqa: BLE001 - a file libsndfile misreads goes to the media decoders
                    pass
            return self._run(info, "audio", False, call, fallback=self.decord if takes_decord else None)
        return self._run(info, "audio", self.backend == "decord" and takes_decord, call)

    def frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(frames (n, H, W, 3) uint8, times (n,) float64 s)``; raises :class:`MediaError`.

        ``auto``: PyAV first (it skips non-reference frames: 20-30 % less decoding CPU than decord, which
        decodes every frame), then decord."""
        if self.backend == "auto":
            return self._run(info, "video", False, lambda b: b.frames(info, times, short_side), fallback=self.decord)
        return self._run(info, "video", self.backend != "pyav", lambda b: b.frames(info, times, short_side))

    def stream_audio(self, path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
        """Bounded-memory mono chunks: libsndfile for plain audio files (``auto``), else PyAV (decord
        holds the whole track)."""
        if self.backend == "auto":
            info = self.pyav.probe(path)
            if self.soundfile.accepts_audio(info):
                return self.soundfile.stream_audio(path, sample_rate, start)
        return self.pyav.stream_audio(path, sample_rate, start)

    def _run(self, info: MediaInfo, what: str, try_decord: bool, call, fallback=None):
        """``call(backend)``: decord first (when ``try_decord``) then PyAV, or PyAV then ``fallback``.
        A decord failure is final for ``backend="decord"``; PyAV's own :class:`MediaError` is final
        unless a fallback follows it (and is raised if that fails too). A later decoder that succeeds
        leaves a line in :attr:`notes` naming the earlier failures."""
        errors, pyav_error = [], None
        order = [self.decord, self.pyav] if try_decord else [self.pyav] + ([fallback] if fallback else [])
        for backend in order:
            try:
                result = call(backend)
                if errors:
                    self.notes.append(f"{what} read by {backend.name} after " + "; ".join(errors))
                return result
            except MediaError as exc:
                if backend is self.pyav:
                    if fallback is None:
                        raise
                    pyav_error = exc
                errors.append(f"{backend.name}: {reason(exc)}")
            except ImportError as exc:
                errors.append(f"{backend.name}: {exc}")
            except Exception as exc:
                errors.append(f"{backend.name}: {reason(exc)}")
                if backend is self.decord and self.backend == "decord":
                    break
        if pyav_error is not None:
            raise pyav_error
        raise media_error(info.path, f"{what} could not be decoded (" + "; ".join(errors) + ")")
