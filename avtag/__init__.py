"""avtag: multimodal audio-visual sound event tagging.

Data flow: ``io`` (media) -> ``features`` (log-mel) -> ``models`` (audio branch,
video branch, late fusion) -> ``inference`` (tags, segments) -> ``evaluation``
(DCASE 2017 Task 4 metrics, reports).
"""

__version__ = "0.1.0"


class AvtagError(Exception):
    """Base class of every error avtag reports to the user as one line (no traceback)."""
