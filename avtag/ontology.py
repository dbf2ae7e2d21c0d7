"""The AudioSet ontology of the class names avtag uses: parents, ancestors, the true-path closure.

AudioSet's classes form a hierarchy (Gemmeke et al. 2017, "Audio Set: An ontology and human-labeled
dataset for audio events"): "Bark" is a kind of "Dog", a "Dog" one of the "Domestic animals, pets",
those "Animal". The part avtag needs is transcribed in the ``ontology`` section of
``avtag/resources/corpus_rules.yaml`` (every class the corpus labels, with all its parents; abstract
roots such as "Sounds of things" are never labels). The corpus builder expands labels with it, and late
fusion uses it for the true-path rule: a parent class is present whenever one of its children is, so
its score should be at least its children's (the *true path rule* of hierarchical multi-label
classification, Valentini 2011, "True path rule hierarchical ensembles for genome-wide gene function
prediction").

This module sits beside the data flow (like :mod:`avtag.labels`): every layer may import it.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from avtag import AvtagError


class OntologyError(AvtagError):
    """A malformed ontology: a cycle, or a parent that is neither a class nor a root."""


class Ontology:
    """Class -> parents, with the abstract roots that are never labels.

    Args:
        parents: every class name -> its parents' names (all of AudioSet's, except where the table says
            otherwise). Names not in this mapping are unknown to the ontology: they have no ancestors.
        roots: abstract categories that are never labels ("Sounds of things", ...).
        origin: where the mapping came from, for error messages.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], roots: Iterable[str] = (), origin: str = "ontology"):
        self.parents: dict[str, tuple[str, ...]] = {str(k): tuple(v) for k, v in parents.items()}
        self.roots = frozenset(roots)
        self.origin = origin

    def check(self) -> None:
        """Raise :class:`OntologyError` on a cycle or a parent that is neither a class nor a root."""
        for c in self.parents:
            self.ancestors(c)

    def ancestors(self, label: str) -> tuple[str, ...]:
        """All ancestors of ``label`` (every parent path), nearest first, roots left out; ``()`` for a
        name the ontology does not know.

        Raises:
            OntologyError: a cycle, or a parent that is neither a class nor a root.
        """
        out: list[str] = []
        frontier, seen = [label], {label}
        while frontier:
            nxt = []
            for c in frontier:
                for p in self.parents.get(c, ()):
                    if p in self.roots:
                        continue
                    if p == label:
                        raise OntologyError(f"{self.origin}: ontology cycle through {label!r}")
                    if p not in self.parents:
                        raise OntologyError(f"{self.origin}: parent {p!r} of {c!r} is not in the ontology section")
                    if p not in seen:
                        seen.add(p)
                        out.append(p)
                        nxt.append(p)
            frontier = nxt
        return tuple(out)

    def expand(self, labels: Iterable[str]) -> tuple[str, ...]:
        """``labels`` followed by all their ancestors, without duplicates."""
        return tuple(dict.fromkeys([c for lab in labels for c in (lab, *self.ancestors(lab))]))

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class of the ontology (roots excluded)."""
        return tuple(c for c in self.parents if c not in self.roots)

    def closure(self, classes: Sequence[str]) -> np.ndarray:
        """``(classes, classes)`` bool: ``[d, a]`` is True when ``classes[a]`` is ``classes[d]`` or one of
        its ancestors (also through ancestors outside ``classes``). ``scores @ closure`` under max instead
        of sum gives every class the largest score of itself and its descendants (the true-path rule)."""
        index = {c: i for i, c in enumerate(classes)}
        out = np.eye(len(classes), dtype=bool)
        for d, c in enumerate(classes):
            for a in self.ancestors(c):
                if a in index:
                    out[d, index[a]] = True
        return out


def default_ontology_path() -> Path:
    """The packaged table whose ``ontology`` section is read (``avtag/resources/corpus_rules.yaml``)."""
    return Path(str(resources.files("avtag") / "resources" / "corpus_rules.yaml"))


def ontology_from_section(section, origin: str) -> Ontology:
    """An :class:`Ontology` from a parsed ``ontology:`` mapping (``roots``, ``parents``).

    Raises:
        OntologyError: the section is not a mapping of that shape.
    """
    try:
        section = section or {}
        return Ontology(section.get("parents") or {}, section.get("roots") or (), origin)
    except (TypeError, AttributeError, ValueError) as exc:
        raise OntologyError(f"{origin}: malformed ontology section ({exc})") from None


@lru_cache(maxsize=1)
def load_ontology() -> Ontology:
    """The packaged AudioSet ontology (checked; read once per process).

    Raises:
        OntologyError: the packaged table is unreadable or malformed.
    """
    import yaml

    path = default_ontology_path()
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise OntologyError(f"{path}: cannot read the ontology ({str(exc).splitlines()[0]})") from None
    ontology = ontology_from_section((raw or {}).get("ontology") if isinstance(raw, dict) else None, str(path))
    ontology.check()
    return ontology
