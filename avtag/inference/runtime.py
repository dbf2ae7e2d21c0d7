"""When the tagger runs on ONNX Runtime, and where its export is cached (decided without importing torch).

:meth:`avtag.inference.tagger.Tagger.from_config` uses the ONNX Runtime engine
(:class:`~avtag.inference.engines.OnnxEngine`) when inference is ``fast``, the device is the CPU
(``auto`` on a machine without an NVIDIA driver), the ``fast`` extra is installed and
``AVTAG_ONNX`` is not ``0``. The export lives in ``$AVTAG_CACHE/onnx/tagger-KEY/``; the key
covers everything the exported graphs depend on: the checkpoint (the registry's sha256 for a
packaged model; path, size and modification time for a file), the classes, the ``label_map``,
``fusion`` and ``video`` settings (and the files they name), the branches switched on, and the
versions of avtag, torch and of the source of ``avtag.models`` and ``avtag.features``. A first
run exports (PyTorch, a few seconds); later runs load the export and never import torch.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import avtag


def gpu_present() -> bool:
    """True when an NVIDIA driver is loaded (``/proc/driver/nvidia/gpus`` lists a GPU): ``auto`` may pick CUDA."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def onnx_wanted(device, fast: bool) -> bool:
    """Whether a tagger built with ``device`` and ``fast`` runs on ONNX Runtime (see the module docstring)."""
    from avtag.models.onnx_support import onnxruntime_available

    if not fast or not isinstance(device, str):
        return False
    name = device.strip().lower()
    if name not in ("cpu", "auto") or (name == "auto" and gpu_present()):
        return False
    return onnxruntime_available()


def _file_stamp(value) -> list | None:
    """``[resolved path, size, mtime_ns]`` of a string naming an existing file, else None."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    try:
        if path.is_file():
            stat = path.stat()
            return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    except OSError:
        return None
    return None


def _source_digest() -> str:
    """SHA-1 of what the exported graphs are built from: the source of ``models/`` and ``features/``,
    the ontology module, and the packaged tables baked into them (the reviewed label-map pairs, the
    ontology of the true-path rule), so editing any of them exports afresh."""
    h = hashlib.sha1()
    root = Path(avtag.__file__).parent
    files = [*sorted((root / "models").glob("*.py")), *sorted((root / "features").glob("*.py")),
             root / "ontology.py", *sorted((root / "resources").glob("*.yaml"))]
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def export_key(checkpoint, vocabulary, config, use_audio: bool, use_video: bool) -> str | None:
    """The cache key of the ONNX export of a tagger built from these arguments (as
    :meth:`~avtag.inference.tagger.Tagger.from_config`'s), or None when it cannot be known without
    loading the checkpoint (a module object, a file that does not exist, an unknown packaged name):
    then the PyTorch path builds the tagger and reports any error."""
    from dataclasses import asdict

    if checkpoint is None:
        weights = None
    elif isinstance(checkpoint, (str, Path)) and str(checkpoint).startswith("pretrained:"):
        from avtag.models.registry import WEIGHTS

        entry = WEIGHTS.get(str(checkpoint)[len("pretrained:"):])
        if entry is None:
            return None
        weights = ["pretrained", entry.name, entry.sha256]
    else:
        weights = _file_stamp(str(checkpoint)) if isinstance(checkpoint, (str, Path)) else None
        if weights is None:
            return None
    sections = {name: asdict(getattr(config, name)) for name in ("label_map", "fusion", "video")}
    files = [_file_stamp(v) for section in sections.values() for v in section.values()]
    payload = {"weights": weights, "classes": None if vocabulary is None else list(vocabulary.names),
               "data_classes": config.data.classes, "sections": sections, "files": files,
               "branches": [bool(use_audio), bool(use_video)],
               "versions": [avtag.__version__, _version("torch"), _version("onnx"), _source_digest()]}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def export_folder(key: str) -> Path:
    """The cache folder of the export with ``key``."""
    from avtag.models.text_encoders import cache_dir

    return cache_dir() / "onnx" / f"tagger-{key}"
