"""The sections of the config schema (:mod:`avtag.config.schema`) that act after the networks: late
fusion, what ``avtag tag`` reports, Subtask B evaluation, and ``avtag ablate``.

Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Union


@dataclass
class FusionConfig:
    """Late fusion of the audio and video clip-wise scores (Li et al. 2017).

    Attributes:
        method: ``weighted``, ``logistic`` (per class, fitted on validation clips), ``max``, ``boost``
            (``a + (1 - a) * video_boost * v``: video only adds evidence) or ``gated`` (weighted where
            the label map links a class to objects, audio alone elsewhere); see :mod:`avtag.models.fusion`.
        audio_weight: ``w`` of ``w * audio + (1 - w) * video``: one value or one per class.
        video_boost: ``beta`` of ``boost``; 1 (the default) makes ``boost`` the noisy-OR
            ``1 - (1 - a)(1 - v)`` of the two branches.
        mode: ``both``, ``audio`` or ``video``: the ablation switch.
        weights_file: JSON of a fitted fusion (``LateFusion.save``).
        fit: fit the method on validation clips with video (``logistic`` always is).
        hierarchy: ``audioset``: after fusion a class scores at least its descendants in the AudioSet
            ontology (true-path rule, :mod:`avtag.ontology`); ``none`` where labels do not follow it (DCASE 2017).
    """

    # noisy-OR (boost with video_boost 1) by measurement on the real clips (scripts/real_clips.py;
    # README, model card): the best micro-F1 and LRAP of the rules there
    method: str = "boost"
    audio_weight: Union[float, List[float]] = 0.5
    video_boost: float = 1.0
    mode: str = "both"
    weights_file: str | None = None
    fit: bool = False
    hierarchy: str = "audioset"


@dataclass
class TagConfig:
    """``avtag tag``: what is reported and how events are cut.

    Attributes:
        top_k: at most this many tags per file (0: all).
        threshold: keep tags with fused score >= this.
        objects: ImageNet objects shown per file.
        long_file_s: files longer than this are read window by window.
        window_s: window length for long files, seconds.
        segment_threshold: frame-wise probability for an active frame (``--segments``).
        median_filter_s / min_duration_s: event post-processing, seconds.
        decode_workers: decoding processes (0: one per CPU core, at most 4; decoding is the bottleneck).
        batch_clips: decoded clips whose frames go through the video network in one batch.
        isolate: decode in worker processes (a crashing or hanging decoder costs one file);
            false decodes in the tagging process itself (no start-up cost, no protection).
        speech_detector: use the audio model's speech detector when it has one
            (``model.speech_detector``; the default model does); false: the network's scores alone.
        class_prior: ``model`` (the model's ``model.class_prior``), ``training`` or ``audioset``.
    """

    top_k: int = 5
    threshold: float = 0.1
    objects: int = 5
    long_file_s: float = 120.0
    window_s: float = 30.0
    segment_threshold: float = 0.5
    median_filter_s: float = 0.2
    min_duration_s: float = 0.1
    decode_workers: int = 0
    batch_clips: int = 4
    isolate: bool = True
    speech_detector: bool = True
    class_prior: str = "model"


@dataclass
class EvaluateConfig:
    """Subtask B detection and scoring settings (sed_eval) of ``avtag evaluate`` / ``ablate``."""

    frame_threshold: float = 0.5
    median_filter_s: float = 0.2
    min_duration_s: float = 0.1
    time_resolution: float = 1.0
    t_collar: float = 0.2
    percentage_of_length: float = 0.2


@dataclass
class AblationConfig:
    """``avtag ablate``: split, systems (audio, video, fused, prior), output folder."""

    split: str = "test"
    systems: List[str] = field(default_factory=lambda: ["audio", "video", "fused", "prior"])
    train_if_missing: bool = True
    out: str | None = None
