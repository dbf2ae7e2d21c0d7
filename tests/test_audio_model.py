"""Audio branch: shapes of every variant, front end inside the model, SpecAugment in
training only, configs in configs/model/, input errors."""
from pathlib import Path

import pytest
import torch

from avtag import AvtagError
from avtag.config import CHOICES, ConfigError, CRNNConfig, LogMelConfig, ModelConfig, load_config
from avtag.models.audio import BACKBONES, FRONTENDS, AudioModel, build_audio_model
from avtag.models.frontends import SpecAugment
from avtag.models.pooling import POOLINGS
from avtag.models.types import TaggerOutput

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TINY = dict(channels=[4, 8], freq_pool=[4, 4], time_pool=[2, 2], rnn_hidden=8, kernel_size=3)
CRNN_KEYS = set(CRNNConfig.__dataclass_fields__)


def tiny(pooling="attention", conv="plain", **kw) -> AudioModel:
    torch.manual_seed(0)
    crnn = CRNNConfig(conv=conv, **{**TINY, **{k: v for k, v in kw.items() if k in CRNN_KEYS}})
    model = ModelConfig(pooling=pooling, crnn=crnn, **{k: v for k, v in kw.items() if k not in CRNN_KEYS})
    return AudioModel(list("abcde"), LogMelConfig(), model)


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
        b = model(model.frontend.spectrogram(wave))  # cached log-mel (B, frames, n_mels)
    assert torch.allclose(a.clipwise, b.clipwise, atol=1e-5)
    assert torch.allclose(a.framewise, b.framewise, atol=1e-5)


def test_eval_is_deterministic_and_train_mode_augments():
    model = tiny(spec_augment=True, dropout=0.0, freq_mask=20, time_mask=30)
    wave = torch.randn(2, SR)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(wave).clipwise, model(wave).clipwise)
    spec = torch.randn(4, 1, 100, 64)  # (batch, channels, frames, mel bins)
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
    with pytest.raises(ConfigError, match="one entry per conv block"):
        load_config(None, ["model.crnn.channels=[8,8]", "model.crnn.freq_pool=[2]", "model.crnn.time_pool=[1,1]"])
    with pytest.raises(ConfigError, match="conv"):
        load_config(None, ["model.crnn.conv=transformer"])
    with pytest.raises(AvtagError, match="down to nothing"):
        AudioModel("abc", LogMelConfig(n_mels=16), ModelConfig(crnn=CRNNConfig(channels=[4, 4], freq_pool=[4, 8],
                                                                                time_pool=[1, 1])))
    cfg = load_config(None, ["model.crnn.channels=[4,8]", "model.crnn.freq_pool=[2,2]", "model.crnn.time_pool=[1,2]"])
    assert cfg.model.crnn.channels == [4, 8]


CRNN_CONFIGS = [p for p in sorted((REPO / "configs" / "model").glob("*.yaml"))
                if load_config(p).model.backbone == "crnn"]


def test_registry_matches_the_schema_choices():
    """Every backbone / front end / pooling name the config accepts builds, and nothing else."""
    assert set(BACKBONES) == set(CHOICES["model.backbone"])
    assert set(FRONTENDS) == set(CHOICES["model.frontend"])
    assert set(POOLINGS) == set(CHOICES["model.pooling"])
    with pytest.raises(ConfigError, match="model.backbone"):
        load_config(None, ["model.backbone=resnet"])
    assert type(build_audio_model(ModelConfig(backbone="crnn"), LogMelConfig(), "abc").backbone).__name__ == "CRNN"


def test_output_prior_initialisation():
    model = tiny(output_prior=0.1)
    assert torch.allclose(model.backbone.classifier.bias, torch.full((5,), -2.1972), atol=1e-3)
    with pytest.raises(ConfigError, match="output_prior"):
        load_config(None, ["model.output_prior=1.5"])


@pytest.mark.parametrize("path", CRNN_CONFIGS, ids=lambda p: p.name)
def test_shipped_model_configs_build(path):
    cfg = load_config(path)
    model = build_audio_model(cfg.model, cfg.audio, [f"c{i}" for i in range(17)]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, SR))
    assert out.clipwise.shape == (1, 17)
    assert out.frame_hop == pytest.approx(0.04)  # 10 ms log-mel hop, time pooled 4x
