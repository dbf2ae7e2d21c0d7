"""The files of a soundscape set beside its audio: the official-layout metadata (class list, clip
lists, weak and strong label files through :func:`avtag.events.write_events_tsv`), and
``recordings.csv``, ``ATTRIBUTION.md`` and ``summary.json``."""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from avtag.data.recordings import classify_licence
from avtag.events import write_events_tsv

if TYPE_CHECKING:
    from avtag.data.recordings import SoundVocabulary


def write_metadata(meta: Path, rows: dict[str, list], classes: tuple[str, ...]) -> None:
    """Write the official-layout CSVs and class list for ``rows``: ``{"train"|"test": [Soundscape]}``
    (:class:`avtag.data.soundscapes.Soundscape`: ``name``, ``labels``, ``events``)."""
    gt = meta / "groundtruth_release"
    gt.mkdir(parents=True, exist_ok=True)
    lines = ["Class_ID\tConfidenceofAnnotation(by Google)\tClass_Label"] + [f"\t\t{c}" for c in classes]
    (meta / "sound_event_list_17_classes.txt").write_text("\n".join(lines) + "\n")
    for split, listing, tag in (("train", "training_set.csv", "training"), ("test", "testing_set.csv", "testing")):
        with open(meta / listing, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            for s in rows[split]:
                ytid, start, end = s.name.rsplit("_", 2)
                writer.writerow([ytid, start, end, ",".join(ordered_labels(s.labels, classes)), ""])
        weak, strong = [], []
        for s in rows[split]:
            _, start, end = s.name.rsplit("_", 2)
            weak += [(f"{s.name}.wav", float(start), float(end), lab) for lab in ordered_labels(s.labels, classes)]
            strong += [(f"{s.name}.wav", e.onset, e.offset, lab)
                       for e in sorted(s.events, key=lambda e: e.onset) for lab in e.labels]
        write_events_tsv(weak, gt / f"groundtruth_weak_label_{tag}_set.csv")
        write_events_tsv(strong, gt / f"groundtruth_strong_label_{tag}_set.csv")


def ordered_labels(labels, classes: tuple[str, ...]) -> list[str]:
    """``labels`` in vocabulary order."""
    return sorted(labels, key=classes.index)


def write_summary(out: Path, recordings, sv: SoundVocabulary, side, rows, excluded, cfg, seed) -> dict:
    """Write recordings.csv, ATTRIBUTION.md and summary.json; return the summary."""
    with open(out / "recordings.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "audioset_label", "labels", "source_group", "split", "licence"])
        for r in recordings:
            w.writerow([r.filename, r.audioset_label, ";".join(sv.labels[r.filename]) or "(distractor)",
                        sv.groups[r.filename], side[r.filename], r.licence])
    credits = [f"- `{r.filename}` ({r.audioset_label}): {r.licence}. Source: {r.source}" for r in recordings]
    (out / "ATTRIBUTION.md").write_text(
        "# Recordings mixed into these soundscapes\n\nLicences (kinds): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(classify_licence(r.licence)[0] for r in recordings).items()))
        + "\n\n" + "\n".join(credits) + "\n")
    per_class = {s: Counter(lab for sc in rows[s] for lab in sc.labels) for s in rows}
    rec_per_class = {s: Counter(lab for r in recordings if side[r.filename] == s for lab in sv.labels[r.filename])
                     for s in ("train", "test")}
    summary = {
        "seed": seed, "config": asdict(cfg), "classes": list(sv.vocabulary.names),
        "clips": {s: len(r) for s, r in rows.items()},
        "clips_per_class": {s: {c: per_class[s].get(c, 0) for c in sv.vocabulary.names} for s in rows},
        "recordings_per_class": {s: {c: rec_per_class[s].get(c, 0) for c in sv.vocabulary.names}
                                 for s in rec_per_class},
        "source_groups_per_class": sv.recordings_per_class, "folded_classes": sv.folded,
        "excluded_recordings": excluded,
        "distractor_recordings": sorted(f for f, lab in sv.labels.items() if not lab),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


class MixingLog:
    """What a soundscape build has written so far, so that a killed build resumes where it stopped.

    ``OUT/.mixing/SPLIT.jsonl`` gets one line per clip once its WAV is written: the clip's recipe and the
    state of the split's random generator after it. A resumed build reads the recipes back, restores the
    generator and goes on with the next clip, so its files equal those of an uninterrupted build.
    ``OUT/.mixing/settings`` holds a fingerprint of everything the draws depend on (mixing distributions,
    seeds, clip counts, recordings with their labels and splits, class weights); a build with other
    settings refuses to resume. :meth:`finish` removes the folder.

    Raises:
        avtag.data.soundscapes.SoundscapeError: ``OUT`` holds a partial build made with other settings.
    """

    def __init__(self, out: Path, settings: object):
        import hashlib

        from avtag.data.soundscapes import SoundscapeError

        self.dir = out / ".mixing"
        key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        stamp = self.dir / "settings"
        if stamp.is_file() and stamp.read_text() != key:
            raise SoundscapeError(f"{out}: holds a partial build made with other settings; delete it or choose an "
                                  "empty folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)

    def written(self, split: str) -> tuple[list, dict | None]:
        """``([Soundscape] already written, generator state after the last of them or None)``; a line cut
        short by a kill is ignored (its clip is made again)."""
        from avtag.data.soundscapes import PlacedEvent, Soundscape

        path, scapes, state = self.dir / f"{split}.jsonl", [], None
        lines = path.read_text().splitlines() if path.is_file() else []
        for k, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                path.write_text("".join(x + "\n" for x in lines[:k]))  # later lines go after the good ones
                break
            events = [PlacedEvent(**{**e, "labels": tuple(e["labels"]), "room": e["room"] and tuple(e["room"])})
                      for e in entry["recipe"].pop("events")]
            scapes.append(Soundscape(**entry["recipe"], events=events))
            state = entry["rng"]
        return scapes, state

    def append(self, split: str, scape, rng_state: dict) -> None:
        """Record ``scape`` (its WAV written) and the generator state after it."""
        with open(self.dir / f"{split}.jsonl", "a") as f:
            f.write(json.dumps({"recipe": asdict(scape), "rng": rng_state}) + "\n")

    def finish(self) -> None:
        """The build is complete: remove the log."""
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
