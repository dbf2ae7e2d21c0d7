"""Loading trained audio models from checkpoints, safely (``weights_only=True``).

Two file kinds load here:

* a Lightning training checkpoint (``last.ckpt``, ``best-*.ckpt``) written by
  ``avtag train``: ``state_dict`` (keys ``model.*``) + ``hyper_parameters.config``;
* an exported audio model (``audio_model.pt``, written at the end of training by
  :func:`export_audio_model`): ``{"format": "avtag-audio-model", "version": 1,
  "state_dict", "config", "classes"}`` -- weights only, no optimiser state.

Both hold only tensors and plain Python containers/strings, so they load with
``torch.load(weights_only=True)`` (no code from the file is run).
"""
from __future__ import annotations

from pathlib import Path

import torch

from avtag import AvtagError
from avtag.config import get
from avtag.labels import Vocabulary, get_vocabulary

FORMAT = "avtag-audio-model"
VERSION = 1


class CheckpointError(AvtagError):
    """A checkpoint that is missing, corrupt, or not an avtag audio model."""


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


def _unpack(path: Path, data: dict) -> tuple[dict, dict]:
    """``(model state_dict, config)`` from either checkpoint kind."""
    if data.get("format") == FORMAT:
        if int(data.get("version", 0)) > VERSION:
            raise CheckpointError(f"{path}: written by a newer avtag (format version {data.get('version')})")
        state, config = data.get("state_dict"), data.get("config")
    else:
        hp = data.get("hyper_parameters") or {}
        config = hp.get("config") if isinstance(hp, dict) else None
        full = data.get("state_dict")
        state = None
        if isinstance(full, dict):
            state = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    if not isinstance(config, dict) or not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not an avtag audio-model checkpoint (no model weights and config)")
    return state, config


def load_audio_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the trained audio branch from a checkpoint.

    Args:
        path: ``audio_model.pt`` or a Lightning ``.ckpt`` from ``avtag train``.
        map_location: device for the weights.

    Returns:
        ``(model, vocabulary, config)``: an :class:`avtag.models.audio.AudioTagger`
        in eval mode (``model(waveform (B, samples)) -> TaggerOutput``), its
        :class:`Vocabulary` (output class order) and the training config (dict).

    Raises:
        CheckpointError: missing, corrupt or foreign file, or weights that do not
            fit the stored architecture.
    """
    from avtag.models.audio import build_audio_model

    path = Path(path)
    data = read_checkpoint(path, map_location)
    state, config = _unpack(path, data)
    classes = data.get("classes") or get(config, "data.classes", "dcase2017")
    try:
        vocabulary = get_vocabulary(classes)
        model = build_audio_model(config, len(vocabulary))
        model.load_state_dict(state, strict=True)
    except AvtagError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the stored model config ({first[:200]})") from None
    model.to(map_location).eval()
    return model, vocabulary, config


def export_audio_model(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write the weights-only ``audio_model.pt`` of a training checkpoint.

    The file holds the model ``state_dict`` (tensors), the config and the class
    names; no optimiser state (about a third of a training checkpoint's size).
    """
    checkpoint = Path(checkpoint)
    state, config = _unpack(checkpoint, read_checkpoint(checkpoint))
    vocabulary = get_vocabulary(get(config, "data.classes", "dcase2017"))
    return save_audio_model(state, config, vocabulary, out_path)


def save_audio_model(state_dict: dict, config: dict, vocabulary: Vocabulary, out_path: str | Path) -> Path:
    """Save an exported audio model file (see module docstring); returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config,
        "classes": list(vocabulary.names),
    }
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(out_path)
    return out_path
