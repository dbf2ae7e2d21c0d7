"""Typed outputs passed between the model, inference and evaluation layers."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TaggerOutput:
    """What an audio model (and the composed audio-visual tagger) returns.

    Attributes:
        clipwise: ``(batch, classes)`` clip-level probabilities in [0, 1].
        framewise: ``(batch, time_frames, classes)`` frame-level probabilities.
        frame_hop: seconds between consecutive ``framewise`` frames.
        attention: ``(batch, time_frames, classes)`` MIL attention weights, or None.
        embedding: ``(batch, dim)`` clip embedding, or None.
        audio_clipwise / video_clipwise: per-branch clip scores ``(batch, classes)`` (NaN
            for a class that branch has no score for, e.g. a zero-shot label the audio model
            does not know), or None when that branch did not run.
        video_framewise: ``(batch, frames, classes)`` video-branch class scores per video frame.
        object_probs: ``(batch, objects)`` ImageNet object probabilities pooled over the frames.
        frame_mask: ``(batch, frames)`` bool, True for real (not padding) video frames.
    """

    clipwise: torch.Tensor
    framewise: torch.Tensor | None = None
    frame_hop: float | None = None
    attention: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    audio_clipwise: torch.Tensor | None = None
    video_clipwise: torch.Tensor | None = None
    video_framewise: torch.Tensor | None = None
    object_probs: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
