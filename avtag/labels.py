"""Class vocabularies: name <-> index and multi-hot weak-label vectors.

The DCASE 2017 Task 4 vocabulary is read from the official
``sound_event_list_17_classes.txt`` order (Mesaros et al., DCASE 2017 Task 4,
"Large-scale weakly supervised sound event detection for smart cars"); a copy of
the 17 names is kept here so the package works without the data folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from avtag import AvtagError

#: The 17 DCASE 2017 Task 4 classes in the official order (sound_event_list_17_classes.txt).
DCASE2017_CLASSES: tuple[str, ...] = (
    "Train horn",
    "Air horn, truck horn",
    "Car alarm",
    "Reversing beeps",
    "Bicycle",
    "Skateboard",
    "Ambulance (siren)",
    "Fire engine, fire truck (siren)",
    "Civil defense siren",
    "Police car (siren)",
    "Screaming",
    "Car",
    "Car passing by",
    "Bus",
    "Truck",
    "Motorcycle",
    "Train",
)


MAX_CLASSES = 5000  #: the largest vocabulary (zero-shot ``--labels`` included)


class LabelError(AvtagError):
    """A label name that is not part of the vocabulary."""


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of sound-class names.

    Args:
        names: class names in output order; index ``i`` of every score vector
            ``(classes,)`` belongs to ``names[i]``.
    """

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) > MAX_CLASSES:  # each class is a label-map column and a row of the hierarchy
            raise LabelError(f"{len(self.names)} classes, at most {MAX_CLASSES} (AudioSet has 527)")
        if len(set(self.names)) != len(self.names):
            raise LabelError("vocabulary has duplicate class names")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    def index(self, name: str) -> int:
        """Index of ``name``; raises :class:`LabelError` if unknown."""
        try:
            return self._index[name]  # type: ignore[attr-defined]
        except KeyError:
            raise LabelError(f"unknown class label {name!r} (not one of the {len(self)} classes)") from None

    def multi_hot(self, labels: Iterable[str]) -> np.ndarray:
        """Weak-label target ``(classes,)`` float32 with 1 for each label present."""
        y = np.zeros(len(self), dtype=np.float32)
        for name in labels:
            y[self.index(name)] = 1.0
        return y

    def decode(self, multi_hot: Sequence[float], threshold: float = 0.5) -> list[str]:
        """Names whose score in ``multi_hot`` ``(classes,)`` is >= ``threshold``."""
        return [n for n, v in zip(self.names, multi_hot) if v >= threshold]


DCASE2017 = Vocabulary(DCASE2017_CLASSES)


def get_vocabulary(name_or_names: str | Sequence[str]) -> Vocabulary:
    """Vocabulary by registry name (``"dcase2017"``) or from an explicit list of names."""
    if isinstance(name_or_names, str):
        if name_or_names.lower() == "dcase2017":
            return DCASE2017
        raise LabelError(f"unknown vocabulary {name_or_names!r}; give 'dcase2017' or a list of class names")
    return Vocabulary(tuple(name_or_names))
