"""Decoder faults for tests: a real native crash and a hang, installed in decode workers.

* ``legacy_downmix``: puts back avtag 0.1's PyAV downmix (resample to planar
  ``fltp``, then ``AudioFrame.to_ndarray()``), which dies with SIGSEGV inside PyAV 18
  on audio with 8 or more channels (issue 9). A genuine native crash on a genuine
  file: nothing is faked but the choice of code path.
* ``hang``: a decoder that never returns on files whose name contains ``hang``.
* ``fast_timeouts``: time limits of seconds, so a test sees the hang detected.
* ``killed_at``: a function that raises KeyboardInterrupt on its n-th call (a killed long job).

In process: ``IsolatedDecoder(initializer=faults.legacy_downmix)``. For a CLI
subprocess, :func:`sitecustomize_env` writes a ``sitecustomize.py`` that installs
the faults named in ``AVTAG_TEST_FAULTS`` in every Python process of the run (the
parent and its spawned decode workers).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]  # tests/: the folder that holds the helpers package


def legacy_downmix() -> None:
    """Decode audio the avtag 0.1 way: planar ``fltp`` frames and ``to_ndarray()`` (crashes on >= 8 channels)."""
    import av
    import numpy as np

    from avtag.io import backends

    def stream_audio(self, path, sample_rate, start=0.0):
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    yield np.ascontiguousarray(out.to_ndarray().mean(axis=0), dtype=np.float32)

    backends.PyAVBackend.stream_audio = stream_audio


def hang() -> None:
    """Decoders never return on files whose name contains ``$AVTAG_TEST_HANG`` (default ``hang``)."""
    from avtag.io import backends

    def stuck(original):
        def method(self, first, *args, **kwargs):
            path = getattr(first, "path", first)
            if os.environ.get("AVTAG_TEST_HANG", "hang") in Path(str(path)).name:
                time.sleep(3600)
            return original(self, first, *args, **kwargs)

        return method

    from avtag.io.soundfile_backend import SoundFileBackend

    for cls in (backends.PyAVBackend, backends.DecordBackend, SoundFileBackend):
        cls.audio = stuck(cls.audio)
    for cls in (backends.PyAVBackend, SoundFileBackend):
        cls.stream_audio = stuck(cls.stream_audio)


def crash_and_hang() -> None:
    """Both faults: a worker initializer for :class:`avtag.io.IsolatedDecoder`."""
    legacy_downmix()
    hang()


def fast_timeouts() -> None:
    """Time limits of a few seconds per file (``$AVTAG_TEST_TIMEOUT`` s + 0.2 s per media second)."""
    from avtag.io import isolation

    isolation.TIMEOUT_BASE_S = float(os.environ.get("AVTAG_TEST_TIMEOUT", "3"))
    isolation.TIMEOUT_PER_MEDIA_S = 0.2


def install_from_env() -> None:
    """Install the faults listed (comma-separated) in ``AVTAG_TEST_FAULTS``."""
    for name in filter(None, os.environ.get("AVTAG_TEST_FAULTS", "").split(",")):
        globals()[name]()


def sitecustomize_env(folder: Path, faults: str, env: dict | None = None) -> dict:
    """An environment whose Python processes install ``faults`` at start-up (via ``folder/sitecustomize.py``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('AVTAG_TEST_FAULTS'):\n"
        f"    sys.path.insert(0, {str(TESTS)!r})\n"
        "    from helpers import faults\n"
        "    faults.install_from_env()\n"
    )
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH", "")]))
    env["AVTAG_TEST_FAULTS"] = faults
    return env


def killed_at(call: int, fn):
    """``fn`` wrapped to raise KeyboardInterrupt (a Ctrl-C, a kill) on its ``call``-th call; ``.calls`` counts."""

    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        if wrapper.calls == call:
            raise KeyboardInterrupt
        return fn(*args, **kwargs)

    wrapper.calls = 0
    return wrapper
