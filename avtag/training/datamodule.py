"""LightningDataModule over the feature cache: fixed-length waveforms + weak labels.

Each item is ``(waveform (clip_samples,) float32, target (classes,) float32)``
with ``clip_samples = data.clip_seconds * audio.sample_rate``. Shorter clips are
zero-padded at the end; longer clips are cropped (a random crop in training, the
start of the clip in validation). Clips that ``avtag prepare`` could not decode
(the cache's ``failed.tsv``) are not in the cache; they are collected in
:attr:`AudioDataModule.skipped` so training can report them.

Class imbalance (DCASE 2017: Car 25,077 training clips, Car alarm 180) can be
countered with ``training.sampler: balanced``: clips are drawn with replacement,
weighted by ``1 / count`` of their rarest label, so every class is seen about
equally often (as the balanced sampler of PANNs, Kong et al. 2020).

Several processes (``trainer.devices=N trainer.strategy=ddp``, or several nodes): Lightning wraps
the training sampler in a ``DistributedSampler`` (``DistributedSamplerWrapper`` for the balanced
one), so each rank takes a disjoint share of one draw and an epoch covers ``len(train)`` clips
once over all ranks. The balanced draw is the same on every rank because :class:`BalancedSampler`
seeds it from ``training.seed`` and the epoch (``set_epoch``, which the wrapper forwards).

``cache.format: shards`` reads litdata shards instead (:mod:`avtag.data.shards`), from a folder or
an object-store URL, through a ``StreamingDataLoader``: litdata splits the chunks between ranks and
workers itself, reshuffles them every epoch, and its loader state goes into checkpoints (mid-epoch
resume). Streaming has no random access, so ``training.sampler: balanced`` needs the per-clip cache.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avtag import AvtagError
from avtag.config import AvtagConfig, resolve_path
from avtag.data.clips import fit_length
from avtag.labels import Vocabulary, get_vocabulary


class CachedClipDataset(Dataset):
    """Waveforms and weak-label targets of cached clips.

    Args:
        cache: a :class:`avtag.data.cache.FeatureCache`.
        names: clip names to serve (a subset of ``cache.names()``).
        vocabulary: class order of the targets.
        clip_samples: fixed output length in samples.
        random_crop: crop longer clips at a random offset (training) instead of at 0.
    """

    def __init__(self, cache, names: list[str], vocabulary: Vocabulary, clip_samples: int, random_crop: bool):
        self.cache = cache
        self.names = list(names)
        self.vocabulary = vocabulary
        self.clip_samples = int(clip_samples)
        self.random_crop = random_crop
        self.targets = np.stack([vocabulary.multi_hot(cache.labels(n)) for n in self.names]) if self.names else (
            np.zeros((0, len(vocabulary)), np.float32)
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.names[index]
        wave = self.cache.waveform(name)
        if wave is None:
            raise AvtagError(f"{name}: cached audio is missing from {self.cache.dir}; run `avtag prepare` again")
        wave = fit_length(np.asarray(wave, dtype=np.float32), self.clip_samples, self.random_crop)
        return torch.from_numpy(wave), torch.from_numpy(self.targets[index])


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Sampling weight per clip ``(clips,)`` = ``1 / count`` of its rarest label.

    ``targets`` is ``(clips, classes)`` multi-hot. Clips without labels get the
    weight of the most frequent class.
    """
    counts = targets.sum(axis=0)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = (targets * inv[None, :]).max(axis=1)
    floor = 1.0 / max(counts.max(), 1) if counts.size else 1.0
    return np.where(weights > 0, weights, floor)


class BalancedSampler(Sampler[int]):
    """``num_samples`` clip indices drawn with replacement, each with probability ``weights[i] / sum``.

    The draw depends only on ``seed`` and the epoch (:meth:`set_epoch`), never on a process's
    random state, so every DDP rank draws the same sequence and Lightning's
    ``DistributedSamplerWrapper`` hands each rank a disjoint share of it.

    Args:
        weights: ``(clips,)`` non-negative sampling weights (:func:`balanced_weights`).
        num_samples: indices per epoch (over all ranks).
        seed: ``training.seed``.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int = 0):
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.double)
        self.num_samples, self.seed, self.epoch = int(num_samples), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the sequence of ``epoch`` next (called by Lightning at the start of every epoch)."""
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()

    def __len__(self) -> int:
        return self.num_samples


class AudioDataModule(L.LightningDataModule):
    """Train / validation loaders over ``FeatureCache(cache_dir, train_split | val_split)``.

    Args:
        cache_dir: the feature cache (``cache.dir``).
        classes: class names (``data.classes``) in target order.
        sample_rate: Hz of the cached audio; clip_seconds: every clip is padded / cropped to this.
        batch_size, workers: DataLoader settings.
        sampler: ``shuffle`` or ``balanced``.
        train_split, val_split: cache splits.
        seed: seed of the balanced draw and of the shard shuffling.
        shards: None for the per-clip cache, else the shards root (folder or URL, see
            :func:`avtag.data.shards.shards_root`); stream_cache, stream_cache_size: litdata's local cache.

    Raises:
        AvtagError: empty cache, a cache built for other classes or another sample rate, no shards,
            ``sampler="balanced"`` with shards.
    """

    def __init__(self, cache_dir: str | Path, classes, sample_rate: int, clip_seconds: float, batch_size: int = 32,
                 workers: int = 2, sampler: str = "balanced", train_split: str = "train", val_split: str = "validation",
                 seed: int = 0, shards: str | None = None, stream_cache: str | None = None,
                 stream_cache_size: str = "20GB"):
        super().__init__()
        self.seed, self.shards = int(seed), shards
        self.stream_cache, self.stream_cache_size = stream_cache, stream_cache_size
        if shards is not None and sampler == "balanced":
            raise AvtagError("training.sampler=balanced needs random access to clips, which streamed shards do not "
                             "give: use training.sampler=shuffle with cache.format=shards, or cache.format=clips")
        self.cache_dir = resolve_path(cache_dir)
        self.vocabulary = get_vocabulary(classes)
        self.batch_size, self.workers, self.sampler = int(batch_size), int(workers), str(sampler)
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(round(float(clip_seconds) * self.sample_rate))
        self.splits = {"train": str(train_split), "validation": str(val_split)}
        self.datasets: dict[str, CachedClipDataset] = {}
        #: clips left out, per split: {name: reason} (corrupt or undecodable media, empty audio)
        self.skipped: dict[str, dict[str, str]] = {}

    @classmethod
    def from_config(cls, config: AvtagConfig) -> AudioDataModule:
        """From the ``cache``, ``data``, ``audio`` and ``training`` sections."""
        t, c = config.training, config.cache
        shards = None
        if c.format == "shards":
            from avtag.data.shards import shards_root

            shards = shards_root(config)
        return cls(c.dir, config.data.classes, config.audio.sample_rate, config.data.clip_seconds,
                   t.batch_size, t.workers, t.sampler, t.train_split, t.val_split, seed=t.seed, shards=shards,
                   stream_cache=c.stream_cache, stream_cache_size=c.stream_cache_size)

    def cache(self, split: str):
        """The :class:`FeatureCache` of ``split`` (``train`` or ``validation``)."""
        from avtag.data.cache import FeatureCache

        return FeatureCache(self.cache_dir, self.splits[split])

    def setup(self, stage: str | None = None) -> None:
        if self.shards is not None:
            self._setup_shards()
            return
        for split in ("train", "validation"):
            if split in self.datasets:
                continue
            cache = self.cache(split)
            self._check_meta(cache)
            names, skipped = [], dict(cache.failed())
            skipped.update(cache.damaged())  # read in a loader worker, they would end the run
            for name in cache.names():
                if name in skipped:
                    continue
                if int(cache.entry(name).get("samples", 1)) <= 0:
                    skipped[name] = "empty audio"
                else:
                    names.append(name)
            if not names:
                raise AvtagError(f"{cache.dir}: no cached clips for the {split} split; " + (
                    f"it was prepared, but holds none: {len(skipped)} failed or damaged, the rest missing from the "
                    "media folder (missing.txt there) or not in the split's list (data.validation_fraction)"
                    if cache.meta else
                    "run `avtag prepare CONFIG` first"))
            self.skipped[split] = skipped
            self.datasets[split] = CachedClipDataset(
                cache, names, self.vocabulary, self.clip_samples, random_crop=(split == "train")
            )

    def _setup_shards(self) -> None:
        for split in ("train", "validation"):
            if split not in self.datasets:
                self.datasets[split] = self._shard_dataset(split)
                self.skipped[split] = {}

    def _shard_dataset(self, split: str):
        """A fresh :class:`~avtag.data.shards.ShardClipDataset` of ``split``. litdata reads the rank and world
        size when the dataset is made, so the loaders make their own after DDP has started (see below)."""
        from avtag.data.shards import ShardClipDataset, split_location

        train = split == "train"
        return ShardClipDataset(split_location(self.shards, self.splits[split]), self.vocabulary, self.clip_samples,
                                self.sample_rate, random_crop=train, shuffle=train, drop_last=train, seed=self.seed,
                                cache_dir=self.stream_cache, max_cache_size=self.stream_cache_size)

    def _check_meta(self, cache) -> None:
        meta = cache.meta or {}
        classes = meta.get("classes")
        if classes is not None and list(classes) != list(self.vocabulary.names):
            raise AvtagError(f"{cache.dir}: cache was built for other classes than data.classes; rebuild it")
        rate = meta.get("sample_rate")
        if rate is not None and int(rate) != self.sample_rate:
            raise AvtagError(f"{cache.dir}: cache holds {rate} Hz audio but audio.sample_rate is {self.sample_rate}")

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Number of clips per class label in ``split`` (after :meth:`setup`; per-clip cache only)."""
        counts = Counter()
        for row in self.datasets[split].targets:
            counts.update(self.vocabulary.names[i] for i in np.flatnonzero(row))
        return {name: counts.get(name, 0) for name in self.vocabulary.names}

    def class_prior(self, split: str = "train") -> np.ndarray | None:
        """``(C,)`` share of the clips the training draw gives each class: label frequencies weighted by
        the sampler (``balanced``: :func:`balanced_weights`); the prior the network's outputs are
        calibrated to (:mod:`avtag.models.class_prior`). None for shards (no per-clip targets)."""
        targets = getattr(self.datasets.get(split), "targets", None)
        if targets is None or not len(targets):
            return None
        weights = balanced_weights(targets) if self.sampler == "balanced" else np.ones(len(targets))
        return (weights[:, None] * targets).sum(axis=0) / weights.sum()

    def _loader(self, dataset: Dataset, shuffle: bool, sampler=None, drop_last: bool = False) -> DataLoader:
        if self.shards is not None:
            from litdata import StreamingDataLoader

            # rank and worker shares, shuffling and drop_last are the dataset's (litdata); the loader is stateful
            return StreamingDataLoader(dataset, batch_size=self.batch_size, num_workers=self.workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=self.workers > 0,
                                       drop_last=drop_last)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.workers > 0,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        if self.shards is not None:
            return self._loader(self._shard_dataset("train"), shuffle=False, drop_last=True)
        data = self.datasets["train"]
        sampler = None
        if self.sampler == "balanced":
            sampler = BalancedSampler(balanced_weights(data.targets), num_samples=len(data), seed=self.seed)
        # batch norm cannot train on a batch of one clip: drop a last incomplete batch when possible
        return self._loader(data, shuffle=True, sampler=sampler, drop_last=len(data) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if self.shards is not None:
            return self._loader(self._shard_dataset("validation"), shuffle=False)
        return self._loader(self.datasets["validation"], shuffle=False)


class FreshStreamingEpochs(L.Callback):
    """After every training epoch, let litdata's ``StreamingDataLoader`` start the next one afresh.

    A run resumed mid-epoch loads the loader's state (``restore``); litdata clears that flag only when
    its iterator runs to the end, but Lightning stops asking for batches once the epoch's count is
    reached, so the flag would survive and the next epoch would resume the finished one and be empty.
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        if getattr(loader, "restore", False):
            loader.restore = False


def skipped_report(skipped: dict[str, dict[str, str]], path: str | Path) -> int:
    """Write ``split <TAB> clip <TAB> reason`` lines for skipped clips; returns their number."""
    rows = [f"{split}\t{name}\t{reason}" for split, items in skipped.items() for name, reason in sorted(items.items())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r + "\n" for r in rows))
    return len(rows)
