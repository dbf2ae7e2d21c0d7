"""The ``model:`` section of the config schema (:mod:`avtag.config.schema`): the audio branch as
front end + backbone + MIL pooling, one dataclass per backbone or front end with its own settings.

Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class CRNNConfig:
    """The CRNN backbone (``model.backbone: crnn``): conv blocks, bidirectional GRU.

    Attributes:
        conv: ``plain`` (conv + BN + ReLU; Wang, DCASE 2017) or ``glu`` (gated linear
            units; Xu et al. 2017, the DCASE 2017 Task 4 winner).
        channels: output channels of each conv block.
        kernel_size: square kernel size.
        convs_per_block: conv layers per block (pooling after the last one).
        freq_pool / time_pool: max-pooling factor of each block along mel bins / frames;
            ``prod(time_pool)`` log-mel frames make one frame-wise output frame.
        rnn_hidden: GRU units per direction (0: no GRU).
        rnn_layers: stacked bidirectional GRU layers.
    """

    conv: str = "plain"
    channels: List[int] = field(default_factory=lambda: [32, 64, 128])
    kernel_size: int = 5
    convs_per_block: int = 1
    freq_pool: List[int] = field(default_factory=lambda: [4, 4, 4])
    time_pool: List[int] = field(default_factory=lambda: [2, 2, 1])
    rnn_hidden: int = 100
    rnn_layers: int = 1


@dataclass
class EfficientNetConfig:
    """The ImageNet EfficientNet-Lite0 backbone on log-mel (``model.backbone: efficientnet_lite0``).

    Attributes:
        pretrained: start from the packaged ImageNet weights (false: random init, for tests).
        trainable_blocks: ``0`` frozen, ``-1`` all, ``k`` the last ``k`` of the 16 MBConv blocks + head conv.
        input_channels: ``repeat`` the log-mel into the 3 input channels, or ``conv``: a learned 1x1 conv.
        head_dim: width of the frame-wise hidden layer on the 1280-d features (0: linear classifier).
    """

    pretrained: bool = True
    trainable_blocks: int = -1
    input_channels: str = "repeat"
    head_dim: int = 256


@dataclass
class WaveformConfig:
    """The learnt raw-waveform front end (``model.frontend: waveform`` or ``wavegram_logmel``).

    A 1D CNN on the waveform (after Chen et al. 2019, arXiv 1911.09349; the "Wavegram" of PANNs,
    Kong et al. 2020): a stem ``Conv1d(1, stem_channels, stem_kernel, stride=stem_stride)``, then one
    residual block of two ``kernel_size`` convolutions per entry of ``channels``, each followed by
    max-pooling over time by the matching ``pools`` factor. The last block's channels become the
    image's bins: ``(batch, 1, frames, channels[-1])``.

    Attributes:
        stem_channels / stem_kernel / stem_stride: the first (filterbank-like) convolution.
        channels: output channels of each residual block; ``channels[-1]`` = bins of the image
            (``wavegram_logmel`` needs ``audio.n_mels``).
        pools: max-pooling factor over time after each block; ``stem_stride * prod(pools)``
            samples per frame (``wavegram_logmel`` needs ``audio.hop_length``). Defaults: 160 samples
            = 10 ms at 16 kHz, the default log-mel hop.
        kernel_size: kernel of the block convolutions (the second one is dilated by 2).
    """

    stem_channels: int = 16
    stem_kernel: int = 11
    stem_stride: int = 5
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    pools: List[int] = field(default_factory=lambda: [4, 4, 2])
    kernel_size: int = 3


@dataclass
class WaveformCNNConfig:
    """The multi-level 2D CNN for learnt front ends (``model.backbone: waveform_cnn``).

    Residual blocks of two 3x3 convolutions + average pooling (the 2D ResNet of arXiv
    1911.09349, made small for CPUs); the blocks named in ``levels`` each predict frame-wise
    probabilities with their own MIL pooling (multi-level prediction, Yu et al. 2018 /
    arXiv 1911.09349); the clip-wise output is the mean of the levels'.

    Attributes:
        channels: output channels of each block.
        freq_pool / time_pool: average-pooling factors of each block along bins / frames.
        levels: 1-based blocks whose output makes a prediction; the last block must be one of them
            (the deepest level gives the embedding).
        head_dim: width of each level's frame-wise hidden layer.
    """

    channels: List[int] = field(default_factory=lambda: [16, 32, 64, 128])
    freq_pool: List[int] = field(default_factory=lambda: [2, 2, 2, 2])
    time_pool: List[int] = field(default_factory=lambda: [2, 2, 2, 2])
    levels: List[int] = field(default_factory=lambda: [2, 3, 4])
    head_dim: int = 128


@dataclass
class ModelConfig:
    """The audio branch: front end + backbone + frame-wise classifier + MIL pooling.

    Attributes:
        name: a label for the run (free text).
        frontend: ``logmel``, ``waveform`` (learnt 1D CNN on the raw waveform, settings in
            ``model.waveform``) or ``wavegram_logmel`` (the learnt "wavegram" and the log-mel as two channels).
        backbone: ``crnn``, ``efficientnet_lite0`` or ``waveform_cnn`` (settings in the section of that name).
        pooling: MIL pooling: ``max``, ``mean``, ``linear_softmax``, ``exp_softmax`` or ``attention``.
        dropout: dropout in the backbone and before the frame-wise classifier.
        output_prior: initial frame-wise probability of every class (output bias
            ``logit(p)``, Lin et al. 2017); null: PyTorch's default init.
        spec_augment: SpecAugment masking in training (Park et al. 2019).
        freq_mask / time_mask: largest mask width, mel bins / log-mel frames.
        num_freq_masks / num_time_masks: masks of each kind per clip.
        crnn / efficientnet / waveform_cnn: backbone settings; waveform: the learnt front end's.
        speech_detector: ``silero_vad``: at inference (``tag``, ``evaluate``, ``ablate``) the Speech
            output and its ancestors are raised to Silero VAD's speech probability
            (:mod:`avtag.models.speech`); not trained. ``none``: the network alone.
        class_prior: the class frequencies the audio scores are given for at inference: ``training``
            (as trained) or ``audioset`` (AudioSet's, i.e. YouTube video's; :mod:`avtag.models.class_prior`).
    """

    name: str = "crnn"
    frontend: str = "logmel"
    backbone: str = "crnn"
    pooling: str = "attention"
    dropout: float = 0.2
    output_prior: Optional[float] = 0.1
    spec_augment: bool = True
    freq_mask: int = 8
    time_mask: int = 40
    num_freq_masks: int = 2
    num_time_masks: int = 2
    crnn: CRNNConfig = field(default_factory=CRNNConfig)
    efficientnet: EfficientNetConfig = field(default_factory=EfficientNetConfig)
    waveform: WaveformConfig = field(default_factory=WaveformConfig)
    waveform_cnn: WaveformCNNConfig = field(default_factory=WaveformCNNConfig)
    speech_detector: str = "none"
    class_prior: str = "training"
