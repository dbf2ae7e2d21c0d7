"""MIL pooling: shapes, the published formulas, bounds, gradients, the factory."""
import pytest
import torch

from avtag import AvtagError
from avtag.models.pooling import POOLINGS, AttentionPooling, build_pooling

B, T, C, D = 3, 50, 17, 24


@pytest.fixture
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, T, C, generator=g), torch.randn(B, T, D, generator=g)


@pytest.mark.parametrize("name", list(POOLINGS))
def test_shapes_and_range(name, frames):
    framewise, features = frames
    pool = build_pooling(name, D, C)
    clipwise, attention = pool(framewise, features)
    assert clipwise.shape == (B, C)
    # every MIL pooling lies between the smallest and the largest frame probability
    assert torch.all(clipwise >= framewise.min(dim=1).values - 1e-6)
    assert torch.all(clipwise <= framewise.max(dim=1).values + 1e-6)
    if name == "attention":
        assert attention.shape == (B, T, C)
        assert torch.allclose(attention.sum(dim=1), torch.ones(B, C), atol=1e-5)
    else:
        assert attention is None


@pytest.mark.parametrize("name", list(POOLINGS))
def test_gradients_reach_frames(name, frames):
    framewise, features = frames
    framewise = framewise.clone().requires_grad_(True)
    features = features.clone().requires_grad_(True)
    clipwise, _ = build_pooling(name, D, C)(framewise, features)
    clipwise.sum().backward()
    assert framewise.grad is not None and framewise.grad.abs().sum() > 0
    if name == "attention":
        assert features.grad.abs().sum() > 0


def test_formulas(frames):
    y, _ = frames
    assert torch.allclose(build_pooling("max", D, C)(y)[0], y.max(dim=1).values)
    assert torch.allclose(build_pooling("mean", D, C)(y)[0], y.mean(dim=1))
    expected = (y ** 2).sum(1) / y.sum(1)  # Wang, Li & Metze: sum y^2 / sum y
    assert torch.allclose(build_pooling("linear-softmax", D, C)(y)[0], expected, atol=1e-6)
    w = torch.exp(y) / torch.exp(y).sum(1, keepdim=True)
    assert torch.allclose(build_pooling("exp_softmax", D, C)(y)[0], (y * w).sum(1), atol=1e-6)


def test_linear_softmax_on_silence_is_zero():
    clip, _ = build_pooling("linear_softmax", D, C)(torch.zeros(2, T, C))
    assert torch.all(clip == 0) and torch.isfinite(clip).all()


def test_attention_focuses_on_the_frames_it_weights():
    pool = AttentionPooling(1, 1)
    with torch.no_grad():
        pool.attention.weight.fill_(20.0)
        pool.attention.bias.zero_()
    framewise = torch.full((1, 10, 1), 0.1)
    framewise[0, 7, 0] = 0.9
    features = torch.zeros(1, 10, 1)
    features[0, 7, 0] = 1.0  # the attention branch looks at frame 7
    clip, att = pool(framewise, features)
    assert att[0, :, 0].argmax().item() == 7
    assert clip.item() == pytest.approx(0.9, abs=1e-3)


def test_attention_needs_features():
    with pytest.raises(AvtagError):
        build_pooling("attention", D, C)(torch.rand(1, T, C))


def test_unknown_pooling():
    with pytest.raises(AvtagError, match="unknown MIL pooling"):
        build_pooling("median", D, C)
