"""Audio backbones: a time-frequency image -> frame-wise probabilities and frame features.

Interface every backbone follows (see :class:`Backbone`): ``forward(image (B, C, T, F))``
returns ``(framewise (B, T', classes) in [0, 1], features (B, T', D))`` with
``T' = T // time_stride`` (about). Register new ones in :data:`avtag.models.audio.BACKBONES`.
"""
from __future__ import annotations

import math

from torch import nn


class Backbone(nn.Module):
    """Base class of the audio backbones.

    Attributes:
        time_stride: input frames per output frame.
        feature_dim: ``D``, the width of the frame features (read by attention pooling).
        min_frames: the fewest input frames the network accepts.
        input_norm_momentum: momentum of the front end's batch norm this backbone was designed with.
        freezes_input: True when the layers next to the input are frozen, so nothing below them can learn.
    """

    time_stride: int = 1
    feature_dim: int = 0
    min_frames: int = 1
    input_norm_momentum: float | None = None
    freezes_input: bool = False


def frame_classifier(feature_dim: int, num_classes: int, output_prior: float | None) -> nn.Linear:
    """The frame-wise output layer; its bias starts at ``logit(output_prior)`` ("prior
    initialisation", Lin et al. 2017, Focal Loss): weak labels are sparse, so starting near
    the prior skips the phase in which the network only learns that most classes are absent."""
    layer = nn.Linear(feature_dim, num_classes)
    if output_prior:
        nn.init.constant_(layer.bias, math.log(output_prior / (1 - output_prior)))
    return layer
