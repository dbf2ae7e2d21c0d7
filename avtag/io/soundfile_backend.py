"""Audio files through libsndfile (``soundfile``) and the SoX resampler (``soxr``): the fast path.

For plain audio files (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...) libsndfile reads samples
directly, 50-100 times faster than decoding them through decord's or PyAV's general media
pipelines (measured on 10 s 16 kHz WAVs: 2 ms against 110-220 ms), and ``soxr`` resamples with
a high-quality band-limited filter. Mono is the mean of the channels, as for the other
backends, so any channel count is mixed the same way. Video containers are not its business:
:meth:`SoundFileBackend.accepts_audio` declines them and :class:`~avtag.io.backends.FallbackDecoder`
goes on to decord / PyAV.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avtag.io.common import MediaInfo

#: suffixes of containers libsndfile reads (video containers are left to the media decoders)
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".w64", ".caf")
#: samples per block of :meth:`SoundFileBackend.stream_audio` (1 s at 48 kHz)
BLOCK = 48000


def _mono(block: np.ndarray) -> np.ndarray:
    """``(frames, channels)`` -> ``(frames,)`` float32 channel mean (no clipping for any channel count)."""
    return np.ascontiguousarray(block.mean(axis=1) if block.ndim == 2 else block, dtype=np.float32)


class SoundFileBackend:
    """libsndfile + soxr for audio files; no video."""

    name = "soundfile"

    def accepts_audio(self, info: MediaInfo) -> bool:
        """An audio-only file with a suffix libsndfile reads (and libsndfile can open it)."""
        if info.has_video or Path(info.path).suffix.lower() not in SOUNDFILE_SUFFIXES:
            return False
        try:
            import soundfile

            soundfile.info(str(info.path))
        except Exception:
            return False
        return True

    def audio(self, info: MediaInfo, sample_rate: int, t0: float, t1: float) -> np.ndarray:
        """Mono float32 ``(samples,)`` at ``sample_rate`` Hz of ``[t0, t1)`` seconds."""
        import soundfile

        with soundfile.SoundFile(str(info.path)) as f:
            native = f.samplerate
            start = int(round(t0 * native))
            f.seek(min(start, f.frames))
            data = _mono(f.read(max(0, int(round(t1 * native)) - start), dtype="float32", always_2d=True))
        out = self._resample(data, native, sample_rate)
        return out[: int(round((t1 - t0) * sample_rate))]

    def stream_audio(self, path, sample_rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
        """Mono float32 chunks from ``start`` seconds on, one block in memory at a time."""
        import soundfile
        import soxr

        with soundfile.SoundFile(str(path)) as f:
            native = f.samplerate
            f.seek(min(int(round(start * native)), f.frames))
            stream = soxr.ResampleStream(native, sample_rate, 1, dtype="float32") if native != sample_rate else None
            for block in f.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
                mono = _mono(block)
                out = stream.resample_chunk(mono) if stream is not None else mono
                if out.size:
                    yield out
            if stream is not None:
                tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.size:
                    yield tail

    def frames(self, info: MediaInfo, times: np.ndarray, short_side: int | None):
        raise NotImplementedError("the soundfile backend reads audio only")

    @staticmethod
    def _resample(data: np.ndarray, native: int, sample_rate: int) -> np.ndarray:
        return resample(data, native, sample_rate)


def resample(data: np.ndarray, native: int, sample_rate: int) -> np.ndarray:
    """``data`` (``(samples,)`` or ``(samples, channels)``) from ``native`` to ``sample_rate`` Hz, float32,
    by the SoX resampler (``soxr``, high quality)."""
    if native == sample_rate or data.size == 0:
        return np.asarray(data, dtype=np.float32)
    import soxr

    return np.ascontiguousarray(soxr.resample(data, native, sample_rate, quality="HQ"), dtype=np.float32)
