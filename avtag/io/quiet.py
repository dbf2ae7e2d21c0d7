"""Keep decoder log lines off the terminal.

PyAV and decord each ship their own FFmpeg build, so each has its own ``av_log``
level (:func:`quiet_decoders`); decord also logs through its C++ logger straight to
file descriptor 2, which only :func:`silenced_stderr` stops.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

_QUIET = threading.Lock()
_quiet_done: set[str] = set()
_silence_depth = 0
_silence_lock = threading.Lock()
_saved_fd: int | None = None


def quiet_decoders(*libraries: str) -> None:
    """Turn off FFmpeg's ``av_log`` output of PyAV (``"av"``) and decord (``"decord"``); idempotent.

    Each library ships its own FFmpeg build, so each has its own log level.
    """
    with _QUIET:
        for lib in libraries or ("av", "decord"):
            if lib in _quiet_done:
                continue
            try:
                if lib == "av":
                    import av.logging

                    av.logging.set_level(av.logging.PANIC)
                elif lib == "decord":
                    import decord.logging

                    decord.logging.set_level(decord.logging.QUIET)
            except ImportError:
                pass
            _quiet_done.add(lib)


@contextlib.contextmanager
def silenced_stderr():
    """Point file descriptor 2 at ``/dev/null`` for the duration (re-entrant).

    decord's C++ logger (``[12:00:00] src/audio/audio_reader.cc:189: ERROR ...``)
    writes to fd 2 directly and has no switch. Anything Python writes to stderr
    from another thread meanwhile is lost too, so only decoder calls run inside.
    In a decode worker of :mod:`avtag.io.isolation` fd 2 is silenced for good.
    Set ``AVTAG_DEBUG=1`` to keep decoder messages.
    """
    global _silence_depth, _saved_fd
    if os.environ.get("AVTAG_DEBUG"):
        yield
        return
    with _silence_lock:
        if _silence_depth == 0:
            try:
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass
            devnull = os.open(os.devnull, os.O_WRONLY)
            _saved_fd = os.dup(2)
            os.dup2(devnull, 2)
            os.close(devnull)
        _silence_depth += 1
    try:
        yield
    finally:
        with _silence_lock:
            _silence_depth -= 1
            if _silence_depth == 0 and _saved_fd is not None:
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _saved_fd = None
