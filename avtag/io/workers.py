"""Decode worker processes of :class:`avtag.io.isolation.IsolatedDecoder`.

The child side (:func:`worker_main`) serves jobs from a pipe: it probes the file,
reports the span to decode (so the parent can scale the time limit), then sends
the :class:`~avtag.io.common.Clip` or one error line. The parent side
(:class:`WorkerProcess`) is the process handle with the job it is running.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avtag import AvtagError
from avtag.io.common import reason

#: seconds allowed for a worker to start and read the file's headers
PROBE_TIMEOUT_S = 60.0


class _ParentGone(Exception):
    pass


def _send(conn, message) -> None:
    try:
        conn.send(message)
    except (OSError, EOFError, ValueError):
        raise _ParentGone from None


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="avtag-parent-watch", daemon=True).start()


def _silence_fd2() -> None:
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")


def worker_main(conn, parent_pid: int, initializer: Callable[[], None] | None) -> None:
    """Entry point of a decode worker: serve jobs from ``conn`` until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    from avtag.io import media
    from avtag.io.quiet import quiet_decoders

    quiet_decoders()
    if initializer is not None:
        initializer()
    if not os.environ.get("AVTAG_DEBUG"):
        _silence_fd2()
    try:
        _send(conn, ("ready", os.getpid(), None))
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            kind, seq, path, args, kwargs = message
            try:
                if kind == "clip":
                    info = media.probe(path)
                    t0 = float(kwargs.get("start") or 0.0)
                    t1 = min(float(kwargs["end"]), info.duration) if kwargs.get("end") is not None else info.duration
                    _send(conn, ("probe", seq, max(t1 - t0, 0.0)))
                    _send(conn, ("ok", seq, media.load_clip(path, **kwargs)))
                elif kind == "probe":
                    _send(conn, ("ok", seq, media.probe(path)))
                else:
                    for clip in media.iter_windows(path, *args, **kwargs):
                        _send(conn, ("window", seq, clip))
                    _send(conn, ("end", seq, None))
            except _ParentGone:
                raise
            except AvtagError as exc:
                _send(conn, ("error", seq, str(exc).replace("\n", " ")))
            except Exception as exc:  # a Python-level decoder failure: one line, the worker lives on
                _send(conn, ("error", seq, f"{path}: {type(exc).__name__}: {reason(exc)}"))
    except _ParentGone:
        return


# ----------------------------------------------------------------------------- parent side
@contextlib.contextmanager
def _main_module_hidden():
    """Start a spawned worker without it re-running the caller's ``__main__`` script.

    ``spawn`` children import the parent's main script (as ``__mp_main__``) before running the
    target, so a user script calling the Python API without an ``if __name__ == "__main__"`` guard
    would run again in every decode worker (and fail). The worker needs only :func:`worker_main`,
    importable by its module name, so the main module's ``__file__`` / ``__spec__`` are hidden from
    :mod:`multiprocessing` while the process starts, and restored at once.
    """
    import sys

    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for key in saved:
            if key == "__spec__":
                main.__spec__ = None
            else:
                del main.__dict__[key]
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


@dataclass(frozen=True)
class DecodeJob:
    """One file to decode: ``path``, :func:`~avtag.io.media.load_clip` keyword arguments, and a
    ``key`` of the caller's (e.g. a record) that travels back with the result untouched."""

    path: str | Path
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    key: Any = None


def job_call(item) -> tuple[Any, dict]:
    """``(path, load_clip kwargs)`` of a job given as a :class:`DecodeJob`, a path or ``(path, kwargs)``."""
    if isinstance(item, DecodeJob):
        return item.path, dict(item.kwargs)
    if isinstance(item, (str, os.PathLike)):
        return item, {}
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
        return item[0], dict(item[1])
    raise TypeError(f"a decode job is a path, a DecodeJob or (path, kwargs), not {type(item).__name__}")


class WorkerProcess:
    """One decode process and the job it is running."""

    def __init__(self, ctx, initializer: Callable[[], None] | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=worker_main, args=(child, os.getpid(), initializer), name="avtag-decode",
                                daemon=True)
        self.started = time.monotonic()
        with _main_module_hidden():
            self.proc.start()
        child.close()
        self.ready_after: float | None = None
        self.seq: int | None = None
        self.path: str = ""
        self.begun = 0.0
        self.deadline = 0.0
        self.limit = PROBE_TIMEOUT_S
        self.job: tuple = ()

    def assign(self, seq: int, kind: str, path, args: tuple, kwargs: dict, startup_s: float = PROBE_TIMEOUT_S) -> None:
        """Send job ``seq`` (``clip``, ``probe`` or ``windows``); until the file is probed it has ``startup_s``
        seconds (twice that while the process is still starting)."""
        self.seq, self.path, self.begun = seq, str(path), time.monotonic()
        self.job = (kind, path, args, kwargs, startup_s)
        self.limit = startup_s * (1 if self.ready_after is not None else 2)
        self.deadline = self.begun + self.limit
        self.conn.send((kind, seq, str(path), args, kwargs))

    def was_ready(self) -> bool:
        """Whether the process ever reported ready (reads a pending ready message)."""
        while self.ready_after is None and self.conn.poll():
            if self.recv() is None:
                break
        return self.ready_after is not None

    def recv(self):
        """The next message, or None when the worker is gone."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            return None
        if message[0] == "ready":
            self.ready_after = time.monotonic() - self.started
        return message

    def problem(self) -> str:
        """Why the process ended, as the one-line reason charged to its file."""
        self.proc.join(timeout=5.0)
        code = self.proc.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"decoder crashed (signal {-code}, {name})"
        return f"decoder process exited unexpectedly (exit code {code})"

    def stop(self, kill: bool = False) -> None:
        """Ask an idle worker to exit (killed after 1 s, or at once with ``kill``); close the pipe."""
        if not kill and self.seq is None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=1.0)
            except (OSError, ValueError):
                pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5.0)
        self.conn.close()


