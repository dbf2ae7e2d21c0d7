"""The class-prior correction of the audio branch (avtag/models/class_prior.py, avtag/data/audioset_prior.py).

The shift is checked against Saerens et al.'s (2002) closed form; AudioSet's priors against the
packaged counts; the stored priors through a model file; and end to end: the default model on a real
clip of a woman reading in a room, through both engines, ``avtag tag --class-prior`` and ``avtag
evaluate``'s inference.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import shared_path

from avtag.config import AvtagConfig, ConfigError, load_config
from avtag.data.audioset_prior import AUDIOSET_TRAIN_CLIPS, audioset_counts, audioset_prior
from avtag.models.class_prior import ClassPriorError, PriorShift, prior_shift

REPO = Path(__file__).resolve().parents[1]
SKATEBOARD = "skateboarding_dog.mp4"  # excited speech, a dog on a skateboard, street noise (../shared/clips)


def saerens(p, source, target):
    """Saerens, Latinne & Decaestecker (2002) eq. 2.4 for one binary output."""
    up = target / source * p
    return up / (up + (1 - target) / (1 - source) * (1 - p))


def test_shift_is_saerens_adjustment():
    rng = np.random.default_rng(0)
    source, target = rng.uniform(0.01, 0.6, 7), rng.uniform(0.0005, 0.5, 7)
    probs = rng.uniform(0.001, 0.999, (3, 5, 7)).astype(np.float32)  # frame-wise (B, T, C)
    out = PriorShift(source, target)(probs)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, saerens(probs.astype(np.float64), source, target), rtol=1e-5)
    # a probability equal to the training prior becomes the target prior; equal priors change nothing
    np.testing.assert_allclose(PriorShift([0.5], [0.1])(np.array([[0.5]])), [[0.1]])
    np.testing.assert_allclose(PriorShift(source, source)(probs), probs, rtol=1e-5)


def test_unknown_priors_and_nan_scores_are_left_alone():
    shift = PriorShift([0.5, np.nan, 0.2], [0.1, 0.3, np.nan])
    out = shift(np.array([[0.7, 0.7, 0.7], [np.nan, 0.2, 0.2]]))
    assert out[0, 0] < 0.7 and out[0, 1] == pytest.approx(0.7) and out[0, 2] == pytest.approx(0.7)
    assert np.isnan(out[1, 0])


def test_prior_shift_checks_the_stored_priors():
    priors = {"training": [0.5, 0.2], "audioset": [0.1, None]}
    assert prior_shift("training", None, 2) is None  # as trained: nothing to do
    assert prior_shift("audioset", priors, 2).shift[1] == 0.0
    with pytest.raises(ClassPriorError, match="unknown class prior 'youtube'"):
        prior_shift("youtube", priors, 2)
    with pytest.raises(ClassPriorError, match="no stored training class priors"):
        prior_shift("audioset", {"audioset": [0.1, 0.2]}, 2)
    with pytest.raises(ClassPriorError, match="2/2 values for 3 classes"):
        prior_shift("audioset", priors, 3)


def test_audioset_priors():
    counts = audioset_counts()
    assert len(counts) == 527 and counts["Speech"] == 937432
    speech, voice, animal, dog, cymbal, crash, horn, other = audioset_prior(
        ["Speech", "Human voice", "Animal", "Dog", "Cymbal", "Crash cymbal", "Train horn", "No such class"])
    assert speech == pytest.approx(937432 / AUDIOSET_TRAIN_CLIPS)
    assert voice == speech  # not among the 527: the share of its most frequent descendant
    assert animal >= dog > 0 and 0 < crash <= cymbal  # crash cymbal: bounded by its ancestor
    assert horn == pytest.approx(counts["Train horn"] / AUDIOSET_TRAIN_CLIPS)  # a DCASE 2017 class
    assert other is None


def test_training_prior_follows_the_sampler():
    from avtag.training.datamodule import AudioDataModule

    targets = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], dtype=np.float32)
    data = SimpleNamespace(datasets={"train": SimpleNamespace(targets=targets)}, sampler="shuffle")
    np.testing.assert_allclose(AudioDataModule.class_prior(data), [1.0, 0.25])
    data.sampler = "balanced"  # the clip with the rare class is drawn 4x as often
    np.testing.assert_allclose(AudioDataModule.class_prior(data), [1.0, 4 / 7])


def test_model_file_keeps_its_priors(tmp_path):
    from avtag.models.registry import CheckpointError
    from avtag.models.weights import get_weights, load_audio_model, read_checkpoint, save_audio_model

    packaged = get_weights("default").load()
    assert set(packaged.class_priors) == {"training", "audioset"} and get_weights("default").class_prior == "audioset"
    raw = read_checkpoint(get_weights("default").path)
    priors = {"training": [0.2] * len(packaged.classes), "audioset": [None] + [0.3] * (len(packaged.classes) - 1)}
    path = save_audio_model(raw["state_dict"], packaged.config, tmp_path / "m.pt", priors)
    assert load_audio_model(path).class_priors == priors
    priors["audioset"][1] = 1.5  # not a prior: the file is refused in one line, not silently adjusted otherwise
    path = save_audio_model(raw["state_dict"], packaged.config, tmp_path / "bad.pt", priors)
    with pytest.raises(CheckpointError, match=r"bad\.pt: stored class priors 'audioset' are not"):
        load_audio_model(path)
    bare = save_audio_model(raw["state_dict"], packaged.config, tmp_path / "bare.pt")
    assert load_audio_model(bare).class_priors == {}


@pytest.mark.parametrize("text, problem", [
    ("model:\n  class_prior: youtube\n", "model.class_prior: 'youtube' is not one of training, audioset"),
    ("tag:\n  class_prior: none\n", "tag.class_prior: 'none' is not one of model, training, audioset"),
])
def test_config_refuses_unknown_priors(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def _scores(fast: bool, prior: str) -> dict:
    from avtag.inference.tagger import Tagger

    config = AvtagConfig()
    config = dataclasses.replace(config, tag=dataclasses.replace(config.tag, class_prior=prior, speech_detector=False))
    with Tagger.from_pretrained("default", config=config, fast=fast, device="cpu", use_video=False) as tagger:
        assert tagger.engine.shifts_prior == (prior != "training")
        result = tagger.tag_file(shared_path("clips", SKATEBOARD), top_k=0, threshold=0.0, segments=True)
    seconds: dict[str, float] = {}
    for e in result.segments:
        seconds[e.label] = seconds.get(e.label, 0.0) + e.offset - e.onset
    return {"scores": {c: result.scores[c].audio_score for c in result.scores}, "segments": seconds}


def test_default_model_under_audioset_prior_on_both_engines():
    """A real street clip with speech: as trained, the network hears Animal (half its training clips
    hold one) and babble; under AudioSet's prior Animal falls below 0.5 and Speech rises, and the
    babble segments go, the same on both engines."""
    runs = {(fast, prior): _scores(fast, prior) for fast in (True, False) for prior in ("model", "training")}
    shifted, trained = runs[(True, "model")]["scores"], runs[(True, "training")]["scores"]
    assert trained["Animal"] > 0.5 > shifted["Animal"]
    assert shifted["Speech"] > trained["Speech"] and shifted["Music"] < trained["Music"]
    for prior in ("model", "training"):
        a, b = runs[(True, prior)], runs[(False, prior)]
        for c in a["scores"]:
            assert a["scores"][c] == pytest.approx(b["scores"][c], abs=1e-4)
        assert a["segments"] == b["segments"]
    babble = ("Hubbub, speech noise, speech babble", "Human group actions")  # one excited speaker is not a crowd
    held = {prior: sum(runs[(True, prior)]["segments"].get(c, 0.0) for c in babble) for prior in ("model", "training")}
    assert "Hubbub, speech noise, speech babble" not in runs[(True, "model")]["segments"]
    assert held["training"] >= 3.0 and held["model"] <= held["training"] / 5, held


def _tag(tmp_path, *flags: str, checkpoint: str | None = None):
    args = ["--checkpoint", checkpoint] if checkpoint else []
    return subprocess.run([sys.executable, "-m", "avtag", "tag", "--only", "audio", "--format", "json", "--top-k", "0",
                           "--threshold", "0", "--no-progress", *args, *flags, str(shared_path("clips", SKATEBOARD))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_avtag_tag_class_prior_flag(tmp_path):
    def animal(*flags: str) -> float:
        out = _tag(tmp_path, *flags)
        assert out.returncode == 0, out.stderr
        return next(t["score"] for t in json.loads(out.stdout.splitlines()[0])["tags"] if t["label"] == "Animal")

    assert animal() == pytest.approx(animal("--class-prior", "audioset"), abs=1e-6)  # the default model's own
    assert animal() < 0.5 < animal("--class-prior", "training")


def test_a_model_without_priors_gets_one_line(tmp_path):
    from avtag.models.weights import get_weights, read_checkpoint, save_audio_model

    model = get_weights("default").load()
    bare = save_audio_model(read_checkpoint(get_weights("default").path)["state_dict"], model.config,
                            tmp_path / "bare.pt")
    out = _tag(tmp_path, "--class-prior", "audioset", checkpoint=str(bare))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "has no stored training and audioset class priors" in out.stderr.strip().splitlines()[-1]


def test_evaluate_inference_applies_the_model_prior():
    from avtag.evaluation.inference import branch_scores
    from avtag.io.media import load_clip
    from avtag.models.tagger import AudioVisualTagger
    from avtag.models.weights import get_weights

    wave = load_clip(shared_path("clips", SKATEBOARD), video=False, sample_rate=16000, end=10.0).waveform
    cache = SimpleNamespace(waveform=lambda n: wave, entry=lambda n: {"samples": len(wave)},
                            video_logits=lambda n: None)
    model = get_weights("default").load()
    shifted = branch_scores(AudioVisualTagger(model.classes, model).eval(), cache, ["clip"], 160000, progress=False)[0]
    model.model_config = dataclasses.replace(model.model_config, class_prior="training")
    trained = branch_scores(AudioVisualTagger(model.classes, model).eval(), cache, ["clip"], 160000, progress=False)[0]
    animal = model.classes.index("Animal")
    assert trained[0, animal] > 0.5 > shifted[0, animal]


def test_evaluate_and_ablate_take_the_tag_settings():
    """``avtag evaluate`` / ``ablate --class-prior training --no-speech-detector`` reach the loaded model."""
    from avtag.commands.common import audio_post_overrides
    from avtag.config.schema import TagConfig
    from avtag.models.audio_post import with_tag_settings
    from avtag.models.weights import get_weights

    model = get_weights("default").load()
    with_tag_settings(model, TagConfig())  # "model": the model's own settings
    assert (model.model_config.class_prior, model.model_config.speech_detector) == ("audioset", "silero_vad")
    with_tag_settings(model, TagConfig(class_prior="training", speech_detector=False))
    assert (model.model_config.class_prior, model.model_config.speech_detector) == ("training", "none")
    args = SimpleNamespace(class_prior="training", no_speech_detector=True)
    assert audio_post_overrides(args) == ["tag.speech_detector=false", "tag.class_prior=training"]
    for command in ("evaluate", "ablate"):
        out = subprocess.run([sys.executable, "-m", "avtag", command, "--help"], capture_output=True, text=True,
                             timeout=60)
        assert "--class-prior {training,audioset}" in out.stdout and "--no-speech-detector" in out.stdout
