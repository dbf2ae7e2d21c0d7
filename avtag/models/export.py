"""Export of :class:`~avtag.models.tagger.AudioVisualTagger` to ONNX, for the torch-free tagging engine.

The composition stays one PyTorch module; ONNX files are its compiled form, traced from it
(``torch.onnx.export``, opset 17), so no idea of the model is written twice. Four graphs::

    audio.onnx   waveform (B, samples) float32       -> clipwise (B, C), framewise (B, T, C)
                 (front end + backbone + MIL pooling + the tagger's class columns; NaN: class unknown to audio)
                 or, for a log-mel front end, log-mel (B, frames, n_mels) instead of the waveform: the
                 log-mel is computed by :class:`avtag.features.logmel_numpy.NumpyLogMel` from the
                 window and filterbank saved in ``logmel.npz`` (ONNX Runtime's STFT is 4x slower)
    frames.onnx  images (n, 224, 224, 3) uint8 RGB   -> ImageNet logits (n, 1000)
                 (normalisation + EfficientNet-Lite0; the centre crop is :func:`frame_geometry.crop_box`)
    video.onnx   frame logits (1, n, 1000)           -> video clip-wise (1, C), pooled object probabilities (1, 1000)
                 (softmax, label map, frame pooling)
    fusion.onnx  audio (1, C), video (1, C) float32  -> fused clip-wise (1, C)   (NaN marks a branch that did not run)

and ``runtime.json`` (classes, objects, sample rate, frame hop, the shortest waveform the audio
branch takes, settings). :func:`export_onnx` checks the exported audio graph against PyTorch on
two clip lengths and refuses an export whose outputs differ by more than ``1e-3``.
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avtag import AvtagError
from avtag.models.audio_post import tagger_priors

#: bumped when the files written here change meaning (old cached exports are then ignored)
RUNTIME_FORMAT = 1
TOLERANCE = 1e-3


class ExportError(AvtagError):
    """A tagger that cannot be exported (a graph ONNX cannot express, or outputs that differ)."""


class _AudioGraph(nn.Module):
    def __init__(self, tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, waveform: torch.Tensor):
        clipwise, framewise, _, _ = self.tagger._audio(waveform)
        return clipwise, framewise


class _FramesGraph(nn.Module):
    def __init__(self, video) -> None:
        super().__init__()
        self.video = video

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from avtag.models.video import normalise_images

        return self.video.net(normalise_images(images.permute(0, 3, 1, 2).float())).float()


class _VideoGraph(nn.Module):
    def __init__(self, tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, frame_logits: torch.Tensor):
        out = self.tagger(frame_logits=frame_logits)
        return out.video_clipwise, out.object_probs


class _FusionGraph(nn.Module):
    def __init__(self, tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.tagger.combine(audio, video)


def _export(module: nn.Module, args: tuple, names: list[str], outputs: list[str], dynamic: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buffer, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return buffer.getvalue()


def shortest_waveform(tagger, limit: int = 1 << 22) -> int:
    """The fewest samples the tagger's audio branch accepts (bisection over lengths; the branch's
    own :class:`~avtag.models.frontends.AudioInputError` decides)."""
    from avtag.models.frontends import AudioInputError

    def ok(n: int) -> bool:
        try:
            with torch.no_grad():
                tagger._audio(torch.zeros(1, n))
            return True
        except AudioInputError:
            return False

    high = tagger.audio.sample_rate
    while not ok(high):
        high *= 2
        if high > limit:
            raise ExportError(f"the audio branch takes no waveform up to {limit} samples")
    low = 0  # not ok
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


def numpy_logmel(tagger):
    """The :class:`~avtag.features.logmel_numpy.NumpyLogMel` of the tagger's log-mel front end, or None
    when its audio model has another front end (then the exported graph takes the waveform)."""
    from avtag.features.logmel_numpy import NumpyLogMel
    from avtag.models.frontends import LogMelFrontend

    frontend = getattr(tagger.audio, "frontend", None)
    if not isinstance(frontend, LogMelFrontend):
        return None
    mel = frontend.logmel.mel
    return NumpyLogMel(mel.spectrogram.window.numpy(), mel.mel_scale.fb.numpy(), mel.spectrogram.hop_length)


def _check_audio(tagger, data: bytes, rate: int, min_samples: int, logmel) -> None:
    """Checks the audio graph against PyTorch on two lengths (noise clips).

    Raises:
        ExportError: outputs of another shape, or more than ``TOLERANCE`` apart.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for seconds in (10.0, 3.7):
        n = max(min_samples, int(seconds * rate))
        wave = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
        feed = {"logmel": logmel(wave)} if logmel is not None else {"waveform": wave}
        clipwise, framewise = session.run(None, feed)
        with torch.no_grad():
            want_c, want_f, _, _ = tagger._audio(torch.from_numpy(wave))
        for got, want in ((clipwise, want_c), (framewise, want_f)):
            want = want.numpy()
            if got.shape != want.shape or not np.allclose(np.nan_to_num(got), np.nan_to_num(want), atol=TOLERANCE):
                raise ExportError(f"the ONNX audio graph differs from PyTorch on a {seconds} s clip")


def export_onnx(tagger, folder: str | Path, notes: list[str] | tuple = ()) -> Path:
    """Write the ONNX graphs and ``runtime.json`` of ``tagger`` (an eval-mode, CPU, unfolded
    :class:`~avtag.models.tagger.AudioVisualTagger`) into ``folder``, atomically (a folder that
    exists is complete).

    Args:
        tagger: the composition to export (its video network must be the PyTorch one).
        folder: the target folder (replaced when it exists).
        notes: the tagger's build notes, stored with it.

    Returns:
        ``folder``.

    Raises:
        ExportError: a graph that does not export, or an audio graph whose outputs differ from PyTorch.
    """
    folder = Path(folder)
    tagger = tagger.eval()
    files, meta = {}, {"format": RUNTIME_FORMAT, "classes": list(tagger.classes), "objects": list(tagger.objects),
                       "notes": list(notes), "has_audio": tagger.audio is not None,
                       "has_frames": tagger.video is not None, "has_video": tagger.object_map is not None,
                       "unknown_to_audio": list(getattr(tagger, "unknown_to_audio", ()))}
    c, logmel = len(tagger.classes), None
    try:
        if tagger.audio is not None:
            rate = int(tagger.audio.sample_rate)
            min_samples = shortest_waveform(tagger)
            logmel = numpy_logmel(tagger)
            example = np.zeros((1, max(min_samples, rate)), np.float32)
            name = "waveform" if logmel is None else "logmel"
            example = torch.from_numpy(example if logmel is None else logmel(example))
            data = _export(_AudioGraph(tagger), (example,), [name], ["clipwise", "framewise"],
                           {name: {0: "b", 1: "n"}, "clipwise": {0: "b"}, "framewise": {0: "b", 1: "t"}})
            _check_audio(tagger, data, rate, min_samples, logmel)
            files["audio.onnx"] = data
            meta.update(sample_rate=rate, min_samples=min_samples, frame_hop=float(tagger.audio.frame_hop),
                        audio_input=name, speech_detector=tagger.audio.model_config.speech_detector,
                        class_prior=tagger.audio.model_config.class_prior, class_priors=tagger_priors(tagger))
        if tagger.video is not None:
            images = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
            files["frames.onnx"] = _export(_FramesGraph(tagger.video), (images,), ["images"], ["logits"],
                                           {"images": {0: "n"}, "logits": {0: "n"}})
            meta.update(batch_size=tagger.video.batch_size, crop_fraction=tagger.video.crop_fraction)
        if tagger.object_map is not None:
            files["video.onnx"] = _export(_VideoGraph(tagger), (torch.zeros(1, 2, len(tagger.objects)),),
                                          ["frame_logits"], ["video", "objects"], {"frame_logits": {1: "n"}})
        files["fusion.onnx"] = _export(_FusionGraph(tagger), (torch.zeros(1, c), torch.zeros(1, c)),
                                       ["audio", "video"], ["fused"], {})
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the tracer and exporter raise many kinds
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        meta["sizes"] = {name: len(data) for name, data in files.items()}  # checked on load
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if tagger.audio is not None and logmel is not None:
            logmel.save(tmp / "logmel.npz")
        (tmp / "runtime.json").write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is readable like its other files
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
