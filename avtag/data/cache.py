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
done. Arrays are NumPy ``.npy`` files opened with ``mmap_mode="r"``: training reads
only the clips of a batch and never holds the set in RAM (51k clips x 10 s of
int16 audio is ~16 GB on disk).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.config import get, resolve_path
from avtag.data.dcase2017 import ClipRecord, read_split, resolve_media, write_missing_report
from avtag.labels import get_vocabulary

SPLIT_MEDIA = {"train": "train", "validation": "train", "train_full": "train", "test": "test", "eval": "eval"}


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
        self.meta: dict = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self._entries: dict[str, dict] = {}
        manifest = self.dir / "manifest.jsonl"
        if manifest.is_file():
            for line in manifest.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that clip is simply redone
                self._entries[entry["name"]] = entry

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
        return np.load(path, mmap_mode="r")

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
        """``{clip name: reason}`` for clips that could not be decoded."""
        path = self.dir / "failed.tsv"
        out = {}
        if path.is_file():
            for line in path.read_text().splitlines():
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
        return self.written / self.seconds if self.seconds > 0 else 0.0


def cache_settings(config: dict) -> dict:
    """The settings a cache depends on; a cache built with others is refused."""
    from avtag.features.logmel import LogMelConfig

    audio = LogMelConfig.from_dict(get(config, "audio", {}))
    video = get(config, "video", {}) or {}
    return {
        "version": 1,
        "sample_rate": audio.sample_rate,
        "audio": audio.to_dict(),
        "logmel": bool(get(config, "cache.logmel", True)),
        "video": bool(get(config, "cache.video", False)),
        "video_sampling": {k: video.get(k) for k in ("fps", "num_frames", "frame_short_side")},
        "classes": list(get_vocabulary(get(config, "data.classes", "dcase2017")).names),
        "clip_seconds": float(get(config, "data.clip_seconds", 10.0)),
    }


class _Worker:
    """Decodes and featurises one clip; heavy models are built lazily per process."""

    def __init__(self, settings: dict, out_dir: Path):
        self.settings, self.out_dir = settings, out_dir
        self._logmel = self._video = None

    def __call__(self, job: tuple[dict, str]) -> tuple[str, dict | None, str | None]:
        record, path = job
        try:
            return record["name"], self._process(record, Path(path)), None
        except AvtagError as exc:
            return record["name"], None, str(exc)
        except Exception as exc:  # a decoder crash on one clip must not stop the run
            return record["name"], None, f"{path}: {type(exc).__name__}: {exc}"

    def _process(self, record: dict, path: Path) -> dict:
        import torch

        from avtag.io.media import load_clip

        s = self.settings
        vs = s["video_sampling"]
        clip = load_clip(path, sample_rate=s["sample_rate"], video=s["video"], fps=vs.get("fps"),
                         num_frames=vs.get("num_frames"), frame_short_side=vs.get("frame_short_side"),
                         end=s["clip_seconds"])
        if clip.waveform is None:
            raise CacheError(f"{path}: no usable audio ({'; '.join(clip.warnings)})")
        name = record["name"]
        pcm = (np.clip(clip.waveform, -1.0, 1.0) * 32767).astype(np.int16)
        arrays = {"audio": pcm}
        if s["logmel"]:
            if self._logmel is None:
                from avtag.features.logmel import LogMel, LogMelConfig

                torch.set_num_threads(1)
                self._logmel = LogMel(LogMelConfig.from_dict(s["audio"])).eval()
            with torch.no_grad():
                arrays["logmel"] = self._logmel(torch.from_numpy(clip.waveform))[0].numpy().astype(np.float16)
        if s["video"] and clip.frames is not None:
            if self._video is None:
                from avtag.models.video import VideoBranch

                self._video = VideoBranch().eval()
            with torch.no_grad():
                arrays["video"] = self._video.frame_logits(clip.frames).float().numpy().astype(np.float16)
        for kind, arr in arrays.items():
            _atomic_save(self.out_dir / kind / f"{name}.npy", arr)
        return {"name": name, "labels": record["labels"], "events": record["events"], "file": str(path),
                "samples": int(pcm.size), "video_frames": int(arrays["video"].shape[0]) if "video" in arrays else 0,
                "warnings": clip.warnings}


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


_WORKER: _Worker | None = None


def _init_worker(settings: dict, out_dir: str) -> None:
    global _WORKER
    _WORKER = _Worker(settings, Path(out_dir))


def _run_job(job):
    return _WORKER(job)


def split_records(config: dict, split: str) -> list[ClipRecord]:
    """The clip records of ``split`` as the config's data section defines it."""
    return read_split(
        resolve_path(get(config, "data.metadata_dir")), split,
        validation_fraction=float(get(config, "data.validation_fraction", 0.1)),
        seed=int(get(config, "data.seed", 0)),
        vocabulary=get_vocabulary(get(config, "data.classes", "dcase2017")),
    )


def prepare_split(config: dict, split: str, workers: int | None = None, progress: bool = True,
                  retry_failed: bool = False, limit: int | None = None) -> PrepareReport:
    """Build (or resume) the cache of one split.

    Args:
        config: loaded config (``data``, ``audio``, ``video``, ``cache`` sections).
        split: ``train``, ``validation``, ``test`` or ``eval``.
        workers: decoding processes (0 = in this process); default ``cache.workers``.
        progress: show a rich progress bar with clips/s and ETA.
        retry_failed: try again clips listed in ``failed.tsv``.
        limit: cache at most this many of the listed clips (for quick looks).

    Returns:
        A :class:`PrepareReport`; missing clips are written to ``missing.txt``.

    Raises:
        CacheError: the folder holds a cache built with other settings.
    """
    t_start = time.perf_counter()
    settings = cache_settings(config)
    out_dir = resolve_path(get(config, "cache.dir", "cache")) / split
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise CacheError(f"{out_dir}: cache was built with other settings ({', '.join(changed)}); "
                             "choose a new cache.dir or delete this folder")
    else:
        meta_path.write_text(json.dumps(settings, indent=1))

    records = split_records(config, split)
    media_dir = resolve_path(get(config, f"data.media_dirs.{SPLIT_MEDIA.get(split, split)}", "."))
    found, missing = resolve_media(records, media_dir)
    report = PrepareReport(split=split, listed=len(records), missing=len(missing))
    report.missing_report = write_missing_report(out_dir / "missing.txt", missing, media_dir)

    cache = FeatureCache(out_dir.parent, split)
    done = set(cache.names())
    failed_before = cache.failed()
    skip = done | (set() if retry_failed else set(failed_before))
    report.already_done = len(done & {r.name for r, _ in found})
    jobs = [({"name": r.name, "labels": list(r.labels), "events": r.events}, str(p))
            for r, p in found if r.name not in skip]
    if limit is not None:
        jobs = jobs[: max(0, limit - report.already_done)]
    report.failed = {k: v for k, v in failed_before.items() if not retry_failed}
    workers = int(get(config, "cache.workers", 2) if workers is None else workers)

    with open(out_dir / "manifest.jsonl", "a") as manifest, open(out_dir / "failed.tsv", "a") as failed_log:
        for name, entry, error in _map(jobs, settings, out_dir, workers, progress, split):
            if entry is not None:
                manifest.write(json.dumps(entry) + "\n")
                manifest.flush()
                report.written += 1
            else:
                line = (error or "unknown error").replace("\n", " ")
                failed_log.write(f"{name}\t{line}\n")
                failed_log.flush()
                report.failed[name] = line
    report.seconds = time.perf_counter() - t_start
    return report


def _map(jobs, settings, out_dir: Path, workers: int, progress: bool, split: str):
    """Run the jobs in ``workers`` spawned processes (decord readers are not fork-safe)."""
    from avtag.progress import track

    if not jobs:
        return
    if workers <= 0:
        worker = _Worker(settings, out_dir)
        yield from track(map(worker, jobs), total=len(jobs), description=f"prepare {split}", unit="clips", enabled=progress)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, str(out_dir))) as pool:
        results = pool.imap_unordered(_run_job, jobs, chunksize=4)
        yield from track(results, total=len(jobs), description=f"prepare {split}", unit="clips", enabled=progress)
