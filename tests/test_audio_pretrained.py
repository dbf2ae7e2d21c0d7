"""EfficientNet-Lite0 (ImageNet) audio backbone on log-mel: shapes, freezing, weights, checkpoints."""
from __future__ import annotations

import pytest
import torch

from avtag import AvtagError
from avtag.config import ConfigError, EfficientNetConfig, LogMelConfig, ModelConfig, load_config
from avtag.models.audio import AudioModel, half_precision
from avtag.models.backbones.efficientnet import NUM_BLOCKS

C = 5
EFFNET_KEYS = set(EfficientNetConfig.__dataclass_fields__)


def _model(**kw) -> AudioModel:
    torch.manual_seed(0)
    effnet = EfficientNetConfig(**{k: v for k, v in kw.items() if k in EFFNET_KEYS})
    model = ModelConfig(backbone="efficientnet_lite0", output_prior=None, efficientnet=effnet,
                        **{k: v for k, v in kw.items() if k not in EFFNET_KEYS})
    return AudioModel(list("abcde"), LogMelConfig(), model)


def _step(model: AudioModel, seed: int = 0) -> None:
    """One Adam step of weak-label BCE on random audio."""
    g = torch.Generator().manual_seed(seed)
    x, y = 0.1 * torch.randn(4, 16000, generator=g), (torch.rand(4, C, generator=g) > 0.5).float()
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.binary_cross_entropy(model(x).clipwise.clamp(1e-6, 1 - 1e-6), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_shapes_frame_hop_and_pooling():
    model = _model(trainable_blocks=0).eval()
    with torch.no_grad():
        out = model(0.1 * torch.randn(2, 32000))  # 2 s -> 201 log-mel frames -> 6 output frames
        from_logmel = model(torch.randn(3, 320, 64))
    assert out.clipwise.shape == (2, C) and out.framewise.shape == (2, 6, C)
    assert out.frame_hop == pytest.approx(0.32) and model.frame_hop == pytest.approx(0.32)
    assert out.embedding.shape == (2, 256) and model.embedding_dim == 256
    assert torch.allclose(out.attention.sum(dim=1), torch.ones(2, C), atol=1e-5)
    assert 0 <= out.clipwise.min() and out.clipwise.max() <= 1 and 0 <= out.framewise.min() <= out.framewise.max() <= 1
    assert from_logmel.framewise.shape == (3, 10, C)
    with pytest.raises(AvtagError, match="too short"):
        model(torch.randn(1, 20, 64))
    linear = _model(head_dim=0, pooling="linear_softmax").eval()
    with torch.no_grad():
        out = linear(0.1 * torch.randn(1, 16000))
    assert out.embedding.shape == (1, 1280) and out.attention is None


def test_imagenet_weights_are_loaded():
    from avtag.models.video import VideoBranch, packaged_weights_path

    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    net = _model().backbone.net
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(net.state_dict()[key], state[key]), key
    assert not torch.equal(_model(pretrained=False).backbone.net._conv_stem.weight, state["_conv_stem.weight"])
    # the very network the video branch classifies frames with: same features for the same image
    video = VideoBranch().eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(net.eval().extract_features(image), video.net.extract_features(image), atol=1e-5)


def test_frozen_backbone_trains_only_the_head():
    model = _model(trainable_blocks=0)
    net = model.backbone.net
    assert not any(p.requires_grad for p in net.parameters())
    assert not model.frontend.norm.weight.requires_grad
    head = [*model.backbone.head.parameters(), *model.backbone.classifier.parameters(), *model.pooling.parameters()]
    assert head and all(p.requires_grad for p in head)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cls_before = model.backbone.classifier.weight.detach().clone()
    _step(model)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights and BN statistics
    assert not torch.equal(cls_before, model.backbone.classifier.weight)
    model.train()
    assert not net._bn0.training and not net._blocks[-1].training and model.backbone.head.training


def test_fine_tuning_all_or_the_last_blocks():
    full = _model(trainable_blocks=-1)
    assert all(p.requires_grad for p in full.parameters())
    stem = full.backbone.net._conv_stem.weight.detach().clone()
    _step(full)
    assert not torch.equal(stem, full.backbone.net._conv_stem.weight)
    part = _model(trainable_blocks=4)
    net = part.backbone.net
    frozen = [net._conv_stem, net._bn0, *net._blocks[: NUM_BLOCKS - 4]]
    trained = [*net._blocks[NUM_BLOCKS - 4 :], net._conv_head, net._bn1]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trained for p in m.parameters())
    early, late = net._blocks[0]._depthwise_conv.weight.detach().clone(), net._conv_head.weight.detach().clone()
    _step(part)
    assert torch.equal(early, net._blocks[0]._depthwise_conv.weight)
    assert not torch.equal(late, net._conv_head.weight)


def test_learned_projection_starts_as_repeat():
    repeat, conv = _model(input_channels="repeat").eval(), _model(input_channels="conv").eval()
    conv.load_state_dict({**conv.state_dict(), **repeat.state_dict()})
    x = torch.randn(2, 200, 64)
    with torch.no_grad():
        assert torch.allclose(repeat(x).clipwise, conv(x).clipwise, atol=1e-6)
    assert conv.backbone.to_rgb.weight.requires_grad


def test_config_errors_are_one_line():
    for bad in ("model.backbone=resnet", "model.efficientnet.input_channels=rgb",
                "model.efficientnet.trainable_blocks=17"):
        with pytest.raises(ConfigError, match="model.") as err:
            load_config(None, [bad])
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model.crnn.channels"):  # a CRNN key is not an EfficientNet key
        load_config(None, ["model.backbone=efficientnet_lite0", "model.channels=[32,64]"])


def test_fp16_checkpoint_round_trip_through_load_audio_model(tmp_path):
    """``avtag train``'s loader rebuilds the backbone from the stored config (model.backbone)."""
    from avtag.models.weights import load_audio_model, save_audio_model

    config = load_config(None, ["data.classes=[a,b,c,d,e]", "model.backbone=efficientnet_lite0",
                                "model.efficientnet.trainable_blocks=8"])
    model = AudioModel(config.data.classes, config.audio, config.model).eval()
    path = save_audio_model(half_precision(model.state_dict()), config, tmp_path / "m.pt")
    assert path.stat().st_size < 10 * 2**20  # fp32 would be ~15 MB
    loaded = load_audio_model(path)
    assert type(loaded.backbone).__name__ == "EfficientNetFrames" and loaded.classes == tuple("abcde")
    assert next(loaded.parameters()).dtype == torch.float32
    x = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        assert torch.allclose(loaded(x).clipwise, model(x).clipwise, atol=2e-3)
