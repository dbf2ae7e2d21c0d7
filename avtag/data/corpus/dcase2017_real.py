"""The DCASE 2017 Task 4 path on real sounds: ``avtag soundscapes OUT --corpus DIR --vocabulary dcase2017``.

Builds a set in the official Task 4 layout (``training_set.csv``, ``testing_set.csv``, weak and strong
ground truth, ``Y<id>_<start>_<end>.wav``; the class list with the official AudioSet ids and order) for
the 17 official classes from the registry corpus (:mod:`avtag.data.corpus.build`) plus the
redistributable recordings of ``../shared/sounds``:

* **Real classes**: a recording counts for a DCASE class through its most specific AudioSet label
  (:data:`FROM_AUDIOSET`): the class itself, or an AudioSet child that is the vehicle's own sound
  (Car passing by, Race car and Vehicle horn are Car; Train horn and Train whistle are Train), as the
  official labels mostly do (the 2017 training list labels Car on 54 % of the Car-passing-by clips and
  Train on 71 % of the Train-horn clips). :data:`OVERRIDES` corrects two ``sounds.csv`` labels from
  their credits.
* **Constructed classes** (:data:`CONSTRUCTED`): reversing beeps, car alarm, ambulance siren and
  civil-defence siren have no real recording; each gets ``devices`` synthetic alarm units
  (:mod:`avtag.data.corpus.warning_signals`: published patterns, loudspeaker horn, outdoor
  propagation and reverberation) played ``renditions`` times, written to ``OUT/constructed/`` with
  ``constructed.jsonl``, and marked ``constructed`` in ``recordings.csv`` and in every recipe event.
  The mixer puts them, like every event, over the clip's real ambience bed (road traffic in half of the
  bedded clips).
* **Missing classes** (no real recording and not an electronic signal: bicycle, skateboard) stay in the
  class list (a model has 17 outputs) but no clip carries them.
* **Split by source group** (joined through constructed components): per class, rarest first,
  ``round(test_fraction * n)`` (at least 1) of its ``n`` groups go to test when ``n >= 2`` and
  ``round(validation_fraction * n)`` (at least 1) to validation when ``n >= 4``; the rest train. A
  class with one group is training-only (no unseen-source test is possible); one with 2-3 groups has no
  validation source. Constructed devices split the same way. Beds and distractors (out-of-vocabulary
  events) are split per AudioSet class too; validation clips borrow the training beds of classes that
  have no validation bed. Distractors never carry a vehicle, siren or rail label, nor share a group
  with a DCASE recording (an OpenTTD "comedy bus start" is still a bus).
* **Mixing**: :func:`avtag.data.corpus.mixing.mix_splits` with 1-3 events per clip, real ambience beds
  under 70 % of the clips, random low-pass and codec degradation of every event (real and constructed
  alike, so bandwidth cannot tell them apart).

``OUT/coverage.md`` (and ``summary.json``) tabulates each class: real / constructed / missing, files,
source groups per split, clips per split and licences.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avtag.data.corpus.vocabulary import CorpusItem, VocabularyV2, join_groups, read_corpus, sounds_items
from avtag.data.soundscapes import SoundscapeConfig, SoundscapeError
from avtag.labels import DCASE2017_CLASSES

#: the official class list (sound_event_list_17_classes.txt): class -> (AudioSet id, Google's confidence)
OFFICIAL_IDS = {
    "Train horn": ("/m/0284vy3", 10), "Air horn, truck horn": ("/m/05x_td", 9), "Car alarm": ("/m/02mfyn", 7),
    "Reversing beeps": ("/m/02rhddq", 5), "Bicycle": ("/m/0199g", 7), "Skateboard": ("/m/06_fw", 8),
    "Ambulance (siren)": ("/m/012n7d", 6), "Fire engine, fire truck (siren)": ("/m/012ndj", 8),
    "Civil defense siren": ("/m/0dgbq", 9), "Police car (siren)": ("/m/04qvtq", 8), "Screaming": ("/m/03qc9zr", 8),
    "Car": ("/m/0k4j", 10), "Car passing by": ("/t/dd00134", 5), "Bus": ("/m/01bjv", 7), "Truck": ("/m/07r04", 8),
    "Motorcycle": ("/m/04_sv", 9), "Train": ("/m/07jdr", 6),
}

#: a recording's most specific AudioSet label -> the DCASE classes it is evidence of (see module docstring)
FROM_AUDIOSET: dict[str, tuple[str, ...]] = {
    **{c: (c,) for c in DCASE2017_CLASSES},
    "Car passing by": ("Car", "Car passing by"), "Race car, auto racing": ("Car",),
    "Vehicle horn, car horn, honking": ("Car",), "Train horn": ("Train horn", "Train"), "Train whistle": ("Train",),
    "Railroad car, train wagon": ("Train",), "Train wheels squealing": ("Train",),
}

#: ``{item id: (DCASE classes, why)}``: labels corrected from the recording's credits
OVERRIDES = {
    "sounds:car_engine.wav": (("Car",), "sounds.csv says Engine; the file is freesound 345558 'car engine'"),
    "sounds:osfx_26.wav": (("Air horn, truck horn", "Truck"), "OpenSFX 'truck start, pull away with horn': "
                           "a truck recording (file0375.mp3) with an industrial air horn"),
}

#: DCASE class -> :mod:`~avtag.data.corpus.warning_signals` kind, for the classes made from synthetic devices
CONSTRUCTED = {"Reversing beeps": "reversing-beeps", "Car alarm": "car-alarm", "Ambulance (siren)": "ambulance-siren",
               "Civil defense siren": "civil-defence-siren"}

#: AudioSet labels that make a recording unusable as an unlabelled distractor (it would be an unlabelled
#: DCASE sound); aircraft are fine
VEHICLE_LIKE = frozenset({"Motor vehicle (road)", "Rail transport", "Siren", "Emergency vehicle", "Engine",
                          "Non-motorized land vehicle", "Traffic noise, roadway noise", "Screaming"})
_VEHICLE_WORDS = re.compile(r"\b(cars?|bus|truck|lorry|trains?|tram|railway|motorcycle|motorbike|siren|police|"
                            r"ambulance|traffic|horn|scream\w*|engine)\b", re.IGNORECASE)
TRAFFIC = "Traffic noise, roadway noise"
DEFAULTS = dict(events=(1, 3), lowpass_probability=0.5, codec_probability=0.3, bed_probability=0.7,
                test_fraction=0.2, distractor_probability=0.3)


def dcase_labels(item: CorpusItem) -> tuple[str, ...]:
    """The DCASE 2017 classes ``item`` carries, in official order (empty: none)."""
    if item.id in OVERRIDES:
        return OVERRIDES[item.id][0]
    found = {d for c in item.classes for d in FROM_AUDIOSET.get(c, ())}
    return tuple(c for c in DCASE2017_CLASSES if c in found)


def split_by_class(members: dict[str, list[str]], validation_fraction: float, test_fraction: float, rng,
                   side: dict[str, str] | None = None) -> dict[str, str]:
    """``{group: split}`` for ``members = {class: its groups}`` (rules in the module docstring; groups already
    in ``side`` keep their split)."""
    side = {} if side is None else side
    for c in sorted(members, key=lambda c: (len(members[c]), c)):
        groups = sorted(set(members[c]))
        n = len(groups)
        want = {"test": max(1, round(test_fraction * n)) if n >= 2 else 0,
                "validation": max(1, round(validation_fraction * n)) if n >= 4 else 0}
        for name in ("test", "validation"):
            have = sum(side.get(g) == name for g in groups)
            for g in rng.permutation(groups):
                if have >= want[name]:
                    break
                if str(g) not in side:
                    side[str(g)], have = name, have + 1
        for g in groups:
            side.setdefault(g, "train")
    return side


def _cap_distractors(items: list[CorpusItem], groups: dict[str, str], side: dict[str, str], per_class: int,
                     rng) -> list[CorpusItem]:
    """At most ``per_class`` items per split and most specific class, round-robin over source groups."""
    buckets: dict[tuple[str, str], dict[str, list[CorpusItem]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        buckets[(side[groups[it.id]], it.classes[0])][groups[it.id]].append(it)
    out = []
    for key in sorted(buckets):
        queues = [list(v) for _, v in sorted(buckets[key].items())]
        queues = [[q[j] for j in rng.permutation(len(q))] for q in (queues[j] for j in rng.permutation(len(queues)))]
        taken = 0
        while taken < per_class and any(queues):
            for q in queues:
                if q and taken < per_class:
                    out.append(q.pop())
                    taken += 1
    return out


def construct(out: Path, devices: int, renditions: int, sample_rate: int, seed: int, validation_fraction: float,
              test_fraction: float) -> tuple[list[CorpusItem], dict[str, str]]:
    """Synthesise the constructed classes into ``out/constructed`` (FLAC + ``constructed.jsonl``).

    Returns:
        ``(items, {device group: split})``; each device's renditions share its group.
    """
    import soundfile as sf

    from avtag.data.corpus.warning_signals import draw_device, render

    folder = out / "constructed"
    folder.mkdir(parents=True, exist_ok=True)
    items, members, recipes = [], {}, []
    for c, kind in CONSTRUCTED.items():
        rng = np.random.default_rng([seed, 23, list(CONSTRUCTED).index(c)])
        members[c] = []
        for k in range(devices):
            device, group = draw_device(kind, rng), f"constructed:{kind}:d{k:02d}"
            members[c].append(group)
            for j in range(renditions):
                r = render(device, round(float(rng.uniform(3.0, 10.0)), 2), sample_rate, rng)
                rid = f"constructed:{kind}:d{k:02d}r{j}"
                path = folder / kind / f"{kind}-d{k:02d}r{j}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, r.audio, sample_rate, subtype="PCM_16")
                items.append(CorpusItem(rid, path, (c,), (c,), group, (), "permissive",
                                        "generated by avtag (no third-party material)", r.seconds, False, True,
                                        f"avtag.data.corpus.warning_signals: {kind} {device.pattern}"))
                recipes.append({"id": rid, "file": str(path.relative_to(out)), "group": group, **r.recipe()})
    (out / "constructed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recipes))
    side = split_by_class(members, validation_fraction, test_fraction, np.random.default_rng([seed, 29]))
    return items, side


@dataclass
class DcaseRealSet:
    """What :func:`generate_dcase2017_real` wrote; ``coverage``: one row per official class."""

    root: Path
    metadata_dir: Path
    media_dirs: dict[str, Path]
    clips: dict[str, int]
    coverage: list[dict]


def generate_dcase2017_real(out_dir: str | Path, corpus_dirs: str | Path | list, sounds_dir: str | Path | None = None,
                            n_train: int = 1500, n_validation: int = 200, n_test: int = 500, seed: int = 0,
                            config: SoundscapeConfig | None = None, devices: int = 16, renditions: int = 3,
                            distractors_per_class: int = 6, validation_fraction: float = 0.1, split_seed: int = 0,
                            allow_restricted: bool = False, progress: bool = False) -> DcaseRealSet:
    """Build the set (see module docstring) in the empty folder ``out_dir``.

    Args:
        corpus_dirs: one or more folders built by ``avtag corpus build`` (e.g. the default corpus and one of
            optional sources such as ``torcs-data``).
        sounds_dir: ``../shared/sounds`` (or None) to add its redistributable recordings.
        devices, renditions: synthetic alarm units per constructed class, recordings made of each.
        distractors_per_class: out-of-vocabulary recordings kept per split and AudioSet class.
        validation_fraction, split_seed: the training config's ``data.validation_fraction`` and ``data.seed``.

    Raises:
        CorpusError / SoundscapeError: no corpus, a non-empty ``out_dir``, bad counts.
    """
    from avtag.data.corpus.mixing import _write_records, load_items, mix_splits
    from avtag.data.corpus.rules import load_rules

    cfg = config or replace(SoundscapeConfig(), **DEFAULTS)
    out = Path(out_dir).expanduser()
    if (out / "metadata" / "training_set.csv").exists():
        raise SoundscapeError(f"{out}: already holds soundscapes; choose an empty folder")
    if min(n_train, n_validation, n_test) < 1 or devices < 1 or renditions < 1:
        raise SoundscapeError("need at least one training, validation and test clip, one device and one rendition")
    dirs = [corpus_dirs] if isinstance(corpus_dirs, (str, Path)) else list(corpus_dirs)
    items = [it for d in dirs for it in read_corpus(d, allow_restricted)]
    twice = sorted(i for i, n in Counter(it.id for it in items).items() if n > 1)
    if twice:
        raise SoundscapeError(f"{', '.join(map(str, dirs))}: recording {twice[0]} is in more than one corpus")
    if sounds_dir is not None:
        items += sounds_items(sounds_dir, load_rules(), allow_restricted)
    groups = join_groups(items)
    labels = {it.id: dcase_labels(it) for it in items}
    dcase_groups = {groups[i] for i, labs in labels.items() if labs}
    real = [it for it in items if labels[it.id]]
    beds = [it for it in items if it.background and not labels[it.id] and groups[it.id] not in dcase_groups]
    distractors = [it for it in items if not labels[it.id] and not it.background and groups[it.id] not in dcase_groups
                   and not VEHICLE_LIKE & set(it.labels) and not _VEHICLE_WORDS.search(f"{it.source} {it.licence}")]
    rng = np.random.default_rng([seed, 17])
    members = {c: [groups[it.id] for it in real if c in labels[it.id]] for c in DCASE2017_CLASSES}
    side = split_by_class({c: g for c, g in members.items() if g}, validation_fraction, cfg.test_fraction, rng)
    for pool in (beds, distractors):
        by_class: dict[str, list[str]] = defaultdict(list)
        for it in pool:
            by_class[it.classes[0]].append(groups[it.id])
        split_by_class(by_class, validation_fraction, cfg.test_fraction, rng, side)
    distractors = _cap_distractors(distractors, groups, side, distractors_per_class, rng)
    made, made_side = construct(out, devices, renditions, cfg.sample_rate, seed, validation_fraction, cfg.test_fraction)
    side.update(made_side)
    items = real + beds + distractors + made
    for it in made:
        groups[it.id], labels[it.id] = it.group, it.classes
    item_side = {it.id: side[groups[it.id]] for it in items}
    sources = load_items(items, cfg.sample_rate)
    rows = mix_splits(out, items, labels, DCASE2017_CLASSES, item_side, sources,
                      {"train": n_train, "validation": n_validation, "test": n_test}, cfg, seed, validation_fraction,
                      split_seed, beds=_bed_lists(beds, item_side), constructed=frozenset(it.id for it in made),
                      progress=progress)
    _official_class_list(out / "metadata")
    vocab = VocabularyV2(DCASE2017_CLASSES, labels, groups, {})
    summary = _write_records(out, items, vocab, item_side, rows, cfg, seed, 0.0, validation_fraction, split_seed)
    coverage = coverage_rows(items, labels, groups, item_side, rows)
    summary.update({"vocabulary": "dcase2017", "coverage": coverage,
                    "overrides": {k: v[1] for k, v in OVERRIDES.items()},
                    "devices_per_constructed_class": devices, "renditions_per_device": renditions})
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "coverage.md").write_text(coverage_markdown(coverage))
    media = {"train": out / "audio" / "train", "test": out / "audio" / "test"}
    return DcaseRealSet(out, out / "metadata", media, {s: len(r) for s, r in rows.items()}, coverage)


def _bed_lists(beds: list[CorpusItem], side: dict[str, str]) -> dict[str, list[str]]:
    """Bed ids per split, road traffic repeated to about half of the draws; validation borrows the training
    beds of classes without a validation bed."""
    out = {}
    for split in ("train", "validation", "test"):
        chosen = []
        for c in sorted({it.classes[0] for it in beds}):
            of_class = [it for it in beds if it.classes[0] == c]
            mine = [it for it in of_class if side[it.id] == split]
            if not mine and split == "validation":
                mine = [it for it in of_class if side[it.id] == "train"]
            chosen += mine
        traffic = [it.id for it in chosen if it.classes[0] == TRAFFIC]
        other = [it.id for it in chosen if it.classes[0] != TRAFFIC]
        out[split] = other + traffic * max(1, round(len(other) / max(1, len(traffic))))
    return out


def _official_class_list(meta: Path) -> None:
    lines = ["Class_ID\tConfidenceofAnnotation(by Google)\tClass_Label"]
    lines += [f"{OFFICIAL_IDS[c][0]}\t{OFFICIAL_IDS[c][1]}\t{c}" for c in DCASE2017_CLASSES]
    (meta / "sound_event_list_17_classes.txt").write_text("\n".join(lines) + "\n")


def coverage_rows(items: list[CorpusItem], labels, groups, side, rows) -> list[dict]:
    """One dict per official class: status, files and source groups per split, clips per split, licences."""
    out = []
    for c in DCASE2017_CLASSES:
        mine = [it for it in items if c in labels[it.id]]
        real = [it for it in mine if not it.constructed]
        made = [it for it in mine if it.constructed]
        status = "real" if real else "constructed" if made else "missing"
        per_split = {s: sorted({groups[it.id] for it in mine if side[it.id] == s})
                     for s in ("train", "validation", "test")}
        n_groups = len({groups[it.id] for it in mine})
        note = ""
        if status == "missing":
            note = "no real recording in the registries; not an electronic signal, so not synthesised"
        elif n_groups == 1:
            note = "1 source group: training only, no unseen-source test"
        elif not per_split["test"]:
            note = "no test source"
        elif not per_split["validation"]:
            note = "no validation source"
        origins: dict[str, set[str]] = defaultdict(set)
        for it in mine:
            origins[origin(it)].add(groups[it.id])
        out.append({"class": c, "status": status, "real_files": len(real), "constructed_files": len(made),
                    "source_groups": n_groups, "groups": per_split,
                    "sources": {k: len(v) for k, v in sorted(origins.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
                    "clips": {s: sum(c in sc.labels for sc in r) for s, r in rows.items()},
                    "licences": sorted({it.licence.split(" - ")[0] for it in real}), "note": note})
    return out


def origin(item: CorpusItem) -> str:
    """Where a recording comes from, for the coverage table: the package, the repository of a ``sounds.csv``
    file (``OpenTTD/OpenSFX``), or ``avtag (synthesised)``."""
    if item.constructed:
        return "avtag (synthesised)"
    repo = re.search(r"\(([^@)]+)@", item.source)
    return repo.group(1) if item.source.startswith("sounds.csv") and repo else item.source.split(" ")[0]


def coverage_markdown(coverage: list[dict]) -> str:
    """The coverage table as Markdown."""
    head = ("| class | status | files (real + constructed) | source groups train/val/test | clips train/val/test "
            "| sources (groups) | licences | note |\n|---|---|---:|---|---|---|---|---|\n")
    body = ""
    for r in coverage:
        g, k = r["groups"], r["clips"]
        files = f"{r['real_files']}" + (f" + {r['constructed_files']}" if r["constructed_files"] else "")
        sources = ", ".join(f"{name} ({n})" for name, n in r["sources"].items()) or "-"
        body += (f"| {r['class']} | {r['status']} | {files} | {len(g['train'])}/{len(g['validation'])}/{len(g['test'])}"
                 f" | {k['train']}/{k['validation']}/{k['test']} | {sources} | {'; '.join(r['licences']) or '-'} "
                 f"| {r['note']} |\n")
    return "# DCASE 2017 Task 4 classes on real sounds: coverage\n\n" + head + body
