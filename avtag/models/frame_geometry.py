"""Where a video frame is resized and cropped for EfficientNet-Lite0 (no torch: shared by both engines).

The TF EfficientNet-Lite evaluation transform: resize so the shorter side is
``IMAGE_SIZE / crop_fraction`` pixels (256 for 224 and 0.875), then take the centre
``IMAGE_SIZE`` x ``IMAGE_SIZE`` square. Frames decoded at ``video.frame_short_side = 256``
(decoder-side scaling) need only the crop.
"""
from __future__ import annotations

#: input resolution of EfficientNet-Lite0
IMAGE_SIZE = 224
#: fraction of the (resized) frame kept by the centre crop (TF eval: 224 / (224 + 32))
CROP_FRACTION = 0.875
#: TF EfficientNet-Lite normalisation, in 0..255 pixel units
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


def crop_box(height: int, width: int, crop_fraction: float = CROP_FRACTION) -> tuple[tuple[int, int], int, int]:
    """``((resized_height, resized_width), top, left)`` for a ``height`` x ``width`` frame (pixels):
    the size to resize to (the input size when no resize is needed), and the corner of the centre
    ``IMAGE_SIZE`` square in the resized frame."""
    short = round(IMAGE_SIZE / crop_fraction)
    scale = short / min(height, width)
    size = (max(IMAGE_SIZE, round(height * scale)), max(IMAGE_SIZE, round(width * scale)))
    return size, (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
