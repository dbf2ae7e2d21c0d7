"""The result of ``avtag explain``: :class:`Explanation` and the JSON Schema of ``explanation.json``.

See :mod:`avtag.inference.explain` for how it is computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from avtag.events import Event

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}


def _obj(props: dict, required: Sequence[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": list(required or props), "additionalProperties": False}


#: JSON Schema (draft 2020-12) of ``explanation.json``. Times in seconds from the clip start,
#: frequencies in Hz, scores and shares in [0, 1]; file paths are relative to the JSON's folder.
SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "avtag explanation",
    **_obj({
        "file": _STR_OR_NULL,
        "duration": _NUM,
        "sample_rate": {"type": "integer", "description": "Hz of the input and of every WAV written"},
        "model_sample_rate": {"type": "integer"},
        "method": {"enum": ["guided", "gradcam", "integrated"]},
        "layer": {**_STR_OR_NULL, "description": "Grad-CAM layer"},
        "frame_hop": {**_NUM, "description": "seconds between log-mel frames (the mask's grid)"},
        "branches": _obj({"audio": {"type": "boolean"}, "video": {"type": "boolean"}}),
        "figure": _STR_OR_NULL,
        "notes": {"type": "array", "items": {"type": "string"}},
        "explanations": {"type": "array", "items": _obj({
            "target": {"type": "string", "description": "class name, or LAYER:INDEX for a unit"},
            "kind": {"enum": ["class", "unit"]},
            "score": _NUM_OR_NULL, "audio_score": _NUM_OR_NULL, "video_score": _NUM_OR_NULL,
            "events": {"type": "array", "items": _obj({"onset": _NUM, "offset": _NUM})},
            "regions": {"type": "array", "items": _obj({
                "onset": _NUM, "offset": _NUM, "f_low": _NUM, "f_high": _NUM,
                "share": {**_NUM, "description": "share of the mask's mass inside the region"}})},
            "objects": {"type": "array", "items": _obj({
                "label": {"type": "string"}, "probability": _NUM, "weight": _NUM,
                "contribution": {**_NUM, "description": "object probability * label-map weight, pooled over frames"}})},
            "wav": _STR_OR_NULL, "residual_wav": _STR_OR_NULL,
            "energy_kept": {**_NUM_OR_NULL, "description": "energy of the auralised WAV / energy of the input"},
        })},
        "frames": {"type": "array", "items": _obj({
            "time": _NUM,
            "objects": {"type": "array", "items": _obj({
                "label": {"type": "string"}, "probability": _NUM,
                "contributions": {"type": "object", "additionalProperties": _NUM,
                                  "description": "class -> object probability * label-map weight in this frame"}})},
            "scores": {"type": "object", "additionalProperties": _NUM},
        })},
    }),
}


@dataclass
class TargetExplanation:
    """One explained class or unit. Arrays: ``mask (frames, n_mels)`` in [0, 1] on the log-mel grid,
    ``audio`` / ``residual`` ``(samples,)`` at the input's rate, ``attention`` / ``framewise``
    ``(output frames,)`` (None for units or without attention)."""

    target: str
    kind: str
    score: float | None = None
    audio_score: float | None = None
    video_score: float | None = None
    events: list[Event] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False)
    audio: np.ndarray | None = field(default=None, repr=False)
    residual: np.ndarray | None = field(default=None, repr=False)
    attention: np.ndarray | None = field(default=None, repr=False)
    framewise: np.ndarray | None = field(default=None, repr=False)
    wav: str | None = None
    residual_wav: str | None = None

    def to_dict(self) -> dict:
        kept = None
        if self.audio is not None and self.residual is not None:
            total = float(np.sum((self.audio + self.residual) ** 2))
            kept = round(float(np.sum(self.audio ** 2)) / total, 4) if total > 0 else 0.0
        return {"target": self.target, "kind": self.kind, "score": _r(self.score), "audio_score": _r(self.audio_score),
                "video_score": _r(self.video_score),
                "events": [{"onset": e.onset, "offset": e.offset} for e in self.events],
                "regions": self.regions, "objects": self.objects, "wav": self.wav, "residual_wav": self.residual_wav,
                "energy_kept": kept}


@dataclass
class Explanation:
    """What :func:`explain_clip` returns; ``to_dict()`` follows :data:`SCHEMA`. ``logmel`` is the
    clip's log-mel ``(frames, n_mels)`` (``frame_hop`` s apart), ``mel_edges`` ``(n_mels, 3)`` Hz,
    ``frames`` the video frames used ``(n, H, W, 3)`` at ``frame_times`` s, ``output_hop`` the
    seconds between frame-wise outputs."""

    file: str | None
    duration: float
    sample_rate: int
    model_sample_rate: int
    method: str
    frame_hop: float
    targets: list[TargetExplanation]
    layer: str | None = None
    output_hop: float | None = None
    branches: dict = field(default_factory=lambda: {"audio": True, "video": False})
    notes: list[str] = field(default_factory=list)
    frame_objects: list[dict] = field(default_factory=list)
    logmel: np.ndarray | None = field(default=None, repr=False)
    mel_edges: np.ndarray | None = field(default=None, repr=False)
    frames: np.ndarray | None = field(default=None, repr=False)
    frame_times: np.ndarray | None = field(default=None, repr=False)
    figure: str | None = None
    json_path: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "duration": round(self.duration, 3), "sample_rate": self.sample_rate,
                "model_sample_rate": self.model_sample_rate, "method": self.method, "layer": self.layer,
                "frame_hop": self.frame_hop, "branches": dict(self.branches), "figure": self.figure,
                "notes": list(self.notes), "explanations": [t.to_dict() for t in self.targets],
                "frames": self.frame_objects}


def _r(x, nd: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)
