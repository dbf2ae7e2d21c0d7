"""Video branch: packaged EfficientNet-Lite0 weights, preprocessing, top-1 on real photographs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avtag.models.video import (
    IMAGE_SIZE,
    VideoBranch,
    VideoBranchError,
    aggregate_frames,
    imagenet_categories,
    preprocess_frames,
)

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the real test photographs")


@pytest.fixture(scope="module")
def branch() -> VideoBranch:
    return VideoBranch()


def test_categories_are_torchvision_metadata():
    from torchvision.models import EfficientNet_B0_Weights

    names = imagenet_categories()
    assert len(names) == 1000
    assert names == tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
    assert names[0] == "tench" and names[281] == "tabby" and names[705] == "passenger car"


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),  # a tabby cat
        ("coffee", {"espresso", "cup", "coffee mug"}),  # a cup of coffee
        ("rocket", {"missile", "projectile", "space shuttle"}),  # a rocket on its launch pad
    ],
)
def test_top1_on_real_photographs(branch, photo, expected):
    image = getattr(skimage_data, photo)()[..., :3]
    probs = branch.frame_probabilities(image)
    assert probs.shape == (1, 1000)
    assert torch.allclose(probs.sum(-1), torch.ones(1), atol=1e-4)
    top1 = branch.categories[int(probs[0].argmax())]
    assert top1 in expected, f"{photo}: top-1 {top1!r}"


def test_cat_photo_is_confident_with_tf_preprocessing(branch):
    """With the weights' own (x - 127) / 128 normalisation the cat classes hold most of the mass."""
    probs = branch.frame_probabilities(skimage_data.chelsea())[0]
    cats = [branch.categories.index(n) for n in ("tabby", "tiger cat", "Egyptian cat")]
    assert float(probs[cats].sum()) > 0.8


def test_preprocessing_normalisation_and_centre_crop():
    frame = np.full((300, 500, 3), 127, np.uint8)
    frame[:, :100] = 255  # left strip: cropped away by the centre crop of a 256-px short side
    x = preprocess_frames(frame)
    assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-3)
    white = preprocess_frames(np.full((2, 256, 256, 3), 255, np.uint8))
    assert torch.allclose(white, torch.full_like(white, (255 - 127) / 128), atol=1e-3)


def test_batched_logits_equal_unbatched(branch):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 240, 320, 3), dtype=np.uint8)
    small = VideoBranch(batch_size=2)
    a, b = branch.frame_logits(frames), small.frame_logits(frames)
    assert a.shape == (3, 1000)
    assert torch.allclose(a, b, atol=1e-4)
    assert branch.frame_logits(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 1000)


@pytest.mark.parametrize("bad", [np.zeros((2, 64, 64, 3), np.float32), np.zeros((2, 64, 64), np.uint8)])
def test_bad_frames_raise_one_line_error(branch, bad):
    with pytest.raises(VideoBranchError, match="frames must be"):
        branch.frame_logits(bad)


def test_aggregate_frames():
    x = np.array([[0.1, 0.9], [0.5, 0.1], [0.3, 0.2]], np.float32)
    assert np.allclose(aggregate_frames(x, "mean"), [0.3, 0.4])
    assert np.allclose(aggregate_frames(x, "max"), [0.5, 0.9])
    assert np.allclose(aggregate_frames(x, "meanmax"), [0.4, 0.65])
    with pytest.raises(VideoBranchError, match="unknown frame aggregation"):
        aggregate_frames(x, "median")
    with pytest.raises(VideoBranchError, match="frames >= 1"):
        aggregate_frames(np.zeros((0, 2)), "mean")


@pytest.mark.parametrize("override, problem", [
    ("video.fps=0", "video.fps must be > 0"), ("video.fps=-1", "video.fps must be > 0"),
    ("video.fps=.nan", "video.fps must be > 0"), ("video.num_frames=0", "video.num_frames must be >= 1"),
    ("video.batch_size=0", "video.batch_size must be >= 1"),
    ("video.frame_short_side=-5", "video.frame_short_side must be >= 1"),
    # a frame count or rate no clip has decoded for minutes before timing out
    ("video.num_frames=1000000000", r"video.num_frames must be >= 1 and <= 1000"),
    ("video.fps=1e308", "video.fps must be > 0 and <= 240"), ("video.fps=.inf", "video.fps must be > 0"),
    ("video.frame_short_side=100000", "frame_short_side must be >= 1 and <= 4096"),
    # label-map templates went straight to str.format: internal errors
    ("label_map.object_template={", "object_template: not a format string"),
    ("label_map.sound_template={}{}", "sound_template: needs exactly one"),
    ("label_map.sound_template=no field", "sound_template: needs exactly one"),
])
def test_frame_sampling_settings_are_checked_at_config_load(override, problem):
    """A frame rate of 0 or a batch of 0 frames used to be accepted (and sampled something anyway)."""
    from avtag.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=problem):
        load_config(None, [override])
    assert load_config(None, ["video.num_frames=4", "video.frame_short_side=null"]).video.num_frames == 4
    assert load_config(None, ["label_map.sound_template=the sound of {0}"]).label_map.sound_template.endswith("{0}")
