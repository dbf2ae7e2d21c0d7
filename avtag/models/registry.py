"""The registry of packaged audio-model weights, known without loading them (and without torch).

Packaged weights follow torchvision's ``Weights`` idea: a :class:`Weights` entry in
:data:`WEIGHTS` carries the file (package data under ``avtag/resources/models/``, so a wheel
has it), its sha256, classes, sample rate, front-end settings, licence and model card;
``Weights.load()`` checks the hash and builds the model (:mod:`avtag.models.weights`, torch).
This module imports nothing heavy, so the ONNX Runtime tagger can name a packaged model's
export without importing torch.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from avtag import AvtagError


class CheckpointError(AvtagError):
    """A checkpoint that is missing, corrupt, not an avtag audio model, or has unusable weights."""


@dataclass(frozen=True)
class Weights:
    """Packaged weights and what is known about them without loading the file.

    Attributes:
        name: registry key (``avtag tag --model NAME``, ``Tagger.from_pretrained(NAME)``).
        file: file name under ``avtag/resources/models/``.
        sha256: hex digest of the file.
        classes: output classes, in order.
        sample_rate: Hz of the waveform input.
        frontend: front-end settings (log-mel window, hop, bands).
        backbone: the architecture, in words.
        licence: the weights' licence (consistent with the training data).
        card: the model card's file name under ``avtag/resources/models/``.
        speech_detector: ``model.speech_detector`` the weights are used with (``none``, ``silero_vad``:
            :mod:`avtag.models.speech`); it overrides the value in the file's config.
        class_prior: ``model.class_prior`` the weights are used with (``training``, ``audioset``:
            :mod:`avtag.models.class_prior`; the file stores the priors); it overrides the file's config.
    """

    name: str
    file: str
    sha256: str
    classes: tuple[str, ...]
    sample_rate: int
    frontend: dict
    backbone: str
    licence: str
    card: str
    speech_detector: str = "none"
    class_prior: str = "training"

    @property
    def path(self) -> Path:
        """The file inside the installed package."""
        return Path(str(resources.files("avtag.resources") / "models" / self.file))

    @property
    def card_path(self) -> Path:
        return Path(str(resources.files("avtag.resources") / "models" / self.card))

    def verify(self) -> Path:
        """The file's path after checking it exists and its sha256.

        Raises:
            CheckpointError: missing from the installation, or not the file the registry describes.
        """
        path = self.path
        if not path.is_file():
            raise CheckpointError(f"{path}: packaged weights {self.name!r} are missing from this installation")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise CheckpointError(f"{path}: sha256 {digest[:12]}... differs from the registry's {self.sha256[:12]}... "
                                  "(damaged or replaced file)")
        return path

    def load(self, device="cpu"):
        """The :class:`~avtag.models.audio.AudioModel`, on ``device`` (a name or ``torch.device``), in
        eval mode, with the registry's ``speech_detector`` and ``class_prior``. Raises CheckpointError
        (see :meth:`verify`)."""
        import dataclasses

        from avtag.models.weights import load_audio_model

        model = load_audio_model(self.verify(), device)
        model.model_config = dataclasses.replace(model.model_config, speech_detector=self.speech_detector,
                                                 class_prior=self.class_prior)
        model.config = dataclasses.replace(model.config, model=model.model_config)
        return model


WEIGHTS: dict[str, Weights] = {
    "default": Weights(
        name="default", file="default_audio.ckpt",
        sha256="889c0d21c6f1b62294120726a29da8472bee5d24b8cd43a05910a5235f3b14c4",
        classes=(
            "Animal", "Domestic animals, pets", "Livestock, farm animals, working animals", "Wild animals",
            "Bird", "Cat", "Cattle, bovinae", "Dog", "Fowl", "Horse", "Insect", "Sheep",
            "Bird vocalization, bird call, bird song", "Chicken, rooster", "Owl", "Music",
            "Musical instrument", "Bowed string instrument", "Brass instrument", "Keyboard (musical)",
            "Percussion", "Plucked string instrument", "Cymbal", "Drum", "Drum kit", "Guitar", "Bass drum",
            "Crash cymbal", "Drum machine", "Hi-hat", "Snare drum", "Hands", "Human group actions", "Applause",
            "Crowd", "Hubbub, speech noise, speech babble", "Walk, footsteps", "Human voice", "Laughter",
            "Speech", "Fire", "Water", "Rain", "Wind", "Alarm", "Domestic sounds, home sounds", "Door",
            "Engine", "Liquid", "Mechanisms", "Tools", "Vehicle", "Aircraft", "Motor vehicle (road)",
            "Rail transport", "Aircraft engine", "Car", "Fixed-wing aircraft, airplane", "Train", "Jet engine",
            "Generic impact sounds",
        ),
        sample_rate=16000,
        frontend={"kind": "logmel", "n_fft": 1024, "hop_length": 320, "n_mels": 64, "f_min": 50.0, "f_max": 8000.0},
        backbone="EfficientNet-Lite0 (ImageNet), blocks 13-16 fine-tuned (frozen-prefix cache), attention MIL pooling",
        licence="share-alike: GPL-2.0-or-later and CC BY-SA 3.0 (trained on GPL-2/2+/3, CC BY-SA 3.0/4.0, CC BY, MIT "
                "and CC0 recordings of Debian, PyPI and npm packages; see the model card)",
        card="default_model.md",
        speech_detector="silero_vad",
        class_prior="audioset",
    ),
    "v1": Weights(
        name="v1", file="default_audio_v1.ckpt",
        sha256="e09862288124752a92d8275c11417460752f1674a2a392d8536b583f8f4bcb1f",
        classes=("Speech", "Music", "Animal", "Bird vocalization, bird call, bird song", "Vehicle", "Jet engine",
                 "Water", "Gurgling", "Alarm", "Mechanisms", "Tools", "Generic impact sounds", "Smash, crash"),
        sample_rate=16000,
        frontend={"kind": "logmel", "n_fft": 1024, "hop_length": 320, "n_mels": 64, "f_min": 50.0, "f_max": 8000.0},
        backbone="EfficientNet-Lite0 (ImageNet), blocks 9-16 fine-tuned, attention MIL pooling",
        licence="CC BY 4.0 (trained on CC0, CC BY 3.0/4.0 and public-domain recordings; credits in its model card)",
        card="default_model_v1.md",
    ),
}


def get_weights(name: str) -> Weights:
    """The registry entry ``name``.

    Raises:
        CheckpointError: unknown name (with the closest known one).
    """
    if name in WEIGHTS:
        return WEIGHTS[name]
    close = difflib.get_close_matches(name, list(WEIGHTS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise CheckpointError(f"unknown packaged model {name!r}{hint}; known: {', '.join(WEIGHTS)}")
