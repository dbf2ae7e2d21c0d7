"""The audio branch, composed from one registry: front end + backbone + MIL pooling.

Data flow (shapes for a 10 s clip at 16 kHz with the default log-mel front end)::

    waveform (B, 160000) --frontend--> image (B, 1, 1001 frames, 64 mel)  [standardised]
      --SpecAugment (training)--> --backbone--> framewise (B, T', C) in [0, 1], features (B, T', D)
      --MIL pooling--> clipwise (B, C)                                  (+ attention (B, T', C))

``frame_hop = frontend.frame_hop * backbone.time_stride`` seconds between frame-wise outputs.
Front ends (:data:`FRONTENDS`) and backbones (:data:`BACKBONES`) are chosen by name from
the ``model:`` config section (``model.frontend``, ``model.backbone``, ``model.pooling``);
a new one is a module plus one registry line.

Front ends: ``logmel``, ``waveform`` (learnt 1D CNN on the raw waveform, arXiv 1911.09349) and
``wavegram_logmel`` (PANNs), :mod:`avtag.models.frontends`. Backbones: ``crnn`` (Wang 2017 CRNN /
Xu et al. 2017 gated CRNN, :mod:`avtag.models.backbones.crnn`), ``efficientnet_lite0`` (ImageNet
transfer, :mod:`avtag.models.backbones.efficientnet`) and ``waveform_cnn`` (multi-level 2D CNN,
:mod:`avtag.models.backbones.waveform_cnn`).

Multi-level backbones return a list of levels ``[(framewise, features), ...]`` (deepest first,
with ``level_strides``): every level gets its own MIL pooling (level 0: ``self.pooling``, so
single-level state-dict keys are unchanged; the others: ``self.level_pooling``); clip-wise = the
mean of the levels' clip-wise probabilities; frame-wise = every level repeated to the finest
level's frames and averaged (the same ensemble that decides the tags localises them; a coarse
level's frame keeps its own time span); attention likewise, renormalised over frames; the
embedding is the deepest level's.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from avtag import AvtagError
from avtag.config.schema import LogMelConfig, ModelConfig
from avtag.models.backbones import Backbone
from avtag.models.frontends import (
    AudioInputError,
    LogMelFrontend,
    SpecAugment,
    WaveformFrontend,
    WavegramLogmelFrontend,
)
from avtag.models.pooling import build_pooling
from avtag.models.types import TaggerOutput


def _crnn(frontend: nn.Module, num_classes: int, cfg: ModelConfig) -> Backbone:
    from avtag.models.backbones.crnn import CRNN

    return CRNN(frontend.channels, frontend.bins, num_classes, cfg.crnn, cfg.dropout, cfg.output_prior)


def _efficientnet(frontend: nn.Module, num_classes: int, cfg: ModelConfig) -> Backbone:
    from avtag.models.backbones.efficientnet import EfficientNetFrames

    return EfficientNetFrames(frontend.channels, num_classes, cfg.efficientnet, cfg.dropout, cfg.output_prior)


def _waveform_cnn(frontend: nn.Module, num_classes: int, cfg: ModelConfig) -> Backbone:
    from avtag.models.backbones.waveform_cnn import WaveformCNN

    return WaveformCNN(frontend.channels, frontend.bins, num_classes, cfg.waveform_cnn, cfg.dropout, cfg.output_prior)


#: ``model.frontend`` -> builder ``(audio settings, model settings, input batch-norm momentum) -> front end``
FRONTENDS: dict[str, Callable[[LogMelConfig, ModelConfig, float | None], nn.Module]] = {
    "logmel": lambda audio, model, momentum: LogMelFrontend(audio, momentum),
    "waveform": lambda audio, model, momentum: WaveformFrontend(audio, model.waveform),
    "wavegram_logmel": lambda audio, model, momentum: WavegramLogmelFrontend(audio, model.waveform, momentum),
}

#: ``model.backbone`` -> builder ``(front end, classes, model settings) -> backbone``
BACKBONES: dict[str, Callable[[nn.Module, int, ModelConfig], Backbone]] = {
    "crnn": _crnn,
    "efficientnet_lite0": _efficientnet,
    "waveform_cnn": _waveform_cnn,
}

#: the front-end batch-norm momentum each backbone was designed with (None: cumulative average)
_NORM_MOMENTUM = {"crnn": None, "efficientnet_lite0": 0.1}


class AudioModel(nn.Module):
    """The audio branch: front end -> (SpecAugment) -> backbone -> MIL pooling.

    Args:
        classes: class names, in output order (the model knows its classes).
        audio: front-end settings (``audio:`` section).
        model: architecture (``model:`` section).

    ``forward(x)``: ``x`` is a waveform ``(batch, samples)`` at ``audio.sample_rate`` Hz
    (or a log-mel ``(batch, frames, n_mels)`` for the log-mel front end). Returns
    :class:`~avtag.models.types.TaggerOutput` with ``clipwise (B, C)``, ``framewise
    (B, T, C)``, ``frame_hop`` seconds, ``attention (B, T, C)`` for attention pooling (else
    None) and ``embedding (B, D)`` (mean over time of the frame features).

    Raises:
        AudioInputError: audio too short for the network, or an array of the wrong shape.
    """

    def __init__(self, classes: tuple[str, ...] | list[str], audio: LogMelConfig | None = None,
                 model: ModelConfig | None = None):
        super().__init__()
        self.classes = tuple(classes)
        self.audio_config = audio or LogMelConfig()
        self.model_config = mc = model or ModelConfig()
        self.frontend = FRONTENDS[mc.frontend](self.audio_config, mc, _NORM_MOMENTUM.get(mc.backbone))
        self.spec_augment = (SpecAugment(mc.freq_mask, mc.time_mask, mc.num_freq_masks, mc.num_time_masks)
                             if mc.spec_augment else None)
        self.backbone = BACKBONES[mc.backbone](self.frontend, len(self.classes), mc)
        self.pooling = build_pooling(mc.pooling, self.backbone.feature_dim, len(self.classes))
        # extra levels of a multi-level backbone (none for a single-level one: no new state-dict keys)
        self.level_pooling = nn.ModuleList(build_pooling(mc.pooling, d, len(self.classes))
                                           for d in getattr(self.backbone, "level_dims", ())[1:])
        if self.backbone.freezes_input:  # nothing in the front end can learn below a frozen stem
            for p in self.frontend.parameters():
                p.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_rate(self) -> int:
        """Hz the waveform input must have."""
        return int(self.audio_config.sample_rate)

    @property
    def frame_hop(self) -> float:
        """Seconds between frame-wise outputs."""
        return self.frontend.frame_hop * self.backbone.time_stride

    @property
    def embedding_dim(self) -> int:
        return self.backbone.feature_dim

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's input ``(B, C, frames, bins)`` for a waveform (SpecAugment in training only)."""
        image = self.frontend(x)
        if self.spec_augment is not None and self.training:
            image = self.spec_augment(image)
        return image

    def forward_image(self, image: torch.Tensor) -> TaggerOutput:
        """Backbone and pooling on a front-end image ``(B, C, frames, bins)`` (explanations
        differentiate through this).

        Raises:
            AudioInputError: fewer frames than the backbone needs.
        """
        if image.shape[2] < self.backbone.min_frames:
            need = self.backbone.min_frames
            raise AudioInputError(f"audio too short: {image.shape[2]} frames, the model needs at least "
                                  f"{need} ({need * self.frontend.frame_hop:.2f} s)")
        out = self.backbone(image)
        if isinstance(out, list):
            return self._combine_levels(out)
        framewise, features = out
        clipwise, attention = self.pooling(framewise, features)
        return TaggerOutput(clipwise=clipwise, framewise=framewise, frame_hop=self.frame_hop, attention=attention,
                            embedding=features.mean(dim=1), audio_clipwise=clipwise)

    def _combine_levels(self, levels: list[tuple[torch.Tensor, torch.Tensor]]) -> TaggerOutput:
        """Pool every level ``(framewise (B, T_l, C), features (B, T_l, D_l))`` with its own MIL pooling and
        combine them (see the module docstring); frames at the finest level's ``T``."""
        poolings = [self.pooling, *self.level_pooling]
        strides = getattr(self.backbone, "level_strides", ())
        if not (len(levels) == len(poolings) == len(strides)):
            raise AvtagError(f"backbone returned {len(levels)} levels for {len(poolings)} poolings and "
                             f"{len(strides)} level strides")
        finest = min(strides)
        frames = max(fw.shape[1] for fw, _ in levels)
        clips, framewise, attention = [], [], []
        for (fw, features), pooling, stride in zip(levels, poolings, strides):
            clipwise, weights = pooling(fw, features)
            clips.append(clipwise)
            framewise.append(_repeat_frames(fw, stride // finest, frames))
            attention.append(None if weights is None else _repeat_frames(weights, stride // finest, frames))
        clipwise = torch.stack(clips).mean(dim=0)
        weights = None
        if all(a is not None for a in attention):
            weights = torch.stack(attention).mean(dim=0)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return TaggerOutput(clipwise=clipwise, framewise=torch.stack(framewise).mean(dim=0), frame_hop=self.frame_hop,
                            attention=weights, embedding=levels[0][1].mean(dim=1), audio_clipwise=clipwise)

    def forward(self, x: torch.Tensor) -> TaggerOutput:
        return self.forward_image(self.image(x))

    # ------------------------------------------------------------------ training from a frozen prefix
    @property
    def has_frozen_prefix(self) -> bool:
        """True when the backbone's lower part is frozen and can be computed once per clip."""
        return getattr(self.backbone, "frozen_blocks", None) is not None

    def frozen_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's output for a waveform ``(B, samples)``: front end (eval: no SpecAugment)
        then :meth:`Backbone.prefix`. Caching it lets training run only the trainable part."""
        return self.backbone.prefix(self.frontend(x))

    def forward_from_prefix(self, z: torch.Tensor) -> TaggerOutput:
        """The trainable part and MIL pooling on :meth:`frozen_prefix` output (same result as
        :meth:`forward` in eval mode)."""
        framewise, features = self.backbone.suffix(z)
        clipwise, attention = self.pooling(framewise, features)
        return TaggerOutput(clipwise=clipwise, framewise=framewise, frame_hop=self.frame_hop, attention=attention,
                            embedding=features.mean(dim=1), audio_clipwise=clipwise)

    @property
    def min_samples(self) -> int:
        """The shortest waveform (samples) the model takes."""
        a = self.audio_config
        hop = int(round(self.frontend.frame_hop * a.sample_rate))
        return max(a.n_fft // 2 + 1, (self.backbone.min_frames - 1) * hop)


def _repeat_frames(x: torch.Tensor, factor: int, frames: int) -> torch.Tensor:
    """``(B, T, C)`` with every frame repeated ``factor`` times, cut or padded (last frame repeated) to
    ``frames``: a coarse level's output on the finest level's time grid."""
    if factor > 1:
        x = x.repeat_interleave(factor, dim=1)
    if x.shape[1] < frames:
        x = torch.cat([x, x[:, -1:].expand(-1, frames - x.shape[1], -1)], dim=1)
    return x[:, :frames]


def build_audio_model(model: ModelConfig, audio: LogMelConfig, classes: tuple[str, ...] | list[str]) -> AudioModel:
    """The audio branch the ``model:`` and ``audio:`` config sections describe, for ``classes``.

    Raises:
        AvtagError: inconsistent settings (e.g. pooling that leaves no frequency bins).
    """
    return AudioModel(classes, audio, model)


def half_precision(state_dict: dict) -> dict:
    """Floating-point tensors of ``state_dict`` as float16 (integer buffers unchanged).

    Halves a checkpoint's size; ``load_state_dict`` casts back to the model's float32 parameters.
    """
    return {k: v.half() if torch.is_floating_point(v) else v for k, v in state_dict.items()}


__all__ = ["AudioInputError", "AudioModel", "BACKBONES", "FRONTENDS", "build_audio_model", "half_precision"]
