"""The one LightningModule: weak-label loss, validation metrics, optimiser, mixing.

The network is the plain ``nn.Module`` :class:`avtag.models.audio.AudioTagger`
(``self.model``); this module only wires

* the loss: binary cross-entropy between clip-wise probabilities and weak
  (clip-level) multi-hot labels -- multiple-instance learning, no frame labels;
* mix-training / mixup of the training waveforms (:mod:`avtag.training.mixing`),
  stage 1 for ``training.mixing.epochs`` epochs, then fine-tuning on unmixed
  clips at ``finetune_lr_scale`` times the learning rate (arXiv 1911.09349);
* validation metrics with torchmetrics: micro-F1 at threshold 0.5 (the DCASE
  2017 Task 4 Subtask A ranking metric) and mean average precision over the
  classes present in the validation set;
* Adam/AdamW with optional linear warm-up and cosine decay (per epoch).

It takes typed arguments (classes, front end, architecture, optimiser and schedule, mixing), and
stores the plain-dict form of the run's config as its hyper-parameters so a Lightning checkpoint
rebuilds its own model (:func:`avtag.models.weights.load_audio_model`).
"""
from __future__ import annotations

import math
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from avtag.config import LogMelConfig, MixConfig, ModelConfig, OptimConfig
from avtag.models.audio import build_audio_model
from avtag.training.mixing import mix_batch

#: name under which validation micro-F1 is logged (checkpoint monitor)
MONITOR = "val_micro_f1"


def weak_label_bce(clipwise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of clip-wise probabilities ``(B, C)`` against targets ``(B, C)``.

    Computed in float32 outside autocast (BCE on probabilities is unsafe in
    half precision); probabilities are clamped to ``[1e-7, 1 - 1e-7]``.
    """
    with torch.autocast(device_type=clipwise.device.type, enabled=False):
        p = clipwise.float().clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(p, target.float())


class AudioTaggingModule(L.LightningModule):
    """Trains an :class:`~avtag.models.audio.AudioModel` on weak labels.

    Args:
        classes: class names in output order.
        audio: front-end settings; model: architecture (frontend, backbone, pooling).
        optim: optimiser and learning-rate schedule; mixing: mix-training / mixup.
        threshold: decision threshold of the validation micro-F1.
        config: the run's whole config as plain dicts, stored in checkpoints (hyper-parameters).
        class_priors: the model's class priors (:mod:`avtag.models.class_prior`), stored the same way.
    """

    def __init__(self, classes: tuple[str, ...] | list[str], audio: LogMelConfig, model: ModelConfig,
                 optim: OptimConfig, mixing: MixConfig, threshold: float = 0.5, config: dict | None = None,
                 class_priors: dict | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config or {}, "format_version": 2, "class_priors": class_priors or {}})
        self.model = build_audio_model(model, audio, classes)
        self.optim, self.mixing, self.threshold = optim, mixing, float(threshold)
        num_classes = len(self.model.classes)
        #: batches hold frozen-prefix tensors instead of waveforms (``training.cache_frozen``, training/frozen.py)
        self.from_prefix = False
        self.val_f1 = MultilabelF1Score(num_labels=num_classes, average="micro", threshold=self.threshold)
        self.val_ap = MultilabelAveragePrecision(num_labels=num_classes, average=None)
        self._val_positives = torch.zeros(num_classes)

    def forward(self, x: torch.Tensor):
        """``waveform (B, samples)`` -> :class:`TaggerOutput` (see :class:`AudioModel`); a frozen-prefix
        tensor when :attr:`from_prefix`."""
        return self.model.forward_from_prefix(x) if self.from_prefix else self.model(x)

    # ---------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        waveform, target = batch
        mixing = self.mixing.active(self.current_epoch)
        if mixing:
            waveform, target = mix_batch(
                waveform, target, self.mixing.mode, self.mixing.alpha, self.mixing.probability
            )
        out = self(waveform)
        loss = weak_label_bce(out.clipwise, target)
        n = waveform.shape[0]
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=n)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=False, batch_size=n, sync_dist=True)
        self.log("mixing", float(mixing), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        waveform, target = batch
        out = self(waveform)
        loss = weak_label_bce(out.clipwise, target)
        probs = out.clipwise.float().detach()
        labels = target.round().long()
        self.val_f1.update(probs, labels)
        self.val_ap.update(probs, labels)
        self._val_positives = self._val_positives.to(labels.device) + labels.sum(dim=0)
        self.log("val_loss", loss, on_epoch=True, prog_bar=False, batch_size=waveform.shape[0], sync_dist=True)

    def on_validation_epoch_end(self):
        # torchmetrics gathers the states of all ranks in compute(): every rank logs the same values
        self.log(MONITOR, self.val_f1.compute(), prog_bar=True, sync_dist=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No positive samples")
            ap = self.val_ap.compute()
        positives = self._val_positives
        if self.trainer.world_size > 1:
            positives = self.trainer.strategy.reduce(positives.clone(), reduce_op="sum")
        present = positives > 0
        val_map = ap[present].mean() if present.any() else torch.tensor(0.0, device=ap.device)
        self.log("val_mAP", val_map, prog_bar=True, sync_dist=True)
        self.val_f1.reset()
        self.val_ap.reset()
        self._val_positives = torch.zeros_like(self._val_positives)

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        o = self.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.optimizer]
        opt = optimizer(params, lr=o.lr, weight_decay=o.weight_decay)
        factor = epoch_lr_factor(o.lr_schedule, o.max_epochs, o.warmup_epochs,
                                 mix_epochs=self.mixing.epochs if self.mixing.mode != "none" else None,
                                 finetune_scale=self.mixing.finetune_lr_scale)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def epoch_lr_factor(schedule: str, max_epochs: int, warmup_epochs: int = 0,
                    mix_epochs: int | None = None, finetune_scale: float = 1.0):
    """Learning-rate multiplier as a function of the (0-based) epoch.

    ``schedule``: ``constant`` or ``cosine`` (decay to 0 at ``max_epochs``);
    linear warm-up over ``warmup_epochs``; after ``mix_epochs`` (stage 2 of
    mix-training) the factor is multiplied by ``finetune_scale``.
    """
    def factor(epoch: int) -> float:
        f = 1.0
        if warmup_epochs > 0 and epoch < warmup_epochs:
            f = (epoch + 1) / (warmup_epochs + 1)
        elif schedule == "cosine":
            span = max(1, max_epochs - warmup_epochs)
            f = 0.5 * (1 + math.cos(math.pi * min(epoch - warmup_epochs, span) / span))
        if mix_epochs is not None and epoch >= mix_epochs:
            f *= finetune_scale
        return f

    return factor
