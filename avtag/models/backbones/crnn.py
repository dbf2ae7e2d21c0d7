"""CRNN backbones: conv blocks (plain or gated) -> bidirectional GRU -> frame-wise sigmoid.

* ``conv: plain`` -- Wang (DCASE 2017) / TALNet-style CRNN: blocks of conv + batch norm
  + ReLU + max-pooling, a bidirectional GRU and a frame-wise sigmoid output layer.
* ``conv: glu`` -- the DCASE 2017 Task 4 winning system (Xu, Kong, Wang & Plumbley 2017,
  "Large-scale weakly supervised audio classification using gated convolutional neural
  network", arXiv 1710.00343): gated linear unit convolutions ``conv_a(x) * sigmoid(conv_b(x))``,
  3x3 kernels, pooling over frequency, then a bidirectional GRU and a frame-wise sigmoid.

Pooling over time in the conv blocks sets the frame-wise resolution: ``time_stride =
prod(time_pool)`` front-end frames per output frame.
"""
from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from avtag import AvtagError
from avtag.config.schema import CRNNConfig
from avtag.models.backbones import Backbone, frame_classifier


class ConvBlock(nn.Module):
    """``n_convs`` x (Conv2d + BatchNorm + ReLU), then max-pooling and dropout.

    Input/output ``(batch, channels, frames, bins)``; both axes shrink by the pooling factors (floor).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, n_convs: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                       nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.convs(x)))


class GatedConv2d(nn.Module):
    """Gated linear unit convolution ``bn(conv_a(x)) * sigmoid(bn(conv_b(x)))``: one Conv2d with
    ``2 * out_ch`` outputs split into a linear and a gate half (Dauphin et al. 2017; Xu et al. 2017)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 2 * out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.bn(self.conv(x)), dim=1)


class GLUBlock(nn.Module):
    """``n_convs`` gated convolutions, then max-pooling and dropout (Xu et al. 2017)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, n_convs: int, pool: tuple[int, int], dropout: float):
        super().__init__()
        self.convs = nn.Sequential(*[GatedConv2d(in_ch if i == 0 else out_ch, out_ch, kernel) for i in range(n_convs)])
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.convs(x)))


class CRNN(Backbone):
    """Conv blocks -> bidirectional GRU -> frame-wise sigmoid.

    ``forward(image (B, C, T, F))`` returns ``(framewise (B, T', classes), features (B, T', D))``
    with ``T' = T // prod(time_pool)`` (floor per block) and ``D = 2 * rnn_hidden``.

    Args:
        in_channels: ``C`` of the front end's image; bins: ``F``.
        num_classes: output classes.
        cfg: ``model.crnn`` settings; dropout, output_prior: from ``model``.

    Raises:
        AvtagError: frequency pooling that leaves no bins.
    """

    def __init__(self, in_channels: int, bins: int, num_classes: int, cfg: CRNNConfig, dropout: float = 0.2,
                 output_prior: float | None = 0.1):
        super().__init__()
        block = GLUBlock if cfg.conv == "glu" else ConvBlock
        blocks, in_ch, freq = [], in_channels, bins
        for ch, fp, tp in zip(cfg.channels, cfg.freq_pool, cfg.time_pool):
            blocks.append(block(in_ch, ch, cfg.kernel_size, cfg.convs_per_block, (tp, fp), dropout))
            in_ch, freq = ch, freq // fp
        if freq < 1:
            raise AvtagError(f"model.crnn.freq_pool pools {bins} bins down to nothing; use smaller factors")
        self.blocks = nn.Sequential(*blocks)
        conv_dim = in_ch * freq
        if cfg.rnn_hidden > 0:
            self.rnn = nn.GRU(conv_dim, cfg.rnn_hidden, num_layers=cfg.rnn_layers, batch_first=True, bidirectional=True)
            self.feature_dim = 2 * cfg.rnn_hidden
        else:
            self.rnn = None
            self.feature_dim = conv_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier = frame_classifier(self.feature_dim, num_classes, output_prior)
        self.time_stride = self.min_frames = prod(cfg.time_pool)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(image)  # (B, ch, T', F')
        b, ch, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, ch * f)
        if self.rnn is not None:
            x, _ = self.rnn(x)
        framewise = torch.sigmoid(self.classifier(self.dropout(x)))
        return framewise, x
