"""The speech detector of the audio branch: Silero VAD's frame-wise speech probability joined to Speech.

An audio model whose config says ``model.speech_detector: silero_vad`` (the packaged default model
does) has its Speech output, and Speech's AudioSet ancestors among its classes ("Human voice",
"Human sounds"), raised to the speech probability of Silero VAD (Silero Team 2024, MIT licence;
the ``silero-vad`` package ships the weights). Silero VAD is trained on thousands of hours of real
speech in real noise; the corpus's speech is close-miked read prompts and game voices, and the
default model hears real room speech as babble (issue 10: the real-clip table of the README)::

    waveform (B, samples) 16 kHz --Silero VAD--> speech probability (B, chunks), one per 32 ms chunk
      clip-wise:  Speech = max(Speech, max over 250 ms windows of the window's smallest probability)
      frame-wise: Speech[t] = max(Speech[t], probability of the chunk holding frame t's centre)

250 ms is Silero's ``min_speech_duration_ms`` default: the clip-wise score is the probability that
at least 250 ms of continuous speech was heard, so a 32 ms click does not count as speech.

The network is the package's ``silero_vad_16k_sequence.onnx`` (a whole window of chunks per call:
~13 ms for a 10 s clip on one core), run by ONNX Runtime. Its file is found through the package's
metadata and the package is never imported: importing ``silero_vad`` imports torch and sets
``torch.set_num_threads(1)`` for the whole process. :meth:`SileroSpeechDetector.__call__` feeds
the chunks as the package's ``sequence_vad.frame_blocks`` does (each 512-sample chunk with the
last 64 samples before it); a test checks it against the package. This module imports no torch,
so both engines (:mod:`avtag.inference.engines`) and ``avtag evaluate`` use it as it is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from avtag import AvtagError
from avtag.config.schema import CHOICES

#: ``model.speech_detector`` values (``none``: no detector)
DETECTORS = CHOICES["model.speech_detector"]
SPEECH = "Speech"
#: Speech's ancestors in the AudioSet ontology (Speech < Human voice < Human sounds)
SPEECH_ANCESTORS = ("Human voice", "Human sounds")


class SpeechDetectorError(AvtagError):
    """A speech detector that cannot run here (package missing, unsupported sample rate)."""


class SileroSpeechDetector:
    """Silero VAD on ONNX Runtime: ``(B, samples)`` float32 at 16 kHz -> ``(B, chunks)`` speech probability.

    Attributes:
        sample_rate: 16000 Hz (the sequence model's only rate).
        hop: seconds per chunk (512 samples: 0.032 s); chunk ``k`` covers ``[k * hop, (k + 1) * hop)``.
        min_speech_s: continuous speech the clip-wise score asks for (0.25 s, Silero's default).

    Raises:
        SpeechDetectorError: the ``silero-vad`` package or its ONNX file is not installed.
    """

    sample_rate = 16000
    chunk = 512
    context = 64
    hop = chunk / sample_rate
    min_speech_s = 0.25
    max_chunks = 512  # chunks per ONNX call (16.4 s), as the package's default

    def __init__(self, threads: int = 1) -> None:
        from importlib import metadata

        try:
            path = metadata.distribution("silero-vad").locate_file("silero_vad/data/silero_vad_16k_sequence.onnx")
        except metadata.PackageNotFoundError:
            raise SpeechDetectorError("model.speech_detector silero_vad needs the silero-vad package "
                                      "(pip install silero-vad)") from None
        if not path.is_file():
            raise SpeechDetectorError(f"{path}: the silero-vad package lacks its sequence model (silero-vad >= 6.2)")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def probabilities(self, waveform: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms chunk of one waveform ``(samples,)`` at 16 kHz: ``(chunks,)``
        (the last chunk zero-padded; 0 chunks for an empty waveform)."""
        x = np.asarray(waveform, dtype=np.float32).reshape(-1)
        n = -(-x.size // self.chunk)
        frames = np.zeros((n, self.chunk), np.float32)
        frames.reshape(-1)[: x.size] = x
        contexts = np.zeros((n, self.context), np.float32)
        contexts[1:] = frames[:-1, -self.context:]
        blocks = np.concatenate([contexts, frames], axis=1)
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        out = []
        for start in range(0, n, self.max_chunks):
            p, h, c = self.session.run(["speech_probs", "hn", "cn"],
                                       {"input": blocks[start:start + self.max_chunks], "h": h, "c": c})
            out.append(p.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """``(B, samples)`` -> ``(B, chunks)``, each row on its own (the LSTM state starts at zero per row)."""
        return np.stack([self.probabilities(w) for w in np.atleast_2d(waveform)])

    def clip_score(self, probs: np.ndarray) -> np.ndarray:
        """Clip-wise speech probability ``(B,)`` from ``(B, chunks)``: the largest, over windows of
        ``min_speech_s``, of the window's smallest chunk probability."""
        probs = np.atleast_2d(probs)
        if probs.shape[1] == 0:
            return np.zeros(len(probs), np.float32)
        n = min(probs.shape[1], max(1, int(round(self.min_speech_s / self.hop))))
        return np.lib.stride_tricks.sliding_window_view(probs, n, axis=1).min(axis=2).max(axis=1)


class SpeechExpert:
    """Joins a speech detector to the Speech columns of an audio branch's output (see the module docstring).

    Args:
        classes: the output classes, in order; columns of ``unknown`` classes are left alone.
        sample_rate: Hz of the waveforms given to :meth:`__call__`.
        unknown: classes the audio model does not score (their columns are NaN).

    Raises:
        SpeechDetectorError: a sample rate the detector cannot take, or no silero-vad package.
    """

    def __init__(self, classes: Sequence[str], sample_rate: int, unknown: Sequence[str] = ()) -> None:
        if int(sample_rate) != SileroSpeechDetector.sample_rate:
            raise SpeechDetectorError(f"model.speech_detector silero_vad needs 16000 Hz audio; "
                                      f"this model takes {sample_rate} Hz")
        targets = (SPEECH, *SPEECH_ANCESTORS)
        self.columns = [i for i, c in enumerate(classes) if c in targets and c not in set(unknown)]
        self.detector = SileroSpeechDetector()

    def __call__(self, waveform: np.ndarray, clipwise: np.ndarray, framewise: np.ndarray | None,
                 frame_hop: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores with the detector joined: new arrays, the inputs are not changed.

        Args:
            waveform: ``(B, samples)`` float32 at 16 kHz (the audio branch's input).
            clipwise: ``(B, C)`` clip-wise probabilities; framewise: ``(B, T, C)`` or None.
            frame_hop: seconds between frame-wise outputs.

        Returns:
            ``(clipwise (B, C), framewise (B, T, C) | None)``.
        """
        clipwise = np.array(clipwise, copy=True)
        framewise = None if framewise is None else np.array(framewise, copy=True)
        if not self.columns:
            return clipwise, framewise
        probs = self.detector(waveform)
        score = self.detector.clip_score(probs).astype(clipwise.dtype)
        for j in self.columns:
            clipwise[:, j] = np.fmax(clipwise[:, j], score)
        if framewise is not None and frame_hop and probs.shape[1]:
            t = framewise.shape[1]
            chunk = np.minimum(((np.arange(t) + 0.5) * frame_hop / self.detector.hop).astype(int), probs.shape[1] - 1)
            frame_probs = probs[:, chunk].astype(framewise.dtype)
            for j in self.columns:
                framewise[:, :, j] = np.fmax(framewise[:, :, j], frame_probs)
        return clipwise, framewise


def speech_expert(name: str, classes: Sequence[str], sample_rate: int,
                  unknown: Sequence[str] = ()) -> SpeechExpert | None:
    """The :class:`SpeechExpert` a ``model.speech_detector`` value names, or None (``none``, or no
    Speech class to join it to).

    Raises:
        SpeechDetectorError: an unknown name; see :class:`SpeechExpert`.
    """
    if name in (None, "none"):
        return None
    if name not in DETECTORS:
        raise SpeechDetectorError(f"unknown speech detector {name!r}; known: {', '.join(DETECTORS)}")
    if SPEECH not in classes or SPEECH in set(unknown):
        return None
    return SpeechExpert(classes, sample_rate, unknown)
