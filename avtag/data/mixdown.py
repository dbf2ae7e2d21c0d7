"""Rendering a soundscape recipe into audio: the noise floor, each event's stem, the mixture.

The recipe (:class:`~avtag.data.soundscapes.Soundscape`: placed events with their onsets, offsets,
SNRs, speeds and degradations) is drawn by :mod:`avtag.data.soundscapes` (recordings of
``../shared/sounds``) or :mod:`avtag.data.corpus.mixing` (the registry corpus); both render it here.
Levels: a bed's RMS ``snr_db`` over the noise floor; a foreground event's RMS, over its own samples,
``snr_db`` over the floor and beds together.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from avtag.data.soundscapes import PlacedEvent, Soundscape, SoundscapeConfig


def coloured_noise(rng, samples: int, beta: float, dbfs: float) -> np.ndarray:
    """Gaussian noise ``(samples,)`` with power spectrum ``~ 1/f^beta`` at ``dbfs`` dB RMS."""
    spec = np.fft.rfft(rng.standard_normal(samples))
    f = np.fft.rfftfreq(samples)
    f[0] = f[1]
    x = np.fft.irfft(spec * f ** (-beta / 2.0), samples)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def render(scape: Soundscape, sources: dict[str, np.ndarray], cfg: SoundscapeConfig,
           rng) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Mix a recipe: ``(mixture, background, event stems)``, each ``(samples,)`` float32.

    ``mixture == background + sum(stems)`` (after the common peak scaling); each
    stem is zero outside ``[onset, offset)``. Sets every event's ``gain``.
    """
    sr = cfg.sample_rate
    total = int(round(cfg.duration * sr))
    bg = coloured_noise(rng, total, scape.background_beta, scape.background_dbfs)
    bg_rms = 10 ** (scape.background_dbfs / 20)
    stems: dict[int, np.ndarray] = {}
    for i, e in enumerate(scape.events):  # beds first: events are levelled over noise + beds
        if e.bed:
            x = event_stem(sources[e.file], e, cfg, gain=1.0)
            e.gain = float(bg_rms * 10 ** (e.snr_db / 20) / (np.sqrt(np.mean(x**2)) + 1e-12))
            stems[i] = x * e.gain
    ref_rms = float(np.sqrt(np.mean((bg + sum(stems.values())) ** 2))) if stems else bg_rms
    for i, e in enumerate(scape.events):
        if not e.bed:
            x = event_stem(sources[e.file], e, cfg, gain=1.0)
            a, b = int(round(e.onset * sr)), int(round(e.offset * sr))
            e.gain = float(ref_rms * 10 ** (e.snr_db / 20) / (np.sqrt(np.mean(x[a:b] ** 2)) + 1e-12))
            stems[i] = x * e.gain
    stems = [stems[i] for i in range(len(scape.events))]
    mix = bg + (np.sum(stems, axis=0) if stems else 0.0)
    peak = float(np.max(np.abs(mix)))
    if peak > cfg.peak:
        scape.scale = cfg.peak / peak
        mix, bg, stems = mix * scape.scale, bg * scape.scale, [s * scape.scale for s in stems]
        for e in scape.events:
            e.gain *= scape.scale
    return mix.astype(np.float32), bg.astype(np.float32), [s.astype(np.float32) for s in stems]


def event_stem(source: np.ndarray, e: PlacedEvent, cfg: SoundscapeConfig, gain: float | None = None) -> np.ndarray:
    """The event alone in the clip: ``(samples,)`` float64, zero outside ``[onset, offset)``.

    The recording from ``source_offset`` played at ``speed`` (resampled by
    ``speed * 20 / 20`` with torchaudio's sinc interpolation: pitch and tempo change
    together, as speed perturbation, Ko et al. 2015), cut to ``offset - onset``, with
    ``cfg.fade_s`` half-sample-offset linear fades (no sample inside the event is
    faded to exactly 0), times ``gain`` (default: the event's own ``gain``). A multi-channel ``source``
    ``(samples, channels)`` is mixed down to mono first.
    """
    if source.ndim > 1:
        source = source.reshape(len(source), -1).mean(axis=1)
    sr = cfg.sample_rate
    a, b, off = int(round(e.onset * sr)), int(round(e.offset * sr)), int(round(e.source_offset * sr))
    n = b - a
    if e.bed:  # a looped ambience
        x = source[(off + np.arange(n)) % len(source)].astype(np.float64)
    elif e.speed == 1.0:
        x = source[off : off + n].astype(np.float64)
    else:
        import torch
        import torchaudio

        k = int(round(e.speed * 20))
        if abs(k / 20 - e.speed) > 1e-9:
            from avtag.data.soundscapes import SoundscapeError  # the recipe's module imports this one

            raise SoundscapeError(f"speed {e.speed}: must be a multiple of 0.05")
        piece = source[off : off + int(np.ceil(n * e.speed)) + 1]
        piece = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float64))
        x = torchaudio.functional.resample(piece, orig_freq=k, new_freq=20).numpy()[:n]
    if len(x) != n:
        from avtag.data.soundscapes import SoundscapeError

        raise SoundscapeError(f"event {e.file} {e.onset}-{e.offset} s runs past the end of its recording")
    if e.lowpass_hz or e.codec or e.room:
        from avtag.data.corpus.degrade import degrade

        x = degrade(x, sr, e.lowpass_hz, e.codec, e.room)
    fade = min(int(cfg.fade_s * sr), len(x) // 4)
    if fade > 0:
        ramp = (np.arange(fade) + 0.5) / fade
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    stem = np.zeros(int(round(cfg.duration * sr)), dtype=np.float64)
    stem[a : a + len(x)] = x * (e.gain if gain is None else gain)
    return stem
