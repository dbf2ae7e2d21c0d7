"""Multi-level 2D CNN for the learnt waveform image (and any other front end's image).

After Chen, Hao, Chen, Xie, Yang & Pu (2019), "An End-to-End Audio Classification System based on
Raw Waveforms and Mix-Training Strategy" (arXiv 1911.09349): a 1D network learns the analysis of the
raw waveform (:class:`avtag.models.frontends.WaveformFrontend`), its ``(channels, 1, time)`` output is
read as a one-channel image by a 2D ResNet, and predictions are made from several depths of that
network ("multi-level prediction with attention", after Yu et al. 2018, "Multi-level attention model
for weakly supervised audio classification", arXiv 1803.02353), each level with its own attention
pooling. Sizes here are small enough to train on a CPU.

Shapes for 10 s at 16 kHz with a 20 ms front end (501 frames x 64 bins) and the defaults::

    image (B, C, 501, 64) -> block 1 (B, 16, 250, 32) -> block 2 (B, 32, 125, 16)  -> level: 80 ms frames
      -> block 3 (B, 64, 62, 8)  -> level: 160 ms  -> block 4 (B, 128, 31, 4) -> level: 320 ms
    each level: mean over bins, max+mean smoothing over 3 frames, linear + ReLU = frame features (B, T_l, D),
      linear + sigmoid = frame-wise probabilities (B, T_l, classes)

``forward`` returns the levels as a list ``[(framewise, features), ...]``, deepest first;
:class:`avtag.models.audio.AudioModel` pools each level and combines them (clip-wise: mean of the
levels'; frame-wise: the levels repeated to the finest resolution and averaged).
"""
from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from avtag import AvtagError
from avtag.config.schema import WaveformCNNConfig
from avtag.models.backbones import Backbone, frame_classifier


class ResBlock2d(nn.Module):
    """Residual block on ``(batch, channels, frames, bins)``: 3x3 conv + BN + ReLU, 3x3 conv + BN, plus the
    input (1x1 conv + BN when the width changes), ReLU; then average pooling ``(time_pool, freq_pool)``
    (floor) and dropout."""

    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
                         if in_ch != out_ch else nn.Identity())
        self.pool = nn.AvgPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return self.dropout(self.pool(F.relu(y + self.shortcut(x), inplace=True)))


class LevelHead(nn.Module):
    """One prediction level: feature map ``(B, ch, T, F)`` -> ``(framewise (B, T, classes), features (B, T, D))``.

    Mean over bins, then max + mean over 3 frames (PANNs' smoothing of the frame sequence), dropout,
    ``linear + ReLU`` to ``D = head_dim`` (the frame features attention pooling reads), dropout,
    ``linear + sigmoid``.
    """

    def __init__(self, channels: int, head_dim: int, num_classes: int, dropout: float, output_prior: float | None):
        super().__init__()
        self.hidden = nn.Linear(channels, head_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = frame_classifier(head_dim, num_classes, output_prior)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.mean(dim=3)  # (B, ch, T)
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1, count_include_pad=False)
        features = F.relu(self.hidden(self.dropout(x.transpose(1, 2))), inplace=True)  # (B, T, D)
        return torch.sigmoid(self.classifier(self.dropout(features))), features


class WaveformCNN(Backbone):
    """Residual 2D CNN with multi-level frame-wise outputs.

    ``forward(image (B, C, T, F))`` returns ``[(framewise (B, T_l, classes), features (B, T_l, D)), ...]``,
    one pair per level, deepest first, with ``T_l = T // level_strides[l]`` (floor per block) and
    ``D = head_dim``.

    Attributes (beyond :class:`Backbone`'s):
        level_strides: input frames per output frame of each level (deepest first).
        level_dims: ``D`` of each level's features (deepest first; ``feature_dim`` is the deepest's).
        time_stride: the finest level's stride (the composition's frame-wise resolution).

    Args:
        in_channels: ``C`` of the front end's image; bins: ``F``.
        num_classes: output classes.
        cfg: ``model.waveform_cnn``; dropout, output_prior: from ``model``.

    Raises:
        AvtagError: lists of different lengths, levels outside the blocks or without the last block,
            frequency pooling that leaves no bins.
    """

    def __init__(self, in_channels: int, bins: int, num_classes: int, cfg: WaveformCNNConfig, dropout: float = 0.2,
                 output_prior: float | None = 0.1):
        super().__init__()
        n = len(cfg.channels)
        if not n or not (n == len(cfg.freq_pool) == len(cfg.time_pool)):
            raise AvtagError(f"model.waveform_cnn: channels, freq_pool and time_pool need one entry per block "
                             f"(got {len(cfg.channels)}, {len(cfg.freq_pool)}, {len(cfg.time_pool)})")
        levels = sorted(set(cfg.levels), reverse=True)
        if not levels or levels[0] != n or levels[-1] < 1:
            raise AvtagError(f"model.waveform_cnn.levels: blocks 1..{n} that predict, including the last ({n}); "
                             f"got {list(cfg.levels)}")
        if min([*cfg.freq_pool, *cfg.time_pool, *cfg.channels, cfg.head_dim]) < 1:
            raise AvtagError("model.waveform_cnn: channels, pools and head_dim must be >= 1")
        if bins // prod(cfg.freq_pool) < 1:
            raise AvtagError(f"model.waveform_cnn.freq_pool pools {bins} bins down to nothing; use smaller factors")
        widths = [in_channels, *cfg.channels]
        self.blocks = nn.ModuleList(ResBlock2d(widths[i], widths[i + 1], (cfg.time_pool[i], cfg.freq_pool[i]), dropout)
                                    for i in range(n))
        self.levels = tuple(levels)  # 1-based block numbers, deepest first
        self.heads = nn.ModuleList(LevelHead(cfg.channels[b - 1], cfg.head_dim, num_classes, dropout, output_prior)
                                   for b in self.levels)
        self.level_strides = tuple(prod(cfg.time_pool[:b]) for b in self.levels)
        self.level_dims = (cfg.head_dim,) * len(self.levels)
        self.feature_dim = cfg.head_dim
        self.time_stride = min(self.level_strides)
        self.min_frames = max(self.level_strides)

    def forward(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        maps, x = {}, image
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            maps[i] = x
        return [head(maps[b]) for b, head in zip(self.levels, self.heads)]
