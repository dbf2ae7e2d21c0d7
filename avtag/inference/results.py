"""What tagging returns: :class:`TagResult` per file or array, with its :class:`Tag` scores.

A result carries its class names (every score is labelled), both branches' scores next to
the fused one, the ImageNet objects the video branch saw, optional sound events
(:class:`avtag.events.Event`), notes on what was switched off, and, for a file that could
not be tagged, ``error`` (``tag_files`` returns failures as values, not exceptions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from avtag.events import Event


@dataclass
class Tag:
    """One sound class of a clip: the fused ``score`` and each branch's score (None: that branch
    did not run or cannot score this class), all in [0, 1]."""

    label: str
    score: float
    audio_score: float | None
    video_score: float | None


@dataclass
class TagResult:
    """Tags of one media file (or one array).

    Attributes:
        file: the path as given (None for arrays).
        duration: seconds of media.
        tags: the reported tags, best first (the tagger's ``top_k`` / ``threshold``).
        scores: every class -> :class:`Tag`, in the tagger's class order.
        objects: top ImageNet objects ``(name, probability)`` pooled over the frames.
        segments: sound events ``Event(label, onset, offset)`` (seconds from the file start) of
            the reported tags, from the audio frame-wise output; None when not asked for.
        notes: what was switched off and why, e.g. ``"video branch off: no video stream"``.
        branches: which branches ran, ``{"audio": bool, "video": bool}``.
        error: why the file could not be tagged (then the other fields are empty), else None.
    """

    file: str | None
    duration: float = 0.0
    tags: list[Tag] = field(default_factory=list)
    scores: dict[str, Tag] = field(default_factory=dict, repr=False)
    objects: list[tuple[str, float]] = field(default_factory=list)
    segments: list[Event] | None = None
    notes: list[str] = field(default_factory=list)
    branches: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file was tagged (``error`` is None)."""
        return self.error is None

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names the scores belong to."""
        return tuple(self.scores)

    def top(self, k: int = 5, threshold: float = 0.0) -> list[Tag]:
        """The ``k`` best classes (0: all) with fused score >= ``threshold``, best first.

        Raises:
            ValueError: ``k`` below 0, ``threshold`` outside [0, 1] (NaN too)."""
        if k < 0:
            raise ValueError(f"k must be >= 0 (0: all), got {k}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1] (scores are probabilities), got {threshold}")
        ranked = sorted(self.scores.values(), key=lambda t: -t.score)
        return [t for t in ranked if t.score >= threshold][: k or None]

    def to_dict(self) -> dict:
        """JSON-ready dict: ``file``, ``duration``, ``tags`` (label, score, audio_score, video_score),
        ``objects`` (label, probability), ``branches``, ``notes``, and ``segments`` (label, onset,
        offset) when asked for; a failure is ``{file, error}``."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        d = {
            "file": self.file,
            "duration": _r(self.duration, 3),
            "tags": [{"label": t.label, "score": _r(t.score), "audio_score": _r(t.audio_score),
                      "video_score": _r(t.video_score)} for t in self.tags],
            "objects": [{"label": name, "probability": _r(p)} for name, p in self.objects],
            "branches": dict(self.branches),
            "notes": list(self.notes),
        }
        if self.segments is not None:
            d["segments"] = [{"label": e.label, "onset": e.onset, "offset": e.offset} for e in self.segments]
        return d


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)
