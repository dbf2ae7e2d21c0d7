"""Audio branch: log-mel front end + CRNN (plain or gated convolutions) + MIL pooling.

``AudioTagger`` takes a waveform ``(batch, samples)`` at ``audio.sample_rate`` Hz
(or a log-mel ``(batch, frames, n_mels)``) and returns a
:class:`~avtag.models.types.TaggerOutput` with clip-wise and frame-wise
probabilities. The log-mel front end is part of the model (as in PANNs, Kong et
al. 2020) so training and tagging cannot drift apart.

Architectures:

* ``conv: plain`` -- Wang (DCASE 2017) / TALNet-style CRNN: blocks of
  conv (5x5) + batch norm + ReLU + max-pooling, a bidirectional GRU (100 units
  per direction) and a frame-wise sigmoid output layer.
* ``conv: glu`` -- the DCASE 2017 Task 4 winning system (Xu, Kong, Wang &
  Plumbley 2017, "Large-scale weakly supervised audio classification using
  gated convolutional neural network", arXiv 1710.00343): gated linear unit
  convolutions, ``conv_a(x) * sigmoid(conv_b(x))``, 3x3 kernels, pooling over
  frequency, then a bidirectional GRU (128 units) and frame-wise sigmoid.

Pooling over time in the conv blocks sets the frame-wise resolution:
``frame_hop = audio.hop_length / sample_rate * prod(time_pool)`` seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
import math
from math import prod

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from avtag import AvtagError
from avtag.features.logmel import LogMel, LogMelConfig
from avtag.models.pooling import build_pooling
from avtag.models.types import TaggerOutput


@dataclass(frozen=True)
class AudioModelConfig:
    """Settings of the CRNN (the ``model:`` config section).

    Attributes:
        conv: ``"plain"`` (conv + BN + ReLU) or ``"glu"`` (gated linear units).
        channels: output channels of each conv block.
        kernel_size: square conv kernel size.
        convs_per_block: conv layers per block (pooling after the last one).
        freq_pool / time_pool: max-pooling factor of each block along mel bins /
            frames (``time_pool`` product sets the frame-wise resolution).
        rnn_hidden: GRU units per direction (0 disables the GRU).
        rnn_layers: stacked bidirectional GRU layers.
        dropout: dropout after each conv block and before the output layer.
        pooling: MIL pooling name (see :mod:`avtag.models.pooling`).
        output_prior: initial frame-wise probability of every class: the output
            bias starts at ``logit(output_prior)`` ("prior initialisation", Lin et
            al. 2017, "Focal Loss for Dense Object Detection"). Weak labels are
            sparse (DCASE 2017: ~1.3 of 17 classes per clip), and starting near
            the prior skips the first phase of training in which the network
            only learns that most classes are absent. ``null``: PyTorch's default.
        spec_augment: apply SpecAugment masking during training.
        freq_mask / time_mask: maximum mask widths in mel bins / log-mel frames.
        num_freq_masks / num_time_masks: masks of each kind per clip.
    """

    conv: str = "plain"
    channels: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 5
    convs_per_block: int = 1
    freq_pool: tuple[int, ...] = (4, 4, 4)
    time_pool: tuple[int, ...] = (2, 2, 1)
    rnn_hidden: int = 100
    rnn_layers: int = 1
    dropout: float = 0.2
    pooling: str = "attention"
    output_prior: float | None = 0.1
    spec_augment: bool = True
    freq_mask: int = 8
    time_mask: int = 40
    num_freq_masks: int = 2
    num_time_masks: int = 2

    @classmethod
    def from_dict(cls, d: dict | None) -> "AudioModelConfig":
        """Build from the ``model:`` section (unknown keys such as ``name`` are ignored).

        Raises:
            AvtagError: inconsistent settings (list lengths, unknown conv type).
        """
        d = dict(d or {})
        kwargs = {}
        for f in fields(cls):
            if f.name in d and d[f.name] is not None:
                value = d[f.name]
                kwargs[f.name] = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else value
        cfg = cls(**kwargs)
        n = len(cfg.channels)
        if len(cfg.freq_pool) != n or len(cfg.time_pool) != n:
            raise AvtagError(
                f"model: channels, freq_pool and time_pool need one entry per conv block "
                f"(got {n}, {len(cfg.freq_pool)}, {len(cfg.time_pool)})"
            )
        if cfg.output_prior is not None and not 0 < float(cfg.output_prior) < 1:
            raise AvtagError(f"model.output_prior must be in (0, 1) or null, got {cfg.output_prior}")
        if cfg.conv not in ("plain", "glu"):
            raise AvtagError(f"model.conv: expected 'plain' or 'glu', got {cfg.conv!r}")
        return cfg

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class ConvBlock(nn.Module):
    """``convs_per_block`` x (Conv2d + BatchNorm + ReLU), then max-pooling and dropout.

    Input/output ``(batch, channels, time_frames, mel_bins)``; time and mel axes
    shrink by the pooling factors (floor).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, n_convs: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [
                nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.convs(x)))


class GatedConv2d(nn.Module):
    """Gated linear unit convolution: ``bn(conv_a(x)) * sigmoid(bn(conv_b(x)))``.

    One Conv2d with ``2 * out_ch`` outputs split in a linear and a gate half
    (Dauphin et al. 2017; used for audio by Xu et al. 2017, DCASE 2017 Task 4 winner).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 2 * out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.bn(self.conv(x)), dim=1)


class GLUBlock(nn.Module):
    """``convs_per_block`` gated convolutions, then max-pooling and dropout (Xu et al. 2017)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, n_convs: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        self.convs = nn.Sequential(*[GatedConv2d(in_ch if i == 0 else out_ch, out_ch, kernel) for i in range(n_convs)])
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.convs(x)))


class SpecAugment(nn.Module):
    """SpecAugment masking (Park et al. 2019) with torchaudio's ``FrequencyMasking``
    and ``TimeMasking``, independent masks per clip. Identity in eval mode.

    Input/output ``(batch, 1, mel_bins, time_frames)``.
    """

    def __init__(self, freq_mask: int, time_mask: int, num_freq_masks: int, num_time_masks: int):
        super().__init__()
        self.freq = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) for _ in range(num_freq_masks)
        )
        self.time = nn.ModuleList(
            torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) for _ in range(num_time_masks)
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return spec
        for mask in [*self.freq, *self.time]:
            spec = mask(spec)
        return spec


class CRNN(nn.Module):
    """Conv blocks -> bidirectional GRU -> frame-wise sigmoid.

    ``forward(logmel (batch, frames, n_mels))`` returns
    ``(framewise (batch, frames', classes), features (batch, frames', dim))`` with
    ``frames' = frames // prod(time_pool)`` (floor per block).
    """

    def __init__(self, n_mels: int, num_classes: int, cfg: AudioModelConfig):
        super().__init__()
        block = GLUBlock if cfg.conv == "glu" else ConvBlock
        blocks, in_ch, freq = [], 1, n_mels
        for ch, fp, tp in zip(cfg.channels, cfg.freq_pool, cfg.time_pool):
            blocks.append(block(in_ch, ch, cfg.kernel_size, cfg.convs_per_block, (tp, fp), cfg.dropout))
            in_ch, freq = ch, freq // fp
        if freq < 1:
            raise AvtagError(f"model.freq_pool pools {n_mels} mel bins down to nothing; use smaller factors")
        self.blocks = nn.Sequential(*blocks)
        conv_dim = in_ch * freq
        if cfg.rnn_hidden > 0:
            self.rnn = nn.GRU(conv_dim, cfg.rnn_hidden, num_layers=cfg.rnn_layers, batch_first=True, bidirectional=True)
            self.feature_dim = 2 * cfg.rnn_hidden
        else:
            self.rnn = None
            self.feature_dim = conv_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        if cfg.output_prior:  # start every frame-wise output near the prior (Lin et al. 2017)
            nn.init.constant_(self.classifier.bias, math.log(cfg.output_prior / (1 - cfg.output_prior)))

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(logmel.unsqueeze(1))  # (B, ch, T', F')
        b, ch, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, ch * f)
        if self.rnn is not None:
            x, _ = self.rnn(x)
        features = x
        framewise = torch.sigmoid(self.classifier(self.dropout(features)))
        return framewise, features


class AudioTagger(nn.Module):
    """The audio branch: waveform -> log-mel -> (SpecAugment) -> CRNN -> MIL pooling.

    Args:
        num_classes: number of sound classes ``C``.
        audio: log-mel front-end settings (``audio:`` config section).
        model: CRNN settings (``model:`` config section).

    ``forward(x)``: ``x`` is a waveform ``(batch, samples)`` at
    ``audio.sample_rate`` Hz, or a log-mel ``(batch, frames, n_mels)`` (e.g. from
    the feature cache). Returns :class:`TaggerOutput` with ``clipwise (B, C)``,
    ``framewise (B, T, C)``, ``frame_hop`` seconds, ``attention (B, T, C)`` for
    attention pooling (else None) and ``embedding (B, D)`` (mean over time of the
    recurrent features). Raises :class:`AvtagError` for an input of the wrong shape.
    """

    #: momentum of the input batch norm; None keeps a cumulative average, so the running
    #: statistics are right after a few batches already
    input_norm_momentum: float | None = None

    def __init__(self, num_classes: int, audio: LogMelConfig | None = None, model: AudioModelConfig | None = None):
        super().__init__()
        self.audio_config = audio or LogMelConfig()
        self.model_config = model or AudioModelConfig()
        self.num_classes = num_classes
        mc = self.model_config
        self.frontend = LogMel(self.audio_config)
        # per-mel-bin standardisation learned from the data, as PANNs' bn0
        self.input_norm = nn.BatchNorm1d(self.audio_config.n_mels, momentum=self.input_norm_momentum)
        self.spec_augment = (
            SpecAugment(mc.freq_mask, mc.time_mask, mc.num_freq_masks, mc.num_time_masks) if mc.spec_augment else None
        )
        self.backbone = self.build_backbone()
        self.pooling = build_pooling(mc.pooling, self.backbone.feature_dim, num_classes)

    def build_backbone(self) -> nn.Module:
        """The network from log-mel ``(B, T, n_mels)`` to ``(framewise (B, T', C), features (B, T', D))``."""
        return CRNN(self.audio_config.n_mels, self.num_classes, self.model_config)

    @property
    def frame_hop(self) -> float:
        """Seconds between frame-wise outputs."""
        return self.audio_config.frame_hop * prod(self.model_config.time_pool)

    @property
    def embedding_dim(self) -> int:
        return self.backbone.feature_dim

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, samples)`` -> log-mel ``(B, frames, n_mels)``; log-mel passes through."""
        n_mels = self.audio_config.n_mels
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() == 2:
            if x.shape[-1] <= self.audio_config.n_fft // 2:
                raise AvtagError(
                    f"audio too short: {x.shape[-1]} samples, the front end needs more than {self.audio_config.n_fft // 2}"
                )
            return self.frontend(x)
        if x.dim() == 3 and x.shape[-1] == n_mels:
            return x.float()
        raise AvtagError(
            f"audio model input must be a waveform (batch, samples) or log-mel (batch, frames, {n_mels}); "
            f"got shape {tuple(x.shape)}"
        )

    def forward(self, x: torch.Tensor) -> TaggerOutput:
        spec = self.logmel(x)  # (B, T, M)
        min_frames = prod(self.model_config.time_pool)
        if spec.shape[1] < min_frames:
            raise AvtagError(f"audio too short: {spec.shape[1]} log-mel frames, the model needs at least {min_frames}")
        spec = self.input_norm(spec.transpose(1, 2))  # (B, M, T)
        if self.spec_augment is not None and self.training:
            spec = self.spec_augment(spec.unsqueeze(1)).squeeze(1)
        framewise, features = self.backbone(spec.transpose(1, 2))
        clipwise, attention = self.pooling(framewise, features)
        return TaggerOutput(
            clipwise=clipwise,
            framewise=framewise,
            frame_hop=self.frame_hop,
            attention=attention,
            embedding=features.mean(dim=1),
        )


def build_audio_model(config: dict, num_classes: int) -> AudioTagger:
    """The audio branch a full avtag config describes (its ``audio:`` and ``model:`` sections).

    ``model.backbone`` picks the network: ``crnn`` (default, this module) or
    ``efficientnet_lite0`` (:mod:`avtag.models.audio_pretrained`, ImageNet transfer).

    Raises:
        AvtagError: unknown backbone or inconsistent settings.
    """
    backbone = str((config.get("model") or {}).get("backbone") or "crnn")
    if backbone != "crnn":
        from avtag.models.audio_pretrained import BACKBONE, build_pretrained_audio_model

        if backbone != BACKBONE:
            raise AvtagError(f"model.backbone: expected 'crnn' or {BACKBONE!r}, got {backbone!r}")
        return build_pretrained_audio_model(config, num_classes)
    return AudioTagger(
        num_classes,
        LogMelConfig.from_dict(config.get("audio")),
        AudioModelConfig.from_dict(config.get("model")),
    )
