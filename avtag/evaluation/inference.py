"""Run the trained branches over a cached split: clip-wise and frame-wise scores for evaluation.

Data flow (nothing is decoded twice; every input comes from :mod:`avtag.data.cache`), through
the same :class:`~avtag.models.tagger.AudioVisualTagger` that ``avtag tag`` runs::

    cache/<split>/audio/*.npy  (waveforms, padded to data.clip_seconds)  --+
    cache/<split>/video/*.npy  (frame logits, padded + frame mask)       --+--> AudioVisualTagger
        --> audio clip-wise (N, C), frame-wise (N, T, C); video clip-wise (N, C) (NaN rows: no video)
        --> late fusion of the fitted LateFusion (system "fused")

* Audio: each cached waveform is cut or zero-padded to ``data.clip_seconds`` (as in
  validation during training) and batched.
* Video: the cached per-frame ImageNet logits of the video branch (EfficientNet-Lite0), in the
  tagger: softmax, label map (:mod:`avtag.models.label_map`), pooled over frames by ``video.aggregate``.
* Fusion: :class:`avtag.models.fusion.LateFusion` from the ``fusion:`` section; a
  method that must be fitted (``logistic``, or any with ``fusion.fit: true``) is
  fitted on the validation split's clips that have video.

A split whose cache is missing or incomplete is prepared first with
:func:`avtag.data.cache.prepare_split` (resumable; cheap when nothing is left).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.config import AvtagConfig, resolve_path
from avtag.labels import get_vocabulary

#: evaluated systems -> the ``fusion.mode`` that produces them; ``prior`` is a reference that
#: ignores the input (every clip gets the validation split's class frequencies)
SYSTEMS = {"audio": "audio", "video": "video", "fused": "both", "prior": None}


class EvaluationError(AvtagError):
    """A split that cannot be evaluated (not prepared, no media, mismatched cache or model)."""


@dataclass
class Coverage:
    """Which clips of a split were evaluated and why the others were not.

    Attributes:
        listed: clips in the official file list of the split (None: list unreadable).
        cached: clips in the feature cache; evaluated: clips scored (cached, usable audio).
        missing: clip names without a media file (``<cache>/<split>/missing.txt``).
        failed: clip name -> reason, clips whose media could not be decoded.
        skipped: clip name -> reason, cached clips left out (e.g. empty audio).
        not_cached: listed clips in none of the above (e.g. ``prepare --limit``).
        with_video: evaluated clips that have cached video-branch logits.
        missing_report: path of ``missing.txt``.
    """

    split: str
    listed: int | None
    cached: int
    evaluated: int
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    not_cached: list[str] = field(default_factory=list)
    with_video: int = 0
    missing_report: str | None = None

    def to_dict(self) -> dict:
        return {"split": self.split, "listed": self.listed, "cached": self.cached, "evaluated": self.evaluated,
                "missing": len(self.missing), "failed": len(self.failed), "skipped": len(self.skipped),
                "not_cached": len(self.not_cached), "with_video": self.with_video,
                "missing_clips": list(self.missing), "failed_clips": dict(self.failed),
                "skipped_clips": dict(self.skipped), "missing_report": self.missing_report}


@dataclass
class SplitScores:
    """Branch outputs over one split; row ``i`` of every array belongs to ``names[i]``.

    Attributes:
        names: clip names ``<ytid>_<start>_<end>`` (official file name without ``.wav``).
        classes: class names, column order of every ``(N, C)`` array.
        targets: ``(N, C)`` bool weak labels.
        audio: ``(N, C)`` audio clip-wise probabilities, or None (no audio model).
        framewise: ``(N, T, C)`` float32 audio frame-wise probabilities, or None.
        frame_hop: seconds between frame-wise outputs.
        video: ``(N, C)`` video-branch clip scores in [0, 1]; NaN rows for clips without
            cached video logits; None when no clip has any.
        events: clip name -> strong labels ``[(label, onset_s, offset_s)]`` (test/eval), or None.
        clip_seconds: nominal clip length (``data.clip_seconds``).
        prior: ``(C,)`` class frequencies of the validation split (the ``prior`` reference), or None.
    """

    split: str
    names: list[str]
    classes: tuple[str, ...]
    targets: np.ndarray
    audio: np.ndarray | None
    framewise: np.ndarray | None
    frame_hop: float | None
    video: np.ndarray | None
    events: dict[str, list[tuple[str, float, float]]] | None
    clip_seconds: float
    coverage: Coverage
    prior: np.ndarray | None = None

    @property
    def has_video(self) -> np.ndarray:
        """``(N,)`` bool: the clip has video-branch scores."""
        if self.video is None:
            return np.zeros(len(self.names), dtype=bool)
        return ~np.isnan(self.video).any(axis=1)


def read_missing(cache_dir: Path) -> list[str]:
    """Clip names listed in ``missing.txt`` (lines ``Y<name>\\t<labels>``, ``#`` comments)."""
    path = Path(cache_dir) / "missing.txt"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            stem = line.split("\t", 1)[0].strip()
            out.append(stem[1:] if stem.startswith("Y") else stem)
    return out


def ensure_split(config: dict, split: str, progress: bool = True):
    """The :class:`~avtag.data.cache.FeatureCache` of ``split``, prepared first when incomplete.

    A split is complete when every clip of its official list is cached, failed or
    recorded as missing. Otherwise :func:`~avtag.data.cache.prepare_split` runs
    (resumable), provided the media folder holds media files.

    Raises:
        EvaluationError: the split is not cached and cannot be prepared (no list, no media).
    """
    from avtag.data.cache import SPLIT_MEDIA, FeatureCache, prepare_split, split_records
    from avtag.data.dcase2017 import index_media_dir

    root = resolve_path(config.cache.dir)
    cache = FeatureCache(root, split)
    try:
        listed = {r.name for r in split_records(config, split)}
    except AvtagError as exc:
        if not cache.names():
            raise EvaluationError(f"split {split!r} is not prepared ({root / split} is empty) and its clip list "
                                  f"cannot be read: {exc}") from None
        return cache
    done = set(cache.names()) - set(cache.damaged(cache.array_kinds()))  # a damaged entry is redone
    todo = listed - done - set(cache.failed()) - set(read_missing(cache.dir))
    if todo:
        media_dir = resolve_path((config.data.media_dirs or {}).get(SPLIT_MEDIA.get(split, split), "."))
        if not index_media_dir(media_dir):
            if not cache.names():
                raise EvaluationError(f"split {split!r} is not prepared ({root / split} holds no cached clips) and "
                                      f"{media_dir} holds no media files; put the clips there and run "
                                      "`avtag prepare CONFIG`")
            return cache  # evaluate what is cached; the report lists the rest as not cached
        from avtag.models.video import VideoBranch  # data/ builds no networks: the encoder is passed in

        encoder = VideoBranch().frame_logits if config.cache.video else None
        prepare_split(config, split, progress=progress, frame_encoder=encoder)
        cache = FeatureCache(root, split)
    return cache


def _coverage(config: dict, cache, split: str, evaluated: list[str], skipped: dict[str, str]) -> Coverage:
    from avtag.data.cache import split_records

    try:
        listed = [r.name for r in split_records(config, split)]
    except AvtagError:
        listed = None
    missing, failed = read_missing(cache.dir), cache.failed()
    known = set(cache.names()) | set(failed) | set(missing)
    return Coverage(
        split=split, listed=None if listed is None else len(listed), cached=len(cache.names()),
        evaluated=len(evaluated), missing=missing, failed=failed, skipped=skipped,
        not_cached=[] if listed is None else [n for n in listed if n not in known],
        missing_report=str(cache.dir / "missing.txt") if (cache.dir / "missing.txt").is_file() else None,
    )


def branch_scores(tagger, cache, names: list[str], clip_samples: int | None, batch_size: int = 16,
                  progress: bool = True, description: str = "inference"):
    """Run an :class:`~avtag.models.tagger.AudioVisualTagger` over cached clips, in batches.

    Args:
        tagger: the composed model (audio branch and/or label map), eval mode, on its device.
        cache: :class:`~avtag.data.cache.FeatureCache`; names: clips to score.
        clip_samples: every waveform is zero-padded / cut to this many samples (None: no audio).

    Returns:
        ``(audio (N, C) float64 | None, framewise (N, T, C) float32 | None, frame_hop s | None,
        video (N, C) float64 | None)``; a video row is NaN for a clip without cached frame logits.
        The audio scores are moved to the model's class prior (``model.class_prior``,
        :mod:`avtag.models.class_prior`) and its speech detector (``model.speech_detector``,
        :mod:`avtag.models.speech`) is joined to them, as ``avtag tag`` does.

    Raises:
        SpeechDetectorError, ClassPriorError: the model's speech detector or class prior cannot be used.
    """
    import torch

    from avtag.data.clips import fit_length
    from avtag.models.audio_post import tagger_post
    from avtag.progress import track

    audio, frames, video, hop = [], [], [], None
    use_audio = tagger.has_audio and clip_samples is not None
    post = tagger_post(tagger) if use_audio else None
    use_video = tagger.has_video and any(cache.entry(n).get("video_frames", 0) for n in names)

    def flush(batch: list[str]) -> None:
        nonlocal hop
        wave = torch.from_numpy(np.stack([fit_length(np.asarray(cache.waveform(n), dtype=np.float32), clip_samples)
                                          for n in batch])) if use_audio else None
        logits = mask = None
        if use_video:
            per_clip = [cache.video_logits(n) for n in batch]
            n_max = max([1] + [0 if x is None else len(x) for x in per_clip])
            logits = torch.zeros((len(batch), n_max, len(tagger.objects)))
            mask = torch.zeros((len(batch), n_max), dtype=torch.bool)
            for i, x in enumerate(per_clip):
                if x is not None and len(x):
                    logits[i, : len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32))
                    mask[i, : len(x)] = True
        with torch.inference_mode():
            out = tagger(waveform=wave, frame_logits=logits, frame_mask=mask)
        if out.audio_clipwise is not None:
            hop = float(out.frame_hop)
            clipwise, framewise = out.audio_clipwise.cpu().numpy(), out.framewise.float().cpu().numpy()
            if post is not None:
                clipwise, framewise = post(wave.numpy(), clipwise, framewise, hop)
            audio.append(clipwise.astype(np.float64))
            frames.append(framewise)
        if out.video_clipwise is not None:
            video.append(out.video_clipwise.cpu().numpy().astype(np.float64))

    if use_audio or use_video:
        clips = iter(track(names, total=len(names), description=description, unit="clips", enabled=progress))
        while batch := list(itertools.islice(clips, batch_size)):
            flush(batch)
    cat = (lambda parts: np.concatenate(parts) if parts else None)
    return cat(audio), cat(frames), hop, cat(video)


def score_split(config: AvtagConfig, split: str, audio_model=None, *, video: bool = True, batch_size: int = 16,
                progress: bool = True, label_map=None) -> SplitScores:
    """Clip-wise (and frame-wise) scores of every usable cached clip of ``split``.

    Args:
        config: the evaluation config (``cache``, ``data``, ``video``, ``label_map`` sections).
        split: ``validation``, ``test``, ``eval`` (or ``train``).
        audio_model: an :class:`~avtag.models.audio.AudioModel` (knows its classes and sample
            rate; :func:`avtag.models.weights.load_audio_model`), or None (video only).
        video: score the video branch from cached logits (when the cache has any).
        label_map: a prebuilt :class:`~avtag.models.label_map.LabelMap` (else built from
            ``label_map:`` settings when needed).

    Raises:
        EvaluationError: split not preparable, cache built for other classes / sample rate.
    """
    from avtag.models.tagger import AudioVisualTagger

    cache = ensure_split(config, split, progress=progress)
    classes = audio_model.classes if audio_model is not None else get_vocabulary(config.data.classes).names
    vocabulary = get_vocabulary(classes)
    _check_cache(cache, classes, audio_model.sample_rate if audio_model is not None else None)
    names, skipped = [], {}
    for name in cache.names():
        if int(cache.entry(name).get("samples", 1)) <= 0:
            skipped[name] = "empty audio"
        elif any(label not in vocabulary for label in cache.labels(name)):
            skipped[name] = "label outside the model's classes"
        else:
            names.append(name)
    if not names:
        raise EvaluationError(f"{cache.dir}: no usable cached clips in split {split!r}")
    targets = np.stack([vocabulary.multi_hot(cache.labels(n)) for n in names]).astype(bool)
    clip_seconds = float(config.data.clip_seconds)
    if video and label_map is None and any(cache.entry(n).get("video_frames", 0) for n in names):
        from avtag.models.label_map import build_label_map

        label_map = build_label_map(classes, config.label_map)
    tagger = AudioVisualTagger(classes, audio_model, None, label_map if video else None,
                               aggregate=config.video.aggregate)
    tagger.to(audio_model.frontend.norm.weight.device if audio_model is not None else "cpu").eval()
    samples = int(round(clip_seconds * audio_model.sample_rate)) if audio_model is not None else None
    audio, framewise, hop, video_out = branch_scores(tagger, cache, names, samples, batch_size, progress,
                                                     description=f"inference {split}")
    events = {n: cache.events(n) for n in names}
    coverage = _coverage(config, cache, split, names, skipped)
    result = SplitScores(split, names, tuple(classes), targets, audio, framewise, hop, video_out,
                         events if all(e is not None for e in events.values()) else None, clip_seconds, coverage)
    coverage.with_video = int(result.has_video.sum())
    return result


def _check_cache(cache, classes, sample_rate: int | None) -> None:
    meta = cache.meta or {}
    if meta.get("classes") is not None and list(meta["classes"]) != list(classes):
        raise EvaluationError(f"{cache.dir}: cache was built for other classes than the model's "
                              f"({len(meta['classes'])} vs {len(classes)}); use the training config's cache.dir")
    if sample_rate is not None and meta.get("sample_rate") is not None and int(meta["sample_rate"]) != sample_rate:
        raise EvaluationError(f"{cache.dir}: cache holds {meta['sample_rate']} Hz audio, "
                              f"the model expects {sample_rate} Hz")


def score_with_validation(config: AvtagConfig, split: str, audio_model, *, tune: bool, batch_size: int, progress: bool):
    """Scores of ``split`` and, for threshold tuning and fusion fitting, of the validation split."""
    notes = []
    scores = score_split(config, split, audio_model, batch_size=batch_size, progress=progress)
    validation = None
    val_split = config.training.val_split
    if not tune:
        notes.append("thresholds not tuned (--no-tune)")
    elif val_split == split:
        notes.append(f"thresholds not tuned: the evaluated split is the validation split {split!r}")
    else:
        try:
            validation = score_split(config, val_split, audio_model, batch_size=batch_size, progress=progress)
        except EvaluationError as exc:
            notes.append(f"thresholds not tuned: {exc}")
        else:
            scores.prior = validation.prior = validation.targets.mean(axis=0)
    return scores, validation, notes


# ----------------------------------------------------------------------------- systems
def build_fusion(config: AvtagConfig, classes, validation: SplitScores | None) -> tuple[object, list[str]]:
    """The late fusion of the config, fitted on validation clips with video when required.

    ``fusion.method: logistic`` is always fitted (it has no weights otherwise) unless
    ``fusion.weights_file`` is given; other methods only with ``fusion.fit: true``.
    Returns ``(LateFusion with mode "both", notes)``.
    """
    import dataclasses

    from avtag.models.fusion import LateFusion

    section = dataclasses.replace(config.fusion, mode="both")
    fusion = LateFusion.from_config(section, classes)
    notes: list[str] = []
    must_fit = fusion.method == "logistic" and fusion.coef_ is None
    if not (must_fit or section.fit):
        return fusion, notes
    rows = None if validation is None or validation.audio is None else validation.has_video
    if rows is None or rows.sum() < 2:
        notes.append(f"fusion '{fusion.method}' not fitted: fewer than 2 validation clips with audio and video; "
                     f"weighted mean with audio_weight {float(fusion.audio_weight.float().mean()):.2f} used")
        if must_fit:
            fusion = LateFusion.from_config(dataclasses.replace(section, method="weighted"), classes)
        return fusion, notes
    fusion.fit(validation.audio[rows], validation.video[rows], validation.targets[rows])
    notes.append(f"fusion '{fusion.method}' fitted on {int(rows.sum())} validation clips with audio and video")
    return fusion, notes


def system_scores(scores: SplitScores, system: str, fusion=None) -> np.ndarray:
    """Clip-wise scores ``(N, C)`` in [0, 1] of one system: ``audio``, ``video``, ``fused`` or ``prior``.

    ``video``: clips without video score 0 (the video-only system cannot tag them).
    ``fused``: late fusion; a clip without video keeps its audio scores. With a ``fusion`` whose
    true-path rule is on, every system but ``prior`` ends with it, as ``avtag tag`` does.
    ``prior``: the validation class frequencies for every clip; with tuned thresholds it is
    the best constant predictor (always the same classes), the floor any system must beat.

    Raises:
        EvaluationError: the system's branch did not run on this split.
    """
    if system not in SYSTEMS:
        raise EvaluationError(f"unknown system {system!r} (one of {', '.join(SYSTEMS)})")
    if system in ("audio", "fused") and scores.audio is None:
        raise EvaluationError(f"system {system!r} needs the audio branch: give a checkpoint")
    if system == "video" and scores.video is None:
        raise EvaluationError(f"split {scores.split!r}: no cached video logits (build the cache with cache.video: true "
                              "from media with a video stream)")
    if system == "prior":
        if scores.prior is None:
            raise EvaluationError("the prior reference needs the validation split's labels")
        return np.broadcast_to(scores.prior, scores.targets.shape).astype(np.float64)
    import torch

    if system in ("audio", "video") or scores.video is None:  # one branch: the true-path rule alone, as `tag --only`
        branch = scores.audio if system != "video" else np.nan_to_num(scores.video, nan=0.0)
        if fusion is None or fusion.closure is None:
            return branch
        return fusion.close(torch.as_tensor(branch)).numpy()
    if fusion is None:
        raise EvaluationError("system 'fused' needs a fusion (see build_fusion)")
    from avtag.models.tagger import AudioVisualTagger

    with torch.no_grad():  # the tagger's own late fusion, on the branch scores of this split
        fused = AudioVisualTagger(scores.classes, fusion=fusion).combine(torch.as_tensor(scores.audio),
                                                                        torch.as_tensor(scores.video))
    return fused.numpy()
