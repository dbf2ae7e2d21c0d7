"""Learnt raw-waveform front ends (``waveform``, ``wavegram_logmel``) and the multi-level ``waveform_cnn``
backbone: shapes and frame hops of every front end x backbone, gradients into the 1D stem, multi-level
pooling, input and config errors, model files, shipped configs, and learning a generated task."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avtag import AvtagError
from avtag.config import CHOICES, ConfigError, LogMelConfig, ModelConfig, load_config
from avtag.config.schema import CRNNConfig, EfficientNetConfig, WaveformCNNConfig, WaveformConfig
from avtag.labels import DCASE2017
from avtag.models.audio import BACKBONES, FRONTENDS, AudioModel, _repeat_frames
from avtag.models.frontends import AudioInputError

REPO = Path(__file__).resolve().parents[1]
SR = 16000
C = 5
#: small but complete settings: 1D stride 5 * 4 * 8 = 160 samples (10 ms, the default log-mel hop), 64 bins
WAVE = WaveformConfig(stem_channels=8, channels=[8, 64], pools=[4, 8])
WCNN = WaveformCNNConfig(channels=[8, 8, 16], freq_pool=[2, 2, 2], time_pool=[2, 2, 2], levels=[1, 2, 3], head_dim=16)
CRNN = CRNNConfig(channels=[4, 8], freq_pool=[4, 4], time_pool=[2, 2], rnn_hidden=8, kernel_size=3)
EFFNET = EfficientNetConfig(pretrained=False, head_dim=32)


def model(frontend: str = "waveform", backbone: str = "waveform_cnn", audio: LogMelConfig | None = None,
          **kw) -> AudioModel:
    torch.manual_seed(0)
    cfg = ModelConfig(frontend=frontend, backbone=backbone, waveform=kw.pop("waveform", WAVE),
                      waveform_cnn=kw.pop("waveform_cnn", WCNN), crnn=CRNN, efficientnet=EFFNET, **kw)
    return AudioModel(list("abcde"), audio or LogMelConfig(), cfg)


def test_registry_and_choices_name_the_new_pieces():
    assert {"waveform", "wavegram_logmel", "logmel"} == set(FRONTENDS) == set(CHOICES["model.frontend"])
    assert "waveform_cnn" in BACKBONES and set(BACKBONES) == set(CHOICES["model.backbone"])
    cfg = load_config(None, ["model.frontend=waveform", "model.backbone=waveform_cnn", "model.waveform.pools=[4,4,4]"])
    assert cfg.model.waveform.pools == [4, 4, 4] and cfg.model.waveform_cnn.levels == [2, 3, 4]
    with pytest.raises(ConfigError, match="model.frontend.*did you mean 'waveform'"):
        load_config(None, ["model.frontend=wavefrom"])


@pytest.mark.parametrize("backbone", ["crnn", "waveform_cnn", "efficientnet_lite0"])
@pytest.mark.parametrize("frontend", ["logmel", "waveform", "wavegram_logmel"])
def test_shapes_and_frame_hop_of_every_combination(frontend, backbone):
    m = model(frontend, backbone).eval()
    samples = 2 * SR + 37  # not a multiple of the hop
    with torch.no_grad():
        image = m.image(torch.randn(2, samples))
        out = m(0.1 * torch.randn(2, samples))
    frames = samples // 160 + 1  # centred frames every 10 ms, as the log-mel
    assert image.shape == (2, 2 if frontend == "wavegram_logmel" else 1, frames, 64)
    assert m.frontend.frame_hop == pytest.approx(0.01)
    stride = {"crnn": 4, "waveform_cnn": 2, "efficientnet_lite0": 32}[backbone]
    assert m.backbone.time_stride == stride and m.frame_hop == pytest.approx(0.01 * stride)
    assert out.frame_hop == pytest.approx(m.frame_hop)
    if backbone != "efficientnet_lite0":  # the EfficientNet's static "same" padding rounds differently
        assert out.framewise.shape == (2, frames // stride, C)
    assert out.clipwise.shape == (2, C) and out.attention.shape == out.framewise.shape
    assert out.embedding.shape == (2, m.embedding_dim)
    for x in (out.clipwise, out.framewise):
        assert torch.all((x >= 0) & (x <= 1))


def test_wavegram_frames_line_up_with_the_log_mel():
    """Both channels have the log-mel's frame count and centres; a click lands in the same frame of both."""
    m = model("wavegram_logmel").eval()
    silence, click = torch.zeros(1, SR), torch.zeros(1, SR)
    click[0, 8000] = 1.0  # at 0.5 s: log-mel frame 50 (centred on sample 50 * 160)
    with torch.no_grad():
        mel = m.frontend.logmel.logmel(click)[0]  # (frames, n_mels)
        gram = m.frontend.wavegram.wavegram(click)[0]  # (frames, bins), before the batch norm
        change = (gram - m.frontend.wavegram.wavegram(silence)[0]).abs().sum(dim=1)
    assert mel.shape == gram.shape == (SR // 160 + 1, 64)
    assert int(mel.mean(dim=1).argmax()) == 50
    assert int(change.argmax()) in (49, 50, 51) and change[:46].max() < 1e-6 and change[55:].max() < 1e-6


@pytest.mark.parametrize("frontend", ["waveform", "wavegram_logmel"])
def test_gradients_reach_the_1d_stem(frontend):
    m = model(frontend).train()
    out = m(0.1 * torch.randn(3, SR))
    torch.nn.functional.binary_cross_entropy(out.clipwise, torch.ones_like(out.clipwise)).backward()
    stem = m.frontend.stem[0] if frontend == "waveform" else m.frontend.wavegram.stem[0]
    assert stem.weight.grad is not None and float(stem.weight.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_multi_level_pooling_combines_the_levels():
    m = model().eval()
    assert len(m.level_pooling) == 2 and m.backbone.level_strides == (8, 4, 2)
    x = 0.1 * torch.randn(2, SR)
    with torch.no_grad():
        out = m(x)
        levels = m.backbone(m.image(x))
    assert [fw.shape[1] for fw, _ in levels] == [12, 25, 50]  # 101 frames // 8, // 4, // 2
    pooled = [p(fw, f) for (fw, f), p in zip(levels, [m.pooling, *m.level_pooling])]
    for clipwise, weights in pooled:
        assert clipwise.shape == (2, C) and torch.all((clipwise >= 0) & (clipwise <= 1))
        assert torch.allclose(weights.sum(dim=1), torch.ones(2, C), atol=1e-5)
    assert torch.allclose(out.clipwise, torch.stack([c for c, _ in pooled]).mean(dim=0), atol=1e-6)
    # frame-wise: the levels on the finest grid (50 frames of 20 ms), averaged
    expected = torch.stack([_repeat_frames(fw, 4 // 2 ** i, 50) for i, (fw, _) in enumerate(levels)]).mean(dim=0)
    assert out.framewise.shape == (2, 50, C) and torch.allclose(out.framewise, expected)
    assert torch.allclose(out.attention.sum(dim=1), torch.ones(2, C), atol=1e-5)
    assert torch.allclose(out.embedding, levels[0][1].mean(dim=1))  # the deepest level's features


def test_repeat_frames_keeps_each_coarse_frame_on_its_own_span():
    coarse = torch.arange(3.0).reshape(1, 3, 1)
    assert _repeat_frames(coarse, 4, 13)[0, :, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [2]
    assert _repeat_frames(coarse, 4, 10)[0, :, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 2


def test_single_level_backbones_keep_their_state_dict_keys():
    crnn = model("logmel", "crnn")
    assert len(crnn.level_pooling) == 0 and not any("level_pooling" in k for k in crnn.state_dict())
    one = model(waveform_cnn=WaveformCNNConfig(channels=[8, 16], freq_pool=[2, 2], time_pool=[2, 2], levels=[2],
                                               head_dim=16))
    assert len(one.level_pooling) == 0 and one.backbone.time_stride == 4
    with torch.no_grad():
        assert one.eval()(0.1 * torch.randn(1, SR)).framewise.shape == (1, 25, C)


def test_wrong_inputs_and_settings_are_one_line_errors():
    for frontend in ("waveform", "wavegram_logmel"):
        m = model(frontend).eval()
        with pytest.raises(AudioInputError, match="takes a waveform .batch, samples.; got shape .2, 100, 64.") as err:
            m(torch.randn(2, 100, 64))  # a cached log-mel
        assert "\n" not in str(err.value)
        with pytest.raises(AudioInputError, match="too short"):
            m(torch.randn(1, 400))  # 3 frames; the deepest level needs 8
    with torch.no_grad():
        assert model().eval()(torch.randn(SR)).clipwise.shape == (1, C)  # (samples,) gains a batch axis
    cases = [
        (dict(frontend="wavegram_logmel", waveform=WaveformConfig(channels=[8, 32], pools=[4, 8])), "n_mels is 64"),
        (dict(frontend="wavegram_logmel", waveform=WaveformConfig(channels=[8, 64], pools=[4, 4])),
         "hop_length is 160"),
        (dict(waveform=WaveformConfig(channels=[8, 64], pools=[4])), "one entry per block"),
        (dict(waveform_cnn=WaveformCNNConfig(levels=[2, 3])), "including the last"),
        (dict(waveform_cnn=WaveformCNNConfig(freq_pool=[4, 4, 4, 4])), "down to nothing"),
    ]
    for kw, message in cases:
        with pytest.raises(AvtagError, match=message) as err:
            model(**kw)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("frontend", ["waveform", "wavegram_logmel"])
def test_model_file_round_trip(tmp_path, frontend):
    from avtag.models.weights import load_audio_model, save_audio_model

    config = load_config(None, ["data.classes=[a,b,c,d,e]", f"model.frontend={frontend}", "model.backbone=waveform_cnn",
                                "model.waveform.pools=[4,4,2]", "model.waveform_cnn.channels=[8,8,8,16]"])
    m = AudioModel(config.data.classes, config.audio, config.model)
    m.train()
    m(0.1 * torch.randn(4, SR))  # move the batch-norm statistics away from their initial values
    m.eval()
    loaded = load_audio_model(save_audio_model(m.state_dict(), config, tmp_path / "m.pt"))
    assert type(loaded.frontend) is type(m.frontend) and loaded.classes == tuple("abcde")
    x = 0.1 * torch.randn(2, SR)
    with torch.no_grad():
        a, b = m(x), loaded(x)
    assert torch.allclose(a.clipwise, b.clipwise, atol=1e-6) and torch.allclose(a.framewise, b.framewise, atol=1e-6)


@pytest.mark.parametrize("name", ["waveform_cnn.yaml", "wavegram_logmel_cnn.yaml"])
def test_shipped_configs_build(name):
    cfg = load_config(REPO / "configs" / "model" / name)
    m = AudioModel([f"c{i}" for i in range(13)], cfg.audio, cfg.model).eval()
    with torch.no_grad():
        out = m(0.1 * torch.randn(1, 10 * SR))
    assert m.frontend.frame_hop == pytest.approx(0.02)  # 320 samples
    assert out.clipwise.shape == (1, 13) and out.framewise.shape == (1, 501 // 4, 13)
    assert out.frame_hop == pytest.approx(0.08)
    assert sum(p.numel() for p in m.parameters()) < 1_000_000


def tone_bursts(n: int, rng: np.random.Generator, freqs=(500.0, 1500.0, 3500.0), seconds: float = 1.0):
    """``n`` clips ``(n, samples)`` of white noise with 0.15-0.4 s tone bursts at class-specific frequencies
    (each class present with probability 0.4) and their targets ``(n, classes)``."""
    samples = int(seconds * SR)
    x = 0.05 * rng.standard_normal((n, samples))
    y = rng.random((n, len(freqs))) < 0.4
    for i, k in zip(*np.nonzero(y)):
        length = int(rng.uniform(0.15, 0.4) * SR)
        start = int(rng.integers(0, samples - length))
        t = np.arange(length) / SR
        x[i, start : start + length] += rng.uniform(0.03, 0.1) * np.sin(2 * np.pi * freqs[k] * t + rng.uniform(0, 6.3))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


@pytest.mark.slow
def test_learns_tone_bursts_from_raw_samples():
    """Which frequency is present can only be told by a learnt frequency analysis of the samples: the noise
    and the bursts' loudness are alike for every class."""
    from avtag.evaluation.metrics import average_precision

    rng = np.random.default_rng(0)
    x_train, y_train = tone_bursts(240, rng)
    x_test, y_test = tone_bursts(90, rng)
    torch.manual_seed(0)
    cfg = ModelConfig(frontend="waveform", backbone="waveform_cnn", spec_augment=False, dropout=0.0,
                      waveform=WaveformConfig(stem_channels=8, channels=[8, 16], pools=[4, 4]),
                      waveform_cnn=WaveformCNNConfig(channels=[8, 16], freq_pool=[2, 2], time_pool=[2, 2],
                                                     levels=[1, 2], head_dim=16))
    m = AudioModel(["500 Hz", "1500 Hz", "3500 Hz"], LogMelConfig(), cfg)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(8):
            m.train()
            for idx in torch.randperm(len(x_train)).split(16):
                loss = torch.nn.functional.binary_cross_entropy(m(x_train[idx]).clipwise.clamp(1e-6, 1 - 1e-6),
                                                                y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        m.eval()
        with torch.no_grad():
            scores = m(x_test).clipwise.numpy()
    finally:
        torch.set_num_threads(threads)
    truth = y_test.numpy().astype(bool)
    ap = average_precision(truth, scores).mAP
    pred = scores >= 0.5
    f1 = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    chance_ap = truth.mean()  # the AP of scores that ignore the audio
    print(f"mAP {ap:.3f} (chance {chance_ap:.3f}), micro-F1 {f1:.3f}")
    assert ap > chance_ap + 0.4 and f1 > 0.75, (ap, chance_ap, f1)


@pytest.mark.slow
def test_avtag_train_and_tag_with_the_waveform_model(tmp_path):
    """``avtag train`` with configs/model/waveform_cnn.yaml (made tiny), then ``avtag tag --checkpoint``."""
    from helpers.synthdata import make_dcase_dataset

    data = make_dcase_dataset(tmp_path / "data", n_train=24, n_test=4, seconds=4.0)
    config = data.config(tmp_path, include=[str(REPO / "configs" / "dcase2017.yaml"),
                                            str(REPO / "configs" / "model" / "waveform_cnn.yaml")])
    tiny = ["model.waveform.stem_channels=8", "model.waveform.channels=[8,16,64]",
            "model.waveform_cnn.channels=[8,8,8,16]", "training.max_epochs=2", "training.batch_size=8",
            "training.workers=0", "training.mixing.mode=mix", "training.mixing.epochs=1"]
    proc = subprocess.run([sys.executable, "-m", "avtag", "train", str(config), *tiny, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    model_path = tmp_path / "runs" / "audio_model.pt"
    assert model_path.is_file() and "frame hop 80 ms" in proc.stdout
    clip = next(iter(sorted(data.media_dirs["test"].glob("*.wav"))))
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(clip), "--checkpoint", str(model_path), "--only",
                           "audio", "--format", "json", "--top-k", "0", "--threshold", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[0])
    assert {t["label"] for t in record["tags"]} == set(DCASE2017.names)
