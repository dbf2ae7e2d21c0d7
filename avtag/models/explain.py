"""What the audio network responded to: guided backpropagation and Grad-CAM on an :class:`AudioModel`.

Explanations differentiate one scalar of the network -- a class's evidence or the activation of one
channel ("unit") of a layer -- with respect to the model input ``x`` of ``AudioModel.forward(x)``: a
log-mel ``(1, frames, n_mels)`` (log-mel front end: the map lies on the time-frequency plane the
network saw) or a waveform ``(1, samples)`` (any front end, including learnt ones).

* **Guided backpropagation** (Springenberg et al. 2015, "Striving for Simplicity", arXiv 1412.6806),
  the projection Choi, Fazekas & Sandler (2016, "Explaining Deep Convolutional Neural Networks on
  Music Classification", arXiv 1607.02444) use to auralise what a music tagger's units respond to:
  at every ReLU the backward pass keeps only positive gradients *and* only where the forward
  activation was positive (the paper's deconvolution keeps the first condition only). Implemented
  with forward hooks on every ``nn.ReLU`` / ``nn.ReLU6`` module: each output is passed through
  :class:`_GuidedGate` (identity forward, ``clamp(grad, min=0)`` backward), so the module's own
  backward supplies the forward-activation gate. Works with in-place ReLUs. Activations called as
  functions (``F.relu``) and gates (GLU, sigmoid) are not hooked: for them the gradient passes
  unchanged (plain saliency), e.g. the GLU-CRNN has no ReLU at all.
* **Integrated gradients** (:func:`integrated_gradients`): gradients along a path from a baseline;
  guided gradients at the clip itself find the *edges* of a long steady sound (inside it the
  network is saturated), integrated ones its whole extent, at ``steps`` times the cost.
* **Grad-CAM** (Selvaraju et al. 2017, arXiv 1610.02391): a 4-D layer's channels weighted by their
  mean gradient, summed, ReLU; a coarse map on that layer's grid, resized to the front-end image.

Class evidence: the frame-wise logits of the backbone's ``classifier`` (every registered backbone has
one), averaged over frames with the pooling's attention weights (or the frame probabilities,
normalised, for poolings without attention), held fixed: logits do not saturate as probabilities do.
A backbone without one ``classifier`` (e.g. multi-level backbones, one per level) falls back to the
logit of the clip-wise probability.
"""
from __future__ import annotations

import difflib
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avtag import AvtagError
from avtag.io.common import shorten
from avtag.models.types import TaggerOutput

#: explanation methods
METHODS = ("guided", "gradcam", "integrated")


class ExplainError(AvtagError):
    """An explanation that cannot be computed: unknown class, layer or unit, unsuitable model."""


@dataclass(frozen=True)
class Target:
    """What to explain: ``kind`` ``"class"`` (``index`` into the audio model's classes) or ``"unit"``
    (channel ``index`` of the output of module ``layer``, a dotted path inside the audio model)."""

    kind: str
    name: str
    index: int
    layer: str | None = None


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through (guided backpropagation)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0.0)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Within the block, every ``nn.ReLU`` / ``nn.ReLU6`` of ``model`` backpropagates guided gradients
    (see the module docstring). Yields the number of hooked modules."""
    hooks = [m.register_forward_hook(lambda _m, _i, out: _GuidedGate.apply(out))
             for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        yield len(hooks)
    finally:
        for h in hooks:
            h.remove()


@contextmanager
def _capture(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the (last) output of each named module during a forward pass."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_m, _i, out):
            seen[name] = out[0] if isinstance(out, tuple) else out
        return record

    hooks = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at dotted path ``name`` (e.g. ``backbone.blocks.2.convs.0``).

    Raises:
        ExplainError: no such module (the message names the closest path).
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=1, cutoff=0.3) if len(name) <= 200 else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ExplainError(f"no layer {shorten(repr(name))} in the audio model{hint} "
                       "(avtag explain --list-layers shows them)")


def conv_layers(model: nn.Module) -> list[tuple[str, int]]:
    """``(dotted path, output channels)`` of every convolution of ``model``, in definition order."""
    return [(n, m.out_channels) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]


def class_target(model: nn.Module, name: str) -> Target:
    """The target of class ``name`` (exact, then case-insensitive).

    Raises:
        ExplainError: a class the audio model does not know (the message names the closest one).
    """
    classes = list(model.classes)
    lower = {c.lower(): i for i, c in enumerate(classes)}
    if name in classes or name.lower() in lower:
        i = classes.index(name) if name in classes else lower[name.lower()]
        return Target("class", classes[i], i)
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.0) if len(name) <= 200 else []
    hint = f"; closest: {classes[lower[close[0]]]!r}" if close else ""
    raise ExplainError(f"unknown class {shorten(repr(name))}{hint}")


def unit_target(model: nn.Module, spec: str) -> Target:
    """The target ``LAYER:INDEX`` (channel ``INDEX`` of module ``LAYER``'s output).

    Raises:
        ExplainError: malformed spec, unknown layer, or a channel the layer does not have.
    """
    layer, sep, index = spec.rpartition(":")
    if not sep or not layer or not index.strip().isdigit():
        raise ExplainError(f"--unit {spec!r}: expected LAYER:INDEX, e.g. backbone.blocks.0.convs.0:3")
    module, i = find_module(model, layer), int(index)
    channels = getattr(module, "out_channels", None) or getattr(module, "num_features", None) \
        or getattr(module, "out_features", None)
    if channels is not None and i >= channels:
        raise ExplainError(f"--unit {spec!r}: layer {layer!r} has {channels} channels (0..{channels - 1})")
    return Target("unit", f"{layer}:{i}", i, layer)


def _unit_value(activation: torch.Tensor, target: Target, module: nn.Module) -> torch.Tensor:
    """Sum of channel ``target.index`` of a layer output: axis 1 of ``(1, channels, ...)`` (convolutions,
    norms), the last axis of ``(1, T, features)`` (linear layers, recurrent layers)."""
    axis = -1 if isinstance(module, (nn.Linear, nn.RNNBase, nn.LayerNorm)) else 1
    if activation.dim() < 2 or target.index >= activation.shape[axis]:
        raise ExplainError(f"--unit {target.name}: the layer's output {tuple(activation.shape)} has no channel "
                           f"{target.index}")
    return activation.select(axis, target.index).sum()


def _class_value(out: TaggerOutput, logits: torch.Tensor | None, c: int) -> torch.Tensor:
    """The evidence of class ``c`` summed over the batch: frame logits averaged with the (fixed)
    attention weights; see the module docstring."""
    if logits is None or logits.dim() != 3 or logits.shape[-1] != out.clipwise.shape[-1]:
        return torch.logit(out.clipwise[:, c].float().clamp(1e-6, 1 - 1e-6)).sum()
    if out.attention is not None:
        weights = out.attention[:, :, c]
    else:
        weights = out.framewise[:, :, c] / out.framewise[:, :, c].sum(dim=1, keepdim=True).clamp_min(1e-7)
    if weights.shape != logits.shape[:2]:  # e.g. a multi-level backbone: frames of another level
        return torch.logit(out.clipwise[:, c].float().clamp(1e-6, 1 - 1e-6)).sum()
    return (weights.detach().float() * logits[:, :, c].float()).sum()


def _forward(model, x: torch.Tensor, extra: dict[str, nn.Module]):
    """``model(x)`` recording the classifier's logits and the ``extra`` modules' outputs."""
    modules = dict(extra)
    classifier = getattr(model.backbone, "classifier", None)
    if isinstance(classifier, nn.Linear):
        modules["__logits__"] = classifier
    with _capture(modules) as seen:
        out = model(x)
    return out, seen


def _values(model, out, seen, targets: Sequence[Target]) -> list[torch.Tensor]:
    values = []
    for t in targets:
        if t.kind == "class":
            values.append(_class_value(out, seen.get("__logits__"), t.index))
        else:
            if t.layer not in seen:
                raise ExplainError(f"--unit {t.name}: layer {t.layer!r} did not run on this input")
            values.append(_unit_value(seen[t.layer], t, find_module(model, t.layer)))
    return values


def guided_backprop(model: nn.Module, x: torch.Tensor, targets: Sequence[Target]) -> tuple[torch.Tensor, TaggerOutput]:
    """Guided-backpropagation gradients of each target with respect to ``x``.

    Args:
        model: an :class:`~avtag.models.audio.AudioModel` in eval mode.
        x: the model input of one clip, ``(1, frames, n_mels)`` log-mel or ``(1, samples)`` waveform.
        targets: classes and/or units (:func:`class_target`, :func:`unit_target`).

    Returns:
        ``(gradients (K, *x.shape[1:]), output)``: one gradient per target (signed; positive =
        more of this input raises the target) and the forward pass's :class:`TaggerOutput` (detached).

    Raises:
        ExplainError: a unit whose layer does not run; AudioInputError: input too short.
    """
    x = x.detach().float().clone().requires_grad_(True)
    extra = {t.layer: find_module(model, t.layer) for t in targets if t.kind == "unit"}
    with torch.enable_grad(), guided_relus(model):
        out, seen = _forward(model, x, extra)
        values = _values(model, out, seen, targets)
        grads = [torch.autograd.grad(v, x, retain_graph=i < len(values) - 1, allow_unused=True)[0]
                 for i, v in enumerate(values)]
    grads = [torch.zeros_like(x) if g is None else g for g in grads]
    return torch.cat(grads).detach(), _detach(out)


def integrated_gradients(model: nn.Module, x: torch.Tensor, targets: Sequence[Target], baseline: torch.Tensor,
                         steps: int = 16, batch: int = 8, multiply: bool = True) -> tuple[torch.Tensor, TaggerOutput]:
    """Integrated gradients (Sundararajan, Taly & Yan 2017, arXiv 1703.01365): the gradient averaged
    along the straight path from ``baseline`` to ``x`` (midpoint rule, ``steps`` points), times
    ``x - baseline``. Unlike a gradient at ``x`` alone it does not vanish where the network is
    saturated (the inside of a long, loud event); the attributions sum to the change of the target
    between baseline and clip. Plain gradients (no guided ReLUs), so that completeness holds.

    Args:
        model, x, targets: as :func:`guided_backprop`.
        baseline: like ``x``, the "absent" input (e.g. the clip's background log-mel).
        steps: points on the path; batch: path points per forward pass (memory).
        multiply: False returns the path-averaged gradients instead of the attributions.

    Returns:
        ``(attributions (K, *x.shape[1:]), output at x)``.
    """
    x, baseline = x.detach().float(), baseline.detach().float().expand_as(x)
    extra = {t.layer: find_module(model, t.layer) for t in targets if t.kind == "unit"}
    alphas = (torch.arange(steps, dtype=torch.float32, device=x.device) + 0.5) / steps
    total = torch.zeros((len(targets), *x.shape[1:]), device=x.device)
    with torch.enable_grad():
        for start in range(0, steps, batch):
            a = alphas[start:start + batch].reshape(-1, *[1] * (x.dim() - 1))
            path = (baseline + a * (x - baseline)).requires_grad_(True)
            out, seen = _forward(model, path, extra)
            values = _values(model, out, seen, targets)
            for k, v in enumerate(values):
                (g,) = torch.autograd.grad(v, path, retain_graph=k < len(values) - 1, allow_unused=True)
                if g is not None:
                    total[k] += g.detach().sum(dim=0)
    with torch.no_grad():
        out = model(x)
    return (total / steps * (x - baseline) if multiply else total / steps), _detach(out)


def default_cam_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The deepest 2-D convolution of the backbone whose output still has >= 4 frequency rows
    (oriented as in :func:`orient_map`), else the deepest one.

    Raises:
        ExplainError: the backbone has no 2-D convolution.
    """
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("backbone.")}
    if not convs:
        raise ExplainError("Grad-CAM needs a 2-D convolution in the backbone; use --method guided")
    with torch.no_grad(), _capture(convs) as seen:
        image = model.image(x)
        model.forward_image(image)
    names = [n for n in convs if n in seen]
    size = image.shape[2:]
    deep = [n for n in names if orient_map(seen[n][0, 0], *size, resize=False).shape[1] >= 4]
    return (deep or names)[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, targets: Sequence[Target], layer: str | None = None
             ) -> tuple[torch.Tensor, TaggerOutput, str]:
    """Grad-CAM maps of class targets on the front-end image plane.

    Args:
        model, x: as :func:`guided_backprop`.
        targets: class targets (units are explained by guided backpropagation only).
        layer: dotted path of a 4-D layer (default: :func:`default_cam_layer`).

    Returns:
        ``(maps (K, frames, bins), output, layer)``: non-negative maps on the grid of
        ``model.image(x)`` (for the log-mel front end: log-mel frames x mel bins).

    Raises:
        ExplainError: a unit target, an unknown layer, or a layer without a 2-D map.
    """
    if any(t.kind != "class" for t in targets):
        raise ExplainError("Grad-CAM explains classes; explain units with --method guided")
    x = x.detach().float()
    layer = layer or default_cam_layer(model, x)
    module = find_module(model, layer)
    with torch.enable_grad():
        out, seen = _forward(model, x, {layer: module})
        act = seen.get(layer)
        if act is None or act.dim() != 4:
            raise ExplainError(f"Grad-CAM layer {layer!r} has no 2-D output map; choose a convolution")
        size = model.image(x).shape[2:]
        values = _values(model, out, seen, targets)
        maps = []
        for i, v in enumerate(values):
            (g,) = torch.autograd.grad(v, act, retain_graph=i < len(values) - 1, allow_unused=True)
            g = torch.zeros_like(act) if g is None else g
            cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1))[0]  # (a, b)
            maps.append(orient_map(cam.detach(), *size))
    return torch.stack(maps), _detach(out), layer


def orient_map(cam: torch.Tensor, frames: int, bins: int, resize: bool = True) -> torch.Tensor:
    """A layer's 2-D map ``(a, b)`` as ``(time, frequency)`` (bilinearly resized to ``(frames, bins)``).

    Backbones may transpose the image (EfficientNet reads frequency as height): the axis order is
    the one where neither axis is larger than its input axis (+2 for padding) and, if both orders
    fit, where the two down-sampling factors are closer.
    """
    a, b = cam.shape

    def cost(t, f):
        if t > frames + 2 or f > bins + 2:
            return math.inf
        return abs(math.log(frames / max(t, 1)) - math.log(bins / max(f, 1)))

    out = cam.T if cost(b, a) < cost(a, b) else cam
    if not resize:
        return out
    return F.interpolate(out[None, None].float(), size=(frames, bins), mode="bilinear", align_corners=False)[0, 0]


def _detach(out: TaggerOutput) -> TaggerOutput:
    return TaggerOutput(**{k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in vars(out).items()})


__all__ = ["ExplainError", "METHODS", "Target", "class_target", "conv_layers", "default_cam_layer", "find_module",
           "grad_cam", "guided_backprop", "guided_relus", "integrated_gradients", "orient_map", "unit_target"]
