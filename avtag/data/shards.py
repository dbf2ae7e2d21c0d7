"""Feature-cache shards: the per-clip cache packed into litdata chunks with an index, streamed for training.

Layout of ``<cache.shards>/<split>/`` (``cache.shards`` defaults to ``<cache.dir>/shards``; it may be
an object-store URL such as ``s3://bucket/avtag/shards``, wherever litdata can write and read)::

    index.json          litdata's index: chunk files, item counts, the data format
    chunk-<w>-<k>.bin   about ``cache.shard_size`` bytes of clips each (written by worker ``w``)
    avtag.json          (local folders only) what was packed: clip count and names digest, cache settings

One item per clip, self-describing, so a reader needs nothing but the shards::

    name         str      clip name (``Y<ytid>_<start>_<end>`` without the extension)
    labels       str      JSON list of weak labels
    sample_rate  int      Hz of ``audio``
    audio        (samples,) int16 PCM            (the cache's ``audio/<name>.npy``)
    logmel       (frames, n_mels) float16        (empty ``(0, 0)`` when ``cache.logmel`` is false)
    video        (frames, 1000) float16 logits   (empty ``(0, 1000)`` without frames or ``cache.video``)

Why litdata (``optimize`` + ``StreamingDataset``, Lightning's own library) rather than WebDataset:
its ``StreamingDataLoader`` has a ``state_dict`` that Lightning stores in checkpoints, so a run
resumes mid-epoch; ranks and DataLoader workers get equal, disjoint parts of the chunks with no
``DistributedSampler`` (an epoch covers the data once); chunk order and items inside chunks are
reshuffled every epoch; remote chunks are downloaded ahead into a bounded local cache
(``max_cache_size``), so memory and local disk do not grow with the dataset; and the same index
lets a reader open any item (``dataset[i]``) for checks. WebDataset's tar streams have none of the
resume or rank-balancing parts built in.

The shards are written from the per-clip cache (``avtag prepare`` fills it first with isolated
decoding, so a hostile file costs one clip and a killed run resumes); ``optimize`` runs with
``use_checkpoint`` so a killed packing resumes too.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avtag.config import resolve_path
from avtag.data.cache import CacheError, FeatureCache
from avtag.data.clips import fit_length

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request from cluster nodes without internet
try:
    from litdata import StreamingDataset as _StreamingDataset
except ImportError:  # the optional extra avtag[shards]; every entry point says so
    _StreamingDataset = None

#: schemes litdata streams from (anything else with ``://`` is refused before work starts)
URL_SCHEMES = ("s3://", "gs://", "azure://", "hf://")


def _require_litdata() -> None:
    if _StreamingDataset is None:
        raise CacheError("cache.format=shards needs litdata: pip install 'avtag[shards]'")


def is_url(location: str) -> bool:
    """Whether ``location`` names object storage rather than a local folder."""
    return "://" in str(location)


def shards_root(config) -> str:
    """``cache.shards``, or ``<cache.dir>/shards``: a folder path or a URL (as a string)."""
    value = config.cache.shards
    if value:
        value = str(value)
        if is_url(value) and not value.startswith(URL_SCHEMES):
            raise CacheError(f"cache.shards: {value}: litdata streams from {', '.join(URL_SCHEMES)} URLs or folders")
        return value.rstrip("/") if is_url(value) else str(resolve_path(value))
    return str(resolve_path(config.cache.dir) / "shards")


def split_location(root: str, split: str) -> str:
    """The shards of one split under ``root`` (URL or folder)."""
    return f"{root.rstrip('/')}/{split}" if is_url(root) else str(Path(root) / split)


# ----------------------------------------------------------------------------- writing
@dataclass
class ShardReport:
    """What :func:`write_shards` did for one split."""

    split: str
    location: str
    clips: int = 0
    shards: int = 0
    items: int = 0  # clips found in the index
    bytes: int = 0
    seconds: float = 0.0
    skipped: bool = False  # the shards were already up to date


class _ClipItem:
    """``index -> item`` for ``litdata.optimize``: reads one clip of the per-clip cache (picklable)."""

    def __init__(self, cache_dir: str, split: str, names: list[str], logmel: bool, video: bool):
        self.cache_dir, self.split, self.names, self.logmel, self.video = cache_dir, split, names, logmel, video
        self._cache = None

    def __call__(self, index: int) -> dict:
        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir, self.split)
        cache, name = self._cache, self.names[index]
        folder = cache.dir
        audio = np.load(folder / "audio" / f"{name}.npy")
        logmel = np.load(folder / "logmel" / f"{name}.npy") if self.logmel else None
        video_path = folder / "video" / f"{name}.npy"
        video = np.load(video_path) if self.video and video_path.is_file() else None
        return {
            "name": name,
            "labels": json.dumps(cache.labels(name)),
            "sample_rate": int(cache.meta.get("sample_rate", 16000)),
            "audio": np.ascontiguousarray(audio, dtype=np.int16),
            "logmel": np.ascontiguousarray(logmel, dtype=np.float16) if logmel is not None
            else np.zeros((0, 0), np.float16),
            "video": np.ascontiguousarray(video, dtype=np.float16) if video is not None
            else np.zeros((0, 1000), np.float16),
        }


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def write_shards(config, split: str, workers: int | None = None, progress: bool = True) -> ShardReport:
    """Pack the per-clip cache of ``split`` into litdata shards (``litdata.optimize``).

    Args:
        config: loaded config (``cache`` section: ``dir``, ``shards``, ``shard_size``, ``logmel``, ``video``).
        split: a cache split already prepared (``train``, ``validation``, ``test``, ``eval``).
        workers: writer processes (default ``cache.workers``, at least 1).
        progress: litdata's progress output.

    Returns:
        A :class:`ShardReport`. A local folder whose ``avtag.json`` says it holds exactly these clips
        with these settings is left as it is (``skipped``); a packing killed half-way resumes.

    Raises:
        CacheError: litdata missing, an empty cache split, a bad ``cache.shards`` URL, or a write error.
    """
    _require_litdata()
    from litdata import optimize

    t0 = time.perf_counter()
    cache_dir = resolve_path(config.cache.dir)
    cache = FeatureCache(cache_dir, split)
    names = [n for n in cache.names() if int(cache.entry(n).get("samples", 1)) > 0]
    if not names:
        raise CacheError(f"{cache.dir}: no cached clips for the {split} split; run `avtag prepare CONFIG` first")
    location = split_location(shards_root(config), split)
    report = ShardReport(split, location, clips=len(names))
    stamp = {"clips": len(names), "names": _digest(names), "settings": cache.meta}
    local = not is_url(location)
    mode = None
    if local:
        folder = Path(location)
        stamp_path = folder / "avtag.json"
        if (folder / "index.json").is_file():
            if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
                report.skipped = True
                _count(folder, report)
                return report
            mode = "overwrite"  # the cache changed since: rewrite
        folder.mkdir(parents=True, exist_ok=True)
    item = _ClipItem(str(cache_dir), split, names, bool(cache.meta.get("logmel", True)),
                     bool(cache.meta.get("video", False)))
    n_workers = max(1, int(config.cache.workers if workers is None else workers))
    try:
        optimize(fn=item, inputs=list(range(len(names))), output_dir=location,
                 chunk_bytes=str(config.cache.shard_size), num_workers=min(n_workers, len(names)),
                 reorder_files=False, mode=mode, use_checkpoint=mode is None, verbose=progress)
    except OSError as exc:
        raise CacheError(f"{location}: cannot write shards: {exc.strerror or exc}") from None
    if local:
        _count(Path(location), report)
        if report.items != len(names):
            raise CacheError(f"{location}: litdata wrote {report.items} of {len(names)} clips (a writer process "
                             "failed, see the messages above); run the command again")
        (Path(location) / "avtag.json").write_text(json.dumps(stamp, indent=1))
    report.seconds = time.perf_counter() - t0
    return report


def prepare_shards(config, split: str, workers: int | None = None, progress: bool = True, retry_failed: bool = False,
                   limit: int | None = None, frame_encoder=None):
    """``avtag prepare --format shards`` for one split: the per-clip cache (resumable, isolated decoding;
    :func:`avtag.data.cache.prepare_split`), then its shards (:func:`write_shards`).

    Returns:
        ``(PrepareReport, ShardReport)``.

    Raises:
        CacheError: as :func:`~avtag.data.cache.prepare_split` and :func:`write_shards`.
    """
    from avtag.data.cache import prepare_split

    _require_litdata()
    prepared = prepare_split(config, split, workers=workers, progress=progress, retry_failed=retry_failed,
                             limit=limit, frame_encoder=frame_encoder)
    return prepared, write_shards(config, split, workers=workers, progress=progress)


def _count(folder: Path, report: ShardReport) -> None:
    index = json.loads((folder / "index.json").read_text())
    report.shards = len(index.get("chunks", []))
    report.items = sum(int(c.get("chunk_size", 0)) for c in index.get("chunks", []))
    report.bytes = sum(p.stat().st_size for p in folder.glob("*.bin"))


# ----------------------------------------------------------------------------- reading
class ShardClipDataset(_StreamingDataset or object):
    """A litdata ``StreamingDataset`` of ``(waveform (clip_samples,) float32, target (classes,) float32)``.

    Args:
        location: the split's shards (folder or URL).
        vocabulary: :class:`avtag.labels.Vocabulary`; targets follow its class order.
        clip_samples: fixed output length (zero-padded at the end or cropped, as the per-clip cache).
        sample_rate: Hz the items must hold (checked per item).
        random_crop: random crop of longer clips (training).
        shuffle: reshuffle chunks and items inside chunks every epoch; drop_last: equal items per rank.
        seed: shuffling seed; cache_dir / max_cache_size: local cache of streamed remote chunks.

    Raises:
        CacheError: litdata missing, or no ``index.json`` at ``location`` (run ``avtag prepare --format shards``).
    """

    def __init__(self, location: str, vocabulary, clip_samples: int, sample_rate: int, random_crop: bool,
                 shuffle: bool, drop_last: bool, seed: int = 0, cache_dir: str | None = None,
                 max_cache_size: str = "20GB"):
        _require_litdata()
        if not is_url(location) and not (Path(location) / "index.json").is_file():
            raise CacheError(f"{location}: no shards here (index.json missing); "
                             "run `avtag prepare CONFIG --format shards`")
        kwargs = {"max_cache_size": max_cache_size} if is_url(location) else {}
        # items are large (a 10 s clip is ~450 kB): decode each alone, not in windows of 256 that shuffling thrashes
        super().__init__(location, shuffle=shuffle, drop_last=drop_last, seed=seed, cache_dir=cache_dir,
                         batch_decode=0, **kwargs)
        self.location, self.vocabulary = location, vocabulary
        self.clip_samples, self.sample_rate, self.random_crop = int(clip_samples), int(sample_rate), random_crop

    def __getitem__(self, index):
        return to_example(super().__getitem__(index), self.vocabulary, self.clip_samples, self.sample_rate,
                          self.random_crop, self.location)


def to_example(item: dict, vocabulary, clip_samples: int, sample_rate: int, random_crop: bool, where: str = ""):
    """One shard item -> ``(waveform (clip_samples,) float32 in [-1, 1], target (classes,) float32)`` tensors.

    Raises:
        CacheError: the item holds audio at another rate, or a label outside ``vocabulary``
            (the shards were written for other settings).
    """
    import torch

    if int(item["sample_rate"]) != sample_rate:
        raise CacheError(f"{where}: shards hold {item['sample_rate']} Hz audio but audio.sample_rate is {sample_rate}")
    labels = json.loads(item["labels"])
    unknown = [x for x in labels if x not in vocabulary.names]
    if unknown:
        raise CacheError(f"{where}: clip {item['name']} has label {unknown[0]!r}, not in data.classes; "
                         "the shards were written for other classes: write them again")
    wave = np.asarray(item["audio"], dtype=np.float32) / 32767.0
    wave = fit_length(wave, clip_samples, random_crop)
    return torch.from_numpy(wave), torch.from_numpy(vocabulary.multi_hot(labels))


def read_items(location: str):
    """Every item of a split's shards as stored (dicts, see the module doc), in storage order: for checks."""
    _require_litdata()
    data = _StreamingDataset(location)
    for i in range(len(data)):
        yield data[i]
