"""Log-mel front end (torchaudio), used inside the audio models and by the cache.

Settings: :class:`avtag.config.schema.LogMelConfig` (the ``audio:`` config section).

The DCASE 2017 Task 4 systems use 64 mel bins, a 1024-sample window at 16 kHz and
a hop near 10 ms (Xu et al. 2017; Wang 2017): those are the defaults here.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn

from avtag.config.schema import LogMelConfig

__all__ = ["LogMel", "LogMelConfig"]


class LogMel(nn.Module):
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, time_frames, n_mels)``.

    Power mel spectrogram (Hann window, centred frames) followed by
    ``log(mel + 1e-6)``; natural-log units.
    """

    def __init__(self, config: LogMelConfig | None = None):
        super().__init__()
        self.config = config or LogMelConfig()
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            win_length=c.win_length,
            hop_length=c.hop_length,
            f_min=c.f_min,
            f_max=min(c.f_max, c.sample_rate / 2),
            n_mels=c.n_mels,
            power=2.0,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            if torch.onnx.is_in_onnx_export():
                spec = self.mel.mel_scale(self._power_spectrogram(waveform.float()))
            else:
                spec = self.mel(waveform.float())  # (batch, n_mels, frames)
        return torch.log(spec + 1e-6).transpose(1, 2)

    def _power_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """The power spectrogram ``(batch, n_fft // 2 + 1, frames)`` of torchaudio's ``Spectrogram``
        computed from a real-valued STFT (real and imaginary parts as a last axis of 2): ONNX's STFT
        has no complex type, so this is the form an ONNX export traces (same values to float
        rounding)."""
        s = self.mel.spectrogram
        parts = torch.stft(waveform, s.n_fft, s.hop_length, s.win_length, s.window, center=s.center,
                           pad_mode=s.pad_mode, normalized=False, onesided=s.onesided, return_complex=False)
        return parts.pow(2).sum(-1)
