"""Decode in isolation: a decoder that crashes or hangs costs one file, never the run.

:class:`IsolatedDecoder` owns N spawned worker processes that run
:func:`avtag.io.media.load_clip` (or :func:`~avtag.io.media.iter_windows`) and
send the :class:`~avtag.io.common.Clip` back through a pipe. A worker that dies
(a native crash in FFmpeg/decord, an out-of-memory kill) or overruns its time
limit turns into one :class:`~avtag.io.common.MediaError` (or one error string in
:meth:`IsolatedDecoder.imap`) naming the file and the problem, and is replaced,
so the next file works.

Why plain ``multiprocessing`` processes with explicit liveness checks and not
``concurrent.futures.ProcessPoolExecutor``: the executor marks the whole pool
broken when one worker dies, failing every pending future without saying which
task killed it, and it cannot stop one task that hangs (only the whole pool).
Here each worker runs one job at a time, so a dead worker's exit status and a
passed deadline are charged to exactly one file.

Details:

* ``spawn`` start method: decord readers are not fork-safe, and a fresh
  interpreter that imports only numpy, PyAV and decord (never torch) starts in
  about 0.3 s.
* Time limit per file: :data:`TIMEOUT_BASE_S` plus :data:`TIMEOUT_PER_MEDIA_S`
  per second of media, counted from the moment the worker has probed the file
  (probing itself gets :data:`PROBE_TIMEOUT_S`).
* Workers ignore SIGINT (the parent handles Ctrl-C and stops them), send their
  fd 2 to ``/dev/null`` (decoder log lines never reach the terminal; their errors
  come back as messages) unless ``AVTAG_DEBUG`` is set, are daemon processes, ask
  the kernel for SIGKILL when the parent dies (``PR_SET_PDEATHSIG``) and also
  check for a changed parent every second, so a killed run leaves no orphan.
* Not thread-safe: use one decoder from one thread (the parent-death signal is
  tied to the thread that started a worker).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing import connection, get_context
from pathlib import Path
from typing import Any

from avtag import AvtagError
from avtag.io.common import Clip, MediaError, MediaInfo, media_error
from avtag.io.workers import PROBE_TIMEOUT_S, DecodeJob, WorkerProcess, job_call

#: seconds allowed per file whatever its length (seeking, opening, slow disks)
TIMEOUT_BASE_S = 60.0
#: extra seconds allowed per second of media decoded
TIMEOUT_PER_MEDIA_S = 3.0


class DecoderStartError(AvtagError):
    """A decode worker process that exits before it is ready (a broken installation, not a bad file)."""


class IsolatedDecoder:
    """Decode media files in worker processes, so a crash or hang costs one file.

    Args:
        workers: decode processes (at least 1), started on entry (or first use).
        load_kwargs: default :func:`~avtag.io.media.load_clip` keyword arguments
            (``sample_rate``, ``video``, ``fps``, ...), overridden per job.
        timeout_base_s, timeout_per_media_s: a file may take ``base + per_media *
            seconds of media`` once probed; then it fails as timed out (default
            :data:`TIMEOUT_BASE_S`, :data:`TIMEOUT_PER_MEDIA_S`).
        startup_timeout_s: seconds allowed for reading a file's headers, and again
            for a worker's start-up when the job waits for it (default ``PROBE_TIMEOUT_S``).
        initializer: an importable function each worker calls once at start-up
            (before its stderr is silenced), e.g. to set library options or, in
            tests, to inject decoder faults.

    Use as a context manager (``with IsolatedDecoder(2) as dec: ...``); :meth:`close`
    stops the workers. Errors are :class:`MediaError` whose message starts with the
    file name, e.g. ``"a.wav: decoder crashed (signal 11, SIGSEGV)"`` or
    ``"a.wav: decoding timed out after 63 s"``.

    Raises:
        DecoderStartError: workers die before they are ready (broken installation).
    """

    def __init__(self, workers: int = 1, *, load_kwargs: Mapping[str, Any] | None = None,
                 timeout_base_s: float | None = None, timeout_per_media_s: float | None = None,
                 startup_timeout_s: float | None = None, initializer: Callable[[], None] | None = None) -> None:
        self.num_workers = max(1, int(workers))
        self.load_kwargs = dict(load_kwargs or {})
        self.timeout_base_s = float(TIMEOUT_BASE_S if timeout_base_s is None else timeout_base_s)
        self.timeout_per_media_s = float(TIMEOUT_PER_MEDIA_S if timeout_per_media_s is None else timeout_per_media_s)
        self.startup_timeout_s = float(PROBE_TIMEOUT_S if startup_timeout_s is None else startup_timeout_s)
        self.initializer = initializer
        self._ctx = get_context("spawn")
        self._pool: list[WorkerProcess] = []
        self._streamer: WorkerProcess | None = None
        self._seq = 0
        self._results: dict[int, tuple[Clip | None, str | None]] = {}
        self._abandoned: set[int] = set()
        self._failed_starts = 0
        #: counters: ``crashed``, ``timed_out``, ``restarted`` workers
        self.stats = {"crashed": 0, "timed_out": 0, "restarted": 0}

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> IsolatedDecoder:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the worker processes (they import their libraries in parallel with the caller)."""
        while len(self._pool) < self.num_workers:
            self._pool.append(WorkerProcess(self._ctx, self.initializer))

    def close(self) -> None:
        """Stop every worker; abandoned work is discarded. The decoder can be started again."""
        workers = self._pool + ([self._streamer] if self._streamer else [])
        self._pool, self._streamer = [], None
        for w in workers:
            w.stop(kill=w.seq is not None)
        self._results.clear()
        self._abandoned.clear()

    def worker_pids(self) -> list[int]:
        """Process ids of the current pool workers."""
        return [w.proc.pid for w in self._pool]

    def startup_seconds(self) -> list[float]:
        """Seconds each current pool worker took from start to ready (only those seen ready)."""
        return [w.ready_after for w in self._pool if w.ready_after is not None]

    # -------------------------------------------------------------- one file
    def load_clip(self, path: str | Path, **kwargs) -> Clip:
        """:func:`~avtag.io.media.load_clip` in a worker process.

        Returns:
            The decoded :class:`Clip` (same arrays and warnings as in process).

        Raises:
            MediaError: any failure of the file, including a crashed or hung decoder.
        """
        return self._one(DecodeJob(path, kwargs), "clip")

    def probe(self, path: str | Path) -> MediaInfo:
        """:func:`~avtag.io.media.probe` (container headers) in a worker process.

        Raises:
            MediaError: missing, unreadable or stream-less file, or a crashed or hung demuxer.
        """
        return self._one(path, "probe")

    def _one(self, job, kind: str):
        """The result of one job of ``kind`` (``clip`` or ``probe``); its error raised as :class:`MediaError`."""
        for _, result, error in self.imap([job], max_pending=1, _kind=kind):
            if error is not None:
                raise MediaError(error)
            return result
        raise MediaError(f"{getattr(job, 'path', job)}: no result from the decode worker")  # not reached

    # -------------------------------------------------------------- many files
    def imap(self, jobs: Iterable[Any], *, ordered: bool = True, max_pending: int | None = None,
             _kind: str = "clip") -> Iterator[tuple[Any, Clip | None, str | None]]:
        """Decode many files in the workers, with bounded memory.

        Args:
            jobs: paths, :class:`DecodeJob` or ``(path, kwargs)`` pairs (read lazily).
            ordered: yield in input order (True) or as soon as each is done.
            max_pending: at most this many jobs handed out but not yet yielded
                (decoding, or decoded and waiting): bounds memory to that many clips.
                Default ``2 * workers``.

        Yields:
            ``(job, clip, None)`` or ``(job, None, error)``, ``job`` being the input
            item as given and ``error`` one line starting with the file name.
            Workers keep decoding while the caller works on a yielded clip.
        """
        self.start()
        limit = max(1, int(max_pending or 2 * self.num_workers))
        source, exhausted = iter(jobs), False
        mine: dict[int, Any] = {}
        order: deque[int] = deque()
        try:
            while True:
                self._collect(0.0)
                while not exhausted and len(mine) < limit:
                    worker = self._idle_worker()
                    if worker is None:
                        break
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    path, kwargs = job_call(item)
                    kwargs = {**self.load_kwargs, **kwargs} if _kind == "clip" else {}
                    seq = self._dispatch(worker, _kind, path, (), kwargs)
                    mine[seq] = item
                    order.append(seq)
                ready = ([order[0]] if order and order[0] in self._results else []) if ordered else \
                    [s for s in order if s in self._results][:1]
                if ready:
                    seq = ready[0]
                    order.remove(seq)
                    clip, error = self._results.pop(seq)
                    yield mine.pop(seq), clip, error
                    continue
                if exhausted and not mine:
                    return
                self._collect(None)
        finally:  # stopped early: results still to come are dropped when they arrive
            for seq in mine:
                if self._results.pop(seq, None) is None:
                    self._abandoned.add(seq)

    # -------------------------------------------------------------- windows of a long file
    def iter_windows(self, path: str | Path, window_s: float, hop_s: float | None = None, **kwargs) -> Iterator[Clip]:
        """:func:`~avtag.io.media.iter_windows` in a dedicated worker process.

        The worker decodes at most one window ahead of the caller (the pipe is the
        bounded queue), so memory stays at about two windows. Each window may take
        ``base + per_media * window_s`` seconds. Stopping early stops the worker.

        Yields:
            One :class:`Clip` per window.

        Raises:
            MediaError: any failure of the file, including a crashed or hung decoder
                (raised where the stream stops; windows already yielded stay valid).
        """
        if self._streamer is None or not self._streamer.proc.is_alive():
            idle = self._idle_worker()
            if idle is not None:  # an idle started worker streams (no start-up to wait for); it returns after
                self._pool.remove(idle)
            self._streamer = idle or WorkerProcess(self._ctx, self.initializer)
        worker = self._streamer
        kwargs = {k: v for k, v in {**self.load_kwargs, **kwargs}.items() if k not in ("start", "end")}
        worker.assign(self._next_seq(), "windows", path, (window_s, hop_s), kwargs, self.startup_timeout_s)
        count, finished = 0, False
        try:
            while True:
                limit = self.timeout_base_s + self.timeout_per_media_s * float(window_s)
                if not count:
                    limit += self.startup_timeout_s * (1 if worker.ready_after is not None else 2)
                message, problem = self._wait_one(worker, limit)
                if message is None:
                    raise media_error(path, f"{problem} at window {count + 1}")
                kind, _, payload = message
                if kind == "window":
                    count += 1
                    yield payload
                elif kind == "end":
                    finished = True
                    worker.seq = None
                    if len(self._pool) < self.num_workers:  # it came from the pool: back to decoding files
                        self._pool.append(worker)
                        self._streamer = None
                    return
                elif kind == "error":
                    finished = True
                    worker.seq = None
                    raise MediaError(payload)
        finally:
            if not finished:  # stopped early, crashed or timed out: this worker is not reusable
                worker.stop(kill=True)
                self._streamer = None

    # -------------------------------------------------------------- internals
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _idle_worker(self) -> WorkerProcess | None:
        for i, w in enumerate(self._pool):
            if w.seq is None:
                if not w.proc.is_alive():  # died while idle (killed from outside): replace quietly
                    self._check_start(w)
                    w.stop(kill=True)
                    self._pool[i] = w = WorkerProcess(self._ctx, self.initializer)
                return w
        return None

    def _dispatch(self, worker: WorkerProcess, kind: str, path, args: tuple, kwargs: dict) -> int:
        seq = self._next_seq()
        try:
            worker.assign(seq, kind, path, args, kwargs, self.startup_timeout_s)
        except (OSError, ValueError):  # its pipe broke while idle: a fresh worker takes the job
            self._replace(worker)
            worker = self._pool[-1]
            worker.assign(seq, kind, path, args, kwargs, self.startup_timeout_s)
        return seq

    def _replace(self, worker: WorkerProcess) -> None:
        worker.stop(kill=True)
        if worker in self._pool:
            self._pool.remove(worker)
        self._pool.append(WorkerProcess(self._ctx, self.initializer))
        self.stats["restarted"] += 1

    def _check_start(self, worker: WorkerProcess) -> bool:
        """For a dead worker: True if it had started; two failed starts in a row raise DecoderStartError."""
        if worker.was_ready():
            self._failed_starts = 0
            return True
        self._failed_starts += 1
        if self._failed_starts >= 2:
            worker.proc.join(timeout=5.0)
            code = worker.proc.exitcode
            self.close()
            raise DecoderStartError(f"decode worker processes exit before they are ready (exit code {code}); "
                                    "see the messages above")
        return False

    def _finish(self, worker: WorkerProcess, clip: Clip | None, error: str | None) -> None:
        seq, worker.seq = worker.seq, None
        if seq in self._abandoned:
            self._abandoned.discard(seq)
        else:
            self._results[seq] = (clip, error)

    def _handle(self, worker: WorkerProcess, message) -> None:
        kind, _, payload = message
        if kind == "probe":
            worker.limit = self.timeout_base_s + self.timeout_per_media_s * float(payload)
            worker.begun = time.monotonic()
            worker.deadline = worker.begun + worker.limit
        elif kind == "ok":
            self._finish(worker, payload, None)
        elif kind == "error":
            self._finish(worker, None, payload)

    def _collect(self, timeout: float | None) -> None:
        """Read what busy pool workers sent; charge dead or overdue workers to their file.

        ``timeout`` None waits until something happens (or the nearest deadline).
        """
        busy = [w for w in self._pool if w.seq is not None]
        if not busy:
            return
        wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        if timeout is not None:
            wait = min(wait, timeout)
        connection.wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=wait)
        for w in busy:
            gone = False
            while w.seq is not None and w.conn.poll():
                message = w.recv()
                if message is None:
                    gone = True
                    break
                self._handle(w, message)
            if w.seq is None:
                continue
            if gone or not w.proc.is_alive():
                if not self._check_start(w):  # not the file's fault: a fresh worker takes the job
                    seq, job = w.seq, w.job
                    self._replace(w)
                    self._pool[-1].assign(seq, *job)
                    continue
                self.stats["crashed"] += 1
                self._finish(w, None, f"{w.path}: {w.problem()}")
                self._replace(w)
            elif time.monotonic() > w.deadline:
                self.stats["timed_out"] += 1
                self._finish(w, None, f"{w.path}: decoding timed out after {w.limit:.0f} s")
                self._replace(w)

    def _wait_one(self, worker: WorkerProcess, limit: float):
        """The next job message from ``worker`` within ``limit`` seconds: ``(message, None)`` or ``(None, problem)``."""
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stats["timed_out"] += 1
                return None, f"decoding timed out after {limit:.0f} s"
            connection.wait([worker.conn, worker.proc.sentinel], timeout=left)
            if worker.conn.poll():
                message = worker.recv()
                if message is None:
                    self.stats["crashed"] += 1
                    return None, worker.problem()
                if message[0] != "ready":
                    return message, None
            elif not worker.proc.is_alive():
                self.stats["crashed"] += 1
                return None, worker.problem()
