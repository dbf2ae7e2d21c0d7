"""Inference speed-ups that change no result: batch norm folded into convolutions, channels-last.

In eval mode a batch norm after a convolution is an affine map per channel, so it can be
folded into the convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``):
one pass over the feature map instead of two. EfficientNet-Lite0 has 49 such pairs; folding
them removes the separate ``batch_norm`` calls that took a quarter of the video branch's time.
Channels-last memory format lets oneDNN pick its faster convolution kernels on CPU.

These functions change modules in place and are for inference only (a folded network has no
batch-norm statistics left to train); :meth:`avtag.models.tagger.AudioVisualTagger.optimize_for_inference`
applies them, and a test compares the fast path with the plain one on real clips.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: (convolution, batch norm) attribute pairs of efficientnet_lite_pytorch's modules, in forward order
_STEM_HEAD = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_BLOCK = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def _fold(owner: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        return False
    setattr(owner, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
    setattr(owner, bn_name, nn.Identity())
    return True


def fold_efficientnet_batch_norms(net: nn.Module) -> int:
    """Fold every batch norm of an ``efficientnet_lite_pytorch.EfficientNet`` into the convolution
    before it (stem, head and the three of each MBConv block). In place; eval mode only.

    Returns:
        The number of batch norms folded (49 for EfficientNet-Lite0).
    """
    net.eval()
    count = sum(_fold(net, c, b) for c, b in _STEM_HEAD)
    for block in getattr(net, "_blocks", []):
        count += sum(_fold(block, c, b) for c, b in _BLOCK)
    return count


def channels_last(module: nn.Module) -> nn.Module:
    """Store the 4-D weights of ``module`` channels-last (NHWC), in place; inputs follow via ``to_channels_last``."""
    return module.to(memory_format=torch.channels_last)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch ``(B, C, H, W)`` in channels-last memory format (same values and shape)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
