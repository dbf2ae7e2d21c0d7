"""Feature cache: decode each clip once, store arrays on disk, read them memory-mapped.

Layout of ``<cache.dir>/<split>/``::

    meta.json          settings the cache was built with (sample rate, front end, video)
    manifest.jsonl     one JSON line per cached clip: name, labels, events, file, sizes
    failed.tsv         clips that could not be decoded: name <TAB> one-line reason
    missing.txt        clips listed by the official files but absent from the media folder
    audio/<name>.npy   waveform (samples,) int16 PCM at meta["sample_rate"]
    logmel/<name>.npy  log-mel (time_frames, n_mels) float16 (same LogMel as the model)
    video/<name>.npy   video-branch ImageNet logits (frames, 1000) float16

Each clip's arrays are written to temporary files and renamed into place
(``os.replace`` is atomic), and its manifest line is appended only after that, so a
killed ``prepare`` loses nothing already written and a second run skips what is
done (a manifest line cut by the kill is truncated at the next start, and stale
temporary files are removed). Arrays are NumPy ``.npy`` files opened with
``mmap_mode="r"``: training reads only the clips of a batch and never holds the set
in RAM (51k clips x 10 s of int16 audio is ~16 GB on disk).

``prepare`` decodes in isolated worker processes (:class:`avtag.io.IsolatedDecoder`):
a clip whose decoder crashes or hangs is recorded in ``failed.tsv`` with a one-line
reason and not tried again unless ``retry_failed``. ``failed.tsv`` always lists the
clips that are failed now, once each. The parent computes the log-mel and, with an
encoder the caller passes in, the video-branch frame logits, batched across clips
(this package builds no networks).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.config import AvtagConfig, resolve_path
from avtag.data.cache_writer import (
    ClipWriter,
    FrameEncoder,
    atomic_write_text,
    remove_stale_temp_files,
    repair_manifest,
)
from avtag.data.dcase2017 import ClipRecord, DatasetError, read_split, resolve_media, write_missing_report
from avtag.io.common import flat
from avtag.labels import get_vocabulary

SPLIT_MEDIA = {"train": "train", "validation": "train", "train_full": "train", "test": "test", "eval": "eval"}


#: dimensions of each cached array: audio (samples,), logmel (time_frames, n_mels), video (frames, 1000)
ARRAY_NDIM = {"audio": 1, "logmel": 2, "video": 2}


class CacheError(AvtagError):
    """A cache folder built with other settings, or unreadable."""


class FeatureCache:
    """Read access to one split of the feature cache.

    Args:
        root: ``cache.dir`` of the config.
        split: ``train``, ``validation``, ``test`` or ``eval``.
    """

    def __init__(self, root: str | Path, split: str):
        self.dir = Path(root) / split
        self.split = split
        meta_path = self.dir / "meta.json"
        try:
            self.meta: dict = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise CacheError(f"{meta_path}: unreadable ({exc}); delete the folder {self.dir} to rebuild it") from None
        self._entries: dict[str, dict] = {}
        manifest = self.dir / "manifest.jsonl"
        if manifest.is_file():
            for line in manifest.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that clip is simply redone
                if isinstance(entry, dict) and isinstance(entry.get("name"), str) and \
                        isinstance(entry.get("labels"), list):
                    self._entries[entry["name"]] = entry  # anything else is not a clip: redone too

    def names(self) -> list[str]:
        """Clips cached successfully, in manifest order."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> dict:
        """The manifest entry of ``name`` (labels, events, source file, sizes)."""
        return self._entries[name]

    def labels(self, name: str) -> list[str]:
        """Weak labels of the clip."""
        return list(self._entries[name]["labels"])

    def events(self, name: str) -> list[tuple[str, float, float]] | None:
        """Strong labels ``(label, onset, offset)`` in seconds, or None."""
        ev = self._entries[name].get("events")
        return None if ev is None else [tuple(e) for e in ev]

    def _array(self, kind: str, name: str) -> np.ndarray | None:
        path = self.dir / kind / f"{name}.npy"
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.ndim != ARRAY_NDIM[kind] or arr.dtype.kind not in "iuf":
                raise ValueError(f"not a {ARRAY_NDIM[kind]}-d numeric array")
        except (OSError, ValueError, EOFError) as exc:
            reason = flat(exc, 120)
            raise CacheError(f"{path}: damaged cache entry ({reason}); run `avtag prepare` again to redo it") from None
        return arr

    def damaged(self, kinds: tuple[str, ...] = ("audio",)) -> dict[str, str]:
        """``{clip name: reason}`` for listed clips whose arrays of ``kinds`` are unreadable (truncated,
        not a ``.npy``, pickled objects, wrong shape), or whose audio is missing (a clip without
        video has no video array). Reads only the file headers."""
        out: dict[str, str] = {}
        for name in self._entries:
            for kind in kinds:
                try:
                    if self._array(kind, name) is None and kind == "audio":
                        out[name] = f"{self.dir / kind / (name + '.npy')}: cached {kind} is missing"
                except CacheError as exc:
                    out[name] = str(exc)
                if name in out:
                    break
        return out

    def array_kinds(self) -> tuple[str, ...]:
        """The arrays every clip of this cache has: audio, and log-mel / video when built with them."""
        return ("audio",) + tuple(k for k in ("logmel", "video") if self.meta.get(k))

    def waveform(self, name: str) -> np.ndarray | None:
        """``(samples,)`` float32 in [-1, 1] at ``meta["sample_rate"]`` Hz, or None."""
        pcm = self._array("audio", name)
        return None if pcm is None else np.asarray(pcm, dtype=np.float32) / 32767.0

    def logmel(self, name: str) -> np.ndarray | None:
        """``(time_frames, n_mels)`` float32 log-mel, or None."""
        x = self._array("logmel", name)
        return None if x is None else np.asarray(x, dtype=np.float32)

    def video_logits(self, name: str) -> np.ndarray | None:
        """``(frames, 1000)`` float32 ImageNet logits of the video branch, or None."""
        x = self._array("video", name)
        return None if x is None else np.asarray(x, dtype=np.float32)

    def failed(self) -> dict[str, str]:
        """``{clip name: reason}`` for clips that could not be decoded and are not cached since."""
        return {k: v for k, v in read_failed(self.dir).items() if k not in self._entries}


def read_failed(split_dir: str | Path) -> dict[str, str]:
    """``{clip name: reason}`` of ``failed.tsv`` in ``split_dir`` (later lines win; {} when absent)."""
    path = Path(split_dir) / "failed.tsv"
    out: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if "\t" in line:
            name, reason = line.split("\t", 1)
            out[name] = reason
    return out


# ----------------------------------------------------------------------------- prepare

@dataclass
class PrepareReport:
    """What one ``prepare`` run of a split did."""

    split: str
    listed: int = 0
    missing: int = 0
    already_done: int = 0
    written: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    missing_report: Path | None = None

    @property
    def clips_per_second(self) -> float:
        """Clips written per second of the run."""
        return self.written / self.seconds if self.seconds > 0 else 0.0


def cache_settings(config: AvtagConfig) -> dict:
    """The settings a cache depends on; a cache built with others is refused."""
    audio, video = config.audio, config.video
    return {
        "version": 1,
        "sample_rate": audio.sample_rate,
        "audio": dataclasses.asdict(audio),
        "logmel": bool(config.cache.logmel),
        "video": bool(config.cache.video),
        "video_sampling": {k: getattr(video, k) for k in ("fps", "num_frames", "frame_short_side")},
        "classes": list(get_vocabulary(config.data.classes).names),
        "clip_seconds": float(config.data.clip_seconds),
    }


def split_records(config: AvtagConfig, split: str) -> list[ClipRecord]:
    """The clip records of ``split`` as the config's data section defines it.

    Raises:
        DatasetError: no ``data.metadata_dir`` in the config, or the official lists are unreadable.
    """
    if not config.data.metadata_dir:
        raise DatasetError("the config has no data.metadata_dir (the folder of the official clip lists)")
    return read_split(
        resolve_path(config.data.metadata_dir), split,
        validation_fraction=float(config.data.validation_fraction),
        seed=int(config.data.seed),
        vocabulary=get_vocabulary(config.data.classes),
    )


def prepare_split(config: AvtagConfig, split: str, workers: int | None = None, progress: bool = True,
                  retry_failed: bool = False, limit: int | None = None,
                  frame_encoder: FrameEncoder | None = None) -> PrepareReport:
    """Build (or resume) the cache of one split.

    Args:
        config: loaded config (``data``, ``audio``, ``video``, ``cache`` sections).
        split: ``train``, ``validation``, ``test`` or ``eval``.
        workers: decoding processes (at least 1: decoding never runs in this
            process, so a crashing decoder costs one clip); default ``cache.workers``.
        progress: show a rich progress bar with clips/s and ETA.
        retry_failed: try again clips listed in ``failed.tsv``.
        limit: cache at most this many of the listed clips (for quick looks).
        frame_encoder: ``frames (n, H, W, 3) uint8 -> logits (n, 1000)`` (array or
            tensor), e.g. ``avtag.models.video.VideoBranch().frame_logits``; needed
            when ``cache.video`` is true, called with the frames of several clips at once.

    Returns:
        A :class:`PrepareReport`; missing clips are written to ``missing.txt``.

    Raises:
        CacheError: the folder holds a cache built with other settings, cannot be
            written (read-only, no space left on device: what was written is kept
            and a rerun resumes), or ``cache.video`` is true without a frame encoder.
    """
    t_start = time.perf_counter()
    settings = cache_settings(config)
    if settings["video"] and frame_encoder is None:
        raise CacheError("cache.video is true but no frame encoder was given to prepare_split "
                         "(pass frame_encoder=VideoBranch().frame_logits)")
    out_dir = resolve_path(config.cache.dir) / split
    with _disk_errors(out_dir, 0):
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_meta(out_dir, settings)
        remove_stale_temp_files(out_dir)
        repair_manifest(out_dir / "manifest.jsonl")

    records = split_records(config, split)
    media_dir = resolve_path((config.data.media_dirs or {}).get(SPLIT_MEDIA.get(split, split), "."))
    found, missing = resolve_media(records, media_dir)
    report = PrepareReport(split=split, listed=len(records), missing=len(missing))
    with _disk_errors(out_dir, 0):
        report.missing_report = write_missing_report(out_dir / "missing.txt", missing, media_dir)

    cache = FeatureCache(out_dir.parent, split)
    done = set(cache.names()) - set(cache.damaged(cache.array_kinds()))  # a damaged entry is redone
    failed = cache.failed()  # stale entries (cached since) and duplicates dropped
    skip = done | (set() if retry_failed else set(failed))
    report.already_done = len(done & {r.name for r, _ in found})
    jobs = [({"name": r.name, "labels": list(r.labels), "events": r.events}, str(p))
            for r, p in found if r.name not in skip]
    if limit is not None:
        jobs = jobs[: max(0, limit - report.already_done)]
    workers = max(1, int(config.cache.workers if workers is None else workers))
    writer = ClipWriter(out_dir, settings, frame_encoder, failed)
    try:
        with _disk_errors(out_dir, lambda: writer.written):
            writer.open()
            writer.run(jobs, workers, progress, split)
    finally:
        writer.close()
    report.written = writer.written
    report.failed = dict(writer.failed)
    report.seconds = time.perf_counter() - t_start
    return report


def _check_meta(out_dir: Path, settings: dict) -> None:
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"{meta_path}: unreadable ({exc}); delete the folder {out_dir} to rebuild it") from None
        if old != settings:
            changed = sorted(k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k])
            raise CacheError(f"{out_dir}: cache was built with other settings ({', '.join(changed)}); "
                             "choose a new cache.dir or delete this folder")
    else:
        atomic_write_text(meta_path, json.dumps(settings, indent=1))


class _disk_errors:
    """Turn an OSError writing the cache into one :class:`CacheError` naming the folder."""

    def __init__(self, out_dir: Path, written) -> None:
        self.out_dir, self.written = out_dir, written

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if not isinstance(exc, OSError) or isinstance(exc, AvtagError):
            return False
        problem = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EFBIG: "file too large (file size limit)", errno.EROFS: "read-only file system",
                   errno.EACCES: "permission denied"}.get(exc.errno, (exc.strerror or str(exc)).lower())
        written = self.written() if callable(self.written) else self.written
        kept = f"; the {written} clip(s) written in this run are kept, rerun to resume" if written else ""
        raise CacheError(f"{self.out_dir}: cannot write the feature cache: {problem}{kept}") from None


