"""Tagging media files with the audio-visual model (``avtag tag``).

:class:`Tagger` composes the two branches of the multimodal framework of Li et
al. (2017), "A Light-Weight Multimodal Framework for Improved Environmental
Audio Tagging": the audio branch (a trained CRNN from a checkpoint, when there
is one) and the video branch (EfficientNet-Lite0 objects in sampled frames,
mapped to sound classes by :mod:`avtag.models.label_map`), then combines their
clip-wise scores by late fusion (:mod:`avtag.models.fusion`).

A branch that cannot run is switched off and the result says so in ``notes``:
no audio model, an audio-only file (no video stream), a video without sound, or
an ablation switch. Files longer than ``tag.long_file_s`` are read window by
window so memory stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

import avtag
from avtag import AvtagError
from avtag.config import deep_merge, get
from avtag.labels import Vocabulary, get_vocabulary

#: where a released default audio checkpoint is looked for (issue 6 ships one)
ASSETS = Path(avtag.__file__).resolve().parents[1] / "assets"
DEFAULT_AUDIO_CHECKPOINTS = ("default_audio.ckpt", "audio_model.pt")

#: built-in settings: ``avtag tag`` works with no config file at all
DEFAULT_CONFIG: dict = {
    "data": {"classes": "dcase2017"},
    "audio": {"sample_rate": 16000},
    "video": {"fps": 1.0, "num_frames": None, "frame_short_side": 256, "aggregate": "max", "batch_size": 32},
    "label_map": {},  # see avtag.models.label_map.DEFAULT_SETTINGS
    "fusion": {"method": "weighted", "audio_weight": 0.5, "mode": "both"},
    "tag": {
        "top_k": 5, "threshold": 0.1, "objects": 5, "long_file_s": 120.0, "window_s": 30.0,
        "segment_threshold": 0.5, "median_filter_s": 0.2, "min_duration_s": 0.1,
    },
}  # fmt: skip


class TagError(AvtagError):
    """A file that cannot be tagged (the message names the file and why)."""


@dataclass
class Tag:
    """One sound class of a clip: fused ``score`` and each branch's score (None = branch off)."""

    label: str
    score: float
    audio_score: float | None
    video_score: float | None


@dataclass
class TagResult:
    """Tags of one media file.

    Attributes:
        file: the path as given.
        duration: seconds of media.
        tags: best first, filtered by threshold and top-k.
        objects: top ImageNet objects ``(name, probability)`` pooled over frames.
        segments: ``(label, onset, offset)`` seconds (from the file start) of the
            reported tags, from the audio frame-wise output; None when not asked for.
        notes: what was switched off and why, e.g. ``"video branch off: no video stream"``.
        branches: which branches ran, ``{"audio": bool, "video": bool}``.
        scores: all clip-wise scores ``{label: Tag}`` before filtering.
    """

    file: str
    duration: float
    tags: list[Tag]
    objects: list[tuple[str, float]]
    segments: list[tuple[str, float, float]] | None
    notes: list[str]
    branches: dict[str, bool]
    scores: dict[str, Tag] = field(default_factory=dict, repr=False)


def default_audio_checkpoint() -> Path | None:
    """The released audio checkpoint in ``assets/`` when it exists, else None."""
    for name in DEFAULT_AUDIO_CHECKPOINTS:
        if (ASSETS / name).is_file():
            return ASSETS / name
    return None


def parse_labels(spec: str | Sequence[str] | None) -> Vocabulary | None:
    """``--labels``: ``"dcase2017"``, a text file with one class per line, or names separated by ``;``."""
    if spec is None or isinstance(spec, Vocabulary):
        return spec
    if not isinstance(spec, str):
        return get_vocabulary(list(spec))
    if spec.lower() == "dcase2017":
        return get_vocabulary("dcase2017")
    path = Path(spec).expanduser()
    if path.is_file():
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        names = [n.strip() for n in spec.split(";") if n.strip()]
    if not names:
        raise TagError(f"--labels {spec!r}: no class names (give 'dcase2017', a file, or names separated by ';')")
    return get_vocabulary(names)


class Tagger:
    """Audio-visual tagger: video branch + optional audio model + late fusion.

    Args:
        config: settings (merged over :data:`DEFAULT_CONFIG`); keys ``video``,
            ``label_map``, ``fusion``, ``tag``, ``data.classes``.
        checkpoint: audio model file (``avtag train`` output); default: the one
            in ``assets/`` if present, else the video branch runs alone.
        labels: sound classes to tag (any names: the video branch is zero-shot);
            default: the audio model's classes, else ``data.classes``.
        audio_model: an already loaded ``(model, vocabulary, config)`` instead of
            ``checkpoint``.
        use_audio, use_video: switch a branch off (ablations; ``fusion.mode`` too).

    Raises:
        CheckpointError, LabelError, FusionError: bad checkpoint, labels or fusion settings.
    """

    def __init__(self, config: dict | None = None, checkpoint: str | Path | None = None,
                 labels: str | Sequence[str] | Vocabulary | None = None, audio_model=None,
                 use_audio: bool = True, use_video: bool = True) -> None:  # fmt: skip
        self.config = deep_merge(DEFAULT_CONFIG, config or {})
        mode = get(self.config, "fusion.mode", "both")
        use_audio = use_audio and mode != "video"
        use_video = use_video and mode != "audio"
        self.notes: list[str] = []
        self.audio_model, self.audio_vocabulary, self.audio_config = None, None, {}
        if use_audio:
            if audio_model is None:
                checkpoint = checkpoint or default_audio_checkpoint()
                if checkpoint is not None:
                    from avtag.training.checkpoint import load_audio_model

                    audio_model = load_audio_model(checkpoint)
            if audio_model is not None:
                self.audio_model, self.audio_vocabulary, self.audio_config = audio_model
            else:
                self.notes.append("audio branch off: no audio model (assets/default_audio.ckpt missing; pass --checkpoint)"
                                  + ("; tags come from the video branch alone" if use_video else ""))  # fmt: skip
        else:
            self.notes.append("audio branch off: " + ("fusion.mode=video" if mode == "video" else "switched off"))
        if not use_video:
            self.notes.append("video branch off: " + ("fusion.mode=audio" if mode == "audio" else "switched off"))
        self.use_video = use_video
        self.vocabulary = parse_labels(labels) or self.audio_vocabulary or get_vocabulary(get(self.config, "data.classes"))
        if self.audio_vocabulary is not None:
            index = {n: i for i, n in enumerate(self.audio_vocabulary.names)}
            self._audio_columns = np.array([index.get(n, -1) for n in self.vocabulary.names])
            unknown = [n for n in self.vocabulary.names if n not in index]
            if unknown:
                self.notes.append(f"audio model does not know {len(unknown)} of the labels: video score only for those")
        if self.audio_model is None and not use_video:
            raise TagError("no branch can run: " + "; ".join(self.notes))
        from avtag.models.fusion import FusionError, LateFusion

        self.fusion = LateFusion.from_config(get(self.config, "fusion"), self.vocabulary.names)
        if self.fusion.method == "logistic" and self.fusion.coef_ is None and self.audio_model is not None and use_video:
            raise FusionError("logistic fusion needs fitted weights: set fusion.weights_file (LateFusion.save output)")
        self._video = None
        self._label_map = None
        if use_video:  # settings errors now, not once per file
            from avtag.models.video import VideoBranchError

            if get(self.config, "video.aggregate", "max") not in ("mean", "max", "meanmax"):
                raise VideoBranchError(f"video.aggregate: unknown frame aggregation {get(self.config, 'video.aggregate')!r}"
                                       " (mean, max or meanmax)")  # fmt: skip
            self.label_map  # noqa: B018  (built or read from the disk cache)

    # ------------------------------------------------------------------ branches
    @property
    def video_branch(self):
        """The EfficientNet-Lite0 :class:`~avtag.models.video.VideoBranch` (loaded on first use)."""
        if self._video is None:
            from avtag.models.video import VideoBranch

            self._video = VideoBranch(batch_size=int(get(self.config, "video.batch_size", 32)))
        return self._video

    @property
    def label_map(self):
        """The :class:`~avtag.models.label_map.LabelMap` for :attr:`vocabulary` (cached on disk)."""
        if self._label_map is None:
            from avtag.models.label_map import build_label_map

            self._label_map = build_label_map(self.vocabulary.names, get(self.config, "label_map", {}))
        return self._label_map

    def warm_up(self) -> None:
        """Load the CNN and the label map now (not on the first file)."""
        if self.use_video:
            self.video_branch, self.label_map  # noqa: B018

    # ------------------------------------------------------------------ one file
    def tag_file(self, path: str | Path, *, top_k: int | None = None, threshold: float | None = None,
                 segments: bool = False) -> TagResult:  # fmt: skip
        """Tag one media file.

        Args:
            path: video or audio file.
            top_k: keep at most this many tags (None: ``tag.top_k``; 0: all).
            threshold: keep tags with fused score >= this (None: ``tag.threshold``).
            segments: add sound-event onsets/offsets from the audio frame-wise output.

        Returns:
            A :class:`TagResult`.

        Raises:
            MediaError: unreadable file; TagError: no branch can run on it.
        """
        from avtag.io.media import iter_windows, load_clip, probe

        info = probe(path)
        cfg = self.config
        notes = list(self.notes)
        run_audio = self.audio_model is not None and info.has_audio
        run_video = self.use_video and info.has_video
        if self.audio_model is not None and not info.has_audio:
            notes.append("audio branch off: no audio track")
        if self.use_video and not info.has_video:
            notes.append("video branch off: no video stream")
        if not (run_audio or run_video):
            raise TagError(f"{path}: nothing to tag: " + "; ".join(n for n in notes if "branch off" in n))
        sr = int(get(self.audio_config, "audio.sample_rate", get(cfg, "audio.sample_rate", 16000)))
        kwargs = dict(sample_rate=sr, audio=run_audio, video=run_video, fps=get(cfg, "video.fps"),
                      num_frames=get(cfg, "video.num_frames"), frame_short_side=get(cfg, "video.frame_short_side"))  # fmt: skip
        if info.duration > float(get(cfg, "tag.long_file_s")):
            clips = iter_windows(path, float(get(cfg, "tag.window_s")), **kwargs)
        else:
            clips = [load_clip(path, **kwargs)]
        frame_probs, audio_clipwise, events, got_audio = [], [], [], False
        for clip in clips:
            if clip.frames is not None:
                frame_probs.append(self.video_branch.frame_probabilities(clip.frames).numpy())
            if clip.waveform is not None:
                got_audio = True
                clipwise, seg = self._run_audio(clip, segments)
                audio_clipwise.append(clipwise)
                events.extend(seg)
            for w in clip.warnings:
                if w not in ("no audio track", "no video stream") and f"media: {w}" not in notes:
                    notes.append(f"media: {w}")
        if run_audio and not got_audio:
            notes.append("audio branch off: audio track has no decodable samples")
        if run_video and not frame_probs:
            notes.append("video branch off: no decodable frames")
        if not got_audio and not frame_probs:
            raise TagError(f"{path}: nothing to tag: no decodable audio or frames")
        audio_scores = np.max(audio_clipwise, axis=0) if audio_clipwise else None
        video_scores, objects = None, []
        if frame_probs:
            from avtag.models.video import aggregate_frames

            probs = np.concatenate(frame_probs)
            aggregate = get(cfg, "video.aggregate", "max")
            video_scores = self.label_map.clip_scores(probs, aggregate).astype(np.float64)
            pooled = aggregate_frames(probs, aggregate).numpy()
            order = np.argsort(-pooled)[: int(get(cfg, "tag.objects", 5))]
            objects = [(self.label_map.objects[i], round(float(pooled[i]), 4)) for i in order]
        fused = np.nan_to_num(self.fusion.fuse(audio_scores, video_scores), nan=0.0)
        scores = {
            name: Tag(name, float(fused[c]), _score(audio_scores, c), _score(video_scores, c))
            for c, name in enumerate(self.vocabulary.names)
        }
        k = int(get(cfg, "tag.top_k") if top_k is None else top_k)
        thr = float(get(cfg, "tag.threshold") if threshold is None else threshold)
        ranked = sorted(scores.values(), key=lambda t: -t.score)
        tags = [t for t in ranked if t.score >= thr][: k or None]
        seg_out = None
        if segments:
            tagged = {t.label for t in tags}  # events of the reported tags only
            seg_out = _merge_touching([e for e in events if e[0] in tagged])
            if not got_audio:
                notes.append("segments need the audio branch, which did not run")
        return TagResult(str(path), float(info.duration), tags, objects, seg_out, notes,
                         {"audio": got_audio, "video": bool(frame_probs)}, scores)  # fmt: skip

    def _run_audio(self, clip, segments: bool) -> tuple[np.ndarray, list]:
        """Audio clip-wise scores in :attr:`vocabulary` order (NaN: unknown to the model) and events."""
        import torch

        with torch.inference_mode():
            out = self.audio_model(torch.from_numpy(np.ascontiguousarray(clip.waveform))[None])
        clipwise = out.clipwise[0].float().cpu().numpy()
        cols = self._audio_columns
        scores = np.where(cols >= 0, clipwise[np.clip(cols, 0, None)], np.nan)
        events = []
        if segments and out.framewise is not None and out.frame_hop:
            from avtag.inference.localize import framewise_to_events

            cfg = self.config
            found = framewise_to_events(
                out.framewise[0], float(out.frame_hop), self.audio_vocabulary,
                threshold=float(get(cfg, "tag.segment_threshold")), median_filter_s=float(get(cfg, "tag.median_filter_s")),
                min_duration_s=float(get(cfg, "tag.min_duration_s")), duration=clip.duration,
            )  # fmt: skip
            wanted = set(self.vocabulary.names)
            events = [(lab, round(on + clip.start, 3), round(off + clip.start, 3)) for lab, on, off in found if lab in wanted]
        return scores, events

    # ------------------------------------------------------------------ many files
    def tag_files(self, paths: Iterable[str | Path], **kwargs) -> Iterator[tuple[str, TagResult | None, str | None]]:
        """Tag files one by one: yields ``(path, result, None)`` or ``(path, None, error message)``.

        A file that fails (unreadable media, nothing to tag) is reported and
        skipped; the others are still tagged.
        """
        for path in paths:
            try:
                yield str(path), self.tag_file(path, **kwargs), None
            except AvtagError as exc:
                yield str(path), None, str(exc)


def _merge_touching(events: list[tuple[str, float, float]], gap: float = 0.05) -> list[tuple[str, float, float]]:
    """Join events of one label that touch across window boundaries; sorted by onset, then label."""
    merged: list[list] = []
    for label, onset, offset in sorted(events, key=lambda e: (e[0], e[1])):
        if merged and merged[-1][0] == label and onset <= merged[-1][2] + gap:
            merged[-1][2] = max(merged[-1][2], offset)
        else:
            merged.append([label, onset, offset])
    return sorted(((lab, on, off) for lab, on, off in merged), key=lambda e: (e[1], e[0]))


def _score(scores: np.ndarray | None, c: int) -> float | None:
    if scores is None or np.isnan(scores[c]):
        return None
    return float(scores[c])


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files to tag: files as given, folders searched recursively for media files (sorted)."""
    from avtag.io.media import MEDIA_EXTENSIONS

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS))
        else:
            out.append(p)
    return out
