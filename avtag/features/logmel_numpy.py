"""The log-mel front end on NumPy/SciPy, for the ONNX Runtime engine (no torch).

ONNX has an STFT operator, but ONNX Runtime's CPU kernel for it is about 4x slower than an FFT
library (measured: 0.20 s against 0.05 s for two minutes of 16 kHz audio on 2 cores), and the
front end then cost two thirds of a long file's tagging time. So an exported log-mel model
takes the log-mel as input, and this module computes it with ``scipy.fft``, from the very
window and mel filterbank of the PyTorch front end (:class:`avtag.features.logmel.LogMel`,
torchaudio's ``MelSpectrogram``), stored with the export: Hann-windowed frames centred by
reflect padding (``torch.stft(center=True, pad_mode="reflect")``), power spectrum, mel
filterbank, ``log(mel + 1e-6)``. :func:`avtag.models.export.export_onnx` checks the result
against PyTorch (within 1e-3 on the model's outputs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: samples from which the FFT runs on every core (``scipy.fft``; 2.6x faster on 2 cores); below it
#: NumPy's one-thread FFT, which saves short clips the 0.3 s of importing ``scipy.fft``
LARGE = 1 << 20


class NumpyLogMel:
    """Waveform ``(batch, samples)`` float32 -> log-mel ``(batch, frames, n_mels)`` float32, as
    :class:`~avtag.features.logmel.LogMel` (``frames = samples // hop_length + 1``).

    Args:
        window: ``(n_fft,)`` analysis window (zero-padded to ``n_fft`` when shorter, as torch does).
        filterbank: ``(n_fft // 2 + 1, n_mels)`` mel filterbank.
        hop_length: samples between frames.
    """

    def __init__(self, window: np.ndarray, filterbank: np.ndarray, hop_length: int) -> None:
        self.filterbank = np.ascontiguousarray(filterbank, dtype=np.float32)
        self.n_fft = (self.filterbank.shape[0] - 1) * 2
        window = np.asarray(window, dtype=np.float32)
        left = (self.n_fft - len(window)) // 2
        self.window = np.pad(window, (left, self.n_fft - len(window) - left))
        self.hop_length = int(hop_length)

    def save(self, path: str | Path) -> None:
        """Write the window, filterbank and hop to ``path`` (``.npz``)."""
        np.savez(path, window=self.window, filterbank=self.filterbank, hop_length=self.hop_length)

    @classmethod
    def load(cls, path: str | Path) -> NumpyLogMel:
        with np.load(path) as data:
            return cls(data["window"], data["filterbank"], int(data["hop_length"]))

    @staticmethod
    def prepare_large() -> None:
        """Import ``scipy.fft`` in a background thread (0.3 s), e.g. while the first windows of a long file
        are decoded."""
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=("scipy.fft",), daemon=True).start()

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
        half = self.n_fft // 2
        padded = np.pad(x, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)[:, :: self.hop_length]
        if x.size >= LARGE:
            import scipy.fft

            spectrum = scipy.fft.rfft(frames * self.window, axis=-1, workers=-1)
        else:
            spectrum = np.fft.rfft(frames * self.window, axis=-1)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)  # (batch, frames, n_fft // 2 + 1)
        return np.log(power @ self.filterbank + 1e-6)
