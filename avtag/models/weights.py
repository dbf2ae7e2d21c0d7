"""Audio-model weights: the file format, safe loading, and the registry of packaged weights.

A model file (``audio_model.pt`` written by ``avtag train``, or a packaged one) is::

    {"format": "avtag-audio-model", "version": 2, "state_dict": {...tensors...},
     "config": {...the training config, plain dicts...}, "classes": [...names...],
     "class_priors": {"training": [...], "audioset": [...]}}   # optional (avtag.models.class_prior)

It holds only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``:
no code from the file runs. Lightning training checkpoints (``last.ckpt``, ``best-*.ckpt``:
``state_dict`` with ``model.*`` keys + ``hyper_parameters``) load the same way. Version 1 files
(avtag 0.1: flat ``model:`` config, ``input_norm.*`` / ``frontend.mel.*`` keys) are upgraded on load.

The registry of packaged weights (:data:`WEIGHTS`) lives in :mod:`avtag.models.registry`, which
needs no torch, and is re-exported here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from avtag import AvtagError
from avtag.config import AvtagConfig, ConfigError, config_from_dict, config_to_dict
from avtag.models.audio import AudioModel, build_audio_model
from avtag.models.registry import WEIGHTS, CheckpointError, Weights, get_weights

__all__ = ["WEIGHTS", "CheckpointError", "Weights", "get_weights", "load_audio_model", "save_audio_model",
           "export_audio_model", "read_checkpoint", "tensor_digest"]

FORMAT = "avtag-audio-model"
VERSION = 2


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a dict.
    """
    from avtag.io.common import require_regular

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        data = torch.load(require_regular(path), map_location=map_location, weights_only=True)
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
        version = _version(path, data.get("version", 0))
        if version > VERSION:
            raise CheckpointError(f"{path}: written by a newer avtag (format version {version})")
        state, config = data.get("state_dict"), data.get("config")
        if isinstance(config, dict) and data.get("classes") is not None:
            names = data["classes"]
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise CheckpointError(f"{path}: not an avtag audio-model checkpoint (classes must be a list of names)")
            config = {**config, "data": {**(config.get("data") or {}), "classes": list(names)}}
    else:
        hp = data.get("hyper_parameters") or {}
        config = hp.get("config") if isinstance(hp, dict) else None
        version = _version(path, hp.get("format_version", 1)) if isinstance(hp, dict) else 1
        full = data.get("state_dict")
        state = ({k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
                 if isinstance(full, dict) else None)
    if not isinstance(config, dict) or not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not an avtag audio-model checkpoint (no model weights and config)")
    if version < 2:
        for old, new in _V1_KEYS:
            state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state, config, version


def _version(path: Path, value) -> int:
    """A stored format version as an int; CheckpointError for anything else (text, NaN, 1.5)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{path}: not an avtag audio-model checkpoint (format version {str(value)[:40]!r})")
    return value


def load_audio_model(path: str | Path, device: str | torch.device = "cpu") -> AudioModel:
    """Rebuild a trained audio branch from a model file or a training checkpoint.

    Args:
        path: ``audio_model.pt``, a packaged model, or a Lightning ``.ckpt`` from ``avtag train``.
        device: where the model goes.

    Returns:
        An :class:`~avtag.models.audio.AudioModel` in eval mode that knows its ``classes``;
        its training config is ``model.config`` (:class:`~avtag.config.AvtagConfig`) and its stored
        class priors ``model.class_priors`` (``{name: [p or None per class]}``, empty when none).

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
    hp = data.get("hyper_parameters")  # a Lightning checkpoint keeps them with its config
    stored = data.get("class_priors") or (hp.get("class_priors") if isinstance(hp, dict) else None)
    model.class_priors = _class_priors(path, stored, len(classes))
    return model.to(device).eval()


def _class_priors(path: Path, raw, n_classes: int) -> dict[str, list]:
    """The stored class priors: a list of ``n_classes`` numbers in (0, 1) or None each, per name.

    Raises:
        CheckpointError: a stored prior of another shape (a model adjusted by it would be wrong).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: stored class priors must map a name to {n_classes} numbers")
    for name, values in raw.items():
        if not (isinstance(values, (list, tuple)) and len(values) == n_classes and all(
                v is None or (isinstance(v, float) and 0.0 < v < 1.0) for v in values)):
            raise CheckpointError(f"{path}: stored class priors {str(name)[:40]!r} are not {n_classes} numbers "
                                  "in (0, 1) or null")
    return {str(name): list(values) for name, values in raw.items()}


def _classes(config: AvtagConfig) -> tuple[str, ...]:
    from avtag.labels import get_vocabulary

    return get_vocabulary(config.data.classes).names


def save_audio_model(state_dict: dict, config: AvtagConfig, out_path: str | Path,
                     class_priors: dict | None = None) -> Path:
    """Write a model file (see module docstring) atomically; returns the path.

    ``class_priors``: ``{name: (C,) priors}`` (:mod:`avtag.models.class_prior`; NaN or None: unknown).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "config": config_to_dict(config), "classes": list(_classes(config))}
    if class_priors:
        payload["class_priors"] = {str(k): [None if v is None or v != v else float(v) for v in values]
                                   for k, values in class_priors.items() if values is not None}
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(out_path)
    return out_path


def export_audio_model(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write the weights-only model file of a Lightning training checkpoint (no optimiser state),
    with the class priors the checkpoint carries."""
    model = load_audio_model(checkpoint)
    return save_audio_model(model.state_dict(), model.config, out_path, model.class_priors)


def tensor_digest(named_tensors, salt: str = "") -> str:
    """A 16-hex-digit SHA-1 of ``(name, tensor)`` pairs (values as float32) and ``salt``: the key of
    caches derived from a network's weights (its ONNX export, a frozen prefix's outputs)."""
    h = hashlib.sha1(salt.encode())
    for name, tensor in named_tensors:
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
