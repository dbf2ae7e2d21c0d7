"""Multiple-instance-learning (MIL) pooling: frame-wise probabilities -> clip-wise.

A weakly labelled clip is a "bag" of frames; the clip carries a label when some
frames contain the sound. Every pooling here maps frame-wise probabilities
``(batch, time_frames, classes)`` in [0, 1] to clip-wise probabilities
``(batch, classes)`` in [0, 1]:

* ``max``: ``y = max_t y_t`` -- only the loudest frame gets a gradient.
* ``mean``: ``y = mean_t y_t`` -- as in the DCASE 2017 Task 4 winning gated CRNN
  (Xu et al. 2017) for tagging.
* ``linear_softmax``: ``y = sum_t y_t^2 / sum_t y_t`` -- frames weight
  themselves by their own probability; best for localization in Wang, Li & Metze
  (2019), "A Comparison of Five Multiple Instance Learning Pooling Functions for
  Sound Event Detection with Weak Labeling" (TALNet, arXiv 1810.09050).
* ``exp_softmax``: ``y = sum_t y_t e^{y_t} / sum_t e^{y_t}`` (same comparison).
* ``attention``: ``y = sum_t w_t y_t`` with weights ``w_t`` (per class,
  normalised over frames) predicted from the frame features by a learned
  attention branch -- Xu, Kong, Huang, Wang & Plumbley (2017), "Attention and
  Localization based on a Deep Convolutional Recurrent Model for Weakly
  Supervised Audio Tagging" (arXiv 1703.06052).

Use :func:`build_pooling` to select one by name (the ``model.pooling`` config key).
"""
from __future__ import annotations

import torch
from torch import nn

from avtag import AvtagError

_EPS = 1e-7


class MILPooling(nn.Module):
    """Base class: ``forward(framewise, features) -> (clipwise, attention)``.

    Args of ``forward``:
        framewise: ``(batch, time_frames, classes)`` frame-wise probabilities.
        features: ``(batch, time_frames, feature_dim)`` frame features the
            probabilities were computed from (used by attention pooling only).

    Returns:
        ``clipwise`` ``(batch, classes)`` in [0, 1], and the attention weights
        ``(batch, time_frames, classes)`` (summing to 1 over frames) or None.
    """

    #: whether ``forward`` returns attention weights
    has_attention = False

    def forward(self, framewise: torch.Tensor, features: torch.Tensor | None = None):
        raise NotImplementedError


class MaxPooling(MILPooling):
    """Clip probability = maximum frame probability (per class)."""

    def forward(self, framewise, features=None):
        return framewise.max(dim=1).values, None


class MeanPooling(MILPooling):
    """Clip probability = mean frame probability (per class); Xu et al. 2017."""

    def forward(self, framewise, features=None):
        return framewise.mean(dim=1), None


class LinearSoftmaxPooling(MILPooling):
    """Clip probability ``sum_t y_t^2 / sum_t y_t`` (Wang, Li & Metze 2019, TALNet)."""

    def forward(self, framewise, features=None):
        return (framewise * framewise).sum(dim=1) / framewise.sum(dim=1).clamp_min(_EPS), None


class ExpSoftmaxPooling(MILPooling):
    """Clip probability ``sum_t y_t exp(y_t) / sum_t exp(y_t)`` (Wang, Li & Metze 2019)."""

    def forward(self, framewise, features=None):
        weights = torch.softmax(framewise, dim=1)
        return (framewise * weights).sum(dim=1), None


class AttentionPooling(MILPooling):
    """Learned attention over frames, one weight per frame and class.

    ``w = softmax_over_frames(features @ W + b)``; ``clipwise = sum_t w_t * y_t``.
    As in Xu et al. (2017, arXiv 1703.06052) the attention branch and the
    frame-wise classifier read the same recurrent features, so the weights also
    localize the events in time.

    Args:
        feature_dim: size of the last axis of ``features``.
        num_classes: number of sound classes.
    """

    has_attention = True

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.attention = nn.Linear(feature_dim, num_classes)

    def forward(self, framewise, features=None):
        if features is None:
            raise AvtagError("attention pooling needs the frame features")
        weights = torch.softmax(self.attention(features).float(), dim=1)  # (B, T, C), sums to 1 over T
        clipwise = (framewise.float() * weights).sum(dim=1)
        return clipwise.clamp(0.0, 1.0).to(framewise.dtype), weights


#: pooling name (config value) -> class
POOLINGS: dict[str, type[MILPooling]] = {
    "max": MaxPooling,
    "mean": MeanPooling,
    "linear_softmax": LinearSoftmaxPooling,
    "exp_softmax": ExpSoftmaxPooling,
    "attention": AttentionPooling,
}


def build_pooling(name: str, feature_dim: int, num_classes: int) -> MILPooling:
    """MIL pooling module by name (``max``, ``mean``, ``linear_softmax``, ``exp_softmax``, ``attention``).

    ``linear-softmax`` and ``linearsoftmax`` are accepted for ``linear_softmax``.

    Raises:
        AvtagError: unknown name.
    """
    key = str(name).lower().replace("-", "_")
    key = {"linearsoftmax": "linear_softmax", "expsoftmax": "exp_softmax", "average": "mean",
           "avg": "mean"}.get(key, key)
    if key not in POOLINGS:
        raise AvtagError(f"unknown MIL pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    cls = POOLINGS[key]
    return cls(feature_dim, num_classes) if cls is AttentionPooling else cls()
