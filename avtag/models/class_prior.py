"""Class-prior correction of the audio branch's probabilities (label shift).

A network trained with binary cross-entropy outputs, for every class, the probability that the class
is present *under the class frequencies of its training draw*. The corpus soundscapes hold an animal
in half their clips and babble in one in fifteen; real video does not. When the classes' frequencies
where a model is used are known, its outputs are adjusted to them without retraining (Saerens,
Latinne & Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities: a
simple procedure", Neural Computation 14(1), eq. 2.4). For one sigmoid output per class the
adjustment is a shift of the logit::

    logit p' = logit p + logit(pi_target) - logit(pi_train)

(the post-hoc logit adjustment of Menon et al. 2021, "Long-tail learning via logit adjustment").

``model.class_prior`` names the target: ``training`` (no change) or ``audioset``, the share of
AudioSet's 1.9 M training clips that carry each class (:mod:`avtag.data.audioset_prior`): the class
frequencies of YouTube video, which is what ``avtag tag`` is pointed at. The priors a model needs
are stored in its model file by ``avtag train`` (``class_priors``: ``training``, the label
frequencies of its training draw, balanced sampler included; ``audioset``). Ranking within a class
(AP, mAP) is unchanged by the shift; thresholded outputs (F1) and the ranking of classes within a
clip (label-ranking AP) change.

No torch here: both engines and the evaluation apply the same :class:`PriorShift`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from avtag import AvtagError

#: values of ``model.class_prior``
PRIORS = ("training", "audioset")

#: a prior is clipped into [EPS, 1 - EPS] before its logit is taken
EPS = 1e-4


class ClassPriorError(AvtagError):
    """A class prior the model cannot be adjusted to (unknown name, or priors missing from its file)."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


class PriorShift:
    """Moves clip-wise or frame-wise probabilities from one class prior to another (module docstring).

    Args:
        source: ``(C,)`` class priors the probabilities were trained under, in (0, 1).
        target: ``(C,)`` class priors to adjust them to; NaN (unknown) leaves that class alone.

    Raises:
        ValueError: the two have different lengths.
    """

    def __init__(self, source: Sequence[float], target: Sequence[float]) -> None:
        source = np.asarray(source, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        if source.shape != target.shape or source.ndim != 1:
            raise ValueError(f"class priors of different shapes: {source.shape} and {target.shape}")
        shift = _logit(target) - _logit(source)
        #: ``(C,)`` logit offsets; 0 where either prior is unknown
        self.shift = np.where(np.isfinite(shift), shift, 0.0)

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` (``(..., C)``, e.g. clip-wise ``(B, C)`` or frame-wise ``(B, T, C)``) under the
        target prior: a new array of the same dtype; NaN stays NaN."""
        probs = np.asarray(probs)
        p = np.clip(probs.astype(np.float64), 1e-7, 1.0 - 1e-7)
        z = np.log(p) - np.log1p(-p) + self.shift
        out = 1.0 / (1.0 + np.exp(-z))
        return np.where(np.isnan(probs), np.nan, out).astype(probs.dtype if probs.dtype.kind == "f" else np.float32)


def prior_shift(name: str, priors: Mapping[str, Sequence] | None, n_classes: int,
                where: str = "the audio model") -> PriorShift | None:
    """The :class:`PriorShift` that ``model.class_prior`` ``name`` asks for, or None (``training``).

    Args:
        name: ``training`` or ``audioset``.
        priors: the model's stored class priors (``{"training": [...], "audioset": [...]}``; None for
            unknown values) or None when its file has none.
        n_classes: the model's number of outputs.
        where: the model, in words, for messages.

    Raises:
        ClassPriorError: an unknown name, or priors missing from the model or of the wrong length.
    """
    if name not in PRIORS:
        raise ClassPriorError(f"unknown class prior {name!r}; known: {', '.join(PRIORS)}")
    if name == "training":
        return None
    priors = priors or {}
    missing = [k for k in ("training", name) if priors.get(k) is None]
    if missing:
        raise ClassPriorError(f"{where} has no stored {' and '.join(missing)} class priors (models trained by avtag "
                              f"train since class priors were added store them); use class prior 'training'")
    source, target = ([np.nan if v is None else float(v) for v in priors[k]] for k in ("training", name))
    if len(source) != n_classes or len(target) != n_classes:
        raise ClassPriorError(f"{where}: stored class priors hold {len(source)}/{len(target)} values for "
                              f"{n_classes} classes")
    return PriorShift(source, target)
