"""Vocabulary v2: the classes a model can learn from the corpus (plus ``../shared/sounds``).

Items are the corpus manifest's records (:func:`read_corpus`) and, optionally,
the labelled recordings of ``sounds.csv`` (:func:`sounds_items`). A class is
*covered* when at least ``min_groups`` distinct source groups carry it, counting
every AudioSet ancestor of an item's labels (a "Bark" file counts for Dog,
Domestic animals, pets and Animal). A rarer class is not an output of its own:
its items keep the nearest covered ancestors, so they are *grouped under their
parent* as in the first vocabulary (categories that name no source, such as
Onomatopoeia, are never outputs: :data:`NOT_OUTPUTS`). A parent that covers exactly the same
source groups as one of its covered children adds nothing and is left out
(Human locomotion = Walk, footsteps). Items left with no covered class are
distractors (mixed in, not labelled).

Source groups are joined through ``component_groups`` (a babble clip and the
speakers it was built from form one group), so no speaker or recording can end
up on two sides of a split.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from avtag.data.corpus import CorpusError
from avtag.data.corpus.licences import TRAINING_KINDS
from avtag.data.corpus.rules import RuleTable
from avtag.io.common import is_inside

#: source groups a class needs by default to be an output of vocabulary v2 (test, validation and >= 4 train groups)
MIN_GROUPS = 6

#: AudioSet categories that name no kind of source a user would ask for (as in avtag.data.recordings.GROUPS):
#: never outputs, their items keep their other labels
NOT_OUTPUTS = frozenset({"Onomatopoeia", "Brief tone", "Other sourceless", "Miscellaneous sources", "Sound effect",
                         "Source-ambiguous sounds"})


@dataclass(frozen=True)
class CorpusItem:
    """One labelled recording to mix from.

    Attributes:
        id: unique name (the manifest id, or ``sounds:<file name>``).
        path: the audio file.
        classes: the most specific labels the rule (or sounds.csv) gave.
        labels: ``classes`` with all AudioSet ancestors.
        group: the source group (speaker, recording, kit).
        component_groups: groups this item was built from (constructed items).
        licence_kind: see :mod:`avtag.data.corpus.licences`.
        licence: the licence text.
        duration_s: length in seconds.
        background: an ambience that may serve as a soundscape's bed.
        constructed: made by :mod:`avtag.data.corpus.construct`.
        source: package and path, for credits.
    """

    id: str
    path: Path
    classes: tuple[str, ...]
    labels: tuple[str, ...]
    group: str
    component_groups: tuple[str, ...] = ()
    licence_kind: str = "unknown"
    licence: str = ""
    duration_s: float = 0.0
    background: bool = False
    constructed: bool = False
    source: str = ""


#: manifest fields read into a :class:`CorpusItem` that must be non-empty strings
_TEXT_FIELDS = ("id", "file", "group", "licence_kind")


def _item(r, root: Path, where: str) -> CorpusItem:
    """The :class:`CorpusItem` of manifest record ``r`` (``where``: ``manifest:line`` for errors).

    Raises:
        CorpusError: ``where: problem`` for a record that is not an object, a missing field or one of the wrong
            type, a file outside ``root`` or not a file.
    """
    if not isinstance(r, dict):
        kind = {type(None): "null", list: "an array", str: "a string"}.get(type(r), "a number")
        raise CorpusError(f"{where}: malformed record ({kind}, not a JSON object)")
    missing = [k for k in (*_TEXT_FIELDS, "classes", "labels", "licence", "duration_s", "background",
                           "constructed", "package", "version", "path") if k not in r]
    if missing:
        raise CorpusError(f"{where}: malformed record (no {', '.join(missing)})")
    for k in _TEXT_FIELDS:
        if not isinstance(r[k], str) or not r[k]:
            raise CorpusError(f"{where}: {k} {_show(r[k])} is not a non-empty string")
    if not isinstance(r["licence"], str):
        raise CorpusError(f"{where}: licence {_show(r['licence'])} is not a string")
    for k in ("classes", "labels", "component_groups"):
        v = r.get(k)
        if v is None and k == "component_groups":  # optional
            v = []
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v) or (k == "classes" and not v):
            raise CorpusError(f"{where}: {k} {_show(v)} is not a {'non-empty ' if k == 'classes' else ''}list of "
                              "names (strings)")
    for k in ("background", "constructed"):
        if not isinstance(r[k], bool):
            raise CorpusError(f"{where}: {k} {_show(r[k])} is not true or false")
    duration = r["duration_s"]
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < float("inf"):
        raise CorpusError(f"{where}: duration_s {_show(duration)} is not a positive number of seconds")
    item = CorpusItem(r["id"], root / r["file"], tuple(r["classes"]), tuple(r["labels"]), r["group"],
                      tuple(r.get("component_groups") or ()), r["licence_kind"], r["licence"], float(duration),
                      r["background"], r["constructed"], f"{r['package']} {r['version']}: {r['path']}")
    if not is_inside(item.path, root):  # a manifest names files of its own corpus only
        raise CorpusError(f"{where}: {r['file'][:80]!r} lies outside the corpus folder")
    if item.path.is_dir():
        raise CorpusError(f"{where}: {item.path} is a folder, not an audio file")
    if not item.path.is_file():
        raise CorpusError(f"{where}: {item.path} is listed but missing")
    return item


def _show(value) -> str:
    """``value`` as JSON, cut to 60 characters, for an error line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_corpus(root: str | Path, allow_restricted: bool = False) -> list[CorpusItem]:
    """Items of a built corpus (its ``manifest.jsonl``).

    Args:
        allow_restricted: also keep records whose licence kind is not one the
            model-training corpus takes (freeware, non-commercial, unknown).

    Raises:
        CorpusError: no manifest, a malformed one (a record that is not an object, a field missing or of the
            wrong type, an id used twice), or a listed file that is missing or lies outside ``root``.
    """
    root = Path(root).expanduser()
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise CorpusError(f"{manifest}: not found (build the corpus with 'avtag corpus build {root}')")
    out, seen = [], {}
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError as exc:
            if n == len(lines):
                break  # a torn last line of a build that is still running or was killed
            raise CorpusError(f"{manifest}:{n}: malformed record ({exc})") from None
        item = _item(r, root, f"{manifest}:{n}")
        if item.id in seen:
            raise CorpusError(f"{manifest}:{n}: id {item.id!r} is already used on line {seen[item.id]}")
        seen[item.id] = n
        if allow_restricted or item.licence_kind in TRAINING_KINDS:
            out.append(item)
    if not out:
        raise CorpusError(f"{manifest}: lists no usable recordings")
    return out


def sounds_items(sounds_dir: str | Path, table: RuleTable, allow_restricted: bool = False) -> list[CorpusItem]:
    """The recordings of ``sounds.csv`` as items (labels expanded with the rule table's ontology where it
    knows the class, else with :data:`avtag.data.recordings.AUDIOSET_PARENT`)."""
    from avtag.data.recordings import ancestors, classify_licence, read_recordings, source_groups

    recs = read_recordings(sounds_dir)
    groups = source_groups(recs)
    kinds = {"CC0": "public-domain", "public domain": "public-domain", "CC BY": "attribution",
             "share-alike": "share-alike"}
    out = []
    for r in recs:
        kind = kinds.get(classify_licence(r.licence)[0], "non-commercial")
        if kind not in TRAINING_KINDS and not allow_restricted:
            continue
        c = r.audioset_label
        labels = table.expand([c]) if c in table.parents else (c, *ancestors(c))
        labels = tuple(x for x in labels if x not in table.roots)
        out.append(CorpusItem(f"sounds:{r.filename}", r.path, (c,), labels, f"sounds:{groups[r.filename]}", (), kind,
                              r.licence, r.duration, source=f"sounds.csv: {r.filename} ({r.source})"))
    return out


def join_groups(items: list[CorpusItem]) -> dict[str, str]:
    """``{item id: joined group}``: groups linked through ``component_groups`` become one (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for it in items:
        for g in it.component_groups:
            a, b = find(it.group), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {it.id: find(it.group) for it in items}


@dataclass
class VocabularyV2:
    """The chosen classes and each item's labels within them.

    Attributes:
        classes: output classes, parents before children (AudioSet order of the rule table).
        labels: ``{item id: covered labels}``; empty for distractors.
        groups: ``{item id: joined source group}``.
        groups_per_class: distinct joined groups per AudioSet class (all classes seen).
        folded: ``{class: where its items went}`` for classes seen but not output.
    """

    classes: tuple[str, ...]
    labels: dict[str, tuple[str, ...]]
    groups: dict[str, str]
    groups_per_class: dict[str, int]
    folded: dict[str, str] = field(default_factory=dict)


def choose_vocabulary(items: list[CorpusItem], table: RuleTable, min_groups: int = MIN_GROUPS) -> VocabularyV2:
    """Pick the covered classes (see module docstring).

    Raises:
        CorpusError: no class reaches ``min_groups``.
    """
    groups = join_groups(items)
    members: dict[str, set[str]] = defaultdict(set)
    for it in items:
        for c in it.labels:
            members[c].add(groups[it.id])
    covered = {c for c, g in members.items() if len(g) >= min_groups and c not in table.roots and c not in NOT_OUTPUTS}
    children: dict[str, set[str]] = defaultdict(set)
    for c in covered:
        for p in table.parents.get(c, ()):
            children[p].add(c)
    redundant = {p for p in covered if any(members[ch] == members[p] for ch in children[p] if ch in covered)}
    kept = covered - redundant
    if not kept:
        raise CorpusError(f"no class has {min_groups} distinct source groups; lower the threshold")
    order = {c: i for i, c in enumerate(table.parents)}
    depth = {c: len(table.ancestors(c)) if c in table.parents else 0 for c in kept}
    top = {c: ([c, *table.ancestors(c)] if c in table.parents else [c])[-1] for c in kept}
    classes = tuple(sorted(kept, key=lambda c: (order.get(top[c], 1e9), top[c], depth[c], order.get(c, 1e9), c)))
    labels = {it.id: tuple(c for c in classes if c in it.labels) for it in items}
    folded = {}
    for c in sorted(set(members) - kept - set(table.roots)):
        into = [p for p in (table.ancestors(c) if c in table.parents else ()) if p in kept]
        why = f"{len(members[c])} source group(s)"
        folded[c] = why + (f"; grouped under {into[0]}" if into else "; no covered parent") if c not in redundant \
            else "same sources as its child class"
    return VocabularyV2(classes, labels, groups, {c: len(g) for c, g in members.items()}, folded)
