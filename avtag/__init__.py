"""avtag: multimodal audio-visual sound event tagging.

Data flow: ``io`` (media) -> ``features`` (log-mel) -> ``models`` (audio branch, video branch,
late fusion: :class:`AudioVisualTagger`) -> ``inference`` (:class:`Tagger`, :class:`TagResult`)
and ``evaluation`` (DCASE 2017 Task 4 metrics, reports); ``data`` and ``training`` beside them.

The Python API, importable from here (loaded on first use, so ``import avtag`` stays fast)::

    import avtag
    tagger = avtag.Tagger.from_pretrained("default", device="auto")
    result = tagger(waveform, sample_rate=44100, frames=frames)     # NumPy arrays
    result = tagger.tag_file("clip.mp4", segments=True)
    result.top(k=5, threshold=0.1); result.to_dict()
"""

__version__ = "0.2.0"


class AvtagError(Exception):
    """Base class of every error avtag reports to the user as one line (no traceback)."""


_API = {
    "Tagger": "avtag.inference.tagger",
    "TagResult": "avtag.inference.results",
    "Tag": "avtag.inference.results",
    "Event": "avtag.events",
    "AudioVisualTagger": "avtag.models.tagger",
    "AudioModel": "avtag.models.audio",
    "TaggerOutput": "avtag.models.types",
    "WEIGHTS": "avtag.models.registry",
    "load_audio_model": "avtag.models.weights",
    "load_clip": "avtag.io",
    "Clip": "avtag.io",
    "load_config": "avtag.config",
    "AvtagConfig": "avtag.config",
}

__all__ = ["AvtagError", "__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'avtag' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
