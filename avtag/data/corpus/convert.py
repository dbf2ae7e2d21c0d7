"""Decode any packaged audio file to 16 kHz mono, measure it, and write it as FLAC.

Decoding is PyAV (FFmpeg's libraries), in-process, from a path or from bytes
pulled out of an archive. Headerless formats are named by suffix: Asterisk's
``.g722`` files are raw G.722 (16 kHz), ``.gsm`` raw GSM 06.10 (8 kHz),
``.sln``/``.sln16`` raw signed 16-bit (8/16 kHz). Channels are averaged in
NumPy (not FFmpeg's downmix matrix) and the whole signal is resampled to 16 kHz
at once by :func:`resample`, so the same audio in two containers decodes to the
same samples (the build's duplicate test hashes them). A file FFmpeg refuses is
tried once more with libsndfile (some Ogg Vorbis files of the KDE packages).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avtag.data.corpus import CorpusError

SAMPLE_RATE = 16000

#: suffix -> (FFmpeg demuxer, options) for files without a header
RAW_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    ".g722": ("g722", {}),
    ".gsm": ("gsm", {}),
    ".sln": ("s16le", {"sample_rate": "8000", "ch_layout": "mono"}),
    ".sln16": ("s16le", {"sample_rate": "16000", "ch_layout": "mono"}),
}

#: suffixes of audio files the build decodes (archives are handled by avtag.data.corpus.extract)
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".opus", ".mp3", ".flac", ".aif", ".aiff", ".au", ".g722", ".gsm",
                  ".sln", ".sln16", ".sb")


class DecodeError(CorpusError):
    """An audio file (or archive member) that cannot be decoded."""


@dataclass(frozen=True)
class Decoded:
    """A decoded file.

    Attributes:
        audio: mono float32 samples at :data:`SAMPLE_RATE`, in [-1, 1].
        source_rate: the file's own sample rate (Hz).
        channels: the file's channel count.
        codec: FFmpeg's name for the file's codec.
    """

    audio: np.ndarray
    source_rate: int
    channels: int
    codec: str


def decode(source: str | Path | bytes, name: str, fmt: str | None = None) -> Decoded:
    """Decode ``source`` (a path or the file's bytes) to mono float32 at 16 kHz.

    Args:
        source: the file, or its bytes.
        name: the file's name (for the suffix of headerless formats and for errors).
        fmt: an FFmpeg demuxer name that overrides the suffix (archive members).

    Raises:
        DecodeError: ``name: problem`` when FFmpeg cannot open or decode it, or it holds no audio.
    """
    import av

    suffix = Path(name).suffix.lower()
    demuxer, options = RAW_FORMATS.get(suffix, (None, {}))
    demuxer = fmt or demuxer
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(handle, format=demuxer, options=options, metadata_errors="replace") as container:
            if not container.streams.audio:
                raise DecodeError(f"{name}: no audio stream")
            stream = container.streams.audio[0]
            chunks = []
            converter = None
            for frame in container.decode(stream):
                if converter is None:  # sample-format conversion only (exact); resampling happens below
                    converter = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
                    rate, channels = frame.sample_rate, len(frame.layout.channels)
                frame.pts = None
                chunks += [out.to_ndarray() for out in converter.resample(frame)]
            if converter is not None:
                chunks += [out.to_ndarray() for out in converter.resample(None)]
            codec = stream.codec_context.name
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:  # FFmpeg's errors are OSError/ValueError subclasses
        fallback = _decode_soundfile(source, demuxer)
        if fallback is None:
            raise DecodeError(f"{name}: cannot decode ({type(exc).__name__}: {exc})") from None
        return fallback
    if not chunks:
        raise DecodeError(f"{name}: decodes to no samples")
    audio = resample(np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float64), rate)
    np.clip(audio, -1.0, 1.0, out=audio)
    return Decoded(audio, int(rate), int(channels), codec)


def _decode_soundfile(source: str | Path | bytes, demuxer: str | None) -> Decoded | None:
    """libsndfile's reading of a file FFmpeg refused (some Ogg Vorbis files PyAV rejects), or None."""
    import soundfile as sf

    if demuxer in {f for f, _ in RAW_FORMATS.values()}:
        return None  # headerless formats: libsndfile cannot tell them apart
    try:
        x, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float64", always_2d=True)
        info_codec = "libsndfile"
    except (RuntimeError, sf.LibsndfileError, ValueError, OSError):
        return None
    if not len(x):
        return None
    audio = resample(x.mean(axis=1), rate)
    np.clip(audio, -1.0, 1.0, out=audio)
    return Decoded(audio, int(rate), int(x.shape[1]), info_codec)


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` (mono, ``rate`` Hz) at 16 kHz as float32: polyphase (scipy ``resample_poly``, Kaiser window) for
    rational ratios with small terms, FFT resampling otherwise. One call on the whole signal, so the result does
    not depend on how a container cut the audio into frames (equal audio gives equal samples)."""
    from math import gcd

    from scipy.signal import resample as fft_resample
    from scipy.signal import resample_poly

    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    if rate <= 0:
        raise DecodeError(f"sample rate {rate} Hz")
    g = gcd(SAMPLE_RATE, rate)
    up, down = SAMPLE_RATE // g, rate // g
    if max(up, down) <= 2000:
        return resample_poly(x, up, down).astype(np.float32)
    return fft_resample(x, int(round(len(x) * SAMPLE_RATE / rate))).astype(np.float32)


def trim_silence(x: np.ndarray, top_db: float = 50.0, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Cut leading/trailing 10 ms frames more than ``top_db`` below the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    return x[loud[0] * frame : min(len(x), (loud[-1] + 1) * frame)]


@dataclass(frozen=True)
class Loudness:
    """Level of a clip: ``rms_dbfs`` over the whole clip, ``peak_dbfs``, ``active_s``
    (seconds of 10 ms frames within 40 dB of the loudest frame and above -70 dBFS)."""

    rms_dbfs: float
    peak_dbfs: float
    active_s: float


def loudness(x: np.ndarray, frame: int = SAMPLE_RATE // 100) -> Loudness:
    """RMS and peak in dBFS (full scale = 1.0) and active duration of ``x`` (16 kHz)."""
    x64 = x.astype(np.float64)
    rms = float(np.sqrt(np.mean(x64**2))) if len(x) else 0.0
    peak = float(np.max(np.abs(x64))) if len(x) else 0.0
    n = len(x) // frame
    active = 0.0
    if n:
        frms = np.sqrt(np.mean(x64[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
        db = 20 * np.log10(frms)
        active = float(np.sum((db > db.max() - 40) & (db > -70)) * frame / SAMPLE_RATE)
    db = lambda v: round(20 * np.log10(v), 2) if v > 0 else -200.0  # noqa: E731
    return Loudness(db(rms), db(peak), round(active, 3))


def pcm16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (what the FLAC file stores)."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def audio_hash(x16: np.ndarray) -> str:
    """SHA-1 of 16-bit samples: equal for the same audio in any container."""
    return hashlib.sha1(np.ascontiguousarray(x16).tobytes()).hexdigest()


def write_flac(path: str | Path, x16: np.ndarray) -> None:
    """Write int16 mono samples as a 16 kHz 16-bit FLAC file (atomically: temp file, then rename)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(tmp, x16, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    tmp.replace(path)
