"""DCASE 2017 Task 4 data layer: the official files, read exactly as released.

Files (from the organisers' release, see ``../shared/dcase2017/SOURCES.md``):

- ``training_set.csv`` / ``testing_set.csv``: ``ytid,start,end,"label,label",ids``
  (comma-separated, quoted multi-label fields, no header);
- ``groundtruth_release/groundtruth_{weak,strong}_label_{training,testing,evaluation}_set.csv``:
  tab-separated, no header, ``<ytid>_<start>_<end>.wav  start|onset  end|offset  label``;
  a strong row with 0/0 times means the sound was not found in the clip;
- ``sound_event_list_17_classes.txt``: ``id  confidence  label`` with a header row.

Line endings are mixed (CRLF and LF); every reader here accepts both.

A clip is named ``<ytid>_<start>_<end>`` (the ground-truth file name without
``.wav``); its downloaded media file is ``Y<ytid>_<start>_<end>.<ext>``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from avtag import AvtagError
from avtag.io.media import MEDIA_EXTENSIONS
from avtag.labels import DCASE2017, Vocabulary

SPLITS = ("train", "validation", "test", "eval")


class DatasetError(AvtagError):
    """An official metadata file that is missing or malformed."""


@dataclass
class ClipRecord:
    """One clip of a split.

    Attributes:
        name: ``<ytid>_<start>_<end>`` as in the ground-truth files (no ``.wav``).
        youtube_id: YouTube video ID.
        start, end: excerpt bounds in the YouTube video, seconds.
        labels: weak (clip-level) labels, official class names.
        events: strong labels ``(label, onset, offset)`` in seconds from the clip
            start, or None where the split has none. Events with 0/0 times (sound
            not found) are dropped.
    """

    name: str
    youtube_id: str
    start: float
    end: float
    labels: tuple[str, ...]
    events: list[tuple[str, float, float]] | None = field(default=None)

    @property
    def file_name(self) -> str:
        """The clip's name in the official label/prediction files: ``<name>.wav``."""
        return self.name + ".wav"

    @property
    def media_stem(self) -> str:
        """Stem of the downloaded media file: ``Y<name>``."""
        return "Y" + self.name


def _read_text(path: Path) -> str:
    from avtag.io.common import MAX_LIST_BYTES, read_small_text

    if not path.exists():
        raise DatasetError(f"{path}: official DCASE 2017 file not found")
    try:
        text = read_small_text(path, MAX_LIST_BYTES)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_class_list(metadata_dir: str | Path) -> Vocabulary:
    """The classes of ``sound_event_list_17_classes.txt`` in file order."""
    path = Path(metadata_dir) / "sound_event_list_17_classes.txt"
    rows = [line.split("\t") for line in _read_text(path).split("\n") if line.strip()]
    names = [r[-1].strip() for r in rows[1:]]
    if not names:
        raise DatasetError(f"{path}: no classes found")
    return Vocabulary(tuple(names))


def _check_clip_id(ytid: str, where: str, shown: str | None = None) -> None:
    """DatasetError unless ``ytid`` is a plain name: clip names become cache file names."""
    if not ytid or any(c in (shown or ytid) for c in "/\\\0") or ytid in (".", ".."):
        raise DatasetError(f"{where} {(shown or ytid)[:60]!r} is empty or holds a path separator")


def clip_name(youtube_id: str, start: str, end: str) -> str:
    """``<ytid>_<start>_<end>`` with the times written as in the official files."""
    return f"{youtube_id}_{start}_{end}"


def read_clip_list(path: str | Path, vocabulary: Vocabulary = DCASE2017) -> list[ClipRecord]:
    """Read ``training_set.csv`` or ``testing_set.csv`` (comma-separated, quoted labels).

    Raises:
        DatasetError: a row with too few fields, a label outside ``vocabulary``, no clips at all.
    """
    path = Path(path)
    records = []
    for n, row in enumerate(csv.reader(io.StringIO(_read_text(path))), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 4:
            raise DatasetError(f"{path}:{n}: expected ytid,start,end,labels[,ids], got {len(row)} fields")
        ytid, start, end, labels = row[0].strip(), row[1].strip(), row[2].strip(), row[3]
        try:
            t0, t1 = float(start), float(end)
        except ValueError:
            raise DatasetError(f"{path}:{n}: start/end {start[:20]!r}/{end[:20]!r} are not seconds") from None
        _check_clip_id(ytid, f"{path}:{n}: clip id")
        names = tuple(x.strip() for x in _split_labels(labels, vocabulary))
        for name in names:
            if name not in vocabulary:
                raise DatasetError(f"{path}:{n}: unknown label {name!r}")
        records.append(ClipRecord(clip_name(ytid, start, end), ytid, t0, t1, names))
    if not records:
        raise DatasetError(f"{path}: lists no clips")
    return records


def _split_labels(field: str, vocabulary: Vocabulary) -> list[str]:
    """Split ``"Air horn, truck horn,Truck"`` into class names (names may contain commas)."""
    parts = [p.strip() for p in field.split(",")]
    out, i = [], 0
    while i < len(parts):
        for j in range(len(parts), i, -1):  # longest run of comma-joined parts that is a class
            candidate = ", ".join(parts[i:j])
            if candidate in vocabulary:
                out.append(candidate)
                i = j
                break
        else:
            out.append(parts[i])
            i += 1
    return out


def read_label_file(path: str | Path, vocabulary: Vocabulary = DCASE2017) -> dict[str, list[tuple[str, float, float]]]:
    """Read an official tab-separated weak or strong label file.

    Returns:
        ``{clip name: [(label, t0, t1), ...]}`` in file order; for weak files the
        times are the excerpt bounds, for strong files onset/offset in seconds.

    Raises:
        DatasetError: a malformed row or an unknown label (with file and line).
    """
    from avtag.events import read_events_tsv

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: official DCASE 2017 file not found")
    try:
        rows = read_events_tsv(path, keep_empty=True, labels=vocabulary)
    except AvtagError as exc:
        raise DatasetError(str(exc)) from None
    out: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for file_name, t0, t1, label in rows:
        out[_strip_ext(file_name)].append((label, t0, t1))
    return dict(out)


def _strip_ext(file_name: str) -> str:
    return file_name[:-4] if file_name.lower().endswith(".wav") else file_name


def _from_weak_file(path: Path, vocabulary: Vocabulary) -> list[ClipRecord]:
    records = []
    for name, rows in read_label_file(path, vocabulary).items():
        try:
            ytid, start, end = name.rsplit("_", 2)
            t0, t1 = float(start), float(end)
        except ValueError:
            raise DatasetError(f"{path}: clip {name[:60]!r} is not named <ytid>_<start>_<end>.wav") from None
        _check_clip_id(ytid, f"{path}: clip", name)
        labels = tuple(dict.fromkeys(r[0] for r in rows))
        records.append(ClipRecord(name, ytid, t0, t1, labels))
    if not records:
        raise DatasetError(f"{path}: lists no clips")
    return records


def _attach_strong(records: list[ClipRecord], path: Path, vocabulary: Vocabulary) -> None:
    strong = read_label_file(path, vocabulary)
    for r in records:
        rows = strong.get(r.name, [])
        r.events = [(lab, a, b) for lab, a, b in rows if not (a == 0 and b == 0)]


def in_validation(name: str, fraction: float, seed: int) -> bool:
    """Seeded, order-independent hold-out: hash of ``(seed, name)`` below ``fraction``."""
    digest = hashlib.sha1(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def read_split(
    metadata_dir: str | Path,
    split: str,
    validation_fraction: float = 0.1,
    seed: int = 0,
    vocabulary: Vocabulary = DCASE2017,
) -> list[ClipRecord]:
    """The clips of one split, from the official files in ``metadata_dir``.

    Splits: ``train`` (``training_set.csv`` minus the validation hold-out),
    ``validation`` (held out from ``training_set.csv`` by :func:`in_validation`),
    ``test`` (``testing_set.csv``, strong labels attached), ``eval`` (the evaluation
    set's weak ground truth, strong labels attached), ``train_full`` (all of
    ``training_set.csv``).

    Raises:
        DatasetError: unknown split, missing or malformed file.
    """
    root = Path(metadata_dir)
    gt = root / "groundtruth_release"
    if split in ("train", "validation", "train_full"):
        records = read_clip_list(root / "training_set.csv", vocabulary)
        if split == "train_full":
            return records
        want = split == "validation"
        return [r for r in records if in_validation(r.name, validation_fraction, seed) == want]
    if split == "test":
        records = read_clip_list(root / "testing_set.csv", vocabulary)
        strong = gt / "groundtruth_strong_label_testing_set.csv"
    elif split == "eval":
        records = _from_weak_file(gt / "groundtruth_weak_label_evaluation_set.csv", vocabulary)
        strong = gt / "groundtruth_strong_label_evaluation_set.csv"
    else:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if strong.is_file():
        _attach_strong(records, strong, vocabulary)
    return records


def index_media_dir(media_dir: str | Path) -> dict[str, Path]:
    """Map clip name -> media file for files named ``Y<name>.<ext>`` (or ``<name>.<ext>``).

    Only media extensions count; a ``Y``-prefixed file wins over an unprefixed one.
    A missing folder gives an empty index (every clip is then reported missing). An entry that
    cannot be examined (a symbolic link to itself) is listed: its clip fails alone, with the reason.
    """
    media_dir = Path(media_dir)
    index: dict[str, Path] = {}
    if not media_dir.is_dir():
        return index
    prefixed = {}
    with os.scandir(media_dir) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in MEDIA_EXTENSIONS:
                continue
            try:
                if not entry.is_file():
                    continue
            except OSError:
                pass  # a symlink loop, a dead mount: kept, so decoding it fails with the reason in failed.tsv
            if stem.startswith("Y"):
                prefixed[stem[1:]] = Path(entry.path)
            index.setdefault(stem, Path(entry.path))
    index.update(prefixed)
    return index


def resolve_media(
    records: list[ClipRecord], media_dir: str | Path
) -> tuple[list[tuple[ClipRecord, Path]], list[ClipRecord]]:
    """Pair each record with its media file in ``media_dir``.

    Returns:
        ``(found, missing)``: ``[(record, path)]`` and the records without a file.
    """
    index = index_media_dir(media_dir)
    found, missing = [], []
    for r in records:
        path = index.get(r.name)
        if path is None:
            missing.append(r)
        else:
            found.append((r, path))
    return found, missing


def write_missing_report(path: str | Path, missing: list[ClipRecord], media_dir: str | Path) -> Path:
    """Write the clips without a media file, one per line (``Y``-name and labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# {len(missing)} clips have no media file in {media_dir}\n")
        for r in missing:
            f.write(f"{r.media_stem}\t{','.join(r.labels)}\n")
    return path


def class_counts(records: list[ClipRecord]) -> dict[str, int]:
    """Number of clips per class (a clip counts once per label)."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        for label in r.labels:
            counts[label] += 1
    return dict(counts)
