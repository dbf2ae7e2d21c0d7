"""The speech detector of the audio branch (avtag/models/speech.py): Silero VAD joined to Speech.

Checked against the silero-vad package's own streaming model on a real LibriSpeech recording, on
real non-speech recordings, and end to end: the default model on a real clip of a woman reading in
a room, through both engines, the Python API, ``avtag tag`` and ``avtag evaluate``'s inference.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from avtag.config import AvtagConfig, ConfigError, load_config
from avtag.io.media import load_clip
from avtag.models.speech import SileroSpeechDetector, SpeechDetectorError, SpeechExpert, speech_expert

REPO = Path(__file__).resolve().parents[1]
READER = "0lFf-HP86Q0.mp4"  # a woman reading aloud in a room (../shared/clips)


def _wave(*parts: str, seconds: float | None = None) -> np.ndarray:
    clip = load_clip(shared_path(*parts), video=False, sample_rate=16000, end=seconds)
    return clip.waveform.astype(np.float32)


@pytest.fixture(scope="module")
def detector() -> SileroSpeechDetector:
    return SileroSpeechDetector()


def test_probabilities_match_the_silero_package(tmp_path, detector):
    """Chunk by chunk the same as the package's streaming model (its ``audio_forward``), run in a
    child process because importing silero_vad sets torch's thread count for the whole process."""
    wave = _wave("sounds", "198-209-0000.ogg")
    np.save(tmp_path / "wave.npy", wave)
    code = ("import sys, numpy as np, torch; from silero_vad import load_silero_vad; "
            "w = torch.from_numpy(np.load(sys.argv[1])); m = load_silero_vad(); "
            "np.save(sys.argv[2], m.audio_forward(w[None], 16000)[0].numpy())")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "wave.npy"), str(tmp_path / "ref.npy")],
                   check=True, timeout=120)
    reference = np.load(tmp_path / "ref.npy")
    ours = detector.probabilities(wave)
    assert ours.shape == reference.shape == (int(np.ceil(len(wave) / 512)),)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert detector.clip_score(ours[None])[0] > 0.9  # an audiobook reader


ORCHESTRA = "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg"


@pytest.mark.parametrize("name", ["osfx_59.wav", "osfx_52.wav", "admiralbob77_-_Choice_-_Drum-bass.ogg", ORCHESTRA,
                                  "dog.wav"])
def test_real_non_speech_recordings_score_low(detector, name):
    """Jet engine, wind, two instrumentals, a dog: no 250 ms of speech. (A song and a jazz piece of
    ../shared/sounds do score over 0.5: sung voice is speech-like to the detector; see the model card.)"""
    probs = detector(_wave("sounds", name, seconds=10.0))
    assert detector.clip_score(probs)[0] < 0.5


def test_silence_and_noise_score_low_and_lengths_follow_the_input(detector):
    rng = np.random.default_rng(0)
    waves = np.stack([np.zeros(16000, np.float32), (0.1 * rng.standard_normal(16000)).astype(np.float32)])
    probs = detector(waves)
    assert probs.shape == (2, 32)  # 16000 samples: 31.25 chunks of 512, the last zero-padded
    assert (detector.clip_score(probs) < 0.2).all()
    assert detector.probabilities(np.zeros(0, np.float32)).shape == (0,)


def test_clip_score_asks_for_250_ms_of_continuous_speech(detector):
    click = np.zeros((1, 100), np.float32)
    click[0, 40] = 1.0  # one 32 ms chunk
    run = np.zeros((1, 100), np.float32)
    run[0, 40:48] = 0.9  # 8 chunks: 256 ms
    assert detector.clip_score(click)[0] == 0.0
    assert detector.clip_score(run)[0] == pytest.approx(0.9)
    assert detector.clip_score(np.full((1, 3), 0.7, np.float32))[0] == pytest.approx(0.7)  # shorter than a window


def test_expert_raises_speech_and_its_ancestors_only():
    classes = ("Speech", "Human voice", "Music", "Hubbub, speech noise, speech babble", "Human sounds")
    wave = _wave("clips", READER)[None]
    clipwise = np.array([[0.1, 0.2, 0.3, 0.9, np.nan]], np.float32)
    framewise = np.tile(clipwise[:, None, :], (1, 501, 1))
    expert = SpeechExpert(classes, 16000, unknown=("Human sounds",))
    joined, frames = expert(wave, clipwise, framewise, 0.02)
    assert joined[0, 0] > 0.9 and joined[0, 1] == joined[0, 0]
    np.testing.assert_array_equal(joined[0, 2:4], clipwise[0, 2:4])  # Music and babble untouched
    assert np.isnan(joined[0, 4])  # a class the audio model does not score stays unscored
    assert frames.shape == framewise.shape and np.isnan(clipwise[0, 4])  # inputs not changed
    speaking = frames[0, :, 0]
    assert speaking.max() > 0.9 and (speaking >= 0.1).all() and (speaking < 0.5).any()  # pauses stay low
    np.testing.assert_array_equal(frames[0, :, 2], framewise[0, :, 2])


def test_expert_refuses_what_it_cannot_run(monkeypatch):
    with pytest.raises(SpeechDetectorError, match="16000 Hz"):
        SpeechExpert(("Speech",), 32000)
    with pytest.raises(SpeechDetectorError, match="unknown speech detector"):
        speech_expert("webrtc", ("Speech",), 16000)
    assert speech_expert("silero_vad", ("Music", "Dog"), 16000) is None  # nothing to join it to
    assert speech_expert("none", ("Speech",), 16000) is None
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(SpeechDetectorError, match="pip install silero-vad"):
        SileroSpeechDetector()


@pytest.mark.parametrize("text, problem", [
    ("model:\n  speech_detector: vad\n", "model.speech_detector: 'vad' is not one of none, silero_vad"),
    ("model:\n  speech_detector: silero_vad\naudio:\n  sample_rate: 32000\n",
     "needs audio.sample_rate 16000, got 32000"),
])
def test_config_refuses_detectors_that_cannot_run(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_default_model_config_names_the_detector():
    assert load_config(REPO / "configs" / "default_model.yaml").model.speech_detector == "silero_vad"


def _speech_scores(fast: bool, on: bool) -> dict:
    from avtag.inference.tagger import Tagger

    config = AvtagConfig()
    # at the training prior: the detector's effect alone (AudioSet's prior raises Speech too)
    tag = dataclasses.replace(config.tag, speech_detector=on, class_prior="training")
    config = dataclasses.replace(config, tag=tag)
    with Tagger.from_pretrained("default", config=config, fast=fast, device="cpu", use_video=False) as tagger:
        assert tagger.engine.joins_speech == on
        result = tagger.tag_file(shared_path("clips", READER), top_k=0, threshold=0.0)
    return {c: result.scores[c].audio_score for c in ("Speech", "Human voice", "Music")}


def test_default_model_hears_the_reader_as_speech_on_both_engines():
    """The network alone scores a woman reading in a room below 0.5 as Speech; with its detector, above."""
    onnx_on, torch_on = _speech_scores(True, True), _speech_scores(False, True)
    onnx_off, torch_off = _speech_scores(True, False), _speech_scores(False, False)
    assert onnx_off["Speech"] < 0.5 < onnx_on["Speech"] and onnx_on["Human voice"] >= onnx_on["Speech"]
    assert onnx_on["Music"] == pytest.approx(onnx_off["Music"], abs=1e-6)
    for a, b in ((onnx_on, torch_on), (onnx_off, torch_off)):
        for c in a:
            assert a[c] == pytest.approx(b[c], abs=1e-4)


def test_avtag_tag_no_speech_detector_flag(tmp_path):
    clip = shared_path("clips", READER)

    def speech(*flags: str) -> float:
        out = subprocess.run([sys.executable, "-m", "avtag", "tag", "--only", "audio", "--format", "json",
                              "--top-k", "0", "--threshold", "0", "--no-progress", "--class-prior", "training",
                              *flags, str(clip)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        tags = json.loads(out.stdout.splitlines()[0])["tags"]
        return next(t["score"] for t in tags if t["label"] == "Speech")

    assert speech("--no-speech-detector") < 0.5 < speech()


class _Cache:
    """The three reads :func:`branch_scores` makes of a feature cache, over real waveforms."""

    def __init__(self, waves: dict[str, np.ndarray]) -> None:
        self.waves = waves

    def waveform(self, name: str) -> np.ndarray:
        return self.waves[name]

    def entry(self, name: str) -> dict:
        return {"samples": len(self.waves[name])}

    def video_logits(self, name: str):
        return None


def test_evaluate_inference_joins_the_detector():
    from avtag.evaluation.inference import branch_scores
    from avtag.models.tagger import AudioVisualTagger
    from avtag.models.weights import get_weights

    model = get_weights("default").load()
    model.model_config = dataclasses.replace(model.model_config, class_prior="training")
    cache = _Cache({"reader": _wave("clips", READER, seconds=10.0), "dog": _wave("sounds", "dog.wav", seconds=10.0)})
    with_detector = branch_scores(AudioVisualTagger(model.classes, model).eval(), cache, ["reader", "dog"],
                                  160000, progress=False)
    model.model_config = dataclasses.replace(model.model_config, speech_detector="none")
    alone = branch_scores(AudioVisualTagger(model.classes, model).eval(), cache, ["reader", "dog"], 160000,
                          progress=False)
    speech = model.classes.index("Speech")
    assert alone[0][0, speech] < 0.5 < with_detector[0][0, speech]
    assert with_detector[0][1, speech] < 0.5  # the dog recording: no speech
    others = [i for i, c in enumerate(model.classes) if c not in ("Speech", "Human voice")]
    np.testing.assert_allclose(with_detector[0][:, others], alone[0][:, others])
    assert with_detector[1].shape == alone[1].shape
