"""``avtag explain``: what the tagger heard and saw, as sound, a figure and a JSON file.

For each explained class (default: the clip's top tags) or conv-layer unit:

1. **auralisation** (Choi, Fazekas & Sandler 2016, arXiv 1607.02444): an attribution map over the
   log-mel plane (:mod:`avtag.models.explain`: guided backpropagation by default, Grad-CAM or
   integrated gradients), smoothed and made a mask in [0, 1], applied to the clip's complex STFT at
   the input's own sample rate and inverted (:func:`avtag.features.inverse.apply_mel_mask`):
   ``<name>.wav`` is "what the model heard as <name>", ``<name>_residual.wav`` the rest of the clip;
2. **where and when**: the mask's top time-frequency regions, the pooling's attention weights, the
   frame-wise probabilities and their events (:func:`avtag.events.framewise_to_events`);
3. **what was seen**: for video, each frame's top ImageNet objects and each object's contribution to
   the class through the label map (``object probability * label-map weight``);
4. ``explanation.json`` (schema :data:`SCHEMA`) and ``explanation.png``
   (:mod:`avtag.inference.explain_figure`).

Log-mel front ends are differentiated on their log-mel input; any other front end on the waveform,
whose gradient is brought to the log-mel plane by :func:`avtag.features.inverse.gradient_relevance`
(Grad-CAM there gives a time profile only: the learnt image has no mel axis).
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from avtag import AvtagError
from avtag.events import framewise_to_events
from avtag.inference.explain_schema import SCHEMA, Explanation, TargetExplanation, _r
from avtag.io.common import flat, shorten

__all__ = ["SCHEMA", "ExplainInputError", "Explanation", "TargetExplanation", "explain_clip", "explain_file",
           "write_explanation"]

class ExplainInputError(AvtagError):
    """A file, array or request that cannot be explained (the message names the file and why)."""


def slug(name: str) -> str:
    """A file-name stem for a class or unit name (``"Bird call, song"`` -> ``bird_call_song``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:60] or "target"


def attribution_mask(attribution: np.ndarray, frame_hop: float, scale: str = "mass") -> np.ndarray:
    """A mask ``(frames, n_mels)`` in [0, 1] from a signed attribution map of the same shape.

    The map is smoothed (Gaussian, sigma = 30 ms in time and 1 mel band: gradients of strided
    convolutions are checkered, and unsmoothed masks sound as musical noise) and its negative part
    dropped. ``scale="mass"`` (gradient maps, dominated by a few extreme cells): scaled so that the
    cells holding the top half of the positive mass reach 1; ``"max"`` (Grad-CAM, already smooth
    and broad): divided by its maximum, as Selvaraju et al. display it.
    """
    from scipy.ndimage import gaussian_filter

    smooth = np.maximum(gaussian_filter(np.asarray(attribution, dtype=np.float64),
                                        sigma=(max(1.0, 0.03 / frame_hop), 1.0)), 0.0)
    values = np.sort(smooth.ravel())[::-1]
    mass = np.cumsum(values)
    if mass.size == 0 or mass[-1] <= 0:
        return np.zeros_like(smooth, dtype=np.float32)
    top = values[0] if scale == "max" else values[min(np.searchsorted(mass, 0.5 * mass[-1]), values.size - 1)]
    return np.clip(smooth / max(top, 1e-30), 0.0, 1.0).astype(np.float32)


def top_regions(mask: np.ndarray, frame_hop: float, mel_edges: np.ndarray, duration: float, k: int = 5,
                level: float = 0.5) -> list[dict]:
    """The ``k`` connected regions of ``mask >= level`` with the most mask mass: onset / offset
    (s; frame ``t`` covers ``(t +- 0.5) * frame_hop``), ``f_low`` / ``f_high`` (Hz, the outer feet of
    the mel triangles) and ``share`` of the whole mask's mass."""
    from scipy import ndimage

    labels, n = ndimage.label(mask >= level, structure=np.ones((3, 3)))
    if n == 0:
        return []
    masses = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    boxes, total = ndimage.find_objects(labels), float(mask.sum())
    out = []
    for i in np.argsort(-masses)[:k]:
        t, f = boxes[i]
        out.append({"onset": round(max(0.0, (t.start - 0.5) * frame_hop), 3),
                    "offset": round(min(duration, (t.stop - 0.5) * frame_hop), 3),
                    "f_low": round(float(mel_edges[f.start, 0]), 1),
                    "f_high": round(float(mel_edges[f.stop - 1, 2]), 1),
                    "share": round(float(masses[i]) / total, 4)})
    return out


def resolve_classes(names: Sequence[str], classes: Sequence[str]) -> list[str]:
    """Tagger class names for user-given ``names`` (exact, then case-insensitive).

    Raises:
        ExplainInputError: an unknown name, with the closest class name.
    """
    lower = {c.lower(): c for c in classes}
    out = []
    for name in names:
        if name in classes or name.lower() in lower:
            out.append(name if name in classes else lower[name.lower()])
            continue
        close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.0) if len(name) <= 200 else []
        hint = f"; closest: {lower[close[0]]!r}" if close else ""
        raise ExplainInputError(f"--class {shorten(repr(name))}: unknown class{hint}")
    return list(dict.fromkeys(out))


def _objects(probs: torch.Tensor, object_map: torch.Tensor, c: int, names: Sequence[str], aggregate: str,
             k: int = 5) -> list[dict]:
    """The objects that contributed most to class ``c``: pooled ``probability * weight``."""
    from avtag.models.video import pool_frames

    column = object_map[:, c].float().cpu()
    contribution = pool_frames((probs * column)[None], None, aggregate)[0]
    pooled = pool_frames(probs[None], None, aggregate)[0]
    top = [int(i) for i in torch.argsort(contribution, descending=True)[:k] if contribution[i] >= 5e-4]
    return [{"label": names[i], "probability": round(float(pooled[i]), 4), "weight": round(float(column[i]), 4),
             "contribution": round(float(contribution[i]), 4)} for i in top]


def _frame_objects(model, probs: torch.Tensor | None, output, frame_times, explained: Sequence[str]) -> list[dict]:
    """Per video frame: ``time``, the video ``scores`` of the explained classes, and ``objects``: the
    frame's top 3 objects plus each class's top contributor, with ``contributions`` = object
    probability * label-map weight per class."""
    if probs is None:
        return []
    times = np.arange(len(probs), dtype=float) if frame_times is None else np.asarray(frame_times, dtype=float)
    cols = [model.classes.index(name) for name in explained]
    weights = model.object_map[:, cols].float().cpu()  # (objects, K)
    scores = output.video_framewise[0].float().cpu().numpy()
    frames = []
    for i, p in enumerate(probs):
        contrib = p[:, None] * weights  # (objects, K)
        chosen = [int(o) for o in torch.argsort(p, descending=True)[:3]]
        chosen += [int(o) for o in contrib.argmax(dim=0) if int(o) not in chosen and contrib[o].max() > 0]
        objects = [{"label": model.objects[o], "probability": round(float(p[o]), 4),
                    "contributions": {name: round(float(contrib[o, k]), 4) for k, name in enumerate(explained)}}
                   for o in dict.fromkeys(chosen)]
        frames.append({"time": round(float(times[i]), 3), "objects": objects,
                       "scores": {name: round(float(scores[i, c]), 4) for name, c in zip(explained, cols)}})
    return frames


def _attribution(audio, wave: torch.Tensor, targets, method: str, layer: str | None):
    """Attribution maps ``(K, frames, n_mels)`` on the log-mel plane and the Grad-CAM layer."""
    from avtag.features.inverse import gradient_relevance
    from avtag.models import explain as mx
    from avtag.models.frontends import LogMelFrontend

    cfg = audio.audio_config
    on_logmel = isinstance(audio.frontend, LogMelFrontend)
    x = audio.frontend.spectrogram(wave[None]) if on_logmel else wave[None]
    frames = cfg.num_frames(wave.numel())
    if method == "gradcam":
        maps, _, layer = mx.grad_cam(audio, x, targets, layer)
        if not on_logmel:  # the learnt image has no mel axis: its time profile, over all bands
            profile = torch.nn.functional.interpolate(maps.mean(dim=2)[:, None], size=frames, mode="linear")[:, 0]
            maps = profile[:, :, None].expand(-1, -1, cfg.n_mels)
        return maps.cpu().numpy(), layer
    if method == "integrated":  # baseline: the clip's background (10th percentile per band), or silence
        base = torch.quantile(x[0], 0.1, dim=0, keepdim=True)[None] if on_logmel else torch.zeros_like(x)
        grads, _ = mx.integrated_gradients(audio, x, targets, base, multiply=on_logmel)
    else:
        grads, _ = mx.guided_backprop(audio, x, targets)
    if on_logmel:
        return grads.cpu().numpy(), None
    return np.stack([gradient_relevance(wave, g, cfg).cpu().numpy() for g in grads]), None


def _split_targets(pairs, method: str) -> list[tuple[str, list[int]]]:
    """``(method, indices into pairs)`` groups: Grad-CAM explains classes; units always get guided backprop."""
    with_target = [i for i, (_, t) in enumerate(pairs) if t is not None]
    units = [i for i in with_target if pairs[i][1].kind == "unit"]
    classes = [i for i in with_target if pairs[i][1].kind == "class"]
    if method == "gradcam":
        return [g for g in (("gradcam", classes), ("guided", units)) if g[1]]
    return [(method, with_target)] if with_target else []


def explain_clip(tagger, waveform: np.ndarray, sample_rate: int, frames: np.ndarray | None = None,
                 frame_times: np.ndarray | None = None, *, file: str | None = None,
                 classes: Sequence[str] | None = None, units: Sequence[str] = (), out: str | Path | None = None,
                 method: str = "guided", top_k: int = 3, layer: str | None = None,
                 notes: Sequence[str] = ()) -> Explanation:
    """Explain the tagging of one clip (see the module docstring).

    Args:
        tagger: a :class:`~avtag.inference.tagger.Tagger` with an audio branch.
        waveform: ``(samples,)`` or ``(channels, samples)`` (averaged) float audio at ``sample_rate`` Hz.
        frames: ``(n, H, W, 3)`` uint8 RGB video frames (at ``frame_times`` s), or None.
        file: the source's name for messages and the JSON.
        classes: classes to explain (default: the ``top_k`` by fused score); units: ``LAYER:INDEX`` specs.
        out: folder for the WAVs, ``explanation.png`` and ``explanation.json`` (None: nothing written).
        method: ``guided`` (default), ``gradcam`` or ``integrated``; layer: the Grad-CAM layer.

    Returns:
        :class:`Explanation`; WAVs have the input's length and sample rate.

    Raises:
        ExplainInputError: no audio branch, a waveform that cannot be explained, an unknown class, a
            ``layer`` with a method other than ``gradcam``;
            ExplainError (:mod:`avtag.models.explain`): an unknown layer or unit.
    """
    import torchaudio

    from avtag.features.inverse import apply_mel_mask, mel_band_edges
    from avtag.features.logmel import LogMel
    from avtag.io.common import MediaError, mono_waveform
    from avtag.models import explain as mx
    from avtag.models.frontends import AudioInputError

    where = f"{file}: " if file else ""
    model, notes = tagger.model, list(notes)
    audio = model.audio
    if audio is None:
        raise ExplainInputError(f"{where}explaining needs an audio model; this tagger has no audio branch")
    if method not in mx.METHODS:
        raise ExplainInputError(f"unknown method {method!r}; choose one of {', '.join(mx.METHODS)}")
    if layer is not None and method != "gradcam":
        raise ExplainInputError(f"a layer is chosen for method 'gradcam' only; {method!r} attributes to the "
                                "input (for a layer's channels use units 'LAYER:INDEX')")
    try:
        wave_in = mono_waveform(waveform, sample_rate)
    except MediaError as exc:
        raise ExplainInputError(f"{where}{exc}") from None
    if wave_in.size and float(np.max(np.abs(wave_in))) < 1e-5:  # below -100 dBFS: nothing was heard
        notes.append("the audio is silent (peak below -100 dBFS): its maps and WAVs show the network's "
                     "response to silence, not to a sound")
    cfg, rate, device = audio.audio_config, audio.sample_rate, tagger.device
    wave = torch.from_numpy(wave_in)
    if int(sample_rate) != rate:
        wave = torchaudio.functional.resample(wave, int(sample_rate), rate)
    wave = wave.to(device)
    logits = None
    if frames is not None and model.video is not None and model.object_map is not None and len(frames):
        with torch.inference_mode():
            logits = model.frame_logits(torch.from_numpy(np.ascontiguousarray(frames))[None])[0]
    with torch.inference_mode():
        try:
            output = model(waveform=wave[None], frame_logits=None if logits is None else logits[None])
        except AudioInputError as exc:
            raise ExplainInputError(f"{where}{exc}") from None
    fused = output.clipwise[0].float().cpu().numpy()
    a_scores = output.audio_clipwise[0].float().cpu().numpy()
    v_scores = None if output.video_clipwise is None else output.video_clipwise[0].float().cpu().numpy()
    duration = len(wave_in) / float(sample_rate)
    aggregate, tag = tagger.config.video.aggregate, tagger.config.tag
    probs = None if logits is None else logits.softmax(dim=-1).float().cpu()

    names = resolve_classes(classes, model.classes) if classes else \
        [model.classes[i] for i in np.argsort(-fused, kind="stable")[:top_k]]
    pairs: list[tuple[TargetExplanation, object]] = []
    for name in names:
        c = model.classes.index(name)
        te = TargetExplanation(name, "class", float(fused[c]), _r(a_scores[c]),
                               None if v_scores is None else _r(v_scores[c]))
        target = mx.class_target(audio, name) if name in audio.classes else None
        if target is None:
            notes.append(f"{name}: the audio model does not know this class; video evidence only")
        else:
            column = output.framewise[0][:, c].float().cpu()
            te.framewise = column.numpy()
            te.events = framewise_to_events(column[:, None], float(output.frame_hop), [name],
                                            threshold=tag.segment_threshold, median_filter_s=tag.median_filter_s,
                                            min_duration_s=tag.min_duration_s, duration=duration)
            if output.attention is not None:
                te.attention = output.attention[0][:, c].float().cpu().numpy()
        if probs is not None:
            te.objects = _objects(probs, model.object_map, c, model.objects, aggregate)
        pairs.append((te, target))
    pairs += [(TargetExplanation(t.name, "unit"), t) for t in (mx.unit_target(audio, spec) for spec in units)]
    if method == "gradcam" and any(t is not None and t.kind == "unit" for _, t in pairs):
        notes.append("units are explained by guided backpropagation (Grad-CAM explains classes)")

    edges = mel_band_edges(cfg)
    used_layer = None
    for group_method, idx in _split_targets(pairs, method):
        maps, group_layer = _attribution(audio, wave, [pairs[i][1] for i in idx], group_method, layer)
        used_layer = used_layer or group_layer
        for i, attribution in zip(idx, maps):
            te = pairs[i][0]
            te.mask = attribution_mask(attribution, cfg.frame_hop, "max" if group_method == "gradcam" else "mass")
            te.audio, te.residual = apply_mel_mask(wave_in, int(sample_rate), te.mask, cfg.frame_hop, cfg)
            te.regions = top_regions(te.mask, cfg.frame_hop, edges, duration)
            if not te.mask.any():
                notes.append(f"{te.target}: no positive evidence in the audio; the auralised WAV is silent")
    with torch.inference_mode():
        logmel = LogMel(cfg)(wave.cpu()[None])[0].numpy()
    explained = [te.target for te, _ in pairs if te.kind == "class"]
    frame_objects = _frame_objects(model, probs, output, frame_times, explained)
    expl = Explanation(file, duration, int(sample_rate), rate, method, float(cfg.frame_hop), [te for te, _ in pairs],
                       used_layer, float(output.frame_hop), {"audio": True, "video": probs is not None}, notes,
                       frame_objects, logmel, edges, frames if probs is not None else None,
                       None if probs is None else np.asarray(frame_times if frame_times is not None
                                                             else np.arange(len(probs)), dtype=float))
    if out is not None:
        write_explanation(expl, out)
    return expl


def write_explanation(expl: Explanation, out: str | Path) -> Path:
    """Write ``<target>.wav`` and ``<target>_residual.wav`` (16-bit PCM at the input's rate) per
    explained target, ``explanation.png`` and ``explanation.json`` into ``out``; returns the JSON's path.

    Raises:
        ExplainInputError: the folder cannot be created or written.
    """
    import soundfile as sf

    from avtag.inference.explain_figure import plot_explanation

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExplainInputError(f"{out}: --out must be a folder (it is a file), the explanation writes several files")
    try:
        out.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for te in expl.targets:
            if te.audio is None:
                continue
            stem = slug(te.target if te.kind == "class" else f"unit_{te.target}")
            while stem in used:
                stem += "_"
            used.add(stem)
            te.wav, te.residual_wav = f"{stem}.wav", f"{stem}_residual.wav"
            sf.write(out / te.wav, np.clip(te.audio, -1.0, 1.0), expl.sample_rate, subtype="PCM_16")
            sf.write(out / te.residual_wav, np.clip(te.residual, -1.0, 1.0), expl.sample_rate, subtype="PCM_16")
        expl.figure = "explanation.png"
        plot_explanation(expl, out / expl.figure)
        path = out / "explanation.json"
        path.write_text(json.dumps(expl.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except (OSError, sf.LibsndfileError) as exc:  # libsndfile's error is no OSError (a read-only folder)
        reason = getattr(exc, "strerror", None) or flat(exc)
        raise ExplainInputError(f"{out}: cannot write the explanation ({reason})") from None
    expl.json_path = str(path)
    return path


def explain_file(tagger, path: str | Path, *, start: float | None = None, end: float | None = None,
                 **kwargs) -> Explanation:
    """Explain a media file (keywords as :func:`explain_clip`); audio is decoded at the file's own
    sample rate, so the WAVs have it; ``start`` / ``end`` (s) select a span (times are then from ``start``).

    Raises:
        MediaError: unreadable file; ExplainInputError: no audio track, or a span longer than
            ``tag.long_file_s`` (explain a part with ``start`` / ``end``).
    """
    from avtag.io.media import load_clip, probe

    info = probe(path)
    if not info.has_audio:
        raise ExplainInputError(f"{path}: no audio track: nothing to auralise "
                                "('avtag tag --only video' shows what the video branch saw)")
    span = (info.duration if end is None else min(end, info.duration)) - (start or 0.0)
    limit = tagger.config.tag.long_file_s
    if span > limit:
        raise ExplainInputError(f"{path}: {span:.0f} s is longer than tag.long_file_s = {limit:.0f} s; "
                                "explain a part with --start/--end")
    v = tagger.config.video
    clip = load_clip(path, sample_rate=int(info.sample_rate or tagger.sample_rate), fps=v.fps,
                     num_frames=v.num_frames, frame_short_side=v.frame_short_side, start=start, end=end,
                     video=tagger.model.video is not None and info.has_video)
    if clip.waveform is None:
        raise ExplainInputError(f"{path}: the audio track has no decodable samples")
    notes = list(tagger.notes) + [f"media: {w}" for w in clip.warnings if w != "no video stream"]
    if clip.start > 0:
        notes.append(f"times are seconds from {clip.start:.3f} s into the file")
    times = None if clip.frame_times is None else np.asarray(clip.frame_times, dtype=float) - clip.start
    return explain_clip(tagger, clip.waveform, clip.sample_rate, clip.frames, times, file=str(path), notes=notes,
                        **kwargs)
