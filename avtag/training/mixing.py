"""Blending training clips: mix-training and mixup, on waveforms.

* **Mix-training** ("An End-to-End Audio Classification System based on Raw
  Waveforms and Mix-Training Strategy", arXiv 1911.09349): ``x = a*x_i + (1-a)*x_j``
  with ``a`` drawn from (0, 1) and the target the *union* of both label sets,
  ``sign(y_i + y_j)``. Every sound in the mixture is present, so the target stays
  a hard multi-hot vector. The paper trains on mixtures first, then fine-tunes
  on unmixed clips (the two stages are scheduled by
  :class:`avtag.training.module.AudioTaggingModule`).
* **Mixup** (Zhang et al. 2018): ``x = l*x_i + (1-l)*x_j``,
  ``y = l*y_i + (1-l)*y_j``, ``l ~ Beta(alpha, alpha)``.

The partner ``j`` of clip ``i`` is a random permutation of the batch. Settings:
:class:`avtag.config.MixConfig` (``training.mixing``).
"""
from __future__ import annotations

import torch

from avtag import AvtagError

MODES = ("none", "mix", "mixup")


def mix_batch(
    waveform: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    alpha: float = 1.0,
    probability: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each clip of a batch with a random partner from the same batch.

    Args:
        waveform: ``(batch, samples)`` float waveforms.
        target: ``(batch, classes)`` multi-hot weak labels in {0, 1}.
        mode: ``"mix"`` (union target, arXiv 1911.09349) or ``"mixup"``
            (interpolated target); ``"none"`` returns the inputs unchanged.
        alpha: Beta(alpha, alpha) parameter of the weight ``a`` of the clip itself.
        probability: chance that a clip is blended at all (else left unmixed).
        generator: random generator (the default one when None).

    Returns:
        ``(waveform, target)`` of the same shapes.
    """
    if mode == "none" or waveform.shape[0] < 2:
        return waveform, target
    if mode not in MODES:
        raise AvtagError(f"unknown mixing mode {mode!r}")
    batch = waveform.shape[0]
    device = waveform.device
    perm = torch.randperm(batch, generator=generator).to(device)
    a = _blend_weights(batch, alpha, generator).to(device=device, dtype=waveform.dtype)
    mixed_rows = (torch.rand(batch, generator=generator) < probability).to(device)
    a = torch.where(mixed_rows, a, torch.ones_like(a))
    shape = (batch,) + (1,) * (waveform.dim() - 1)  # waveforms (B, samples) or any (B, ...) tensor
    x = a.view(shape) * waveform + (1 - a.view(shape)) * waveform[perm]
    partner = target[perm]
    if mode == "mix":
        y = torch.where(mixed_rows[:, None], torch.clamp(target + partner, max=1.0), target)
    else:
        a_t = a.to(target.dtype)[:, None]
        y = a_t * target + (1 - a_t) * partner
    return x, y


def _blend_weights(batch: int, alpha: float, generator: torch.Generator | None) -> torch.Tensor:
    """``(batch,)`` Beta(alpha, alpha) weights in the open interval (0, 1).

    alpha == 1 is the uniform draw of mix-training and uses ``generator``; other
    values use torch's Beta distribution (global generator, seeded by Lightning).
    """
    if alpha == 1.0:
        a = torch.rand(batch, generator=generator)
    else:
        a = torch.distributions.Beta(float(alpha), float(alpha)).sample((batch,))
    return a.clamp(1e-3, 1 - 1e-3)
