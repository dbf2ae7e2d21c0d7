"""Training from a frozen prefix: the frozen part of the backbone runs once per clip, not once per epoch.

With ImageNet transfer most of the network is frozen (``model.efficientnet.trainable_blocks: k``),
yet a plain training loop recomputes the frozen stem and blocks for every clip in every epoch,
and they hold most of the compute (the high-resolution layers). With ``training.cache_frozen:
true``, ``avtag train``:

1. fits the front end's per-mel-bin standardisation (its batch norm's running mean and
   variance) on the training clips once and fixes it (a frozen prefix needs a fixed input);
2. computes the frozen prefix (:meth:`AudioModel.frozen_prefix`, eval mode, no SpecAugment) of
   every training and validation clip once and stores it as float16 ``.npy`` under
   ``<cache.dir>/<split>/prefix-<key>/`` (resumable; the key covers the architecture, the front
   end, the fitted statistics and the ImageNet weights, so a change rebuilds);
3. trains only the trainable blocks, head and MIL pooling on those arrays; mix-training and
   mixup blend the prefix tensors (a feature-space blend: cheaper than, and not identical to,
   blending waveforms); SpecAugment, which acts on the log-mel below the prefix, is off.

The exported model is an ordinary :class:`AudioModel`: on a waveform in eval mode it computes the
same thing as the prefix path (front end with the fitted statistics, then the whole backbone).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avtag import AvtagError


def fit_input_norm(model, dataset: Dataset, batch_size: int = 16, progress: bool = True) -> int:
    """Set the front end's batch-norm statistics to the exact mean / variance of ``dataset``'s log-mels.

    Args:
        model: :class:`~avtag.models.audio.AudioModel` with a front end that has a ``norm`` batch norm.
        dataset: items ``(waveform (samples,), target)``.

    Returns:
        The number of clips the statistics were computed on.
    """
    from avtag.progress import track

    norm = model.frontend.norm
    momentum = norm.momentum
    norm.reset_running_stats()
    norm.momentum = None  # cumulative average: exact statistics over all the batches
    norm.train()
    seen = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for wave, _ in track(loader, total=len(loader), description="input statistics", unit="batches",
                             enabled=progress):
            spec = model.frontend.spectrogram(wave.to(norm.running_mean.device))
            norm(spec.transpose(1, 2))
            seen += len(wave)
    norm.momentum = momentum
    norm.eval()
    return seen


def prefix_key(model) -> str:
    """A digest of everything the prefix depends on: settings, front-end statistics, frozen weights.
    The settings of what follows the network at inference (speech detector, class prior) are left out."""
    import dataclasses

    from avtag.models.weights import tensor_digest

    settings = dataclasses.replace(model.model_config, speech_detector="none", class_prior="training")
    tensors = list(model.frontend.state_dict().items()) + list(model.backbone.state_dict().items())
    return tensor_digest([(n, t) for n, t in tensors if not n.startswith(("classifier", "head"))],
                         salt=repr((settings, model.audio_config)))


class PrefixCache:
    """The frozen-prefix arrays of one split: ``<folder>/<clip name>.npy`` (float16).

    Args:
        folder: ``<cache.dir>/<split>/prefix-<key>``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def build(self, model, dataset, batch_size: int = 16, progress: bool = True, description: str = "prefix") -> int:
        """Compute the prefix of every clip of ``dataset`` (a :class:`CachedClipDataset`) not cached yet.

        Arrays are written to a temporary file and renamed, so a killed build resumes where it stopped.

        Returns:
            The number of clips computed now.

        Raises:
            AvtagError: the folder cannot be written.
        """
        from avtag.progress import track

        todo = [i for i, name in enumerate(dataset.names) if not self.path(name).is_file()]
        if not todo:
            return 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AvtagError(f"{self.folder}: cannot write the prefix cache ({exc.strerror or exc})") from None
        model.eval()
        device = next(model.parameters()).device
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        with torch.inference_mode():
            for batch in track(batches, total=len(batches), description=description, unit="batches",
                               enabled=progress):
                wave = torch.stack([dataset[i][0] for i in batch]).to(device)
                z = model.frozen_prefix(wave).float().cpu().numpy().astype(np.float16)
                for i, array in zip(batch, z):
                    target = self.path(dataset.names[i])
                    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                    try:
                        with open(tmp, "wb") as fh:
                            np.save(fh, array)
                        os.replace(tmp, target)
                    except OSError as exc:
                        tmp.unlink(missing_ok=True)
                        raise AvtagError(f"{self.folder}: cannot write the prefix cache "
                                         f"({exc.strerror or exc})") from None
        return len(todo)


class PrefixDataset(Dataset):
    """Items ``(prefix (C', F', T') float32, target (classes,))`` of the clips of a :class:`CachedClipDataset`."""

    def __init__(self, cache: PrefixCache, clips) -> None:
        self.cache, self.names, self.targets = cache, list(clips.names), clips.targets

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = np.load(self.cache.path(self.names[index]), mmap_mode="r")
        return torch.from_numpy(np.asarray(z, dtype=np.float32)), torch.from_numpy(self.targets[index])
