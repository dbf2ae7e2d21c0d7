"""Shortcut guards for mixing: random band-limiting, codec degradation and room reverb, applied to every class alike.

The corpus arrives at mixed bandwidths (speech from 11 kHz game archives and
8/16 kHz telephone prompts, effects at 44.1 kHz), so a model could learn "no
energy above 5 kHz means speech". Degrading events of *every* class at random
removes that cue (SOURCES.md, "Sample rate and bandwidth").

* :func:`lowpass`: 8th-order Butterworth low-pass, run forwards and backwards
  (zero phase, so onsets stay where the labels say), cutoff in Hz.
* :func:`codec`: a lossy round trip: ``mp3-24``/``mp3-32``/``mp3-48`` (LAME
  through PyAV at that many kbit/s; the LAME tag makes the decoder drop the
  encoder delay, so samples stay aligned) or ``mulaw`` (G.711 mu-law, 8 bits,
  the telephone companding law). All are deterministic.
* :func:`reverb`: a synthetic room, an exponentially decaying Gaussian noise
  tail with a 60 dB decay time ``rt60_s`` mixed in at ``wet`` (the standard
  statistical model of late reverberation, Schroeder 1962). The constructed
  babble and applause are made in such rooms (:mod:`avtag.data.corpus.construct`)
  while most recordings are close-miked and dry, so without reverb on every
  class "reverberant voice" would mean babble; real speech in a room is reverberant.
"""
from __future__ import annotations

import io

import numpy as np

CODECS = ("mp3-24", "mp3-32", "mp3-48", "mulaw")


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """``x`` low-passed at ``cutoff_hz`` (unchanged when the cutoff is at or above 95 % of Nyquist)."""
    from scipy.signal import butter, sosfiltfilt

    if cutoff_hz >= 0.95 * sample_rate / 2 or len(x) < 64:
        return x
    sos = butter(8, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, x).astype(x.dtype)


def mulaw(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """G.711 mu-law companding to 8 bits and back."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * 255) / 255 * 2 - 1
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(x.dtype)


def mp3(x: np.ndarray, sample_rate: int, kbps: int) -> np.ndarray:
    """MP3 round trip (LAME, mono, ``kbps`` kbit/s); same length as ``x``."""
    import av

    buf = io.BytesIO()
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    scale = 0.95 / peak if peak > 0.95 else 1.0
    with av.open(buf, "w", format="mp3") as c:
        s = c.add_stream("libmp3lame", rate=sample_rate, layout="mono")
        s.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, :] * scale, dtype=np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    buf.seek(0)
    with av.open(buf, format="mp3") as c:  # probing fails on a few frames (a 79 ms event at 48 kbit/s)
        y = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    out = np.zeros(len(x), dtype=np.float64)
    out[: min(len(x), len(y))] = y[: len(x)]
    return (out / scale).astype(x.dtype)


def codec(x: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
    """``x`` through the lossy codec ``name`` (one of :data:`CODECS`).

    Raises:
        ValueError: an unknown codec name.
    """
    if name == "mulaw":
        return mulaw(x)
    if name.startswith("mp3-"):
        return mp3(x, sample_rate, int(name[4:]))
    raise ValueError(f"unknown codec {name!r}; expected one of {', '.join(CODECS)}")


def room_response(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A unit-energy room impulse response ``(rt60_s * sample_rate,)``: noise decaying by 60 dB in ``rt60_s``."""
    n = max(1, int(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)
    return ir / (np.sqrt(np.sum(ir**2)) + 1e-12)


def apply_room(x: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    """``(1 - wet) * x + wet * (x convolved with ir)``, cut to ``len(x)`` (FFT convolution); dtype of ``x``."""
    n = len(x) + len(ir)
    convolved = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(ir, n), n)[: len(x)]
    return ((1 - wet) * x + wet * convolved).astype(x.dtype)


def reverb(x: np.ndarray, sample_rate: int, rt60_s: float, wet: float, seed: int) -> np.ndarray:
    """``x`` in a synthetic room (see module docstring); the impulse response is seeded by ``seed``."""
    return apply_room(x, room_response(rt60_s, sample_rate, np.random.default_rng(seed)), wet)


def degrade(x: np.ndarray, sample_rate: int, cutoff_hz: float | None, codec_name: str | None,
            room: tuple[float, float, int] | list | None = None) -> np.ndarray:
    """``x`` in a room (when ``room`` = ``(rt60_s, wet, seed)``), then low-passed (when ``cutoff_hz``), then
    through a codec (when ``codec_name``): the order sound takes from the room to the microphone to the file."""
    if room:
        x = reverb(x, sample_rate, float(room[0]), float(room[1]), int(room[2]))
    if cutoff_hz:
        x = lowpass(x, sample_rate, cutoff_hz)
    if codec_name:
        x = codec(x, sample_rate, codec_name)
    return x
