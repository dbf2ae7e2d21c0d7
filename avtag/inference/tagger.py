"""The Python API of tagging: :class:`Tagger` around the one model, :class:`AudioVisualTagger`.

    import avtag
    tagger = avtag.Tagger.from_pretrained("default", device="auto")   # or .from_checkpoint(path)
    result = tagger(waveform, sample_rate=44100, frames=frames)       # NumPy arrays; either may be None
    result = tagger.tag_file("clip.mp4", segments=True)
    for r in tagger.tag_files(paths): ...                             # a failure is a value: r.error
    result.top(k=5, threshold=0.1); result.to_dict()

Resampling (torchaudio) and frame preprocessing happen inside; class names travel with every
result. Files are decoded by :mod:`avtag.io`; a file longer than ``tag.long_file_s`` is read
window by window (audio scores: max over windows; video: the frames of all windows pooled
together; events: per window, joined where they touch), so memory stays bounded.

A branch that cannot run is switched off and the result says so in ``notes``: no audio model,
an audio-only file, a video without sound, audio too short for the network, or an ablation switch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from avtag.config import AvtagConfig, LabelMapConfig
from avtag.inference.engines import OnnxEngine, TorchEngine
from avtag.inference.pipeline import FilePipeline, TagError, check_top, combine, infer_clip
from avtag.inference.results import TagResult
from avtag.io.common import shorten
from avtag.labels import LabelError, Vocabulary, get_vocabulary


def parse_labels(spec: str | Sequence[str] | Vocabulary | None) -> Vocabulary | None:
    """``--labels``: ``"dcase2017"``, a text file with one class per line, or names separated by ``;``.

    Raises:
        TagError: a value that names a file which does not exist, or no names at all.
    """
    if spec is None or isinstance(spec, Vocabulary):
        return spec
    if not isinstance(spec, str):
        return get_vocabulary(list(spec))
    if spec.lower() == "dcase2017":
        return get_vocabulary("dcase2017")
    path = Path(spec).expanduser()
    if _exists_as(path.is_file):  # else a list of names (maybe longer than a file name may be)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise TagError(f"{path}: cannot read the label file ({exc})") from None
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    elif ";" not in spec and (path.suffix.lower() in (".txt", ".csv", ".tsv", ".lst") or "/" in spec):
        why = "is not a regular file" if _exists_as(path.exists) else "label file not found"
        raise TagError(f"--labels {spec[:200]}: {why} (give 'dcase2017', a file, or names separated by ';')")
    else:
        names = [n.strip() for n in spec.split(";") if n.strip()]
    if not names:
        raise TagError(f"--labels {spec!r}: no class names (give 'dcase2017', a file, or names separated by ';')")
    try:
        return get_vocabulary(list(dict.fromkeys(names)))
    except LabelError as exc:
        raise TagError(f"--labels {shorten(spec)}: {exc}") from None



def _exists_as(test) -> bool:
    """``path.is_file`` / ``path.is_dir`` called, False where the OS refuses the name (too long, a NUL byte)."""
    try:
        return test()
    except (OSError, ValueError):
        return False


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files to tag: files as given, folders searched recursively for media files (sorted)."""
    from avtag.io.media import MEDIA_EXTENSIONS

    out: list[Path] = []
    for p in map(Path, paths):
        if _exists_as(p.is_dir):  # a name too long for the file system is a file: its decode reports it
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS))
        else:
            out.append(p)
    return out


class Tagger:
    """Tags media files and arrays with an :class:`~avtag.models.tagger.AudioVisualTagger`.

    Build it with :meth:`from_pretrained`, :meth:`from_checkpoint` or :meth:`from_config`.

    Args:
        model: the composed model (on its device, eval mode), or None with ``engine`` and ``build``.
        config: settings: ``tag`` (top-k, threshold, events, long files) and ``video`` (frame sampling).
        notes: what was switched off when the tagger was built (repeated in every result).
        engine: what runs the networks (:mod:`avtag.inference.engines`; default: PyTorch on ``model``).
        build: makes the PyTorch model on first use of :attr:`model` when only an ONNX engine was loaded.
    """

    def __init__(self, model=None, config: AvtagConfig | None = None, notes: Sequence[str] = (), engine=None,
                 build=None) -> None:
        if model is None and (engine is None or build is None):
            raise TypeError("Tagger needs a model, or an engine and a build function")
        self._model, self._build = model, build
        self.engine = engine if engine is not None else TorchEngine(model)
        self.config = config or AvtagConfig()
        self.notes = list(notes)
        self.engine.use_audio_post(self.config.tag.class_prior, self.config.tag.speech_detector)
        self._pipeline = FilePipeline(self)

    @property
    def model(self):
        """The PyTorch :class:`~avtag.models.tagger.AudioVisualTagger` (built now when the tagger was
        loaded as an ONNX export: explanations and embeddings need it, tagging does not)."""
        if self._model is None:
            self._model = self._build()
        return self._model

    def close(self) -> None:
        """Stop the decode worker processes (they also end with this process)."""
        self._pipeline.close()

    def use_decoder(self, decoder) -> None:
        """Decode files with ``decoder``, an :class:`avtag.io.IsolatedDecoder` started before this tagger
        was built (:func:`avtag.inference.pipeline.start_decoder`), so the workers' start-up overlaps
        with loading the model. The tagger closes it."""
        self._pipeline.use_decoder(decoder)

    def __enter__(self) -> Tagger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name: str = "default", **kwargs) -> Tagger:
        """The packaged model ``name`` (see :data:`avtag.models.weights.WEIGHTS`); keyword arguments
        as :meth:`from_config`."""
        return cls.from_config(checkpoint=f"pretrained:{name}", **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> Tagger:
        """A trained audio model file (``audio_model.pt`` or a ``.ckpt`` of ``avtag train``)."""
        return cls.from_config(checkpoint=path, **kwargs)

    @classmethod
    def from_config(cls, config: AvtagConfig | None = None, checkpoint=None, labels=None, device: str = "auto",
                    use_audio: bool = True, use_video: bool = True, fast: bool = True) -> Tagger:
        """The general builder.

        Args:
            config: settings (``video``, ``label_map``, ``fusion``, ``tag``, ``data.classes``); default: the schema's.
            checkpoint: ``"pretrained:NAME"``, a model file path, a loaded
                :class:`~avtag.models.audio.AudioModel`, or None (no audio branch).
            labels: classes to tag (any names: the video branch is zero-shot); default: the audio
                model's classes, else ``data.classes``. See :func:`parse_labels`.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``: both branches and fusion run there.
            use_audio, use_video: switch a branch off (ablations; ``fusion.mode`` does too).
            fast: fold batch norms and go channels-last for inference (:mod:`avtag.models.fast`;
                the same results to ~1e-5); False keeps the plain PyTorch modules.

        Raises:
            CheckpointError, LabelError, FusionError, DeviceError, TagError: bad settings, checkpoint,
                labels or device, or no branch left to run.
        """
        from avtag.inference.runtime import export_folder, export_key, onnx_wanted

        config = config or AvtagConfig()
        vocabulary = parse_labels(labels)
        args = (config, checkpoint, vocabulary, use_audio, use_video)
        if onnx_wanted(device, fast):
            key = export_key(checkpoint, vocabulary, config, use_audio, use_video)
            if key is not None:
                return cls._from_export(export_folder(key), args)
        model, notes = build_model(*args, device=device)
        if fast:
            model.optimize_for_inference()
        return cls(model, config, notes)

    @classmethod
    def _from_export(cls, folder: Path, args: tuple) -> Tagger:
        """The tagger on the ONNX export in ``folder``: loaded when complete, else exported now
        (PyTorch) and loaded; on the PyTorch engine when the export fails (a graph ONNX cannot express)."""
        import logging

        def build():
            return build_model(*args, device="cpu")[0].optimize_for_inference()

        try:
            engine = OnnxEngine(folder)
            return cls(None, args[0], engine.notes, engine=engine, build=build)
        except Exception:  # noqa: BLE001 - absent or damaged export (ORT raises its own types): export again
            pass
        from avtag.models.export import ExportError, export_onnx

        model, notes = build_model(*args, device="cpu")
        try:
            export_onnx(model, folder, notes)
            engine = OnnxEngine(folder)
        except (ExportError, OSError) as exc:
            logging.getLogger("avtag").info("ONNX Runtime engine unavailable (%s); using PyTorch", exc)
            return cls(model.optimize_for_inference(), args[0], notes)
        return cls(model.optimize_for_inference(), args[0], notes, engine=engine)

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes tagged, in score order."""
        return self.engine.classes

    @property
    def device(self):
        """The ``torch.device`` of the networks (the CPU for the ONNX Runtime engine)."""
        if isinstance(self.engine, TorchEngine):
            return self.model.device
        import torch

        return torch.device("cpu")

    @property
    def sample_rate(self) -> int:
        """Hz the audio is resampled to (the audio model's rate)."""
        return self.engine.sample_rate

    # ------------------------------------------------------------------ arrays
    def __call__(self, waveform: np.ndarray | None = None, sample_rate: int | None = None,
                 frames: np.ndarray | None = None, frame_times: np.ndarray | None = None, *,
                 segments: bool = False, top_k: int | None = None, threshold: float | None = None) -> TagResult:
        """Tag arrays.

        Args:
            waveform: ``(samples,)`` mono or ``(channels, samples)`` (averaged to mono) float audio
                in [-1, 1] (integer PCM is scaled by its type's range), at ``sample_rate`` Hz (resampled
                inside), or None.
            frames: ``(n, H, W, 3)`` uint8 RGB video frames, or None.
            frame_times: ``(n,)`` seconds of the frames (for the duration when there is no audio).
            segments, top_k, threshold: as :meth:`tag_file`.

        Raises:
            TagError: both inputs None, shapes or types that cannot be tagged, NaN or infinite samples,
                a sample rate that is not a positive number, frame times that do not match the frames.
        """
        from avtag.io.common import Clip, MediaError, mono_waveform

        wave = rate = None
        if waveform is not None:
            try:
                wave = mono_waveform(waveform, sample_rate)
            except MediaError as exc:
                raise TagError(str(exc)) from None
            rate = self.sample_rate
            if int(sample_rate) != rate:
                from avtag.io.soundfile_backend import resample

                wave = resample(wave, int(sample_rate), rate)
        if frames is not None:
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape[1:3]:
                raise TagError(f"frames must be (n, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
        if wave is None and frames is None:
            raise TagError("nothing to tag: give a waveform, frames or both")
        times = None if frames is None else (np.asarray(frame_times, dtype=np.float64) if frame_times is not None
                                             else np.arange(len(frames), dtype=np.float64))
        if times is not None and times.shape != (len(frames),):
            raise TagError(f"frame_times must hold one time per frame ({len(frames)}), got shape {times.shape}")
        duration = len(wave) / rate if wave is not None else float(times[-1] + 1.0 if len(times) else 0.0)
        clip = Clip(path=None, start=0.0, duration=duration, waveform=wave, sample_rate=rate, frames=frames,
                    frame_times=times)
        return self.tag_clip(clip, segments=segments, top_k=top_k, threshold=threshold)

    def tag_clip(self, clip, *, file: str | None = None, segments: bool = False, top_k: int | None = None,
                 threshold: float | None = None) -> TagResult:
        """Tag an already decoded :class:`avtag.io.Clip` (waveform at :attr:`sample_rate`, uint8 frames).

        Raises:
            TagError: neither branch can use the clip; a ``top_k`` < 0 or ``threshold`` outside [0, 1].
        """
        check_top(top_k, threshold)
        logits = None
        if clip.frames is not None and len(clip.frames) and self.engine.has_frames:
            logits = self.engine.frame_logits([clip.frames])[0]
        part = infer_clip(self, clip, logits, segments)
        return combine(self, [part], file, clip.duration, segments, top_k, threshold)

    # ------------------------------------------------------------------ files
    def tag_file(self, path: str | Path, *, segments: bool = False, top_k: int | None = None,
                 threshold: float | None = None) -> TagResult:
        """Tag one media file.

        Args:
            path: video or audio file.
            segments: add sound events (onset/offset) from the audio frame-wise output.
            top_k: keep at most this many tags (None: ``tag.top_k``; 0: all).
            threshold: keep tags with fused score >= this (None: ``tag.threshold``).

        Raises:
            TagError: the file cannot be tagged (unreadable, a decoder that crashed or hung, no
                branch can run on it); the message names the file and the problem.
        """
        result = next(self._pipeline.run([path], segments, top_k, threshold))
        if result.error is not None:
            raise TagError(result.error)
        return result

    def tag_files(self, paths: Iterable[str | Path], *, segments: bool = False, top_k: int | None = None,
                  threshold: float | None = None) -> Iterator[TagResult]:
        """Tag files (decoded in worker processes, overlapped with inference; see
        :mod:`avtag.inference.pipeline`), one :class:`TagResult` per path in input order. A file
        that fails is a result with ``error`` set (one line naming the file and the problem), and
        the others are still tagged: a decoder that crashes or hangs costs that file only."""
        yield from self._pipeline.run(paths, segments, top_k, threshold)

    def explain(self, source, sample_rate: int | None = None, frames: np.ndarray | None = None,
                frame_times: np.ndarray | None = None, *, classes: Sequence[str] | None = None,
                units: Sequence[str] = (), out: str | Path | None = None, method: str = "guided", top_k: int = 3,
                layer: str | None = None, start: float | None = None, end: float | None = None):
        """What the model heard (and saw) as each class: auralised WAVs, a figure, ``explanation.json``.

        Args:
            source: a media file path, or a waveform ``(samples,)`` / ``(channels, samples)`` at
                ``sample_rate`` Hz (then ``frames`` / ``frame_times`` as :meth:`__call__`).
            classes: classes to explain (default: the ``top_k`` tags); units: ``LAYER:INDEX`` conv units.
            out: folder for the files (None: only the returned object).
            method: ``guided`` (guided backpropagation), ``gradcam`` or ``integrated``; layer: Grad-CAM layer.
            start, end: span of a file, seconds.

        Returns:
            :class:`avtag.inference.explain.Explanation` (``to_dict()`` follows its ``SCHEMA``).

        Raises:
            MediaError, ExplainInputError, ExplainError: see :mod:`avtag.inference.explain`.
        """
        from avtag.inference.explain import explain_clip, explain_file

        kwargs = dict(classes=classes, units=units, out=out, method=method, top_k=top_k, layer=layer)
        if isinstance(source, (str, Path)):
            return explain_file(self, source, start=start, end=end, **kwargs)
        return explain_clip(self, source, sample_rate, frames, frame_times, notes=self.notes, **kwargs)


def build_model(config: AvtagConfig, checkpoint, vocabulary: Vocabulary | None, use_audio: bool, use_video: bool,
                device="auto"):
    """The PyTorch :class:`~avtag.models.tagger.AudioVisualTagger` (eval mode, unfolded) and the build
    notes, from :meth:`Tagger.from_config`'s arguments (``vocabulary`` parsed by :func:`parse_labels`).

    Raises:
        CheckpointError, LabelError, FusionError, DeviceError, TagError: as :meth:`Tagger.from_config`.
    """
    from avtag.models.device import resolve_device
    from avtag.models.fusion import FusionError, LateFusion
    from avtag.models.tagger import AudioVisualTagger

    dev = resolve_device(device)
    mode = config.fusion.mode
    use_audio, use_video = use_audio and mode != "video", use_video and mode != "audio"
    notes: list[str] = []
    audio = _load_audio(checkpoint, dev) if use_audio else None
    if not use_audio:
        notes.append("audio branch off: " + ("fusion.mode=video" if mode == "video" else "switched off"))
    elif audio is None:
        notes.append("audio branch off: no audio model (give a checkpoint)"
                     + ("; tags come from the video branch alone" if use_video else ""))
    if not use_video:
        notes.append("video branch off: " + ("fusion.mode=audio" if mode == "audio" else "switched off"))
    if audio is None and not use_video:
        raise TagError("no branch can run: " + "; ".join(notes))
    vocabulary = vocabulary or (get_vocabulary(audio.classes) if audio is not None else None) \
        or get_vocabulary(config.data.classes)
    if audio is not None:
        unknown = [n for n in vocabulary.names if n not in audio.classes]
        if unknown:
            notes.append(f"audio model does not know {len(unknown)} of the labels: video score only for those")
    video = label_map = None
    if use_video:
        from avtag.models.label_map import build_label_map
        from avtag.models.video import VideoBranch

        label_map = build_label_map(vocabulary.names, config.label_map or LabelMapConfig())
        video = VideoBranch(batch_size=config.video.batch_size)
    fusion = LateFusion.from_config(config.fusion, vocabulary.names)
    if fusion.method == "logistic" and fusion.coef_ is None and audio is not None and use_video:
        raise FusionError("logistic fusion needs fitted weights: set fusion.weights_file (LateFusion.save output)")
    model = AudioVisualTagger(vocabulary.names, audio, video, label_map, fusion, config.video.aggregate)
    return model.to(dev).eval(), notes


def _load_audio(checkpoint, device):
    """The audio model a ``checkpoint`` argument names (see :meth:`Tagger.from_config`)."""
    import torch

    if checkpoint is None:
        return None
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint.to(device).eval()
    from avtag.models.weights import get_weights, load_audio_model

    text = str(checkpoint)
    if text.startswith("pretrained:"):
        return get_weights(text[len("pretrained:"):]).load(device)
    return load_audio_model(checkpoint, device)
