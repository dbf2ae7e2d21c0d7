"""Fixed-length clips from cached waveforms (training batches, evaluation batches)."""
from __future__ import annotations

import numpy as np


def fit_length(wave: np.ndarray, samples: int, random_crop: bool = False) -> np.ndarray:
    """Zero-pad (at the end) or crop ``wave`` ``(n,)`` to ``(samples,)``.

    A random crop offset is drawn from NumPy's global generator (seeded per
    DataLoader worker by Lightning's ``seed_everything(workers=True)``).
    """
    n = wave.shape[0]
    if n == samples:
        return np.ascontiguousarray(wave)
    if n < samples:
        out = np.zeros(samples, dtype=np.float32)
        out[:n] = wave
        return out
    start = int(np.random.randint(0, n - samples + 1)) if random_crop else 0
    return np.ascontiguousarray(wave[start : start + samples])
