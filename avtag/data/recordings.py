"""The labelled source recordings behind the default model: catalogue, licences, vocabulary.

``../shared/sounds/sounds.csv`` lists real recordings (OpenSFX game sounds,
LibriSpeech readings, Free Music Archive / Musopen music, freesound and ESC-50
clips) with one AudioSet class each (``audioset_label``) and a licence/credit
string. This module turns that list into what :mod:`avtag.data.soundscapes`
mixes from:

* **Licence filter** (:func:`classify_licence`): only recordings whose licence
  lets a model trained on them be redistributed go into the default model:
  CC0, public domain and CC BY (attribution; the credits are written beside the
  soundscapes and in the model card). Left out: non-commercial (CC BY-NC,
  CC BY-NC-SA), share-alike (CC BY-SA: it would bind the model's licence),
  CC Sampling+ (special terms) and unknown licences.
* **Source recordings** (:func:`source_groups`): several OpenSFX sounds are
  edits of the same original recording (``osfx_17`` and ``osfx_19`` both come
  from "crash.wav"; ``osfx_25/26/60/62`` from "file0375.mp3") and two files are
  byte-identical (``osfx_52``, ``osfx_57``). Files sharing a credited original
  file name or their bytes form one *source group*; the train/test split and
  the "distinct recordings" counts work on groups, so no recording leaks from
  training into test soundscapes.
* **Vocabulary** (:func:`build_vocabulary`): an AudioSet class is learnable when
  at least ``min_recordings`` distinct source groups carry it. A class with
  fewer recordings is grouped under its AudioSet parent category
  (:data:`GROUPS`: e.g. Propeller -> Vehicle, Trumpet -> Music, Steam -> Water),
  which is kept when *it* has enough recordings; a recording whose class and
  category both have too few recordings is out of vocabulary (it is still mixed
  in as an unlabelled distractor). Labels are hierarchical as in AudioSet: a
  jet-engine event is labelled both "Jet engine" and "Vehicle".

The parent links in :data:`AUDIOSET_PARENT` are transcribed from the AudioSet
ontology (``audioset/ontology@1e85b88a:ontology.json``, Gemmeke et al. 2017,
CC BY-SA 4.0) for the classes that ``sounds.csv`` uses. Where the ontology gives
a class two parents (Thump, thud: Arrow and Generic impact sounds; Crackle:
Fire and Onomatopoeia; Squeak: Door and Brief tone) the one listed is used.
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from avtag import AvtagError
from avtag.io.common import is_inside
from avtag.labels import Vocabulary

#: child class -> parent class (AudioSet ontology), for every ``audioset_label`` in sounds.csv
AUDIOSET_PARENT: dict[str, str] = {
    # Human sounds
    "Speech": "Human voice", "Human voice": "Human sounds",
    "Applause": "Human group actions", "Crowd": "Human group actions", "Human group actions": "Human sounds",
    "Cough": "Respiratory sounds", "Respiratory sounds": "Human sounds",
    # Animal
    "Domestic animals, pets": "Animal", "Dog": "Domestic animals, pets", "Cat": "Domestic animals, pets",
    "Howl": "Dog",
    "Livestock, farm animals, working animals": "Animal", "Horse": "Livestock, farm animals, working animals",
    "Cattle, bovinae": "Livestock, farm animals, working animals", "Sheep": "Livestock, farm animals, working animals",
    "Wild animals": "Animal", "Roaring cats (lions, tigers)": "Wild animals", "Bird": "Wild animals",
    "Bird vocalization, bird call, bird song": "Bird", "Whale vocalization": "Wild animals",
    # Music
    "Musical instrument": "Music", "Brass instrument": "Musical instrument", "Trumpet": "Brass instrument",
    "Keyboard (musical)": "Musical instrument", "Piano": "Keyboard (musical)",
    "Percussion": "Musical instrument", "Rattle (instrument)": "Percussion",
    # Natural sounds
    "Wind": "Natural sounds", "Thunderstorm": "Natural sounds", "Thunder": "Thunderstorm",
    "Water": "Natural sounds", "Steam": "Water", "Gurgling": "Water",
    "Fire": "Natural sounds", "Crackle": "Fire",
    # Sounds of things: Vehicle
    "Vehicle": "Sounds of things", "Motor vehicle (road)": "Vehicle", "Car": "Motor vehicle (road)",
    "Vehicle horn, car horn, honking": "Car", "Toot": "Vehicle horn, car horn, honking", "Skidding": "Car",
    "Truck": "Motor vehicle (road)", "Air horn, truck horn": "Truck", "Bus": "Motor vehicle (road)",
    "Rail transport": "Vehicle", "Train": "Rail transport", "Train whistle": "Train", "Train horn": "Train",
    "Subway, metro, underground": "Rail transport",
    "Aircraft": "Vehicle", "Aircraft engine": "Aircraft", "Jet engine": "Aircraft engine",
    "Propeller, airscrew": "Aircraft engine", "Helicopter": "Aircraft",
    # Sounds of things: other
    "Engine": "Sounds of things", "Light engine (high frequency)": "Engine",
    "Chainsaw": "Light engine (high frequency)",
    "Domestic sounds, home sounds": "Sounds of things", "Door": "Domestic sounds, home sounds", "Squeak": "Door",
    "Alarm": "Sounds of things", "Alarm clock": "Alarm", "Foghorn": "Alarm", "Whistle": "Alarm",
    "Steam whistle": "Whistle",
    "Mechanisms": "Sounds of things", "Cash register": "Mechanisms",
    "Tools": "Sounds of things", "Hammer": "Tools", "Jackhammer": "Tools", "Sawing": "Tools",
    "Explosion": "Sounds of things", "Gunshot, gunfire": "Explosion",
    "Wood": "Sounds of things", "Crack": "Wood",
    "Liquid": "Sounds of things", "Splash, splatter": "Liquid",
    "Miscellaneous sources": "Sounds of things", "Arrow": "Miscellaneous sources", "Whoosh, swoosh, swish": "Arrow",
    # Source-ambiguous sounds
    "Generic impact sounds": "Source-ambiguous sounds", "Smash, crash": "Generic impact sounds",
    "Thump, thud": "Generic impact sounds",
    "Onomatopoeia": "Source-ambiguous sounds", "Brief tone": "Onomatopoeia", "Beep, bleep": "Brief tone",
    "Ding": "Brief tone", "Clang": "Brief tone", "Clatter": "Onomatopoeia", "Plop": "Onomatopoeia",
    "Boing": "Onomatopoeia",
    "Other sourceless": "Source-ambiguous sounds", "Sound effect": "Other sourceless",
}

#: AudioSet categories a rare class is grouped under: the children of the ontology's
#: abstract top-level categories (Natural sounds, Sounds of things, Source-ambiguous
#: sounds), the top-level Animal and Music, and Speech / Human group actions for human
#: sounds. Onomatopoeia, Miscellaneous sources and Other sourceless are not groups:
#: they name no kind of source that a user of the tags would ask for.
GROUPS: tuple[str, ...] = (
    "Speech", "Human group actions", "Music", "Animal", "Vehicle", "Engine", "Water", "Wind",
    "Thunderstorm", "Fire", "Alarm", "Mechanisms", "Tools", "Explosion", "Wood", "Liquid",
    "Domestic sounds, home sounds", "Generic impact sounds",
)

#: licence kinds that allow redistributing a model trained on the recording
PERMISSIVE = ("CC0", "public domain", "CC BY")


class RecordingsError(AvtagError):
    """A missing or malformed ``sounds.csv`` or an unusable recording list."""


@dataclass(frozen=True)
class Recording:
    """One row of ``sounds.csv``.

    Attributes:
        filename: file in the sounds folder.
        label: the publisher's own name for the sound.
        audioset_label: the AudioSet class that best matches it.
        duration: seconds (as listed).
        licence: licence and credit string, as listed.
        source: ``owner/repo@commit:path`` of the original file.
        path: absolute path of the file.
    """

    filename: str
    label: str
    audioset_label: str
    duration: float
    licence: str
    source: str
    path: Path


def read_recordings(sounds_dir: str | Path) -> list[Recording]:
    """Read ``sounds.csv`` in ``sounds_dir``; every listed file must exist.

    Raises:
        RecordingsError: no ``sounds.csv``, one that is not UTF-8 text, a missing column, a short row, a
            missing file (or a folder, an empty name), a class the ontology table does not know, a
            duration that is not a positive number.
    """
    sounds_dir = Path(sounds_dir).expanduser().resolve()
    table = sounds_dir / "sounds.csv"
    if not table.is_file():
        raise RecordingsError(f"{table}: not found (give the folder holding sounds.csv and the recordings)")
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a name
            out = _rows(table, sounds_dir, csv.DictReader(f))
    except UnicodeDecodeError as exc:
        raise RecordingsError(f"{table}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except csv.Error as exc:
        raise RecordingsError(f"{table}: not a readable CSV table ({exc})") from None
    if not out:
        raise RecordingsError(f"{table}: lists no recordings")
    return out


def _rows(table: Path, sounds_dir: Path, reader: csv.DictReader) -> list[Recording]:
    """The rows of ``sounds.csv`` (``reader`` over it), each checked; ``table:line: problem`` otherwise."""
    need = ("filename", "label", "audioset_label", "duration_s", "licence", "source")
    if not set(need) <= set(reader.fieldnames or ()):
        raise RecordingsError(f"{table}: expected columns {', '.join(sorted(need))}")
    out = []
    for row in reader:
        n = reader.line_num
        if any(row.get(k) is None for k in need):
            given = sum(row.get(k) is not None for k in reader.fieldnames)
            raise RecordingsError(f"{table}:{n}: row is short ({given} of {len(reader.fieldnames)} columns)")
        name = row["filename"]
        path = sounds_dir / name
        if not name.strip():
            raise RecordingsError(f"{table}:{n}: filename is empty")
        if not is_inside(path, sounds_dir):  # the table names its own folder's files only
            raise RecordingsError(f"{table}:{n}: {name[:80]!r} lies outside {sounds_dir}")
        if path.is_dir():
            raise RecordingsError(f"{table}:{n}: {name[:80]!r} is a folder, not a recording")
        if not path.is_file():
            raise RecordingsError(f"{table}:{n}: {name} is listed but missing")
        if row["audioset_label"] not in AUDIOSET_PARENT and row["audioset_label"] not in GROUPS:
            raise RecordingsError(f"{table}:{n}: class {row['audioset_label']!r} is not in the ontology table "
                                  "(add its AudioSet parent to avtag.data.recordings.AUDIOSET_PARENT)")
        try:
            duration = float(row["duration_s"])
        except ValueError:
            duration = float("nan")
        if not 0 < duration < float("inf"):
            raise RecordingsError(f"{table}:{n}: duration_s {row['duration_s'][:40]!r} is not a positive number "
                                  "of seconds")
        out.append(Recording(name, row["label"], row["audioset_label"], duration, row["licence"], row["source"],
                             path))
    return out


def classify_licence(licence: str) -> tuple[str, bool]:
    """``(kind, redistributable)`` of a licence string from ``sounds.csv``.

    ``kind`` is one of ``CC0``, ``public domain``, ``CC BY`` (all redistributable),
    ``non-commercial``, ``share-alike``, ``CC Sampling+``, ``unknown``.
    """
    upper = licence.strip().upper()
    head = upper.split(" - ")[0]  # the licence; the credit follows " - "
    if re.search(r"\bNC\b", head.replace("-", " ")) or "NON-COMMERCIAL" in upper:
        return "non-commercial", False
    if upper.startswith("UNKNOWN"):
        return "unknown", False
    if "BY-SA" in head:
        return "share-alike", False
    if "SAMPLING+" in head:
        return "CC Sampling+", False
    if head.startswith("CC0"):
        return "CC0", True
    if head.startswith("PUBLIC DOMAIN"):
        return "public domain", True
    if re.match(r"CC BY\b", head):
        return "CC BY", True
    return "unknown", False


_ORIGINAL = re.compile(r'"([^"]+\.(?:wav|mp3|aif|aiff|flac|ogg))"', re.IGNORECASE)


def source_groups(recordings: list[Recording]) -> dict[str, str]:
    """``{filename: group id}``: files that share a credited original or their bytes.

    Original file names are the quoted ``"name.wav"`` (or .mp3/.aif/...) in the
    licence credit; identical files are found by the SHA-1 of their bytes. The
    group id is the alphabetically first file name of the group.
    """
    parent = {r.filename: r.filename for r in recordings}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_with: dict[str, str] = {}
    for r in recordings:
        keys = {"sha1:" + hashlib.sha1(r.path.read_bytes()).hexdigest()}
        keys |= {"orig:" + name.lower() for name in _ORIGINAL.findall(r.licence)}
        for key in keys:
            if key in first_with:
                union(first_with[key], r.filename)
            else:
                first_with[key] = r.filename
    return {r.filename: find(r.filename) for r in recordings}


def ancestors(label: str) -> list[str]:
    """AudioSet ancestors of ``label``, nearest first (from :data:`AUDIOSET_PARENT`)."""
    out, seen = [], {label}
    while label in AUDIOSET_PARENT:
        label = AUDIOSET_PARENT[label]
        if label in seen:
            raise RecordingsError(f"cycle in the ontology table at {label!r}")
        seen.add(label)
        out.append(label)
    return out


def group_of(label: str) -> str | None:
    """The :data:`GROUPS` category of ``label`` (itself when it is one), or None."""
    for name in [label, *ancestors(label)]:
        if name in GROUPS:
            return name
    return None


@dataclass
class SoundVocabulary:
    """The vocabulary built from the recordings and each recording's labels.

    Attributes:
        vocabulary: classes in output order (categories in :data:`GROUPS` order,
            each followed by its learnable fine classes).
        labels: ``{filename: labels}``; empty for out-of-vocabulary recordings.
        groups: ``{filename: source group id}``.
        recordings_per_class: distinct source groups per kept class.
        folded: ``{AudioSet class: where it went}`` for classes without an output of
            their own (grouped under a category, or out of vocabulary).
    """

    vocabulary: Vocabulary
    labels: dict[str, tuple[str, ...]]
    groups: dict[str, str]
    recordings_per_class: dict[str, int]
    folded: dict[str, str] = field(default_factory=dict)


def build_vocabulary(recordings: list[Recording], min_recordings: int = 3) -> SoundVocabulary:
    """Choose the learnable classes and label every recording (see module docstring).

    Args:
        recordings: the recordings to learn from (already licence-filtered).
        min_recordings: distinct source groups a class needs to be kept.

    Raises:
        RecordingsError: no class reaches ``min_recordings``.
    """
    groups = source_groups(recordings)
    fine: dict[str, set[str]] = defaultdict(set)
    coarse: dict[str, set[str]] = defaultdict(set)
    for r in recordings:
        fine[r.audioset_label].add(groups[r.filename])
        g = group_of(r.audioset_label)
        if g is not None:
            coarse[g].add(groups[r.filename])
    kept_coarse = {g for g, s in coarse.items() if len(s) >= min_recordings}
    kept_fine = {c for c, s in fine.items() if len(s) >= min_recordings}
    order: list[str] = []
    for g in GROUPS:
        if g in kept_coarse:
            order.append(g)
        order += sorted(c for c in kept_fine if c != g and group_of(c) == g)
    order += sorted(c for c in kept_fine if c not in order)  # fine classes without a category
    if not order:
        raise RecordingsError(f"no class has {min_recordings} distinct recordings; lower min_recordings")
    labels, folded = {}, {}
    for r in recordings:
        c, g = r.audioset_label, group_of(r.audioset_label)
        own = [x for x in (g, c) if x in order]
        labels[r.filename] = tuple(x for x in order if x in own)
        if c not in order:
            n = len(fine[c])
            why = f"{n} recording{'s' if n != 1 else ''}"
            if g is None:
                why += "; no AudioSet category to group it under"
            elif g in order:
                why += f"; grouped under {g}"
            else:
                why += f"; its category {g} has {len(coarse[g])}"
            folded[c] = why
    counts = {c: len(fine[c] if c in kept_fine else coarse[c]) for c in order}
    for c in order:  # a fine class that is also a category counts its whole category
        if c in kept_coarse:
            counts[c] = len(coarse[c])
    return SoundVocabulary(Vocabulary(tuple(order)), labels, groups, counts, folded)


def redistributable(
    recordings: list[Recording], allow_noncommercial: bool = False
) -> tuple[list[Recording], dict[str, str]]:
    """Split recordings by licence: ``(usable, {filename: licence kind left out})``.

    ``allow_noncommercial`` also admits non-commercial, share-alike, Sampling+ and
    unknown licences (for research models that are not redistributed).
    """
    usable, left = [], {}
    for r in recordings:
        kind, ok = classify_licence(r.licence)
        if ok or allow_noncommercial:
            usable.append(r)
        else:
            left[r.filename] = kind
    return usable, left
