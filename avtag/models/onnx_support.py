"""Whether ONNX Runtime may run avtag's networks (no torch imported: the torch-free tagger asks too)."""
from __future__ import annotations

import importlib.util
import os


def onnxruntime_available() -> bool:
    """True when the optional ``onnxruntime`` and ``onnx`` packages (the ``fast`` extra) can be imported
    and ``AVTAG_ONNX`` is not ``0``."""
    return os.environ.get("AVTAG_ONNX", "1") != "0" and all(
        importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
