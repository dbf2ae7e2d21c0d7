"""AudioSet's class frequencies: the ``audioset`` class prior of :mod:`avtag.models.class_prior`.

``avtag/resources/audioset_class_counts.csv`` holds, for each of AudioSet's 527 classes, the number of
clips of its training set (balanced + unbalanced, 1,934,187 clips as downloaded for PANNs; Kong et
al. 2020, ``full_samples_per_class``) that carry it. A class's prior is its count over that total.

AudioSet's labels are not closed under the ontology (a clip labelled Dog need not be labelled
Animal), and some classes (Human voice, Human group actions) are not among the 527. So the prior of
a class is the largest share among the class and its descendants (a clip with a dog holds an
animal); a class with no count and no counted descendant takes the smallest prior among its counted
ancestors (an upper bound: a crash cymbal is at most as frequent as any cymbal); a class with
neither gets None (its scores are left as trained). Parents come from the ontology section of the
corpus rule table (:mod:`avtag.data.corpus.rules`, transcribed from AudioSet's ontology.json).
"""
from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from typing import Sequence

#: clips in the AudioSet training set the counts were taken over (20,550 balanced + 1,913,637 unbalanced)
AUDIOSET_TRAIN_CLIPS = 1_934_187


@lru_cache(maxsize=1)
def audioset_counts() -> dict[str, int]:
    """``{display name: clips}`` for AudioSet's 527 classes (the packaged table)."""
    text = (resources.files("avtag.resources") / "audioset_class_counts.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {row["display_name"]: int(row["clips"]) for row in rows}


def audioset_prior(classes: Sequence[str]) -> list[float | None]:
    """AudioSet's prior of each class (module docstring), in order; None where it is unknown.

    Args:
        classes: AudioSet display names (other names get None unless the ontology relates them).

    Returns:
        ``(C,)`` shares of AudioSet training clips in (0, 1), or None.
    """
    from avtag.data.corpus.rules import load_rules

    ontology = load_rules()
    counts = audioset_counts()
    known = set(ontology.parents)

    def ancestors(name: str) -> tuple[str, ...]:
        return ontology.ancestors(name) if name in known else ()

    prior: dict[str, float] = {}
    for name, n in counts.items():  # a class and every ancestor of it hold at least its share
        for c in (name, *ancestors(name)):
            prior[c] = max(prior.get(c, 0.0), n / AUDIOSET_TRAIN_CLIPS)
    out: list[float | None] = []
    for c in classes:
        if c in prior:
            out.append(prior[c])
            continue
        bounds = [prior[a] for a in ancestors(c) if a in prior]
        out.append(min(bounds) if bounds else None)
    return out
