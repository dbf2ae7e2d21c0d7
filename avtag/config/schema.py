"""The config schema: one typed dataclass per YAML section, the one source of defaults.

A config file is a mapping of these sections; every key a file or an override may
set is a field here, with its type and default. :mod:`avtag.config.loader` checks
files against this schema (OmegaConf structured configs), so an unknown key or a
wrong type is an error before any work starts.

Sections and who reads them::

    data        dataset lists, classes, media folders       data/, training/, evaluation/
    cache       feature cache folder and contents           data/cache.py
    audio       log-mel front end (sample rate, STFT, mels)  features/, models/
    video       frame sampling and the video branch          io/, models/video.py
    label_map   ImageNet objects -> sound classes            models/label_map.py
    model       audio branch: frontend, backbone, pooling    models/audio.py (registry)
    training    optimiser, schedule, sampler, mixing         training/
    trainer     Lightning Trainer: devices, strategy, ...    training/train.py
    fusion      late fusion of the two branches              models/fusion.py
    tag         ``avtag tag`` output and post-processing     inference/
    evaluate    Subtask B detection settings                 evaluation/
    ablation    ``avtag ablate``                              evaluation/ablation.py

Nothing here imports torch: the CLI parses and checks configs in a fraction of a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

# the model section and the sections after the networks live in their own modules; re-exported here,
# where the whole schema is read
from avtag.config.model_schema import (  # noqa: F401
    CRNNConfig,
    EfficientNetConfig,
    ModelConfig,
    WaveformCNNConfig,
    WaveformConfig,
)
from avtag.config.output_schema import AblationConfig, EvaluateConfig, FusionConfig, TagConfig  # noqa: F401

#: values a key may take; the registries in ``models/`` and ``training/`` use exactly these names
CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("dcase2017", "soundscapes"),
    "video.aggregate": ("mean", "max", "meanmax"),
    "model.frontend": ("logmel", "waveform", "wavegram_logmel"),
    "model.backbone": ("crnn", "efficientnet_lite0", "waveform_cnn"),
    "model.pooling": ("max", "mean", "linear_softmax", "exp_softmax", "attention"),
    "model.speech_detector": ("none", "silero_vad"),
    "model.class_prior": ("training", "audioset"),
    "tag.class_prior": ("model", "training", "audioset"),
    "model.crnn.conv": ("plain", "glu"),
    "model.efficientnet.input_channels": ("repeat", "conv"),
    "training.sampler": ("shuffle", "balanced"),
    "cache.format": ("clips", "shards"),
    "training.optimizer": ("adam", "adamw"),
    "training.lr_schedule": ("constant", "cosine"),
    "training.mixing.mode": ("none", "mix", "mixup"),
    "fusion.method": ("weighted", "logistic", "max", "boost", "gated"),
    "fusion.mode": ("both", "audio", "video"),
    "fusion.hierarchy": ("audioset", "none"),
    "ablation.split": ("test", "eval", "validation"),
}


@dataclass
class DataConfig:
    """Where the clips and their labels are.

    Attributes:
        dataset: ``dcase2017`` or ``soundscapes`` (both use the DCASE 2017 Task 4 layout).
        classes: ``"dcase2017"`` (the 17 official classes) or a list of class names.
        metadata_dir: folder with ``training_set.csv``, ``testing_set.csv`` and ``groundtruth_release/``.
        media_dirs: split (``train``, ``test``, ``eval``) -> folder of ``Y<ytid>_<start>_<end>.<ext>`` files.
        validation_fraction: share of the training list held out (seeded) as the validation split.
        seed: seed of that hold-out.
        clip_seconds: nominal clip length, seconds (clips are padded / cut to it).
    """

    dataset: str = "dcase2017"
    classes: Union[str, List[str]] = "dcase2017"
    metadata_dir: Optional[str] = None
    media_dirs: Dict[str, str] = field(default_factory=dict)
    validation_fraction: float = 0.1
    seed: int = 0
    clip_seconds: float = 10.0


@dataclass
class CacheConfig:
    """The feature cache of ``avtag prepare`` (see :mod:`avtag.data.cache`).

    Attributes:
        dir: cache folder, one sub-folder per split.
        workers: decoding processes.
        logmel: also store the log-mel ``(frames, n_mels)`` float16.
        video: also store the video branch's per-frame ImageNet logits.
        format: what training reads: ``clips`` (the per-clip ``.npy`` cache, the simple default) or
            ``shards`` (litdata chunks with an index, streamed; ``avtag prepare --format shards``
            writes them, see :mod:`avtag.data.shards`).
        shards: where the shards are: a folder, or an object-store URL litdata streams from
            (``s3://``, ``gs://``, ``azure://``); null: ``<dir>/shards``. One sub-folder per split.
        shard_size: bytes of clips per shard (litdata ``chunk_bytes``, e.g. ``64MB``).
        stream_cache: local folder for shards streamed from a URL (null: litdata's default).
        stream_cache_size: at most this much of it is used (litdata ``max_cache_size``, e.g. ``20GB``).
    """

    dir: str = "cache"
    workers: int = 2
    logmel: bool = True
    video: bool = False
    format: str = "clips"
    shards: Optional[str] = None
    shard_size: str = "64MB"
    stream_cache: Optional[str] = None
    stream_cache_size: str = "20GB"


@dataclass
class LogMelConfig:
    """The log-mel front end (the ``audio:`` section); ``hop_length / sample_rate`` is the frame hop.

    Defaults follow the DCASE 2017 Task 4 systems: 16 kHz, 1024-sample window, 10 ms
    hop, 64 mel bins (Xu et al. 2017; Wang 2017).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0

    @property
    def frame_hop(self) -> float:
        """Seconds between log-mel frames."""
        return self.hop_length / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Number of frames the (centred) STFT gives for ``num_samples`` samples."""
        return num_samples // self.hop_length + 1

    @classmethod
    def from_dict(cls, d: dict | None) -> LogMelConfig:
        """From a plain mapping such as a cache's ``meta.json`` (other keys ignored)."""
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class VideoConfig:
    """Frame sampling for the video branch (EfficientNet-Lite0).

    Attributes:
        fps: frames per second of media to sample (ignored when ``num_frames`` is set).
        num_frames: sample this many evenly spaced frames per clip instead.
        frame_short_side: decode frames at this shorter side, pixels (the network
            centre-crops 224 of a 256 short side, the TF eval crop 0.875).
        aggregate: pooling of frame scores over the clip: ``mean``, ``max`` or ``meanmax``.
        batch_size: frames per CNN forward pass.
    """

    fps: float = 1.0
    num_frames: Optional[int] = None
    frame_short_side: Optional[int] = 256
    aggregate: str = "max"
    batch_size: int = 32


@dataclass
class LabelMapConfig:
    """ImageNet object -> sound-class matrix from text embeddings (Li et al. 2017).

    Attributes:
        encoder: ``minilm`` (all-MiniLM-L6-v2, packaged) or a word2vec/GloVe file (text or binary).
        trust_pickle: allow gensim ``.kv`` / ``.model`` files, which are Python pickles and
            can run code when loaded: only for files you made yourself.
        top_k: objects kept per sound class.
        temperature: weight = ``exp((similarity - best similarity of the class) / temperature)``.
        min_similarity: cosine floor (encoder dependent; 0.45 suits MiniLM).
        overrides: reviewed pairs file: ``default`` (packaged), a path, or null for none.
        object_template / sound_template: format strings the names are embedded in.
    """

    encoder: str = "minilm"
    trust_pickle: bool = False
    top_k: int = 20
    temperature: float = 0.1
    min_similarity: float = 0.45
    overrides: Optional[str] = "default"
    object_template: str = "{}"
    sound_template: str = "{}"


@dataclass
class MixConfig:
    """Blending training clips (``training.mixing``).

    Attributes:
        mode: ``none``, ``mix`` (mix-training: union of labels, arXiv 1911.09349) or
            ``mixup`` (interpolated labels, Zhang et al. 2018).
        alpha: Beta(alpha, alpha) parameter of the blend weight (1.0: uniform on (0, 1)).
        probability: share of the clips of a batch that are blended.
        epochs: blend in the first ``epochs`` epochs (stage 1), then fine-tune on clean
            clips (stage 2); null: blend in every epoch.
        finetune_lr_scale: learning-rate factor in stage 2.
    """

    mode: str = "none"
    alpha: float = 1.0
    probability: float = 1.0
    epochs: Optional[int] = None
    finetune_lr_scale: float = 0.1

    def active(self, epoch: int) -> bool:
        """Whether clips are blended in ``epoch`` (0-based)."""
        return self.mode != "none" and (self.epochs is None or epoch < self.epochs)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule, taken from ``training`` (no defaults of its own)."""

    optimizer: str
    lr: float
    weight_decay: float
    lr_schedule: str
    warmup_epochs: int
    max_epochs: int


@dataclass
class TrainingConfig:
    """Weak-label training of the audio branch.

    Attributes:
        seed: seed of everything (Lightning ``seed_everything``).
        max_epochs: epochs of a run (the cosine schedule decays to 0 at this epoch).
        batch_size: clips per batch.
        workers: DataLoader processes.
        sampler: ``shuffle`` or ``balanced`` (1 / count of the clip's rarest label).
        optimizer: ``adam`` or ``adamw``; lr, weight_decay: its settings.
        lr_schedule: ``constant`` or ``cosine`` (per epoch); warmup_epochs: linear warm-up.
        threshold: decision threshold of the validation micro-F1.
        train_split / val_split: cache splits trained and validated on.
        checkpoint_every_n_steps: also write ``last.ckpt`` every this many optimiser steps
            (0: only at the end of each epoch); with ``cache.format: shards`` a run resumed from such
            a checkpoint continues mid-epoch (the StreamingDataLoader state is in the checkpoint).
        mixing: mix-training or mixup.
        cache_frozen: compute the frozen part of the backbone once per clip and train only the
            rest (EfficientNet with ``trainable_blocks >= 0``; :mod:`avtag.training.frozen`).
    """

    seed: int = 0
    max_epochs: int = 30
    batch_size: int = 32
    workers: int = 2
    sampler: str = "balanced"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: int = 1
    threshold: float = 0.5
    train_split: str = "train"
    val_split: str = "validation"
    checkpoint_every_n_steps: int = 0
    mixing: MixConfig = field(default_factory=MixConfig)
    cache_frozen: bool = False

    def optim(self) -> OptimConfig:
        """The optimiser settings as one typed value (for the LightningModule)."""
        return OptimConfig(self.optimizer, self.lr, self.weight_decay, self.lr_schedule, self.warmup_epochs,
                           self.max_epochs)


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` (devices, strategy, precision, ...).

    Attributes:
        accelerator: ``auto``, ``cpu``, ``gpu``/``cuda``.
        devices: ``auto``, a count, or a list of device indices.
        num_nodes: machines (multi-node runs: see the README).
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ...
        precision: ``auto`` (bf16-mixed / 16-mixed on GPU, 32-true on CPU) or a Lightning value.
        gradient_clip_val: clip gradients to this norm (null: off).
        log_every_n_steps: logging interval.
        extra: any other ``Trainer`` argument (e.g. ``limit_train_batches``, ``fast_dev_run``).
    """

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    gradient_clip_val: Optional[float] = None
    log_every_n_steps: int = 10
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AvtagConfig:
    """A whole avtag config (every section optional in a YAML file; defaults below)."""

    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    audio: LogMelConfig = field(default_factory=LogMelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    label_map: LabelMapConfig = field(default_factory=LabelMapConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    output_dir: str = "runs/avtag"
