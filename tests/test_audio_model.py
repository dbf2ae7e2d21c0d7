"""Audio branch: shapes of every variant, front end inside the model, SpecAugment in
training only, configs in configs/model/, input errors."""
from pathlib import Path

import pytest
import torch

from avtag import AvtagError
from avtag.config import load_config
from avtag.features.logmel import LogMelConfig
from avtag.models.audio import AudioModelConfig, AudioTagger, SpecAugment, build_audio_model
from avtag.models.pooling import POOLINGS
from avtag.models.types import TaggerOutput

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TINY = dict(channels=(4, 8), freq_pool=(4, 4), time_pool=(2, 2), rnn_hidden=8, kernel_size=3)


def tiny(pooling="attention", conv="plain", **kw) -> AudioTagger:
    torch.manual_seed(0)
    return AudioTagger(5, LogMelConfig(), AudioModelConfig(pooling=pooling, conv=conv, **{**TINY, **kw}))


@pytest.mark.parametrize("conv", ["plain", "glu"])
@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_output_shapes(conv, pooling):
    model = tiny(pooling, conv).eval()
    out = model(torch.randn(2, 2 * SR))  # 2 s -> 201 log-mel frames -> 50 frame-wise outputs
    assert isinstance(out, TaggerOutput)
    assert out.clipwise.shape == (2, 5)
    assert out.framewise.shape == (2, 201 // 4, 5)
    assert out.frame_hop == pytest.approx(0.04)
    assert out.embedding.shape == (2, 16)
    assert (out.attention is not None) == (pooling == "attention")
    assert torch.all((out.clipwise >= 0) & (out.clipwise <= 1))
    assert torch.all((out.framewise >= 0) & (out.framewise <= 1))


def test_logmel_input_matches_waveform_input():
    model = tiny().eval()
    wave = torch.randn(2, SR)
    with torch.no_grad():
        a = model(wave)
        b = model(model.frontend(wave))  # cached log-mel (B, frames, n_mels)
    assert torch.allclose(a.clipwise, b.clipwise, atol=1e-5)
    assert torch.allclose(a.framewise, b.framewise, atol=1e-5)


def test_eval_is_deterministic_and_train_mode_augments():
    model = tiny(spec_augment=True, dropout=0.0, freq_mask=20, time_mask=30)
    wave = torch.randn(2, SR)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(wave).clipwise, model(wave).clipwise)
    spec = torch.randn(4, 1, 64, 100)
    aug = SpecAugment(freq_mask=20, time_mask=30, num_freq_masks=2, num_time_masks=2)
    aug.eval()
    assert torch.equal(aug(spec), spec)
    aug.train()
    torch.manual_seed(1)
    masked = aug(spec)
    assert (masked == 0).any() and not torch.equal(masked, spec)


def test_gradients_flow_through_front_end_model():
    model = tiny().train()
    out = model(torch.randn(3, SR))
    torch.nn.functional.binary_cross_entropy(out.clipwise, torch.ones_like(out.clipwise)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_bad_inputs():
    model = tiny().eval()
    with pytest.raises(AvtagError, match="waveform"):
        model(torch.randn(1, 10, 40))  # wrong mel count
    with pytest.raises(AvtagError, match="too short"):
        model(torch.randn(1, 100))  # shorter than half the STFT window
    with pytest.raises(AvtagError, match="too short"):
        model(torch.randn(1, 2, 64))  # 2 log-mel frames, time pooling needs 4


def test_config_validation():
    with pytest.raises(AvtagError, match="one entry per conv block"):
        AudioModelConfig.from_dict({"channels": [8, 8], "freq_pool": [2], "time_pool": [1, 1]})
    with pytest.raises(AvtagError, match="conv"):
        AudioModelConfig.from_dict({"conv": "transformer"})
    with pytest.raises(AvtagError, match="down to nothing"):
        AudioTagger(3, LogMelConfig(n_mels=16), AudioModelConfig(channels=(4, 4), freq_pool=(4, 8), time_pool=(1, 1)))
    cfg = AudioModelConfig.from_dict({"channels": [4, 8], "freq_pool": [2, 2], "time_pool": [1, 2], "name": "x"})
    assert cfg.channels == (4, 8) and cfg.to_dict()["channels"] == [4, 8]


CRNN_CONFIGS = [p for p in sorted((REPO / "configs" / "model").glob("*.yaml"))
                if (load_config(p).get("model") or {}).get("backbone", "crnn") == "crnn"]


def test_backbone_selection():
    with pytest.raises(AvtagError, match="model.backbone"):
        build_audio_model({"model": {"backbone": "resnet"}}, 3)
    assert type(build_audio_model({"model": {"backbone": "crnn"}}, 3)) is AudioTagger


def test_output_prior_initialisation():
    model = tiny(output_prior=0.1)
    assert torch.allclose(model.backbone.classifier.bias, torch.full((5,), -2.1972), atol=1e-3)
    with pytest.raises(AvtagError, match="output_prior"):
        AudioModelConfig.from_dict({"output_prior": 1.5})


@pytest.mark.parametrize("path", CRNN_CONFIGS, ids=lambda p: p.name)
def test_shipped_model_configs_build(path):
    cfg = load_config(path)
    cfg["audio"] = load_config(REPO / "configs" / "features" / "logmel64.yaml")["audio"]
    model = build_audio_model(cfg, 17).eval()
    with torch.no_grad():
        out = model(torch.randn(1, SR))
    assert out.clipwise.shape == (1, 17)
    assert out.frame_hop == pytest.approx(0.04)  # 10 ms log-mel hop, time pooled 4x
