"""Late fusion of audio-branch and video-branch clip-wise scores.

The multimodal framework of Li et al. (2017), "A Light-Weight Multimodal
Framework for Improved Environmental Audio Tagging", combines the two branches
after each has produced clip-level class scores (late fusion). Methods:

* ``weighted``: ``w * audio + (1 - w) * video`` with one weight or one per
  class; :meth:`LateFusion.fit` can pick ``w`` on validation clips.
* ``logistic``: per class, a logistic regression on the two scores' logits,
  fitted on validation clips (scikit-learn); classes whose validation clips are
  all positive or all negative fall back to the weighted mean.
* ``max``: element-wise maximum.
* ``boost``: ``a + (1 - a) * beta * v``: the audio score, raised by the video score towards 1
  (a noisy-OR in which the video is a partial witness of weight ``beta``, ``fusion.video_boost``;
  with ``beta = 1``, the default, it is the plain noisy-OR ``1 - (1 - a)(1 - v)`` of two independent
  witnesses, Pearl 1988, and the default rule: two branches that agree count for more than either).
  Video can only add evidence: a sound class no object stands for keeps its audio score (no
  ImageNet object is "speech"), and with ``beta <= 0.5`` an object seen but not heard (a dog
  on a leash) cannot reach 0.5 on its own.
* ``gated``: the weighted mean for classes the label map links to objects, and the audio score
  alone for classes without any visual evidence (per-class weights from the label map's column
  mass; set by :class:`avtag.models.tagger.AudioVisualTagger`).

After any method, the **true-path rule** (``fusion.hierarchy: audioset``, :meth:`LateFusion.true_path`):
a class scores at least the largest score of its descendants in the AudioSet ontology
(:mod:`avtag.ontology`), so a seen airliner's "Jet engine" also lifts "Aircraft engine" and "Engine",
and a heard "Door" lifts "Domestic sounds, home sounds". It only raises scores, and only of parents.

``mode`` is the ablation switch: ``both``, ``audio`` (audio only) or ``video``.
A branch that did not run is passed as None; a NaN marks a class one branch
has no score for (e.g. a zero-shot label the audio model does not know). Either
way the other branch's score is used as is.

:class:`LateFusion` is an ``nn.Module``: its weights are buffers and ``forward`` runs in
torch on the tagger's device; fitting uses scikit-learn on NumPy arrays.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from avtag import AvtagError
from avtag.config.output_schema import FusionConfig

METHODS = ("weighted", "logistic", "max", "boost", "gated")
MODES = ("both", "audio", "video")
_EPS = 1e-4


class FusionError(AvtagError):
    """Bad fusion settings, shapes, or a weights file that cannot be read."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _logit_t(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(_EPS, 1 - _EPS))


def _as_2d(x, name: str) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise FusionError(f"{name} scores must be (clips, classes), got shape {a.shape}")
    return a


class LateFusion(nn.Module):
    """Combines clip-wise scores ``(clips, classes)`` of the two branches.

    Args:
        method: one of :data:`METHODS` (module docstring); the default is the config's
            (:class:`~avtag.config.output_schema.FusionConfig`: noisy-OR).
        audio_weight: ``w`` of the weighted mean, a float or ``(classes,)``.
        mode: ``both``, ``audio`` or ``video`` (ablations).
        classes: class names (kept with fitted weights, checked on load).
        video_boost: ``beta`` of ``boost`` in [0, 1] (1: noisy-OR).

    Raises:
        FusionError: unknown method or mode, weight or ``video_boost`` outside [0, 1].
    """

    def __init__(self, method: str = FusionConfig.method, audio_weight: float | Sequence[float] = 0.5,
                 mode: str = "both", classes: Sequence[str] | None = None,
                 video_boost: float = FusionConfig.video_boost) -> None:
        super().__init__()
        if method not in METHODS:
            raise FusionError(f"unknown fusion method {method!r} (one of {', '.join(METHODS)})")
        if mode not in MODES:
            raise FusionError(f"unknown fusion mode {mode!r} (one of {', '.join(MODES)})")
        w = np.asarray(audio_weight, dtype=np.float64)
        if np.any((w < 0) | (w > 1)) or np.any(np.isnan(w)):
            raise FusionError(f"audio_weight must lie in [0, 1], got {audio_weight}")
        if not 0.0 <= video_boost <= 1.0:
            raise FusionError(f"video_boost must lie in [0, 1], got {video_boost}")
        self.method, self.mode, self.video_boost = method, mode, float(video_boost)
        self.classes = tuple(classes) if classes is not None else None
        self.register_buffer("audio_weight", torch.as_tensor(w, dtype=torch.float32))
        self.coef_: np.ndarray | None = None  # (classes, 2): audio logit, video logit
        self.intercept_: np.ndarray | None = None  # (classes,)
        self.fitted_: np.ndarray | None = None  # (classes,) bool: has its own regression
        self.register_buffer("closure", None)  # (classes, classes) bool: [d, a] a is d or an ancestor of d

    @classmethod
    def from_config(cls, section, classes: Sequence[str] | None = None) -> LateFusion:
        """From a ``fusion:`` config section (:class:`avtag.config.FusionConfig`; ``weights_file`` wins)."""
        if section is None:
            return cls(classes=classes)
        if section.weights_file:
            fusion = cls.load(section.weights_file)
            fusion.mode = section.mode
            if classes is not None and fusion.classes is not None and tuple(classes) != fusion.classes:
                raise FusionError(f"{section.weights_file}: fitted for other classes than the model's vocabulary")
        else:
            fusion = cls(section.method, section.audio_weight, section.mode, classes, section.video_boost)
        names = classes if classes is not None else fusion.classes
        if section.hierarchy == "audioset" and names is not None:
            from avtag.ontology import load_ontology

            fusion.true_path(load_ontology().closure(names))
        return fusion

    def gate(self, visual_mass: np.ndarray, threshold: float = 1e-3) -> LateFusion:
        """``gated``: per-class audio weights, ``audio_weight`` where a class has visual evidence (the
        label map's column mass ``(classes,)`` above ``threshold``), 1 (audio alone) elsewhere."""
        w = torch.broadcast_to(self.audio_weight, (len(visual_mass),)).clone()
        self.audio_weight = torch.where(torch.as_tensor(visual_mass) > threshold, w, torch.ones_like(w))
        return self

    def true_path(self, closure: np.ndarray | None) -> LateFusion:
        """Apply the true-path rule after fusion: ``closure`` ``(classes, classes)`` bool, ``[d, a]`` True
        when class ``a`` is class ``d`` or an ancestor of it (:meth:`avtag.ontology.Ontology.closure`);
        None switches the rule off."""
        self.closure = None if closure is None else torch.as_tensor(np.asarray(closure, dtype=bool))
        return self

    def close(self, out: torch.Tensor) -> torch.Tensor:
        """The true-path rule alone: every class's score raised to the largest of its descendants'
        ``(..., classes)``; a class no branch scored (NaN) stays NaN unless a descendant has a score.
        Identity when the rule is off. Raises FusionError when the scores have another class count."""
        if self.closure is None:
            return out
        if self.closure.shape[0] != out.shape[-1]:
            raise FusionError(f"the class hierarchy has {self.closure.shape[0]} classes, scores have {out.shape[-1]}")
        filled = torch.nan_to_num(out, nan=-1.0).unsqueeze(-1)  # (..., descendants, 1)
        closed = torch.where(self.closure.to(out.device), filled, torch.full_like(filled, -1.0)).amax(dim=-2)
        return torch.where(closed < 0, out, closed)

    # ------------------------------------------------------------------ fit
    def fit(self, audio: np.ndarray, video: np.ndarray, targets: np.ndarray) -> LateFusion:
        """Fit on validation clips: ``audio``, ``video``, ``targets`` all ``(clips, classes)``.

        ``logistic``: one L2-regularised logistic regression per class on
        ``[logit(audio), logit(video)]``. ``weighted``: the single ``w`` in
        0, 0.1, ..., 1 with the best mean average precision. ``max``: nothing.

        Raises:
            FusionError: shapes differ.
        """
        a, v, y = _as_2d(audio, "audio"), _as_2d(video, "video"), _as_2d(targets, "target")
        if not (a.shape == v.shape == y.shape):
            raise FusionError(f"fit needs equal shapes, got audio {a.shape}, video {v.shape}, targets {y.shape}")
        y = (y >= 0.5).astype(int)
        if self.method == "logistic":
            from sklearn.linear_model import LogisticRegression

            c = a.shape[1]
            self.coef_, self.intercept_, self.fitted_ = np.zeros((c, 2)), np.zeros(c), np.zeros(c, dtype=bool)
            for k in range(c):
                if 0 < y[:, k].sum() < len(y):
                    x = np.stack([_logit(a[:, k]), _logit(v[:, k])], axis=1)
                    reg = LogisticRegression(C=1.0, max_iter=1000).fit(x, y[:, k])
                    self.coef_[k], self.intercept_[k], self.fitted_[k] = reg.coef_[0], reg.intercept_[0], True
        elif self.method == "weighted":
            from sklearn.metrics import average_precision_score

            has_pos = y.sum(0) > 0
            if has_pos.any():
                best = max(
                    np.linspace(0, 1, 11),
                    key=lambda w: average_precision_score(y[:, has_pos], (w * a + (1 - w) * v)[:, has_pos],
                                                          average="macro"),
                )
                self.audio_weight = torch.tensor(float(best))
        return self

    # ------------------------------------------------------------------ fuse
    def forward(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> torch.Tensor:
        """Fused scores ``(clips, classes)`` in [0, 1] from the branches' ``(clips, classes)`` scores.

        Raises:
            FusionError: neither branch given, the branch the mode needs is missing, or the shapes differ.
        """
        a, v = audio, video
        if self.mode == "audio":
            v = None
        elif self.mode == "video":
            a = None
        if a is None and v is None:
            raise FusionError(f"fusion mode {self.mode!r}: the "
                              f"{'needed branch' if self.mode != 'both' else 'branches'} did not run")
        if a is not None and v is not None and a.shape != v.shape:
            raise FusionError(f"audio {tuple(a.shape)} and video {tuple(v.shape)} scores differ in shape")
        if a is None or v is None:
            out = a if a is not None else v
        else:
            out = self._combine(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(v, nan=0.0))
            out = torch.where(torch.isnan(a), v, torch.where(torch.isnan(v), a, out))
        return self.close(out.clamp(0.0, 1.0))

    def fuse(self, audio, video) -> np.ndarray:
        """:meth:`forward` on NumPy arrays: ``(clips, classes)`` or ``(classes,)`` for one clip."""
        ref = audio if audio is not None else video
        one = ref is not None and np.ndim(ref) == 1
        a, v = _as_2d(audio, "audio"), _as_2d(video, "video")
        tensor = (lambda x: None if x is None else torch.as_tensor(x, dtype=torch.float64))
        with torch.no_grad():
            out = self(tensor(a), tensor(v)).numpy()
        return out[0] if one else out

    def _combine(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.method == "max":
            return torch.maximum(a, v)
        if self.method == "boost":
            return a + (1 - a) * self.video_boost * v
        w = self.audio_weight.to(a)
        if w.dim() == 1 and w.shape[0] != a.shape[-1]:
            raise FusionError(f"audio_weight has {w.shape[0]} values, scores have {a.shape[-1]} classes")
        weighted = w * a + (1 - w) * v
        if self.method in ("weighted", "gated"):
            return weighted
        if self.coef_ is None:
            raise FusionError("logistic fusion is not fitted: fit it on validation clips or give fusion.weights_file")
        if self.coef_.shape[0] != a.shape[-1]:
            raise FusionError(f"logistic fusion fitted for {self.coef_.shape[0]} classes, scores have {a.shape[-1]}")
        coef, intercept = torch.as_tensor(self.coef_).to(a), torch.as_tensor(self.intercept_).to(a)
        z = coef[:, 0] * _logit_t(a) + coef[:, 1] * _logit_t(v) + intercept
        return torch.where(torch.as_tensor(self.fitted_, device=a.device), torch.sigmoid(z), weighted)

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        """JSON-ready state (method, mode, weights, fitted regressions)."""
        d = {"method": self.method, "mode": self.mode, "audio_weight": self.audio_weight.tolist(),
             "classes": self.classes, "video_boost": self.video_boost}
        if self.coef_ is not None:
            d.update(coef=self.coef_.tolist(), intercept=self.intercept_.tolist(), fitted=self.fitted_.tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LateFusion:
        """The fusion :meth:`to_dict` wrote. Raises FusionError (a field of the wrong kind or shape,
        non-finite regression weights), KeyError (a regression field missing) or TypeError / ValueError."""
        if not isinstance(d, dict):
            raise FusionError(f"expected a JSON object, got {type(d).__name__}")
        fusion = cls(d.get("method", "weighted"), d.get("audio_weight", 0.5), d.get("mode", "both"), d.get("classes"),
                     d.get("video_boost", 0.5))
        if "coef" in d:
            fusion.coef_ = np.asarray(d["coef"], dtype=np.float64).reshape(-1, 2)
            fusion.intercept_ = np.asarray(d["intercept"], dtype=np.float64).reshape(-1)
            fusion.fitted_ = np.asarray(d["fitted"], dtype=bool).reshape(-1)
            if not (len(fusion.coef_) == len(fusion.intercept_) == len(fusion.fitted_)):
                raise FusionError("coef, intercept and fitted need one entry per class")
            if not (np.isfinite(fusion.coef_).all() and np.isfinite(fusion.intercept_).all()):
                raise FusionError("coef and intercept must be finite numbers")
        return fusion

    def save(self, path: str | Path) -> Path:
        """Write the fitted fusion as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LateFusion:
        """Read a fusion written by :meth:`save`. Raises FusionError if unreadable."""
        try:
            from avtag.io.common import require_regular

            return cls.from_dict(json.loads(require_regular(path).read_text()))
        except KeyError as exc:
            raise FusionError(f"{path}: not a readable fusion weights file (missing {exc})") from None
        except (OSError, ValueError, TypeError, FusionError) as exc:
            raise FusionError(f"{path}: not a readable fusion weights file ({str(exc)[:200]})") from None
