"""Audio-model weights: the file format, safe loading, and the registry of packaged weights.

A model file (``audio_model.pt`` written by ``avtag train``, or a packaged one) is::

    {"format": "avtag-audio-model", "version": 2, "state_dict": {...tensors...},
     "config": {...the training config, plain dicts...}, "classes": [...names...]}

It holds only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``:
no code from the file runs. Lightning training checkpoints (``last.ckpt``, ``best-*.ckpt``:
``state_dict`` with ``model.*`` keys + ``hyper_parameters``) load the same way. Version 1 files
(avtag 0.1: flat ``model:`` config, ``input_norm.*`` / ``frontend.mel.*`` keys) are upgraded on load.

Packaged weights follow torchvision's ``Weights`` idea: a :class:`Weights` entry in
:data:`WEIGHTS` carries the file (package data under ``avtag/resources/models/``, so a wheel
has it), its sha256, classes, sample rate, front-end settings, licence and model card, known
without loading the file; ``Weights.load()`` checks the hash and builds the model.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from avtag import AvtagError
from avtag.config import AvtagConfig, ConfigError, config_from_dict, config_to_dict
from avtag.models.audio import AudioModel, build_audio_model

FORMAT = "avtag-audio-model"
VERSION = 2


class CheckpointError(AvtagError):
    """A checkpoint that is missing, corrupt, not an avtag audio model, or has unusable weights."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt bytes make the unpickler raise almost anything (IndexError, KeyError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an avtag checkpoint (holds a {type(data).__name__})")
    return data


#: state-dict key prefixes of version 1 files -> current ones
_V1_KEYS = (("frontend.mel.", "frontend.logmel.mel."), ("input_norm.", "frontend.norm."))


def _unpack(path: Path, data: dict) -> tuple[dict, dict, int]:
    """``(model state_dict, config mapping, format version)`` from either file kind."""
    if data.get("format") == FORMAT:
        version = int(data.get("version", 0))
        if version > VERSION:
            raise CheckpointError(f"{path}: written by a newer avtag (format version {version})")
        state, config = data.get("state_dict"), data.get("config")
        if isinstance(config, dict) and data.get("classes") is not None:
            config = {**config, "data": {**(config.get("data") or {}), "classes": list(data["classes"])}}
    else:
        hp = data.get("hyper_parameters") or {}
        config = hp.get("config") if isinstance(hp, dict) else None
        version = int(hp.get("format_version", 1)) if isinstance(hp, dict) else 1
        full = data.get("state_dict")
        state = ({k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
                 if isinstance(full, dict) else None)
    if not isinstance(config, dict) or not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not an avtag audio-model checkpoint (no model weights and config)")
    if version < 2:
        for old, new in _V1_KEYS:
            state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state, config, version


def load_audio_model(path: str | Path, device: str | torch.device = "cpu") -> AudioModel:
    """Rebuild a trained audio branch from a model file or a training checkpoint.

    Args:
        path: ``audio_model.pt``, a packaged model, or a Lightning ``.ckpt`` from ``avtag train``.
        device: where the model goes.

    Returns:
        An :class:`~avtag.models.audio.AudioModel` in eval mode that knows its ``classes``;
        its training config is ``model.config`` (:class:`~avtag.config.AvtagConfig`).

    Raises:
        CheckpointError: missing, corrupt or foreign file, a stored config the schema rejects,
            weights that do not fit the stored architecture, or non-finite weights.
    """
    path = Path(path)
    data = read_checkpoint(path, "cpu")
    state, raw_config, _ = _unpack(path, data)
    try:
        config = config_from_dict(raw_config, f"{path} (stored config)")
        classes = _classes(config)
        model = build_audio_model(config.model, config.audio, classes)
        model.load_state_dict(state, strict=True)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    except AvtagError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the stored model config ({first[:200]})") from None
    bad = [k for k, v in state.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}); "
                              "the model would output nothing usable")
    model.config = config
    return model.to(device).eval()


def _classes(config: AvtagConfig) -> tuple[str, ...]:
    from avtag.labels import get_vocabulary

    return get_vocabulary(config.data.classes).names


def save_audio_model(state_dict: dict, config: AvtagConfig, out_path: str | Path) -> Path:
    """Write a model file (see module docstring) atomically; returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "config": config_to_dict(config), "classes": list(_classes(config))}
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(out_path)
    return out_path


def export_audio_model(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write the weights-only model file of a Lightning training checkpoint (no optimiser state)."""
    model = load_audio_model(checkpoint)
    return save_audio_model(model.state_dict(), model.config, out_path)


# ----------------------------------------------------------------------------- registry
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

    def load(self, device: str | torch.device = "cpu") -> AudioModel:
        """The model, on ``device``, in eval mode. Raises CheckpointError (see :meth:`verify`)."""
        return load_audio_model(self.verify(), device)


def tensor_digest(named_tensors, salt: str = "") -> str:
    """A 16-hex-digit SHA-1 of ``(name, tensor)`` pairs (values as float32) and ``salt``: the key of
    caches derived from a network's weights (its ONNX export, a frozen prefix's outputs)."""
    h = hashlib.sha1(salt.encode())
    for name, tensor in named_tensors:
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


WEIGHTS: dict[str, Weights] = {
    "default": Weights(
        name="default", file="default_audio.ckpt",
        sha256="fe3372803a2ccdb74c817fa3c21e2a933bf355b53c955f6472bc8435edf100ed",
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
