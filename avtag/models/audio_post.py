"""What happens to the audio network's scores before anything reads them, in one place for the
engines (``avtag tag``, the Python API) and the evaluation (``avtag evaluate`` / ``ablate``):

1. the class-prior shift (``model.class_prior``, :mod:`avtag.models.class_prior`), then
2. the speech detector (``model.speech_detector``, :mod:`avtag.models.speech`), which joins a
   probability learnt on real recordings and so is not shifted.

No torch here.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from avtag.models.class_prior import prior_shift
from avtag.models.speech import speech_expert


class AudioPost:
    """The audio branch's post-processing for one model (module docstring).

    Args:
        classes: the model's output classes, in order.
        sample_rate: Hz of the waveforms given to :meth:`__call__`.
        unknown: classes the audio model does not score (NaN columns).
        speech_detector: ``model.speech_detector`` (``none`` or ``silero_vad``).
        class_prior: ``model.class_prior`` (``training`` or ``audioset``).
        class_priors: the model's stored class priors, one value per class of ``classes``
            (:func:`avtag.models.class_prior.prior_shift`; :func:`tagger_priors` puts them in that order).

    Raises:
        SpeechDetectorError, ClassPriorError: a detector or prior this model cannot use.
    """

    def __init__(self, classes: Sequence[str], sample_rate: int, unknown: Sequence[str] = (),
                 speech_detector: str = "none", class_prior: str = "training",
                 class_priors: Mapping[str, Sequence] | None = None) -> None:
        self.prior = prior_shift(class_prior, class_priors, len(classes), "this audio model")
        self.speech = speech_expert(speech_detector, classes, sample_rate, unknown)

    def __call__(self, waveform: np.ndarray, clipwise: np.ndarray, framewise: np.ndarray | None,
                 frame_hop: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(clipwise (B, C), framewise (B, T, C) | None)`` after both steps; the inputs are not changed.

        Args:
            waveform: ``(B, samples)`` float32, the audio branch's input.
            clipwise / framewise: the network's probabilities; frame_hop: seconds between frames.
        """
        if self.prior is not None:
            clipwise = self.prior(clipwise)
            framewise = None if framewise is None else self.prior(framewise)
        if self.speech is not None:
            clipwise, framewise = self.speech(waveform, clipwise, framewise, frame_hop)
        return clipwise, framewise


def with_tag_settings(model, tag) -> None:
    """Apply a config's ``tag.class_prior`` (unless ``model``) and ``tag.speech_detector: false`` to a
    loaded audio ``model``'s ``model_config``, so that ``avtag evaluate`` / ``ablate`` score what
    ``avtag tag`` with the same settings reports."""
    import dataclasses

    changes = {} if tag.class_prior == "model" else {"class_prior": tag.class_prior}
    if not tag.speech_detector:
        changes["speech_detector"] = "none"
    if changes:
        model.model_config = dataclasses.replace(model.model_config, **changes)


def tagger_post(tagger) -> AudioPost | None:
    """The :class:`AudioPost` of a composed :class:`~avtag.models.tagger.AudioVisualTagger` (its audio
    model's ``model_config`` and ``class_priors``, on the tagger's classes; :func:`with_tag_settings`
    changes the settings), or None without an audio model."""
    audio = tagger.audio
    if audio is None:
        return None
    cfg = audio.model_config
    return AudioPost(tagger.classes, audio.sample_rate, tagger.unknown_to_audio, cfg.speech_detector,
                     cfg.class_prior, tagger_priors(tagger))


def tagger_priors(tagger) -> dict[str, list]:
    """The audio model's stored class priors (``{name: [p or None per class]}``) in the order of the
    tagger's classes; None for a class the audio model does not score."""
    stored = getattr(tagger.audio, "class_priors", None) or {}
    index = {c: i for i, c in enumerate(tagger.audio.classes)}
    return {name: [values[index[c]] if c in index else None for c in tagger.classes]
            for name, values in stored.items() if values is not None and len(values) == len(index)}
