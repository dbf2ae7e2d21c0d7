"""Writing side of the feature cache (:mod:`avtag.data.cache`): atomic array files,
manifest repair, stale temporary files, and :class:`ClipWriter`, which featurises
decoded clips in batches and records each clip as cached or failed.

Every function here raises plain ``OSError`` on a write problem; ``prepare_split``
turns it into one :class:`~avtag.data.cache.CacheError` naming the cache folder.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: clips featurised together (log-mel and frame logits are computed in batches)
BATCH_CLIPS = 8

#: ``frames (n, H, W, 3) uint8 -> logits (n, 1000)`` (array or tensor)
FrameEncoder = Callable[[np.ndarray], object]


def remove_stale_temp_files(out_dir: Path) -> None:
    """Remove ``.<name>.npy.<pid>.tmp`` files of runs that are no longer alive (killed or out of space)."""
    for kind in ("audio", "logmel", "video", "."):
        folder = out_dir / kind
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            pid = path.name.rsplit(".", 2)[-2]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue  # another prepare is writing it right now
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def repair_manifest(path: Path) -> None:
    """Cut a last line that a kill left without its newline, so the next append starts a clean line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def atomic_save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` to a temporary file renamed into place; the temporary file never outlives a failure.

    The array is serialised in memory first: numpy's own file writer reports a full
    disk as a bare ``"N requested and M written"``, a plain write gives ENOSPC.
    """
    buffer = io.BytesIO()
    np.save(buffer, array)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file renamed into place (readers see the old or the new file, whole)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ClipWriter:
    """Featurises decoded clips in batches and writes arrays, manifest lines and failures.

    Args:
        out_dir: the split's cache folder; settings: its ``meta.json`` settings.
        frame_encoder: frame logits for ``settings["video"]`` (see :func:`~avtag.data.cache.prepare_split`).
        failed: ``{name: reason}`` failed before this run (kept until a clip succeeds).

    Attributes:
        written: clips cached by this run; failed: ``{name: reason}`` failed now.
    """

    def __init__(self, out_dir: Path, settings: dict, frame_encoder: FrameEncoder | None, failed: dict[str, str]):
        self.out_dir, self.settings, self.frame_encoder = out_dir, settings, frame_encoder
        self.failed = dict(failed)
        self.written = 0
        self._logmel = None
        self._manifest = self._failed_log = None
        self._batch: list[tuple[dict, str, object]] = []

    def open(self) -> None:
        """Create the array folders, compact ``failed.tsv`` and open the manifest and failure log for appending."""
        for kind in ("audio", "logmel", "video"):
            (self.out_dir / kind).mkdir(exist_ok=True)
        atomic_write_text(self.out_dir / "failed.tsv", self._failed_text())  # compacted now
        self._manifest = open(self.out_dir / "manifest.jsonl", "a")
        self._failed_log = open(self.out_dir / "failed.tsv", "a")

    def run(self, jobs: list[tuple[dict, str]], workers: int, progress: bool, split: str) -> None:
        """Decode ``(record, path)`` jobs in ``workers`` isolated processes and write each clip."""
        if not jobs:
            return
        from avtag.io import DecodeJob, IsolatedDecoder
        from avtag.progress import track

        s, vs = self.settings, self.settings["video_sampling"]
        kwargs = {"sample_rate": s["sample_rate"], "video": s["video"], "fps": vs.get("fps"),
                  "num_frames": vs.get("num_frames"), "frame_short_side": vs.get("frame_short_side"),
                  "end": s["clip_seconds"]}
        items = (DecodeJob(path, key=record) for record, path in jobs)
        with IsolatedDecoder(workers, load_kwargs=kwargs) as decoder:
            results = decoder.imap(items, max_pending=2 * workers + BATCH_CLIPS)
            for job, clip, error in track(results, total=len(jobs), description=f"prepare {split}", unit="clips",
                                          enabled=progress):
                record, path = job.key, job.path
                if error is not None:
                    self._fail(record["name"], error)
                elif clip.waveform is None:
                    self._fail(record["name"], f"{path}: no usable audio ({'; '.join(clip.warnings)})")
                else:
                    self._batch.append((record, path, clip))
                    if len(self._batch) >= BATCH_CLIPS:
                        self._flush()
            self._flush()

    def _fail(self, name: str, reason: str) -> None:
        line = " ".join(str(reason).split("\n"))
        self.failed[name] = line
        self._failed_log.write(f"{name}\t{line}\n")
        self._failed_log.flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        logmels = self._logmels([c.waveform for _, _, c in batch]) if self.settings["logmel"] else [None] * len(batch)
        videos = self._frame_logits([c.frames for _, _, c in batch]) if self.settings["video"] else [None] * len(batch)
        for (record, path, clip), mel, video in zip(batch, logmels, videos, strict=True):
            name = record["name"]
            pcm = (np.clip(clip.waveform, -1.0, 1.0) * 32767).astype(np.int16)
            arrays = {"audio": pcm, "logmel": mel, "video": video}
            for kind, arr in arrays.items():
                if arr is not None:
                    atomic_save(self.out_dir / kind / f"{name}.npy", arr)
            entry = {"name": name, "labels": record["labels"], "events": record["events"], "file": str(path),
                     "samples": int(pcm.size), "video_frames": int(video.shape[0]) if video is not None else 0,
                     "warnings": clip.warnings}
            self._manifest.write(json.dumps(entry) + "\n")
            self._manifest.flush()
            self.written += 1
            self.failed.pop(name, None)

    def _logmels(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Log-mel ``(frames, n_mels)`` float16 per waveform; equal lengths share one batch."""
        import torch

        from avtag.features.logmel import LogMel, LogMelConfig

        if self._logmel is None:
            self._logmel = LogMel(LogMelConfig(**self.settings["audio"])).eval()
        out: list = [None] * len(waves)
        for size in {w.size for w in waves}:
            idx = [i for i, w in enumerate(waves) if w.size == size]
            with torch.inference_mode():
                mel = self._logmel(torch.from_numpy(np.stack([waves[i] for i in idx]))).numpy()
            for j, i in enumerate(idx):
                out[i] = mel[j].astype(np.float16)
        return out

    def _frame_logits(self, frame_sets: list) -> list:
        """Frame logits ``(frames, 1000)`` float16 per clip (None without frames); equal frame sizes share a call."""
        out: list = [None] * len(frame_sets)
        for shape in {f.shape[1:] for f in frame_sets if f is not None and len(f)}:
            idx = [i for i, f in enumerate(frame_sets) if f is not None and len(f) and f.shape[1:] == shape]
            logits = np.asarray(_to_numpy(self.frame_encoder(np.concatenate([frame_sets[i] for i in idx]))), np.float32)
            bounds = np.cumsum([0] + [len(frame_sets[i]) for i in idx])
            for j, i in enumerate(idx):
                out[i] = logits[bounds[j] : bounds[j + 1]].astype(np.float16)
        return out

    def _failed_text(self) -> str:
        return "".join(f"{name}\t{reason}\n" for name, reason in self.failed.items())

    def close(self) -> None:
        """Close the files; rewrite ``failed.tsv`` to the clips failed now (best effort on a full disk)."""
        for f in (self._manifest, self._failed_log):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        if self._failed_log is not None:
            try:
                atomic_write_text(self.out_dir / "failed.tsv", self._failed_text())
            except OSError:
                pass  # the appended lines stay; the next start compacts them


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
