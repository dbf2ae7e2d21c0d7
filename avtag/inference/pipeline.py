"""The file-tagging pipeline behind :class:`avtag.inference.tagger.Tagger`: decode, infer, combine.

Files are decoded in worker processes (:class:`avtag.io.IsolatedDecoder`), so a decoder that
crashes or hangs costs that file only, and decoding overlaps with inference: while the tagger
runs the networks on one group of clips, the workers decode the next ones (at most
``2 * decode_workers + batch_clips`` clips are held at once, whatever the number of files).
The frames of ``tag.batch_clips`` decoded clips go through the video network in shared batches
(:mod:`avtag.inference.engines`: ONNX Runtime or PyTorch); the audio model runs clip by clip (clips of
different lengths are not zero-padded into one batch, which would change attention pooling).

A file longer than ``tag.long_file_s`` is read window by window (``tag.window_s``) in a
dedicated worker: audio scores are the maximum over the windows, the frames of all windows are
pooled together, and events are cut per window and joined where they touch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from avtag import AvtagError
from avtag.events import Event, framewise_to_events, merge_touching
from avtag.inference.engines import AudioTooShort
from avtag.inference.results import Tag, TagResult


class TagError(AvtagError):
    """A file or array that cannot be tagged (the message names the file and why)."""


def check_top(top_k, threshold) -> None:
    """Raise :class:`TagError` for a ``top_k`` below 0 or a ``threshold`` outside [0, 1] (None: the config's)."""
    if top_k is not None and not (isinstance(top_k, (int, np.integer)) and top_k >= 0):
        raise TagError(f"top_k must be a whole number >= 0 (0: all), got {top_k!r}")
    if threshold is not None and not (isinstance(threshold, (int, float, np.number)) and 0 <= threshold <= 1):
        raise TagError(f"threshold must lie in [0, 1], got {threshold!r}")


@dataclass
class ClipOutput:
    """What the networks said about one decoded clip (or one window of a long file)."""

    audio: np.ndarray | None = None  # (C,) audio clip-wise scores in the tagger's class order (NaN: unknown)
    logits: np.ndarray | None = None  # (n, objects) ImageNet logits of the clip's frames
    events: list[Event] = field(default_factory=list)
    too_short: str | None = None  # why the audio branch could not run on it
    warnings: list[str] = field(default_factory=list)
    had_audio: bool = False


def decode_workers(setting: int) -> int:
    """``tag.decode_workers``: 0 means one worker per CPU core, at most 4. Decoding is the bottleneck of
    batch tagging: on 2 cores, 2 workers tag the 13 real clips in 5.6-6.2 s against 7.8-7.9 s with 1
    (the networks run on ONNX Runtime in between)."""
    if setting > 0:
        return int(setting)
    from avtag.inference.engines import cpu_threads

    return min(4, cpu_threads())


def infer_clip(tagger, clip, logits: np.ndarray | None, segments: bool) -> ClipOutput:
    """Run the audio branch on ``clip`` (and take its precomputed frame ``logits``)."""
    return infer_clips(tagger, [clip], [logits], segments)[0]


def infer_clips(tagger, clips: list, logits: list, segments: bool) -> list[ClipOutput]:
    """:func:`infer_clip` for several clips; clips of one length (the windows of a long file) share
    the audio model's batches, which changes no result."""
    engine = tagger.engine
    outs = [ClipOutput(logits=lg, warnings=list(c.warnings), had_audio=c.waveform is not None)
            for c, lg in zip(clips, logits)]
    if not engine.has_audio:
        return outs
    by_length: dict[int, list[int]] = {}
    for i, clip in enumerate(clips):
        if clip.waveform is not None:
            by_length.setdefault(len(clip.waveform), []).append(i)
    for group in by_length.values():
        wave = np.stack([np.asarray(clips[i].waveform, dtype=np.float32) for i in group])
        try:
            clipwise, framewise = engine.audio(wave)
        except AudioTooShort as exc:
            for i in group:
                outs[i].too_short = str(exc)  # a short last window, or a clip too short for the network
            continue
        for row, i in enumerate(group):
            outs[i].audio = clipwise[row]
            if segments:
                outs[i].events = _events(tagger, framewise[row], clips[i])
    return outs


def _events(tagger, framewise: np.ndarray, clip) -> list[Event]:
    """Events of the classes the audio model knows (``framewise`` ``(T, C)``), in seconds from the file start;
    frames pass the fusion without video: only its true-path rule acts (a parent is on where a child is)."""
    cfg, engine = tagger.config.tag, tagger.engine
    unknown = set(engine.unknown_to_audio)
    known = [c for c, name in enumerate(engine.classes) if name not in unknown]
    if not known:
        return []
    framewise = np.stack([engine.fuse(frame, None) for frame in framewise]) if len(framewise) else framewise
    names = [engine.classes[c] for c in known]
    found = framewise_to_events(framewise[:, known], float(engine.frame_hop), names,
                                threshold=cfg.segment_threshold, median_filter_s=cfg.median_filter_s,
                                min_duration_s=cfg.min_duration_s, duration=clip.duration)
    return [Event(e.label, round(e.onset + clip.start, 3), round(e.offset + clip.start, 3)) for e in found]


def combine(tagger, parts: list[ClipOutput], file: str | None, duration: float, segments: bool,
            top_k: int | None, threshold: float | None) -> TagResult:
    """The :class:`TagResult` of one file (or array) from the outputs of its clip or windows.

    Raises:
        TagError: neither branch produced anything (the message names the file).
    """
    engine, cfg = tagger.engine, tagger.config.tag
    notes = list(tagger.notes)
    had_audio = any(p.had_audio for p in parts)
    had_video = any(p.logits is not None for p in parts)
    warnings = [w for p in parts for w in p.warnings]
    if engine.has_audio and "no audio track" in warnings and not had_audio:
        notes.append("audio branch off: no audio track")
    if engine.has_frames and "no video stream" in warnings and not had_video:
        notes.append("video branch off: no video stream")
    for w in dict.fromkeys(warnings):
        if w not in ("no audio track", "no video stream"):
            notes.append(f"media: {w}")
    audio_parts = [p.audio for p in parts if p.audio is not None]
    logits = [p.logits for p in parts if p.logits is not None and len(p.logits)]
    too_short = next((p.too_short for p in parts if p.too_short), None)
    where = f"{file}: " if file else ""
    if engine.has_audio and had_audio and not audio_parts:
        notes.append(f"audio branch off: {too_short}" if too_short else
                     "audio branch off: audio track has no decodable samples")
    if not audio_parts and not logits:
        off = [n for n in notes if "branch off" in n and n not in tagger.notes]
        raise TagError(f"{where}nothing to tag: " + "; ".join(off or [too_short or "no decodable audio or frames"]))
    audio = np.max(np.stack(audio_parts), axis=0) if audio_parts else None
    video = pooled = None
    if logits and engine.has_video:
        video, pooled = engine.video(np.concatenate(logits))
    fused = engine.fuse(audio, video)
    scores = {name: Tag(name, float(fused[c]), _score(audio, c), _score(video, c))
              for c, name in enumerate(engine.classes)}
    objects = []
    if pooled is not None:
        objects = [(engine.objects[i], round(float(pooled[i]), 4)) for i in np.argsort(-pooled)[: cfg.objects]]
    result = TagResult(file, duration, [], scores, objects, None, notes,
                       {"audio": audio is not None, "video": video is not None})
    result.tags = result.top(cfg.top_k if top_k is None else top_k, cfg.threshold if threshold is None else threshold)
    if segments:
        reported = {t.label for t in result.tags}
        result.segments = merge_touching(e for p in parts for e in p.events if e.label in reported)
        if audio is None:
            notes.append("segments need the audio branch, which did not run")
    return result


def _score(scores: np.ndarray | None, c: int) -> float | None:
    if scores is None or np.isnan(scores[c]):
        return None
    return float(scores[c])


def prefetch(items: Iterator, size: int) -> Iterator:
    """Yield ``items`` while a thread reads up to ``size`` of them ahead: receiving a decoded window
    releases the GIL, so the decoder works on the next windows while the networks run on these.
    The first item is taken in the calling thread (a decoder starts its worker process there, and
    a worker's parent-death signal is tied to the thread that started it). Errors of ``items`` are
    raised here, in order; stopping early closes ``items``."""
    import queue
    import threading

    it = iter(items)
    try:
        first = next(it)
    except StopIteration:
        return
    yield first
    box: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop, end = threading.Event(), object()

    def read() -> None:
        try:
            for item in it:
                box.put((item, None))
                if stop.is_set():
                    break
            box.put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            box.put((end, exc))
        finally:
            if stop.is_set() and hasattr(it, "close"):
                it.close()

    reader = threading.Thread(target=read, name="avtag-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item, error = box.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a pending put, then let the reader close the windows
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()


def start_decoder(tag_config, files: int | None = None):
    """An :class:`~avtag.io.IsolatedDecoder` with ``tag.decode_workers`` workers (no more than ``files``),
    started now (they import their libraries while the caller loads the model); give it to
    :meth:`FilePipeline.use_decoder`."""
    from avtag.io import IsolatedDecoder

    decoder = IsolatedDecoder(min(decode_workers(tag_config.decode_workers), max(1, files or 1 << 30)))
    decoder.start()
    return decoder


class FilePipeline:
    """Tags files with a :class:`Tagger`: isolated decode workers, batched frames, long files in windows.

    Args:
        tagger: the :class:`~avtag.inference.tagger.Tagger` whose model and ``tag`` / ``video`` settings are used.
    """

    def __init__(self, tagger) -> None:
        self.tagger = tagger
        self._decoder = None

    def load_kwargs(self) -> dict:
        """:func:`avtag.io.load_clip` arguments: audio always (cheap; it tells a file's duration), frames
        only when the tagger has a frame network, at its sampling settings."""
        video = self.tagger.config.video
        return dict(sample_rate=self.tagger.sample_rate, audio=True, video=self.tagger.engine.has_frames,
                    fps=video.fps, num_frames=video.num_frames, frame_short_side=video.frame_short_side)

    @property
    def decoder(self):
        """The :class:`~avtag.io.IsolatedDecoder` (workers started on first use, kept for later calls)."""
        if self._decoder is None:
            from avtag.io import IsolatedDecoder

            self._decoder = IsolatedDecoder(decode_workers(self.tagger.config.tag.decode_workers),
                                            load_kwargs=self.load_kwargs())
        return self._decoder

    def use_decoder(self, decoder) -> None:
        """Decode with ``decoder`` (e.g. from :func:`start_decoder`, started before the model was loaded)."""
        self.close()
        decoder.load_kwargs = self.load_kwargs()
        self._decoder = decoder

    def close(self) -> None:
        """Stop the decode workers (a later call starts new ones)."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def run(self, paths: Iterable, segments: bool = False, top_k: int | None = None,
            threshold: float | None = None) -> Iterator[TagResult]:
        """Yield one :class:`TagResult` per path, in input order; a file that cannot be tagged is a
        result with ``error`` set (one line naming the file and the problem)."""
        check_top(top_k, threshold)
        if isinstance(paths, (str, Path)):  # one path, not its characters
            paths = [paths]
        cfg = self.tagger.config.tag
        head = cfg.long_file_s + 1e-3  # decode at most this much of a file at once: longer ones go by windows
        batch: list[tuple[str, object]] = []
        kwargs = dict(segments=segments, top_k=top_k, threshold=threshold)
        for path, clip, error in self._decoded(paths, head):
            if clip is not None and clip.duration < cfg.long_file_s:
                batch.append((path, clip))
                if len(batch) >= max(1, cfg.batch_clips):
                    yield from self._flush(batch, **kwargs)
                    batch = []
                continue
            yield from self._flush(batch, **kwargs)  # results stay in input order
            batch = []
            if error is not None:
                yield TagResult(file=path, error=error)
            elif clip is not None:  # a long file (only probed above): streamed window by window
                yield self._guard(path, self._long_file, path, **kwargs)
        yield from self._flush(batch, **kwargs)

    def _decoded(self, paths: Iterable, head: float):
        """``(path, clip or None, error or None)`` in input order, from the decoder (or in process)."""
        if not self.tagger.config.tag.isolate:
            from avtag.io import load_clip

            for path in paths:
                try:
                    yield str(path), load_clip(path, end=head, longer_than=head, **self.load_kwargs()), None
                except AvtagError as exc:
                    yield str(path), None, str(exc)
            return
        from avtag.io import DecodeJob

        if isinstance(paths, (list, tuple)) and len(paths) == 1 and self.load_kwargs()["video"] \
                and self.decoder.num_workers >= 2:
            yield self._decode_split(paths[0], head)
            return
        jobs = (DecodeJob(path, {"end": head, "longer_than": head}, key=str(path)) for path in paths)
        batch = max(1, self.tagger.config.tag.batch_clips)
        for job, clip, error in self.decoder.imap(jobs, ordered=True, max_pending=2 * self.decoder.num_workers + batch):
            yield job.key, clip, error

    def _decode_split(self, path, head: float):
        """``(path, clip or None, error or None)`` of one file whose frames two workers decode side by side,
        each from its own keyframe (:func:`avtag.io.media.split_at_keyframes`), the first also the audio:
        a single file then waits for about half its frame decoding. Same clip as one worker's."""
        from avtag.io import DecodeJob

        base = {"end": head, "longer_than": head}
        jobs = [DecodeJob(path, {**base, "frame_part": (0, 2)}), DecodeJob(path, {**base, "audio": False,
                                                                                 "frame_part": (1, 2)})]
        (_, first, error), (_, second, error2) = self.decoder.imap(jobs, ordered=True)
        if error is not None:
            return str(path), None, error
        if error2 is not None or second is None:  # the second part failed alone: decode the file in one piece
            (_, clip, error), = self.decoder.imap([DecodeJob(path, base)], ordered=True)
            return str(path), clip, error
        if second.frames is not None:
            if first.frames is None:
                first.frames, first.frame_times = second.frames, second.frame_times
            else:
                first.frames = np.concatenate([first.frames, second.frames])
                first.frame_times = np.concatenate([first.frame_times, second.frame_times])
        warnings = list(dict.fromkeys(first.warnings + second.warnings))
        if first.frames is not None:
            warnings = [w for w in warnings if w != "video stream has no decodable frames"]
        first.warnings = warnings
        return str(path), first, None

    def _flush(self, batch, segments, top_k, threshold) -> Iterator[TagResult]:
        """Results of a group of decoded short files, in order (frames and equal-length audio batched)."""
        if not batch:
            return
        try:
            parts = self._windows([clip for _, clip in batch], segments)
        except AvtagError:  # one file's failure must not cost the others: redo them one at a time
            parts = [None] * len(batch)
        for (path, clip), part in zip(batch, parts):
            yield self._guard(path, self._combine, clip, part, path, segments, top_k, threshold)

    def _combine(self, clip, part: ClipOutput | None, path: str, segments, top_k, threshold) -> TagResult:
        """One short file's result from its output (computed now when ``part`` is None)."""
        parts = [part] if part is not None else self._windows([clip], segments)
        return combine(self.tagger, parts, path, clip.duration, segments, top_k, threshold)

    def _long_file(self, path: str, segments, top_k, threshold) -> TagResult:
        cfg = self.tagger.config.tag
        self.tagger.engine.expect_long_audio()
        if cfg.isolate:
            windows = self.decoder.iter_windows(path, cfg.window_s, **self.load_kwargs())
        else:
            from avtag.io import iter_windows

            windows = iter_windows(path, cfg.window_s, **self.load_kwargs())
        parts, end, group = [], 0.0, []
        size = max(1, cfg.batch_clips)
        for clip in prefetch(windows, size):
            group.append(clip)
            end = max(end, clip.start + clip.duration)
            if len(group) == size:
                parts += self._windows(group, segments)
                group = []
        parts += self._windows(group, segments)
        return combine(self.tagger, parts, path, end, segments, top_k, threshold)

    def _windows(self, clips: list, segments: bool) -> list[ClipOutput]:
        """The outputs of a group of windows: frames in shared batches, equal-length audio batched."""
        if not clips:
            return []
        engine = self.tagger.engine
        logits: list = [None] * len(clips)
        with_frames = [i for i, c in enumerate(clips) if engine.has_frames and c.frames is not None and len(c.frames)]
        if with_frames:
            for i, lg in zip(with_frames, engine.frame_logits([clips[i].frames for i in with_frames])):
                logits[i] = lg
        return infer_clips(self.tagger, clips, logits, segments)

    @staticmethod
    def _guard(path: str, work, *args, **kwargs) -> TagResult:
        """``work(*args, **kwargs)``, or a failed result naming ``path`` when it raises an avtag error."""
        try:
            return work(*args, **kwargs)
        except AvtagError as exc:
            return TagResult(file=path, error=str(exc))
