"""``avtag train``: build the Lightning Trainer around the module and data module.

What a run writes under ``output_dir`` (the config key)::

    config.yaml                    the resolved config of the run
    checkpoints/last.ckpt          after every epoch (``--resume`` continues from it)
    checkpoints/best-*.ckpt        best validation micro-F1 so far
    audio_model.pt                 weights-only export of the best checkpoint
    logs/version_N/metrics.csv     per-step / per-epoch losses and metrics (CSVLogger)
    tensorboard/                   the same for TensorBoard, when it is installed
    skipped_clips.tsv              clips left out (corrupt or undecodable media)

Seeds are fixed (``training.seed``); the ``trainer:`` section is passed to
Lightning (accelerator, devices, num_nodes, strategy, precision); ``precision: auto``
means mixed precision on GPU (``bf16-mixed`` where supported, else ``16-mixed``) and
float32 on CPU. Mix-training's two stages run in one Trainer (see
:class:`AudioTaggingModule`), so a resumed run picks the right stage from its epoch counter.

Several processes: ``trainer.devices=N trainer.strategy=ddp`` starts them from one command
(Lightning re-runs the command line once per extra device; gloo on CPU, NCCL on GPU); ``torchrun``
or SLURM ``srun`` start them from outside (see the README). Every rank runs this function; only
rank 0 prints, writes ``config.yaml`` and exports the model. The feature cache is built beforehand
when the ranks are started from outside (they would race to build it).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from avtag import AvtagError
from avtag.config import AvtagConfig, config_to_dict, resolve_path


@dataclass
class TrainResult:
    """Summary of a finished ``avtag train`` run."""

    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_micro_f1: float | None
    model_path: Path | None
    epochs: int
    global_step: int
    skipped: int
    seconds: float


def choose_precision(config: AvtagConfig) -> str:
    """``trainer.precision``, where ``auto`` means bf16/16-mixed on a GPU and 32-true on CPU."""
    import torch

    precision, accelerator = config.trainer.precision, config.trainer.accelerator
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def global_rank() -> int:
    """This process's rank as the launcher set it (Lightning, torchrun, SLURM); 0 in a single process."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def launched_world_size() -> int:
    """Processes started from outside (``torchrun``: ``WORLD_SIZE``; SLURM: ``SLURM_NTASKS``), else 1."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def ensure_cache(config: AvtagConfig, progress: bool = True) -> None:
    """Build or complete the train/validation feature cache (and its shards, ``cache.format: shards`` with
    a local ``cache.shards``): ``avtag prepare``'s work, resumed where a killed run stopped.

    Raises:
        AvtagError: it is missing in a multi-process launch (``torchrun`` / SLURM: run ``avtag prepare`` first).
    """
    from avtag.data.cache import FeatureCache, prepare_split

    root = resolve_path(config.cache.dir)
    splits = (config.training.train_split, config.training.val_split)
    if config.cache.format == "shards":
        _ensure_shards(config, splits, progress)
        return
    for split in splits:
        if global_rank() != 0 or launched_world_size() > 1:
            if not FeatureCache(root, split).names():
                raise AvtagError(f"feature cache of split {split!r} is empty in {root / split}: run "
                                 "`avtag prepare CONFIG` before starting several training processes")
            continue
        # resumable: a split cached whole costs a look at its lists; a killed prepare is completed
        report = prepare_split(config, split, progress=progress, frame_encoder=_frame_encoder(config))
        if report.written or report.failed:
            print(f"{split}: {report.written} clips cached now ({report.already_done} before), "
                  f"{len(report.failed)} failed, {report.missing} missing, in {root / split}")


def _ensure_shards(config: AvtagConfig, splits, progress: bool) -> None:
    from avtag.data.shards import is_url, shards_root, split_location

    root = shards_root(config)
    if is_url(root):
        return  # written beforehand (avtag prepare --format shards with cache.shards=URL); litdata says if not
    missing = [s for s in splits if not (Path(split_location(root, s)) / "index.json").is_file()]
    if not missing:
        return
    if global_rank() != 0 or launched_world_size() > 1:
        raise AvtagError(f"no shards of split {missing[0]!r} in {root}: run `avtag prepare CONFIG --format shards` "
                         "before starting several training processes")
    from avtag.data.shards import prepare_shards

    for split in missing:
        print(f"no shards of split {split!r}: preparing them in {split_location(root, split)}")
        prepare_shards(config, split, progress=progress, frame_encoder=_frame_encoder(config))


def _frame_encoder(config: AvtagConfig):
    """The video branch's frame encoder when the cache stores frame logits (data/ builds no networks)."""
    if not config.cache.video:
        return None
    from avtag.models.video import VideoBranch

    return VideoBranch().frame_logits


def _loggers(run_dir: Path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [CSVLogger(save_dir=str(run_dir), name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
    return loggers


def _progress_bar_class():
    from lightning.pytorch.callbacks import RichProgressBar

    class ProgressBar(RichProgressBar):
        """Rich progress bar without the logger's version number."""

        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return items

    return ProgressBar


def build_trainer(config: AvtagConfig, run_dir: Path, progress: bool = True):
    """The Lightning ``Trainer`` of a run (callbacks, loggers, precision, epochs)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from avtag.training.module import MONITOR

    ckpt_dir = str(run_dir / "checkpoints")
    callbacks = [
        # best by validation micro-F1 (first: it is trainer.checkpoint_callback)
        ModelCheckpoint(dirpath=ckpt_dir, filename="best-epoch{epoch:03d}-f1{val_micro_f1:.4f}",
                        auto_insert_metric_name=False, monitor=MONITOR, mode="max", save_top_k=1),
        # last.ckpt after every epoch (ModelCheckpoint's save_last only writes when a top-k file is written)
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    every = int(config.training.checkpoint_every_n_steps)
    if every > 0:  # and during the epoch (the same file: --resume takes the newest)
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                         every_n_train_steps=every, enable_version_counter=False))
    if config.cache.format == "shards":
        from avtag.training.datamodule import FreshStreamingEpochs

        callbacks.append(FreshStreamingEpochs())
    if progress:
        callbacks.append(_progress_bar_class()(leave=True))
    t = config.trainer
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=config.training.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=choose_precision(config),
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        logger=_loggers(run_dir),
        enable_progress_bar=progress,
        enable_model_summary=progress,
        **dict(t.extra),
    )


def build_module(config: AvtagConfig, class_priors: dict | None = None):
    """The :class:`AudioTaggingModule` of a config (typed arguments; the config itself and the class
    priors (:func:`class_priors`) as hyper-parameters, so every checkpoint carries them)."""
    from avtag.labels import get_vocabulary
    from avtag.training.module import AudioTaggingModule

    t = config.training
    return AudioTaggingModule(get_vocabulary(config.data.classes).names, config.audio, config.model, t.optim(),
                              t.mixing, t.threshold, config=config_to_dict(config), class_priors=class_priors)


def use_frozen_prefix(module, data, config: AvtagConfig, progress: bool, say=print) -> None:
    """``training.cache_frozen``: fit the front end's statistics, cache every clip's frozen prefix
    once (:mod:`avtag.training.frozen`), and train the module on the prefixes.

    Raises:
        AvtagError: the model has no frozen part, or the data are streamed shards.
    """
    from avtag.training.frozen import PrefixCache, PrefixDataset, fit_input_norm, prefix_key

    model = module.model
    if not model.has_frozen_prefix:
        raise AvtagError("training.cache_frozen needs a backbone with a frozen part "
                         "(model.backbone: efficientnet_lite0 with model.efficientnet.trainable_blocks >= 0)")
    if data.shards is not None:
        raise AvtagError("training.cache_frozen works on the per-clip cache, not on streamed shards")
    clips = fit_input_norm(model, data.datasets["train"], data.batch_size, progress)
    key = prefix_key(model)
    for split in ("train", "validation"):
        dataset = data.datasets[split]
        cache = PrefixCache(data.cache_dir / data.splits[split] / f"prefix-{key}")
        built = cache.build(model, dataset, data.batch_size, progress, description=f"prefix {split}")
        say(f"frozen prefix of {split}: {built} clips computed now, {len(dataset) - built} cached ({cache.folder})")
        data.datasets[split] = PrefixDataset(cache, dataset)
    module.from_prefix = True
    say(f"input statistics fitted on {clips} clips; training runs the trainable part only "
        "(SpecAugment off, mixing blends prefix tensors)")


def class_priors(data) -> dict[str, list]:
    """The class priors a model file stores (:mod:`avtag.models.class_prior`): ``training``, the label
    frequencies of the training draw (:meth:`AudioDataModule.class_prior`; absent for shards), and
    ``audioset``, AudioSet's (:mod:`avtag.data.audioset_prior`)."""
    from avtag.data.audioset_prior import audioset_prior

    names = data.vocabulary.names
    training = data.class_prior("train")
    priors = {"audioset": audioset_prior(names)}
    if training is not None:
        priors["training"] = [float(p) if 0.0 < p < 1.0 else None for p in training]
    return priors


def train(config: AvtagConfig, resume: bool | str = False, progress: bool = True) -> TrainResult:
    """Train the audio branch as the config describes.

    Args:
        config: the typed config (:func:`avtag.config.load_config`).
        resume: False for a new run; True to continue from
            ``output_dir/checkpoints/last.ckpt``; or a checkpoint path.
        progress: show the progress bar and model summary.

    Returns:
        A :class:`TrainResult`.

    Raises:
        AvtagError: nothing to resume from, a run already in ``output_dir`` (when
            not resuming), an empty cache, a bad config value.
    """
    import lightning as L
    import torch

    from avtag.models.weights import export_audio_model
    from avtag.training.datamodule import AudioDataModule, skipped_report

    t0 = time.perf_counter()
    run_dir = resolve_path(config.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = None
    if resume:
        ckpt_path = Path(resume) if isinstance(resume, (str, Path)) else last
        if not ckpt_path.is_file():
            raise AvtagError(f"cannot resume: {ckpt_path} not found (start without --resume)")
    elif last.is_file():
        raise AvtagError(f"{run_dir} already holds a run; continue it with --resume or choose output_dir=OTHER")
    rank0 = global_rank() == 0
    say = print if rank0 else (lambda *a, **k: None)  # one console for all ranks
    if run_dir.exists() and not run_dir.is_dir():
        raise AvtagError(f"output_dir {run_dir} is a file; a run needs a folder (choose output_dir=OTHER)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if rank0:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    except OSError as exc:
        raise AvtagError(f"output_dir {run_dir}: cannot create the run folder ({exc.strerror})") from None

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")  # litdata's is exact
    L.seed_everything(config.training.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    ensure_cache(config, progress)
    data = AudioDataModule.from_config(config)
    data.setup("fit")
    n_skipped = sum(len(items) for items in data.skipped.values())
    if rank0:
        skipped_report(data.skipped, run_dir / "skipped_clips.tsv")
    sizes = {s: len(d) for s, d in data.datasets.items()}
    module = build_module(config, class_priors(data))
    if config.training.cache_frozen:
        use_frozen_prefix(module, data, config, progress, say)
    n_params = sum(p.numel() for p in module.model.parameters())
    source = f"shards in {data.shards}" if data.shards is not None else f"cache in {data.cache_dir}"
    say(f"training on {sizes['train']} clips, validating on {sizes['validation']} clips "
        f"({len(data.vocabulary)} classes, sampler: {data.sampler}, {source}); model: {n_params:,} parameters, "
        f"frame hop {module.model.frame_hop * 1000:.0f} ms, {module.model.model_config.pooling} pooling")
    if n_skipped:
        examples = [f"{n} ({r})" for items in data.skipped.values() for n, r in list(items.items())[:3]][:3]
        say(f"skipped {n_skipped} clip(s) that could not be decoded or whose cache entry is damaged, "
            f"e.g. {'; '.join(examples)} - full list in {run_dir / 'skipped_clips.tsv'}")

    trainer = build_trainer(config, run_dir, progress)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown + sys.exit(1)
        if not trainer.interrupted:
            raise
        done = f"the last checkpoint is {last}" if last.is_file() else "no checkpoint was written"
        say(f"training interrupted; {done}. Continue with: avtag train CONFIG [overrides] --resume", file=sys.stderr)
        raise KeyboardInterrupt from None

    ckpt_cb = trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
    score = ckpt_cb.best_model_score if ckpt_cb is not None else None
    model_path = None
    source = best if best and best.is_file() else (last if last.is_file() else None)
    if source is not None and trainer.is_global_zero:
        model_path = export_audio_model(source, run_dir / "audio_model.pt")
    return TrainResult(
        run_dir=run_dir,
        last_checkpoint=last if last.is_file() else None,
        best_checkpoint=best,
        best_micro_f1=float(score) if score is not None else None,
        model_path=model_path,
        epochs=int(trainer.current_epoch),
        global_step=int(trainer.global_step),
        skipped=n_skipped,
        seconds=time.perf_counter() - t0,
    )
