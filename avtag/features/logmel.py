"""Log-mel front end (torchaudio), used inside the audio models and by the cache.

The DCASE 2017 Task 4 systems use 64 mel bins, a 1024-sample window at 16 kHz and
a hop near 10 ms (Xu et al. 2017; Wang 2017): those are the defaults here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torchaudio


@dataclass(frozen=True)
class LogMelConfig:
    """Front-end settings; ``hop_length / sample_rate`` is the frame hop in seconds."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "LogMelConfig":
        """Build from a config section, ignoring keys that are not front-end settings."""
        d = d or {}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_hop(self) -> float:
        """Seconds between log-mel frames."""
        return self.hop_length / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Number of frames ``LogMel`` gives for ``num_samples`` samples (centred STFT)."""
        return num_samples // self.hop_length + 1


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
            spec = self.mel(waveform.float())  # (batch, n_mels, frames)
        return torch.log(spec + 1e-6).transpose(1, 2)
