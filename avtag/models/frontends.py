"""Audio front ends: waveform -> a normalised time-frequency "image" for a backbone.

Every front end maps a mono waveform ``(batch, samples)`` at ``audio.sample_rate``
Hz to ``(batch, channels, frames, bins)`` and says how far apart its frames are
(``frame_hop``, seconds). The front end is part of the model (as in PANNs, Kong et
al. 2020), so training, tagging and explanation cannot drift apart.

* ``logmel``: the torchaudio log-mel of :mod:`avtag.features.logmel` followed by a
  batch norm per mel bin (standardisation learnt from the data, PANNs' ``bn0``):
  ``(batch, 1, frames, n_mels)``.
* ``waveform``: a learnt 1D CNN on the raw waveform (:class:`WaveformFrontend`, after Chen
  et al. 2019, arXiv 1911.09349): its ``(channels, 1, frames)`` output is transposed into a
  one-channel image ``(batch, 1, frames, channels)``.
* ``wavegram_logmel``: that learnt "wavegram" stacked with the log-mel as two channels
  ``(batch, 2, frames, n_mels)`` (PANNs' Wavegram-Logmel, Kong et al. 2020).

Register a new front end in :data:`avtag.models.audio.FRONTENDS`.
"""
from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from avtag import AvtagError
from avtag.config.schema import LogMelConfig, WaveformConfig
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


def as_waveform(x: torch.Tensor, frontend: str) -> torch.Tensor:
    """``x`` as a waveform batch ``(B, samples)``; ``(samples,)`` gains a batch axis.

    Raises:
        AudioInputError: any other shape (e.g. a cached log-mel ``(B, frames, n_mels)``, which a
            learnt waveform front end cannot use).
    """
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise AudioInputError(f"the {frontend} front end takes a waveform (batch, samples); got shape {tuple(x.shape)} "
                              "(a cached log-mel cannot be used: it learns its own analysis of the samples)")
    if x.shape[-1] < 1:
        raise AudioInputError("audio too short: 0 samples")
    return x.float()


class ResBlock1d(nn.Module):
    """Residual block on ``(batch, channels, samples)``: ``kernel`` conv + BN + ReLU, ``kernel`` conv
    (dilation 2) + BN, plus the input (a 1x1 conv + BN when the width changes), ReLU, then max-pooling
    over time by ``pool`` (floor). As the 1D ResNet of arXiv 1911.09349 / PANNs' ``ConvPreWavBlock``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, padding=2 * (kernel // 2), dilation=2, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.shortcut = (nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, bias=False), nn.BatchNorm1d(out_ch))
                         if in_ch != out_ch else nn.Identity())
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return self.pool(F.relu(y + self.shortcut(x), inplace=True))


class WaveformFrontend(nn.Module):
    """Learnt raw-waveform front end: waveform ``(B, samples)`` -> image ``(B, 1, frames, bins)``.

    A 1D CNN learns the frequency analysis (Chen et al. 2019, "An End-to-End Audio Classification
    System based on Raw Waveforms and Mix-Training Strategy", arXiv 1911.09349; PANNs' Wavegram,
    Kong et al. 2020): a stem conv (``stem_kernel`` taps, stride ``stem_stride``) + BN + ReLU, then
    residual blocks that down-sample in time (:class:`ResBlock1d`) to ``(B, channels[-1], frames)``,
    i.e. the paper's ``(channels, 1, time)`` map, standardised per channel by a batch norm
    (``norm``) and transposed into the one-channel image ``(B, 1, frames, channels[-1])`` a 2D CNN reads.

    Frames are centred as the log-mel's: the waveform is zero-padded by half a frame on both sides,
    so ``frames = samples // stride + 1`` and frame ``t`` is centred on sample ``t * stride``
    (``stride = stem_stride * prod(pools)``, ``frame_hop = stride / sample_rate`` seconds).

    Args:
        audio: the ``audio:`` section (``sample_rate``).
        cfg: ``model.waveform`` settings.
        norm_momentum: momentum of the output batch norm (None: cumulative average; the learnt
            representation drifts while it trains, so a running momentum is the right choice).

    Raises:
        AvtagError: ``channels`` and ``pools`` of different lengths, or a non-positive size.
    """

    channels = 1

    def __init__(self, audio: LogMelConfig, cfg: WaveformConfig | None = None, norm_momentum: float | None = 0.1):
        super().__init__()
        cfg = cfg or WaveformConfig()
        if len(cfg.channels) != len(cfg.pools) or not cfg.channels:
            raise AvtagError(f"model.waveform: channels and pools need one entry per block "
                             f"(got {len(cfg.channels)} and {len(cfg.pools)})")
        sizes = [cfg.stem_channels, cfg.stem_kernel, cfg.stem_stride, cfg.kernel_size, *cfg.channels, *cfg.pools]
        if min(sizes) < 1:
            raise AvtagError("model.waveform: channels, kernels, strides and pools must be >= 1")
        self.audio, self.cfg = audio, cfg
        self.stem = nn.Sequential(
            nn.Conv1d(1, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride, padding=cfg.stem_kernel // 2,
                      bias=False),
            nn.BatchNorm1d(cfg.stem_channels), nn.ReLU(inplace=True))
        widths = [cfg.stem_channels, *cfg.channels]
        self.blocks = nn.Sequential(*[ResBlock1d(widths[i], widths[i + 1], cfg.kernel_size, cfg.pools[i])
                                      for i in range(len(cfg.pools))])
        self.norm = nn.BatchNorm1d(cfg.channels[-1], momentum=norm_momentum)
        #: samples per output frame
        self.stride = cfg.stem_stride * prod(cfg.pools)

    @property
    def frame_hop(self) -> float:
        """Seconds between frames (``stride / sample_rate``)."""
        return self.stride / self.audio.sample_rate

    @property
    def bins(self) -> int:
        """Size of the "frequency" axis of the image: the last block's channels."""
        return self.cfg.channels[-1]

    def num_frames(self, samples: int) -> int:
        """Frames for a waveform of ``samples`` samples (as the centred log-mel)."""
        return samples // self.stride + 1

    def wavegram(self, x: torch.Tensor) -> torch.Tensor:
        """The learnt representation ``(B, frames, bins)`` before standardisation.

        Raises:
            AudioInputError: not a waveform ``(B, samples)`` / ``(samples,)``.
        """
        x = as_waveform(x, "waveform")
        frames, half = self.num_frames(x.shape[-1]), self.stride // 2
        y = self.blocks(self.stem(F.pad(x, (half, self.stride - half)).unsqueeze(1)))  # (B, bins, ~frames)
        if y.shape[-1] < frames:  # floor division in the pools can lose the last frame: repeat it
            y = F.pad(y, (0, frames - y.shape[-1]), mode="replicate")
        return y[..., :frames].transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gram = self.wavegram(x)  # (B, T, bins)
        return self.norm(gram.transpose(1, 2)).transpose(1, 2).unsqueeze(1)


class WavegramLogmelFrontend(nn.Module):
    """Waveform ``(B, samples)`` -> ``(B, 2, frames, n_mels)``: channel 0 the standardised log-mel
    (:class:`LogMelFrontend`), channel 1 the learnt wavegram (:class:`WaveformFrontend`).

    PANNs' Wavegram-Logmel-CNN (Kong et al. 2020) concatenates the two after its first conv block;
    here they are stacked as the input image's two channels, so every 2D backbone takes them
    unchanged (the EfficientNet projects 2 -> 3 channels by a learnt 1x1 conv). The wavegram's
    bins must equal ``audio.n_mels`` and its stride ``audio.hop_length``, so frame ``t`` of both
    channels is centred on the same sample ``t * hop_length``.

    Args:
        audio: log-mel settings; cfg: ``model.waveform``; norm_momentum: of the log-mel's batch norm.

    Raises:
        AvtagError: bins or stride that do not match the log-mel's (one line naming the fix).
    """

    channels = 2

    def __init__(self, audio: LogMelConfig, cfg: WaveformConfig | None = None, norm_momentum: float | None = None):
        super().__init__()
        cfg = cfg or WaveformConfig()
        self.audio = audio
        self.logmel = LogMelFrontend(audio, norm_momentum)
        self.wavegram = WaveformFrontend(audio, cfg)
        if self.wavegram.bins != audio.n_mels:
            raise AvtagError(f"wavegram_logmel: model.waveform.channels[-1] is {self.wavegram.bins} but audio.n_mels "
                             f"is {audio.n_mels}; the wavegram's bins must match the log-mel's")
        if self.wavegram.stride != audio.hop_length:
            raise AvtagError(f"wavegram_logmel: model.waveform stem_stride x pools = {self.wavegram.stride} samples "
                             f"but audio.hop_length is {audio.hop_length}; the wavegram's frames must match the "
                             "log-mel's")

    @property
    def norm(self) -> nn.BatchNorm1d:
        """The log-mel's per-bin batch norm (the parameter next to the input, as for ``logmel``)."""
        return self.logmel.norm

    @property
    def frame_hop(self) -> float:
        """Seconds between frames (the log-mel's, which the wavegram shares)."""
        return self.logmel.frame_hop

    @property
    def bins(self) -> int:
        """Size of the frequency axis (mel bins; the wavegram has as many)."""
        return self.logmel.bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_waveform(x, "wavegram_logmel")
        mel = self.logmel(x)  # (B, 1, T, M)
        gram = self.wavegram(x)  # (B, 1, T, M): same frame count by construction
        return torch.cat([mel, gram], dim=1)


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
