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
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

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


class AudioDataModule(L.LightningDataModule):
    """Train / validation loaders over ``FeatureCache(cache_dir, train_split | val_split)``.

    Args:
        cache_dir: the feature cache (``cache.dir``).
        classes: class names (``data.classes``) in target order.
        sample_rate: Hz of the cached audio; clip_seconds: every clip is padded / cropped to this.
        batch_size, workers: DataLoader settings.
        sampler: ``shuffle`` or ``balanced``.
        train_split, val_split: cache splits.

    Raises:
        AvtagError: empty cache, a cache built for other classes or another sample rate.
    """

    def __init__(self, cache_dir: str | Path, classes, sample_rate: int, clip_seconds: float, batch_size: int = 32,
                 workers: int = 2, sampler: str = "balanced", train_split: str = "train", val_split: str = "validation"):
        super().__init__()
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
    def from_config(cls, config: AvtagConfig) -> "AudioDataModule":
        """From the ``cache``, ``data``, ``audio`` and ``training`` sections."""
        t = config.training
        return cls(config.cache.dir, config.data.classes, config.audio.sample_rate, config.data.clip_seconds,
                   t.batch_size, t.workers, t.sampler, t.train_split, t.val_split)

    def cache(self, split: str):
        """The :class:`FeatureCache` of ``split`` (``train`` or ``validation``)."""
        from avtag.data.cache import FeatureCache

        return FeatureCache(self.cache_dir, self.splits[split])

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "validation"):
            if split in self.datasets:
                continue
            cache = self.cache(split)
            self._check_meta(cache)
            names, skipped = [], dict(cache.failed())
            for name in cache.names():
                if int(cache.entry(name).get("samples", 1)) <= 0:
                    skipped[name] = "empty audio"
                else:
                    names.append(name)
            if not names:
                raise AvtagError(f"{cache.dir}: no cached clips for the {split} split; run `avtag prepare CONFIG` first")
            self.skipped[split] = skipped
            self.datasets[split] = CachedClipDataset(
                cache, names, self.vocabulary, self.clip_samples, random_crop=(split == "train")
            )

    def _check_meta(self, cache) -> None:
        meta = cache.meta or {}
        classes = meta.get("classes")
        if classes is not None and list(classes) != list(self.vocabulary.names):
            raise AvtagError(f"{cache.dir}: cache was built for other classes than data.classes; rebuild it")
        rate = meta.get("sample_rate")
        if rate is not None and int(rate) != self.sample_rate:
            raise AvtagError(f"{cache.dir}: cache holds {rate} Hz audio but audio.sample_rate is {self.sample_rate}")

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Number of clips per class label in ``split`` (after :meth:`setup`)."""
        counts = Counter()
        for row in self.datasets[split].targets:
            counts.update(self.vocabulary.names[i] for i in np.flatnonzero(row))
        return {name: counts.get(name, 0) for name in self.vocabulary.names}

    def _loader(self, dataset: Dataset, shuffle: bool, sampler=None, drop_last: bool = False) -> DataLoader:
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
        data = self.datasets["train"]
        sampler = None
        if self.sampler == "balanced":
            weights = torch.as_tensor(balanced_weights(data.targets), dtype=torch.double)
            sampler = WeightedRandomSampler(weights, num_samples=len(data), replacement=True)
        # batch norm cannot train on a batch of one clip: drop a last incomplete batch when possible
        return self._loader(data, shuffle=True, sampler=sampler, drop_last=len(data) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["validation"], shuffle=False)


def skipped_report(skipped: dict[str, dict[str, str]], path: str | Path) -> int:
    """Write ``split <TAB> clip <TAB> reason`` lines for skipped clips; returns their number."""
    rows = [f"{split}\t{name}\t{reason}" for split, items in skipped.items() for name, reason in sorted(items.items())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r + "\n" for r in rows))
    return len(rows)
