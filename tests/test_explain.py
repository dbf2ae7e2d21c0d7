"""``avtag explain``: auralisation (Choi et al. 2016) checked on a model that provably hears a tone.

A tiny CRNN is trained here (seeded, ~15 s of CPU) to say whether a 1 kHz tone burst is in noise;
negatives and positives also carry distractor tones at other frequencies, so the model has to
listen at 1 kHz. On a clip with the burst at 3-5 s and a 3 kHz distractor at 6-7.5 s, the
auralised WAV must keep the 1 kHz band and the burst's time span, the residual the noise; lengths
and sample rates must match the input; ``explanation.json`` must follow its schema. The CLI runs on
a generated file with that model and on a real clip with the packaged default model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_path

from avtag.cli import main
from avtag.config import AvtagConfig
from avtag.config.schema import CRNNConfig, LogMelConfig, ModelConfig
from avtag.features.inverse import apply_mel_mask, mel_filterbank, mel_to_stft_mask, stft
from avtag.features.logmel import LogMel
from avtag.inference.explain import SCHEMA, ExplainInputError, resolve_classes
from avtag.inference.tagger import Tagger
from avtag.models.audio import AudioModel
from avtag.models.explain import ExplainError

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency (pip install -e .[test])")

SR = 16000
AUDIO = LogMelConfig(sample_rate=SR, n_fft=1024, win_length=1024, hop_length=320, n_mels=64)
MODEL = ModelConfig(backbone="crnn", pooling="attention", spec_augment=False, dropout=0.1,
                    crnn=CRNNConfig(channels=[8, 16, 16], kernel_size=3, freq_pool=[4, 2, 2], time_pool=[2, 2, 1],
                                    rnn_hidden=16))
BURST, DISTRACTOR = (3.0, 5.0), (6.0, 7.5)


def _tone(n: int, rate: int, freq: float, on: float, off: float, amp: float, rng) -> np.ndarray:
    """A sine of ``freq`` Hz from ``on`` to ``off`` s with 20 ms linear fades."""
    env = np.zeros(n)
    a, b = int(on * rate), int(off * rate)
    ramp = min(int(0.02 * rate), (b - a) // 2)
    env[a:b] = 1.0
    env[a:a + ramp], env[b - ramp:b] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
    return amp * env * np.sin(2 * np.pi * freq * np.arange(n) / rate + rng.uniform(0, 2 * np.pi))


def _training_clip(rng, positive: bool, seconds: float = 4.0) -> np.ndarray:
    n = int(SR * seconds)
    x = rng.normal(0, 10 ** rng.uniform(-2.3, -1.5), n)
    if rng.random() < 0.6:  # a distractor tone, below or above the target band
        freq = rng.uniform(250, 600) if rng.random() < 0.5 else rng.uniform(2000, 4500)
        on = rng.uniform(0, seconds - 1)
        x += _tone(n, SR, freq, on, min(seconds, on + rng.uniform(0.5, 3)), 10 ** rng.uniform(-1.6, -0.8), rng)
    if positive:
        length = rng.uniform(0.5, 3.0)
        on = rng.uniform(0, seconds - length)
        x += _tone(n, SR, rng.uniform(970, 1030), on, on + length, 10 ** rng.uniform(-1.6, -0.8), rng)
    return x.astype(np.float32)


def tone_clip(rate: int = SR, seconds: float = 8.0) -> np.ndarray:
    """Noise, the 1 kHz burst at 3-5 s and a 3 kHz distractor at 6-7.5 s."""
    rng = np.random.default_rng(5)
    n = int(rate * seconds)
    x = rng.normal(0, 0.01, n) + _tone(n, rate, 1000, *BURST, 0.05, rng) + _tone(n, rate, 3000, *DISTRACTOR, 0.05, rng)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def tone_model() -> AudioModel:
    """The tiny CRNN, trained on 256 generated 4 s clips (6 epochs, Adam, seeded, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        labels = (np.arange(256) % 2).astype(np.float32)
        waves = torch.from_numpy(np.stack([_training_clip(rng, bool(y)) for y in labels]))
        torch.manual_seed(0)
        model = AudioModel(["Tone"], AUDIO, MODEL)
        with torch.no_grad():
            specs = model.frontend.spectrogram(waves)  # the front end takes log-mels too: computed once
        targets = torch.from_numpy(labels)
        optimiser = torch.optim.Adam(model.parameters(), 1e-2)
        order = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(6):
            perm = torch.randperm(len(specs), generator=order)
            for i in range(0, len(specs), 16):
                idx = perm[i:i + 16]
                p = model(specs[idx]).clipwise[:, 0].clamp(1e-6, 1 - 1e-6)
                loss = torch.nn.functional.binary_cross_entropy(p, targets[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def tagger(tone_model) -> Tagger:
    return Tagger.from_config(AvtagConfig(), checkpoint=tone_model, use_video=False, device="cpu")


def band_ratio(x: np.ndarray, rate: int, lo: float = 800.0, hi: float = 1250.0) -> float:
    """Energy in ``lo``-``hi`` Hz over the energy of the rest of the spectrum."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = (freqs >= lo) & (freqs <= hi)
    return float(power[band].sum() / power[~band].sum())


def time_ratio(x: np.ndarray, rate: int, span=BURST) -> float:
    """Energy inside ``span`` (s) over the energy outside it."""
    inside = np.zeros(len(x), bool)
    inside[int(span[0] * rate):int(span[1] * rate)] = True
    return float((x[inside] ** 2).sum() / (x[~inside] ** 2).sum())


@pytest.mark.slow
def test_the_model_hears_the_tone(tagger):
    clip = tone_clip()
    assert tagger(clip, sample_rate=SR).scores["Tone"].audio_score > 0.9
    noise = np.random.default_rng(9).normal(0, 0.01, SR * 8).astype(np.float32) + tone_clip() * 0
    noise += _tone(len(noise), SR, 3000, *DISTRACTOR, 0.05, np.random.default_rng(1)).astype(np.float32)
    assert tagger(noise, sample_rate=SR).scores["Tone"].audio_score < 0.2


@pytest.mark.parametrize("method, band_gain, time_gain", [
    ("guided", 20.0, 20.0), ("gradcam", 1.5, 1.5),
    pytest.param("integrated", 20.0, 20.0, marks=pytest.mark.slow),  # 16 forward/backward passes
])
def test_auralisation_keeps_the_tone_and_the_residual_the_noise(tagger, tmp_path, method, band_gain, time_gain):
    clip = tone_clip()
    expl = tagger.explain(clip, SR, classes=["tone"], out=tmp_path, method=method)  # case-insensitive name
    entry = expl.to_dict()["explanations"][0]
    assert entry["target"] == "Tone" and entry["wav"] == "tone.wav"
    heard, rate = sf.read(tmp_path / entry["wav"], dtype="float32")
    residual, rate_r = sf.read(tmp_path / entry["residual_wav"], dtype="float32")
    assert rate == rate_r == SR and len(heard) == len(residual) == len(clip)
    np.testing.assert_allclose(heard + residual, clip, atol=2e-4)  # 16-bit PCM files sum to the input
    measured = {"band": (band_ratio(clip, SR), band_ratio(heard, SR)), "time": (time_ratio(clip, SR),
                                                                                 time_ratio(heard, SR))}
    print(method, measured, "energy kept", entry["energy_kept"])
    assert measured["band"][1] > band_gain * measured["band"][0]  # concentrated near 1 kHz
    assert measured["time"][1] > time_gain * measured["time"][0]  # and in 3-5 s
    # the residual carries the noise: untouched before the burst, and less 1 kHz than the input
    before = slice(0, int(2.5 * SR))
    assert (residual[before] ** 2).sum() > 0.9 * (clip[before] ** 2).sum()
    assert band_ratio(residual, SR) < band_ratio(clip, SR)


def test_native_sample_rate_and_length_are_kept(tagger, tmp_path):
    rate = 44100
    clip = tone_clip(rate, seconds=7.7)
    expl = tagger.explain(clip, rate, out=tmp_path)  # default classes: the top tags
    assert [t.target for t in expl.targets] == ["Tone"] and expl.sample_rate == rate
    heard, got = sf.read(tmp_path / "tone.wav", dtype="float32")
    assert got == rate and len(heard) == len(clip)
    assert band_ratio(heard, rate) > 20 * band_ratio(clip, rate)
    assert expl.targets[0].mask.shape == (AUDIO.num_frames(int(7.7 * SR)), AUDIO.n_mels)


def test_json_follows_its_schema_and_says_where_and_when(tagger, tmp_path):
    expl = tagger.explain(tone_clip(), SR, classes=["Tone"], units=["backbone.blocks.1.convs.0:3"], out=tmp_path)
    data = json.loads((tmp_path / "explanation.json").read_text())
    jsonschema.validate(data, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in data.items() if k != "explanations"}, SCHEMA)
    tone, unit = data["explanations"]
    assert unit["kind"] == "unit" and unit["target"] == "backbone.blocks.1.convs.0:3" and unit["score"] is None
    assert (tmp_path / unit["wav"]).is_file() and (tmp_path / data["figure"]).stat().st_size > 10_000
    strongest = tone["regions"][0]
    assert strongest["f_low"] <= 1000 <= strongest["f_high"] and strongest["f_high"] - strongest["f_low"] < 600
    assert 2.7 <= strongest["onset"] and strongest["offset"] <= 5.3
    assert any(e["onset"] < 4.0 and e["offset"] > 4.0 for e in tone["events"])  # the event covers the burst
    assert data["branches"] == {"audio": True, "video": False} and data["frames"] == []
    assert expl.targets[0].attention is not None and expl.targets[0].attention.argmax() * expl.output_hop < 5.5


def test_bad_requests_are_one_line_errors(tagger, tone_model):
    with pytest.raises(ExplainInputError, match=r"unknown class; closest: 'Tone'"):
        tagger.explain(tone_clip(), SR, classes=["Tnoe"])
    with pytest.raises(ExplainInputError, match="closest: 'Vehicle'"):
        resolve_classes(["vehicel"], ["Speech", "Vehicle", "Water"])
    with pytest.raises(ExplainError, match="did you mean 'backbone.blocks.1.convs.0'"):
        tagger.explain(tone_clip(), SR, units=["backbone.blocks.1.conv.0:1"])
    with pytest.raises(ExplainError, match="has 16 channels"):
        tagger.explain(tone_clip(), SR, units=["backbone.blocks.1.convs.0:16"])
    with pytest.raises(ExplainError, match="LAYER:INDEX"):
        tagger.explain(tone_clip(), SR, units=["backbone.blocks.1.convs.0"])
    with pytest.raises(ExplainInputError, match="audio too short"):
        tagger.explain(np.zeros(600, np.float32), SR)
    with pytest.raises(ExplainInputError, match="for method 'gradcam' only"):  # was silently ignored
        tagger.explain(tone_clip(), SR, layer="backbone.blocks.1.convs.0")
    with pytest.raises(ExplainInputError, match="NaN"):
        tagger.explain(np.full(SR, np.nan, np.float32), SR)
    for huge in ("A" * 100_000, "backbone." * 20_000):  # were quoted whole (a 100 kB 'one line')
        with pytest.raises((ExplainInputError, ExplainError)) as err:
            tagger.explain(tone_clip(), SR, classes=[huge]) if huge[0] == "A" else \
                tagger.explain(tone_clip(), SR, units=[huge + ":1"])
        assert len(str(err.value)) < 300


@pytest.mark.parametrize("flag, value", [("--start", "-5"), ("--end", "inf"), ("--start", "nan")])
def test_cli_refuses_spans_that_are_no_seconds(flag, value, capsys):
    from avtag.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["explain", "x.wav", flag, value])
    assert exit_.value.code == 2 and "expected finite seconds >= 0" in capsys.readouterr().err


def test_digital_silence_is_said(tagger):
    """A muted track (the failing-audio clip goes silent after 4.7 s) is explained with a note, not as a sound."""
    expl = tagger.explain(np.zeros(SR * 4, np.float32), SR, classes=["Tone"])
    assert any("the audio is silent" in n for n in expl.notes)
    assert not any("the audio is silent" in n for n in tagger.explain(tone_clip(), SR, classes=["Tone"]).notes)


def test_mel_mask_reaches_the_stft_bins_of_the_front_end():
    fb = mel_filterbank(AUDIO)
    torch.testing.assert_close(fb, LogMel(AUDIO).mel.mel_scale.fb)  # the front end's own filterbank
    x = torch.from_numpy(tone_clip())
    assert stft(x, AUDIO).shape[1] == LogMel(AUDIO)(x[None]).shape[1]  # STFT frame t = log-mel frame t
    mask = torch.rand(5, AUDIO.n_mels)
    bins = mel_to_stft_mask(mask, fb)
    assert bins.min() >= 0 and bins.max() <= 1  # a convex combination of the band masks
    covered = fb.sum(dim=1) > 0
    torch.testing.assert_close(mel_to_stft_mask(torch.ones(1, AUDIO.n_mels), fb)[0][covered],
                               torch.ones(int(covered.sum())))
    frames = AUDIO.num_frames(len(x))
    kept, residual = apply_mel_mask(x.numpy(), SR, np.ones((frames, AUDIO.n_mels)), AUDIO.frame_hop, AUDIO)
    assert (residual ** 2).sum() < 0.02 * (x.numpy() ** 2).sum()  # all-pass but below f_min = 50 Hz
    kept, residual = apply_mel_mask(x.numpy(), SR, np.zeros((frames, AUDIO.n_mels)), AUDIO.frame_hop, AUDIO)
    assert np.abs(kept).max() < 1e-6 and np.allclose(residual, x.numpy())


def test_cli_with_a_trained_checkpoint(tone_model, tmp_path, capsys):
    from avtag.models.weights import save_audio_model

    config = AvtagConfig()
    config.audio, config.model, config.data.classes = AUDIO, MODEL, ["Tone"]
    checkpoint = save_audio_model(tone_model.state_dict(), config, tmp_path / "tone.pt")
    wav = tmp_path / "tone clip.wav"
    sf.write(wav, tone_clip(22050), 22050)
    out = tmp_path / "explained"
    args = ["--checkpoint", str(checkpoint), "--only", "audio", "--device", "cpu"]
    assert main(["explain", str(wav), "--out", str(out), *args]) == 0
    printed = capsys.readouterr().out
    assert "Tone" in printed and "tone.wav" in printed
    heard, rate = sf.read(out / "tone.wav")
    assert rate == 22050 and len(heard) == 8 * 22050
    jsonschema.validate(json.loads((out / "explanation.json").read_text()), SCHEMA)
    assert main(["explain", str(wav), "--out", str(out), "--class", "Tnoe", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "closest: 'Tone'" in err
    assert main(["explain", str(wav), "--list-layers", *args]) == 0
    assert "backbone.blocks.0.convs.0\t8" in capsys.readouterr().out


@pytest.mark.shared
@pytest.mark.slow
def test_cli_on_a_real_clip_with_the_default_model(tmp_path, monkeypatch, capsys):
    clip = shared_path("clips", "22olCB3wQaA.mp4")  # race car: speech, then engines revving (44.1 kHz)
    monkeypatch.setenv("AVTAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "explained"
    assert main(["explain", str(clip), "--out", str(out), "--device", "cpu"]) == 0
    data = json.loads((out / "explanation.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert len(data["explanations"]) == 3 and data["branches"] == {"audio": True, "video": True}
    info = sf.info(out / data["explanations"][0]["wav"])
    assert info.samplerate == 44100 and abs(info.duration - data["duration"]) < 0.05
    for entry in data["explanations"]:
        assert (out / entry["wav"]).is_file() and (out / entry["residual_wav"]).is_file()
    assert (out / "explanation.png").stat().st_size > 50_000
    assert len(data["frames"]) >= 5 and all(f["objects"] for f in data["frames"])
    vehicle = [e for e in data["explanations"] if e["target"] == "Vehicle"]
    assert vehicle and any(o["label"] in ("racer", "sports car", "minivan") for o in vehicle[0]["objects"])


def test_waveform_gradients_reach_the_same_time_frequency_cells(tone_model):
    """The path of front ends that are not a log-mel: guided gradients with respect to the waveform,
    brought to the log-mel plane (Re(conj(STFT(g)) STFT(x)) summed over each mel triangle)."""
    from avtag.features.inverse import gradient_relevance
    from avtag.inference.explain import attribution_mask
    from avtag.models.explain import class_target, guided_backprop

    clip = tone_clip()
    wave = torch.from_numpy(clip)
    grads, _ = guided_backprop(tone_model, wave[None], [class_target(tone_model, "Tone")])
    relevance = gradient_relevance(wave, grads[0], AUDIO)
    assert relevance.shape == (AUDIO.num_frames(len(clip)), AUDIO.n_mels)
    mask = attribution_mask(relevance.numpy(), AUDIO.frame_hop)
    heard, _ = apply_mel_mask(clip, SR, mask, AUDIO.frame_hop, AUDIO)
    assert band_ratio(heard, SR) > 20 * band_ratio(clip, SR)
    assert time_ratio(heard, SR) > 20 * time_ratio(clip, SR)


@pytest.mark.parametrize("frontend", ["waveform", "wavegram_logmel"])
def test_learnt_front_ends_are_explained_through_the_waveform(frontend, tmp_path):
    from avtag.models.audio import BACKBONES, FRONTENDS

    if frontend not in FRONTENDS or "waveform_cnn" not in BACKBONES:
        pytest.skip(f"front end {frontend!r} / backbone waveform_cnn not in the registry")
    torch.manual_seed(0)
    model = AudioModel(["A", "B"], LogMelConfig(), ModelConfig(frontend=frontend, backbone="waveform_cnn")).eval()
    tagger = Tagger.from_config(AvtagConfig(), checkpoint=model, use_video=False, device="cpu")
    clip = tone_clip()[: 2 * SR]
    for method in ("guided", "gradcam"):
        expl = tagger.explain(clip, SR, out=tmp_path / method, method=method, top_k=1)
        target = expl.targets[0]
        assert target.mask.shape == (LogMelConfig().num_frames(len(clip)), LogMelConfig().n_mels)
        assert len(sf.read(tmp_path / method / target.wav)[0]) == len(clip)
        jsonschema.validate(expl.to_dict(), SCHEMA)
