"""From the log-mel plane back to sound: mel-domain masks on the complex STFT, inverted (auralisation).

Choi, Fazekas & Sandler (2016, "Explaining Deep Convolutional Neural Networks on Music
Classification", arXiv 1607.02444) auralise an explanation by multiplying a time-frequency mask with
the clip's complex STFT (the phase is kept) and inverting the STFT. The networks here look at a
log-mel (:class:`avtag.features.logmel.LogMel`), so a mask ``(frames, n_mels)`` first has to reach
the STFT bins:

* **mel -> STFT bins: the filterbank's transpose, normalised per STFT bin**: bin ``k`` gets
  ``sum_m fb[k, m] mask[m] / sum_m fb[k, m]``, the average of the masks of the (one or two) mel
  bands whose triangles cover it, weighted by the triangles. It is a convex combination, so the
  STFT mask stays in ``[0, 1]`` and a mask of ones passes the covered band unchanged. The
  pseudo-inverse ``pinv(fb)`` would reconstruct a mel vector exactly but has negative, ringing
  weights (masks below 0 or above 1, which flip or boost components); bins no triangle covers
  (below ``f_min``, above ``f_max``) get 0: the network never saw them.
* **frames**: the STFT uses the front end's window, ``n_fft`` and hop (Hann, centred frames, as
  torchaudio's ``MelSpectrogram``), so STFT frame ``t`` is log-mel frame ``t``. At another sample
  rate the window and hop are scaled to the same durations and the mask is interpolated linearly
  in time; the filterbank is rebuilt on that rate's bins (same Hz band edges).
* **inversion**: ``torch.istft`` (least-squares overlap-add, Griffin & Lim 1984) with ``length`` =
  the input's, so the auralised clip and the residual ``input - auralised`` have the input's length
  and sample rate.

For front ends that are not a log-mel, :func:`gradient_relevance` turns a gradient with respect to
the waveform into a relevance on the same ``(frames, n_mels)`` plane.
"""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from avtag import AvtagError
from avtag.config.schema import LogMelConfig


class InverseError(AvtagError):
    """A mask or waveform that does not fit the front end (shapes, rates)."""


def _f_max(cfg: LogMelConfig) -> float:
    return float(min(cfg.f_max, cfg.sample_rate / 2))


def stft_params(cfg: LogMelConfig, sample_rate: int | None = None) -> tuple[int, int, int]:
    """``(n_fft, hop_length, win_length)`` in samples at ``sample_rate`` Hz (default: the front end's),
    scaled from the front end's so the window and hop last equally long."""
    scale = (sample_rate or cfg.sample_rate) / cfg.sample_rate
    n_fft = max(2, int(round(cfg.n_fft * scale)))
    return n_fft, max(1, int(round(cfg.hop_length * scale))), min(n_fft, max(2, int(round(cfg.win_length * scale))))


def mel_filterbank(cfg: LogMelConfig, sample_rate: int | None = None) -> torch.Tensor:
    """The front end's mel filterbank ``(n_fft // 2 + 1, n_mels)`` on the STFT bins at ``sample_rate``
    (default: the front end's rate, where it equals ``LogMel(cfg).mel.mel_scale.fb``): HTK mel
    scale, unnormalised triangles between ``f_min`` and ``min(f_max, sample_rate / 2)`` Hz."""
    rate = int(sample_rate or cfg.sample_rate)
    n_fft = stft_params(cfg, rate)[0]
    return torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, float(cfg.f_min), _f_max(cfg), int(cfg.n_mels),
                                                 rate, norm=None, mel_scale="htk")


def mel_band_edges(cfg: LogMelConfig) -> np.ndarray:
    """``(n_mels, 3)`` Hz: the lower edge, centre and upper edge of each mel band's triangle."""
    def to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    points = np.linspace(to_mel(cfg.f_min), to_mel(_f_max(cfg)), cfg.n_mels + 2)
    hz = 700.0 * (10.0 ** (points / 2595.0) - 1.0)
    return np.stack([hz[:-2], hz[1:-1], hz[2:]], axis=1)


def mel_to_stft_mask(mask: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """A mel-band mask ``(..., n_mels)`` as an STFT-bin mask ``(..., n_freqs)``: the filterbank's
    transpose normalised per bin (see the module docstring); uncovered bins get 0."""
    if mask.shape[-1] != fb.shape[1]:
        raise InverseError(f"mask has {mask.shape[-1]} mel bands, the filterbank {fb.shape[1]}")
    fb = fb.to(mask)
    weight = fb.sum(dim=1)  # (n_freqs,)
    return (mask @ fb.T) / weight.clamp_min(1e-12) * (weight > 1e-12)


def stft(waveform: torch.Tensor, cfg: LogMelConfig, sample_rate: int | None = None) -> torch.Tensor:
    """Complex STFT ``(n_freqs, frames)`` of a waveform ``(samples,)`` with the front end's Hann window,
    ``n_fft`` and hop scaled to ``sample_rate`` (centred frames, reflect padding, as torchaudio)."""
    n_fft, hop, win = stft_params(cfg, sample_rate)
    window = torch.hann_window(win, dtype=waveform.dtype, device=waveform.device)
    return torch.stft(waveform, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)


def _resample_frames(mask: torch.Tensor, mask_hop_s: float, frames: int, hop_s: float) -> torch.Tensor:
    """Linear interpolation of ``mask (T, K)`` (frame ``t`` at ``t * mask_hop_s`` s) at ``frames``
    times ``i * hop_s`` (held constant beyond the ends)."""
    pos = (torch.arange(frames, dtype=torch.float64) * hop_s / mask_hop_s).clamp(0, mask.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=mask.shape[0] - 1)
    frac = (pos - lo).to(mask.dtype)[:, None]
    return mask[lo] * (1 - frac) + mask[hi] * frac


def apply_mel_mask(waveform: np.ndarray | torch.Tensor, sample_rate: int, mask: np.ndarray | torch.Tensor,
                   mask_hop_s: float, cfg: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Auralise a mel-domain mask: ``istft(stft(x) * mask_stft)`` and the residual ``x - that``.

    Args:
        waveform: ``(samples,)`` mono float audio at ``sample_rate`` Hz (any rate).
        mask: ``(frames, n_mels)`` in [0, 1] on the log-mel grid, frame ``t`` centred at
            ``t * mask_hop_s`` seconds (the front end's ``frame_hop``).
        cfg: the front end's settings (window, hop, mel bands).

    Returns:
        ``(auralised, residual)``, float32 ``(samples,)`` each, at ``sample_rate`` Hz; they sum to the input.

    Raises:
        InverseError: a waveform that is not 1-D or shorter than a window, or a mask of the wrong width.
    """
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if not torch.is_tensor(waveform) else waveform).float()
    m = torch.as_tensor(mask).float()
    n_fft, hop, win = stft_params(cfg, sample_rate)
    if x.dim() != 1 or x.numel() <= n_fft // 2:
        raise InverseError(f"waveform must be (samples,) longer than half a window ({n_fft // 2}); "
                           f"got {tuple(x.shape)}")
    if m.dim() != 2 or m.shape[1] != cfg.n_mels:
        raise InverseError(f"mask must be (frames, {cfg.n_mels}); got {tuple(m.shape)}")
    spec = stft(x, cfg, sample_rate)  # (n_freqs, T)
    frame_mask = _resample_frames(m.clamp(0, 1), mask_hop_s, spec.shape[1], hop / sample_rate)
    bins = mel_to_stft_mask(frame_mask, mel_filterbank(cfg, sample_rate))  # (T, n_freqs)
    window = torch.hann_window(win, dtype=x.dtype)
    kept = torch.istft(spec * bins.T, n_fft, hop, win, window, center=True, length=x.numel())
    return kept.numpy(), (x - kept).numpy()


def gradient_relevance(waveform: torch.Tensor, gradient: torch.Tensor, cfg: LogMelConfig) -> torch.Tensor:
    """Relevance ``(frames, n_mels)`` of each log-mel cell from a gradient with respect to the waveform.

    ``Re(conj(STFT(gradient)) * STFT(waveform))`` per STFT bin is, for a network that sees the clip
    through its power spectrogram, proportional to the derivative with respect to the log power of
    that bin (the STFT is close to a tight frame); summing it over each mel triangle
    (``relevance @ fb``) gives the derivative with respect to the log mel energy, comparable with
    the gradient of a log-mel front end. Any front end, including learnt ones, can be explained this
    way; the map is limited to what the STFT grid resolves.

    Args:
        waveform, gradient: ``(samples,)`` at the front end's sample rate.
    """
    x, g = waveform.detach().float().reshape(-1), gradient.detach().float().reshape(-1)
    rel = (stft(g, cfg).conj() * stft(x, cfg)).real.T  # (frames, n_freqs)
    return rel @ mel_filterbank(cfg).to(rel)


__all__ = ["InverseError", "apply_mel_mask", "gradient_relevance", "mel_band_edges", "mel_filterbank",
           "mel_to_stft_mask", "stft", "stft_params"]
