"""The engines that run a tagger's networks on NumPy arrays: PyTorch, or ONNX Runtime without torch.

Both run the same composition, :class:`~avtag.models.tagger.AudioVisualTagger`:
:class:`TorchEngine` calls it directly (any device, explanations, training checkpoints);
:class:`OnnxEngine` runs its ONNX export (:mod:`avtag.models.export`) and never imports torch,
which costs ~0.5 GB of memory and 2-3 s to import. The file pipeline and the Python API talk
to an engine only through these methods::

    audio(waveform (B, samples) float32)  -> clipwise (B, C), framewise (B, T, C)     raises AudioTooShort
    frame_logits([frames (n_i, H, W, 3) uint8, ...]) -> [ImageNet logits (n_i, 1000), ...]
    video(frame logits (n, 1000))         -> video clip-wise (C,), pooled object probabilities (1000,)
    fuse(audio (C,) | None, video (C,) | None) -> fused clip-wise (C,), 0 where no branch scores a class

plus ``expect_long_audio()`` (a hint), ``classes``, ``objects``, ``sample_rate``, ``frame_hop``, ``unknown_to_audio``,
``has_audio`` (an audio model), ``has_frames`` (a frame network) and ``has_video`` (a label map).
After ``use_audio_post()`` (the :class:`~avtag.inference.tagger.Tagger` calls it), ``audio()`` moves
the network's scores to the model's class prior (``model.class_prior``, :mod:`avtag.models.class_prior`)
and then joins its speech detector (``model.speech_detector``, :mod:`avtag.models.speech`) to them
(:class:`~avtag.models.audio_post.AudioPost`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from avtag import AvtagError
from avtag.models.audio_post import AudioPost, tagger_priors


class AudioTooShort(AvtagError):
    """A waveform shorter than the audio branch takes (the message says how long it must be)."""


class _AudioPost:
    """The step after the audio network that both engines share (:class:`~avtag.models.audio_post.AudioPost`:
    the class-prior shift, then the speech detector); ``speech_detector``, ``class_prior`` and
    ``class_priors`` (in the order of ``classes``) are the model's."""

    speech_detector = "none"
    class_prior = "training"
    class_priors: dict = {}
    _post_step = None

    def use_audio_post(self, class_prior: str = "model", speech_detector: bool = True) -> None:
        """Set what ``audio()`` does after the network: move its scores to ``class_prior`` (``model``:
        the model's own ``model.class_prior``) and join the model's speech detector (``speech_detector``).

        Raises:
            ClassPriorError, SpeechDetectorError: a prior or detector this model cannot use.
        """
        if not self.has_audio:
            self._post_step = None
            return
        self._post_step = AudioPost(self.classes, self.sample_rate, self.unknown_to_audio,
                                    self.speech_detector if speech_detector else "none",
                                    self.class_prior if class_prior == "model" else class_prior, self.class_priors)

    @property
    def joins_speech(self) -> bool:
        """Whether ``audio()`` joins a speech detector to the scores."""
        return self._post_step is not None and self._post_step.speech is not None

    @property
    def shifts_prior(self) -> bool:
        """Whether ``audio()`` moves the scores to another class prior than the training one."""
        return self._post_step is not None and self._post_step.prior is not None

    def _post(self, wave: np.ndarray, clipwise: np.ndarray, framewise: np.ndarray):
        if self._post_step is None:
            return clipwise, framewise
        return self._post_step(wave, clipwise, framewise, self.frame_hop)


class TorchEngine(_AudioPost):
    """The engine on a PyTorch :class:`~avtag.models.tagger.AudioVisualTagger` (on its device).

    Args:
        model: the composed model, eval mode.
    """

    name = "pytorch"

    def __init__(self, model) -> None:
        self.model = model
        self.classes = tuple(model.classes)
        self.objects = tuple(model.objects)
        self.has_audio, self.has_frames, self.has_video = model.has_audio, model.video is not None, model.has_video
        self.unknown_to_audio = tuple(getattr(model, "unknown_to_audio", ()))
        self.sample_rate = model.audio.sample_rate if model.audio is not None else 16000
        self.frame_hop = model.audio.frame_hop if model.audio is not None else None
        if model.audio is not None:
            self.speech_detector = getattr(model.audio.model_config, "speech_detector", "none")
            self.class_prior = getattr(model.audio.model_config, "class_prior", "training")
            self.class_priors = tagger_priors(model)

    def expect_long_audio(self) -> None:
        """A long file comes next (nothing to prepare here)."""

    def audio(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from avtag.models.frontends import AudioInputError

        wave = np.ascontiguousarray(np.atleast_2d(waveform), dtype=np.float32)
        try:
            with torch.inference_mode():
                out = self.model(waveform=torch.from_numpy(wave))
        except AudioInputError as exc:
            raise AudioTooShort(str(exc)) from None
        return self._post(wave, out.audio_clipwise.float().cpu().numpy(), out.framewise.float().cpu().numpy())

    def frame_logits(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model.clip_frame_logits([torch.from_numpy(np.ascontiguousarray(c)) for c in clips])
        return [x.float().cpu().numpy() for x in out]

    def video(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(frame_logits=torch.from_numpy(np.asarray(logits, dtype=np.float32))[None])
        return out.video_clipwise[0].float().cpu().numpy(), out.object_probs[0].float().cpu().numpy()

    def fuse(self, audio: np.ndarray | None, video: np.ndarray | None) -> np.ndarray:
        import torch

        def tensor(x):
            return None if x is None else torch.as_tensor(np.asarray(x, dtype=np.float32))[None].to(self.model.device)

        with torch.inference_mode():
            return self.model.combine(tensor(audio), tensor(video))[0].float().cpu().numpy()


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # no spin-waiting between runs: the decode workers share the cores (on a loaded machine, 4 runs each:
    # batch 1.42x ffmpeg without, 1.52x with; no difference on a quiet one)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False  # the arena keeps the largest batch's activations: 0.6 -> 0.43 GB, same speed
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_threads() -> int:
    """Threads for the networks: the CPU cores this process may use (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class OnnxEngine(_AudioPost):
    """The engine on an exported tagger (a folder written by :func:`avtag.models.export.export_onnx`),
    run by ONNX Runtime on the CPU; imports no torch. Same outputs as :class:`TorchEngine` to ~1e-5
    on frames at the decode size; frames of another size are resized by FFmpeg's scaler (bicubic)
    instead of PyTorch's, which moves scores by ~1e-3 (0.002 on a real photograph).

    Args:
        folder: the export.
        threads: intra-op threads (default: :func:`cpu_threads`).

    Raises:
        OSError, ValueError: a folder that is not a complete export (the caller re-exports).
    """

    name = "onnxruntime"

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "runtime.json").read_text())
        threads = threads or cpu_threads()
        self.classes, self.objects = tuple(meta["classes"]), tuple(meta["objects"])
        self.notes = list(meta.get("notes", ()))
        self.has_audio, self.has_frames, self.has_video = meta["has_audio"], meta["has_frames"], meta["has_video"]
        self.unknown_to_audio = tuple(meta.get("unknown_to_audio", ()))
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.frame_hop = meta.get("frame_hop")
        self.min_samples = int(meta.get("min_samples", 1))
        self.batch_size = int(meta.get("batch_size", 32))
        self.crop_fraction = float(meta.get("crop_fraction", 0.875))
        self.speech_detector = str(meta.get("speech_detector", "none"))
        self.class_prior = str(meta.get("class_prior", "training"))
        self.class_priors = dict(meta.get("class_priors") or {})
        self.logmel = None
        if meta.get("audio_input") == "logmel":
            from avtag.features.logmel_numpy import NumpyLogMel

            self.logmel = NumpyLogMel.load(self.folder / "logmel.npz")
        names = [n for n, on in (("audio", self.has_audio), ("frames", self.has_frames), ("video", self.has_video),
                                 ("fusion", True)) if on]
        sizes = meta.get("sizes", {})
        for n in names:  # a missing or truncated file fails here, where the caller can export again
            path = self.folder / f"{n}.onnx"
            if not path.is_file() or path.stat().st_size != sizes.get(path.name):
                raise ValueError(f"{path}: missing, or not the size the export wrote")
        self._threads, self._loaded = threads, {}

    def _session(self, name: str):
        """The ONNX Runtime session of graph ``name``, loaded on first use (an audio file never loads
        the frame network)."""
        if name not in self._loaded:
            try:
                self._loaded[name] = _session(self.folder / f"{name}.onnx", self._threads)
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
                raise AvtagError(f"{self.folder / name}.onnx: damaged ONNX export ({str(exc)[:120]}); "
                                 "delete the folder and run again") from None
        return self._loaded[name]

    def expect_long_audio(self) -> None:
        """A long file comes next: get its FFT library ready in the background."""
        if self.logmel is not None:
            self.logmel.prepare_large()

    def audio(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wave = np.ascontiguousarray(np.atleast_2d(waveform), dtype=np.float32)
        if wave.shape[-1] < self.min_samples:
            raise AudioTooShort(f"audio too short: {wave.shape[-1] / self.sample_rate:.3f} s, the model needs at least "
                                f"{self.min_samples / self.sample_rate:.3f} s ({self.min_samples} samples)")
        feed = {"waveform": wave} if self.logmel is None else {"logmel": self.logmel(wave)}
        clipwise, framewise = self._session("audio").run(None, feed)
        return self._post(wave, clipwise, framewise)

    def _crop(self, frames: np.ndarray) -> np.ndarray:
        from avtag.models.frame_geometry import IMAGE_SIZE, crop_box

        h, w = frames.shape[1:3]
        size, top, left = crop_box(h, w, self.crop_fraction)
        if size != (h, w):
            from avtag.io.common import resize_frames

            frames = resize_frames(frames, size)
        return frames[:, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]

    def frame_logits(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not clips:
            return []
        images = np.concatenate([self._crop(np.asarray(c, dtype=np.uint8)) for c in clips])
        run = self._session("frames").run
        out = [run(None, {"images": np.ascontiguousarray(images[i:i + self.batch_size])})[0]
               for i in range(0, len(images), self.batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, len(self.objects)), np.float32)
        return np.split(logits, np.cumsum([len(c) for c in clips])[:-1])

    def video(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        video, objects = self._session("video").run(None, {"frame_logits": np.asarray(logits, np.float32)[None]})
        return video[0], objects[0]

    def fuse(self, audio: np.ndarray | None, video: np.ndarray | None) -> np.ndarray:
        nan = np.full(len(self.classes), np.nan, np.float32)
        a = nan if audio is None else np.asarray(audio, np.float32)
        v = nan if video is None else np.asarray(video, np.float32)
        session = self._session("fusion")
        feed = {"audio": a[None], "video": v[None]}
        # an ablation's fusion ignores one branch, and the export drops that input
        return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0][0]
