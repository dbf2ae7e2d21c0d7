"""Audio front ends: waveform -> a normalised time-frequency "image" for a backbone.

Every front end maps a mono waveform ``(batch, samples)`` at ``audio.sample_rate``
Hz to ``(batch, channels, frames, bins)`` and says how far apart its frames are
(``frame_hop``, seconds). The front end is part of the model (as in PANNs, Kong et
al. 2020), so training, tagging and explanation cannot drift apart.

* ``logmel``: the torchaudio log-mel of :mod:`avtag.features.logmel` followed by a
  batch norm per mel bin (standardisation learnt from the data, PANNs' ``bn0``):
  ``(batch, 1, frames, n_mels)``.

Register a new front end in :data:`avtag.models.audio.FRONTENDS`.
"""
from __future__ import annotations

import torch
from torch import nn

from avtag import AvtagError
from avtag.config.schema import LogMelConfig
from avtag.features.logmel import LogMel


class AudioInputError(AvtagError):
    """Audio the model cannot take: too short, or an array of the wrong shape."""


class LogMelFrontend(nn.Module):
    """Waveform ``(B, samples)`` -> standardised log-mel ``(B, 1, frames, n_mels)``.

    A log-mel ``(B, frames, n_mels)`` (e.g. from the feature cache) is accepted too and
    only standardised.

    Args:
        audio: front-end settings (``audio:`` config section).
        norm_momentum: momentum of the per-bin batch norm; None keeps a cumulative
            average (right after a few batches already).
    """

    channels = 1

    def __init__(self, audio: LogMelConfig, norm_momentum: float | None = None):
        super().__init__()
        self.audio = audio
        self.logmel = LogMel(audio)
        self.norm = nn.BatchNorm1d(audio.n_mels, momentum=norm_momentum)

    @property
    def frame_hop(self) -> float:
        """Seconds between frames."""
        return self.audio.frame_hop

    @property
    def bins(self) -> int:
        """Size of the frequency axis of the output (mel bins)."""
        return self.audio.n_mels

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, frames, n_mels)`` of a waveform ``(B, samples)`` or ``(samples,)``;
        a log-mel passes through.

        Raises:
            AudioInputError: fewer samples than half an FFT window, or a wrong shape.
        """
        n_mels, half = self.audio.n_mels, self.audio.n_fft // 2
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() == 2:
            if x.shape[-1] <= half:
                raise AudioInputError(f"audio too short: {x.shape[-1]} samples, the front end needs more than {half}")
            return self.logmel(x)
        if x.dim() == 3 and x.shape[-1] == n_mels:
            return x.float()
        raise AudioInputError(f"audio model input must be a waveform (batch, samples) or log-mel (batch, frames, "
                              f"{n_mels}); got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(x)  # (B, T, M)
        return self.norm(spec.transpose(1, 2)).transpose(1, 2).unsqueeze(1)


class SpecAugment(nn.Module):
    """SpecAugment masking (Park et al. 2019) with torchaudio's ``FrequencyMasking`` and
    ``TimeMasking``, independent masks per clip. Identity in eval mode.

    Input/output ``(batch, channels, frames, bins)``.
    """

    def __init__(self, freq_mask: int, time_mask: int, num_freq_masks: int, num_time_masks: int):
        super().__init__()
        import torchaudio

        self.freq = nn.ModuleList(torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
                                  for _ in range(num_freq_masks))
        self.time = nn.ModuleList(torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)
                                  for _ in range(num_time_masks))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return image
        spec = image.transpose(2, 3)  # torchaudio masks (..., freq, time)
        for mask in [*self.freq, *self.time]:
            spec = mask(spec)
        return spec.transpose(2, 3)
