"""Sound events: the one ``Event`` type, frame-wise probabilities -> events, and the DCASE strong-label TSV.

An :class:`Event` is ``(label, onset, offset)`` with times in seconds from the clip start.

Post-processing as in the DCASE 2017 Task 4 Subtask B systems (Xu et al. 2017;
Kong et al. 2020, arXiv 1912.04761): threshold each class's frame-wise
probability (one threshold per class allowed), smooth the binary activity with a
median filter, drop events shorter than a minimum duration and join events of
the same class separated by less than a minimum gap.

Events can be written and read in the DCASE strong-label TSV layout
(``groundtruth_strong_label_*_set.csv``)::

    <clip file name>\\t<onset>\\t<offset>\\t<label>

with no header, e.g. ``-5QrBL6MzLg_60.000_70.000.wav  0.917  2.029  Train horn``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Container, Iterable, NamedTuple, Sequence

import numpy as np

from avtag import AvtagError
from avtag.labels import Vocabulary

#: one row of a DCASE strong-label file: ``(clip file name, onset s, offset s, label)``
EventRow = tuple[str, float, float, str]
#: the latest onset / offset a label file may give, in seconds (a day; the event roll of the
#: official metrics allocates one row per 20 ms, so 1e300 s ended in a numpy error)
MAX_EVENT_SECONDS = 86_400.0


class Event(NamedTuple):
    """One sound event of a clip: class ``label`` from ``onset`` to ``offset`` seconds."""

    label: str
    onset: float
    offset: float


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def framewise_to_events(
    framewise,
    frame_hop: float,
    vocabulary: Vocabulary | Sequence[str],
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    median_filter_s: float = 0.0,
    min_duration_s: float = 0.0,
    min_gap_s: float = 0.0,
    duration: float | None = None,
) -> list[Event]:
    """Turn frame-wise probabilities of one clip into an event list.

    Args:
        framewise: ``(time_frames, classes)`` probabilities (NumPy or torch).
        frame_hop: seconds between frames; frame ``t`` covers
            ``[t * frame_hop, (t + 1) * frame_hop)``.
        vocabulary: class names, in the column order of ``framewise``.
        threshold: one value, or one per class ``(classes,)``; a frame is active
            where ``probability >= threshold``.
        median_filter_s: length of the median filter on the binary activity,
            seconds (rounded to an odd number of frames; 0 disables it).
        min_duration_s: events shorter than this are dropped.
        min_gap_s: events of one class closer than this are joined.
        duration: clip length in seconds; offsets are clipped to it.

    Returns:
        ``[(label, onset, offset), ...]`` in seconds, sorted by onset then label.

    Raises:
        AvtagError: shapes that do not match the vocabulary or thresholds.
    """
    probs = _as_numpy(framewise)
    names = list(vocabulary.names if isinstance(vocabulary, Vocabulary) else vocabulary)
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise AvtagError(f"frame-wise output must be (time_frames, {len(names)}); got {probs.shape}")
    if frame_hop <= 0:
        raise AvtagError(f"frame_hop must be positive, got {frame_hop}")
    thr = np.asarray(threshold, dtype=np.float32)
    if thr.ndim == 0:
        thr = np.full(len(names), float(thr), dtype=np.float32)
    if thr.shape != (len(names),):
        raise AvtagError(f"threshold must be one value or {len(names)} values (one per class); got shape {thr.shape}")
    active = probs >= thr[None, :]
    width = int(round(median_filter_s / frame_hop)) if median_filter_s > 0 else 0
    if width > 1:
        width += 1 - width % 2  # odd length keeps events centred
        from scipy.ndimage import median_filter  # imported here: scipy costs ~0.4 s at start-up

        active = median_filter(active.astype(np.uint8), size=(width, 1), mode="nearest").astype(bool)
    events: list[Event] = []
    for c, name in enumerate(names):
        segments = _runs(active[:, c])
        segments = _join(segments, int(round(min_gap_s / frame_hop))) if min_gap_s > 0 else segments
        for start, stop in segments:
            onset, offset = start * frame_hop, stop * frame_hop
            if duration is not None:
                offset = min(offset, duration)
            if offset - onset + 1e-9 >= min_duration_s and offset > onset:
                events.append(Event(name, round(float(onset), 3), round(float(offset), 3)))
    events.sort(key=lambda e: (e.onset, e.label))
    return events


def merge_touching(events: Iterable[Event], gap: float = 0.05) -> list[Event]:
    """Join events of one label that touch (closer than ``gap`` seconds), e.g. across the windows
    of a long file; sorted by onset, then label."""
    merged: list[list] = []
    for label, onset, offset in sorted(events, key=lambda e: (e[0], e[1])):
        if merged and merged[-1][0] == label and onset <= merged[-1][2] + gap:
            merged[-1][2] = max(merged[-1][2], offset)
        else:
            merged.append([label, onset, offset])
    return sorted((Event(*m) for m in merged), key=lambda e: (e.onset, e.label))


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame ranges (stop exclusive) where ``active`` is True."""
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _join(segments: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, stop in segments:
        if out and start - out[-1][1] < max_gap:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


# ----------------------------------------------------------------------------- strong-label TSV
def clip_file_name(name: str) -> str:
    """The clip's name in DCASE label files: ``<ytid>_<start>_<end>.wav``.

    Accepts a clip name (``<ytid>_<start>_<end>``), a label-file name (``....wav``)
    or a downloaded media path (``.../Y<ytid>_<start>_<end>.mp4``): a media
    extension is removed, and the ``Y`` of a downloaded file is dropped (YouTube
    IDs have 11 characters, so a 12-character ID part starting with ``Y`` is one).
    """
    from avtag.io.media import MEDIA_EXTENSIONS

    stem = Path(name).name
    suffix = Path(stem).suffix.lower()
    if suffix in MEDIA_EXTENSIONS:
        stem = stem[: -len(suffix)]
    parts = stem.rsplit("_", 2)
    if len(parts) == 3 and len(parts[0]) == 12 and parts[0].startswith("Y"):
        stem = stem[1:]
    return stem + ".wav"


def write_events_tsv(rows: Iterable[EventRow], path: str | Path | IO[str]) -> int:
    """Write strong labels ``(clip file name, onset, offset, label)`` as DCASE TSV.

    Onsets/offsets are written in seconds with three decimals, no header.
    ``path`` is a file path or an open text stream. Returns the number of rows.
    """
    lines = [f"{clip}\t{onset:.3f}\t{offset:.3f}\t{label}\n" for clip, onset, offset, label in rows]
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("".join(lines))
    else:
        path.write("".join(lines))
    return len(lines)


def events_to_rows(clip: str, events: Iterable[Event]) -> list[EventRow]:
    """``(label, onset, offset)`` events of one clip -> TSV rows ``(clip file name, onset, offset, label)``."""
    file_name = clip_file_name(clip)
    return [(file_name, onset, offset, label) for label, onset, offset in events]


def read_events_tsv(path: str | Path | IO[str], keep_empty: bool = False,
                    labels: Container[str] | None = None) -> list[EventRow]:
    """Read a DCASE label TSV (CRLF or LF) into ``(clip file name, onset, offset, label)`` rows.

    The one reader of the official layout for data and predictions (weak-label files have the
    same four fields, with the excerpt bounds as times). The official scorer's own, more tolerant
    reading rules live in :mod:`avtag.evaluation.scorer_files`, where scoring needs them.

    Rows with 0/0 times ("sound not found in the clip") are dropped unless ``keep_empty``; with
    ``labels``, a label outside it is an error. Raises :class:`AvtagError` naming the file and
    line of a malformed row, an unknown label, or times that are no span (negative, reversed,
    NaN, infinite, beyond :data:`MAX_EVENT_SECONDS`).
    """
    if isinstance(path, (str, Path)):
        from avtag.io.common import MAX_LIST_BYTES, read_small_text

        if not Path(path).exists():
            raise AvtagError(f"{path}: strong-label file not found")
        try:
            text, where = read_small_text(path, MAX_LIST_BYTES), str(path)
        except OSError as exc:
            raise AvtagError(f"{path}: cannot read ({exc.strerror})") from None
    else:
        text, where = path.read(), "<stream>"
    rows = []
    for number, line in enumerate(io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")), start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise AvtagError(f"{where}:{number}: expected 'file<TAB>onset<TAB>offset<TAB>label', got {line[:80]!r}")
        try:
            onset, offset = float(parts[1]), float(parts[2])
        except ValueError:
            raise AvtagError(f"{where}:{number}: onset/offset are not numbers: {line[:80]!r}") from None
        if not 0.0 <= onset <= offset <= MAX_EVENT_SECONDS:  # NaN fails too
            raise AvtagError(f"{where}:{number}: onset/offset {parts[1][:20]}/{parts[2][:20]} are not a span of "
                             f"seconds (need 0 <= onset <= offset <= {MAX_EVENT_SECONDS:.0f})")
        label = parts[3].strip()
        if labels is not None and label not in labels:
            raise AvtagError(f"{where}:{number}: unknown label {label!r}")
        if onset == 0.0 and offset == 0.0 and not keep_empty:
            continue
        rows.append((parts[0].strip(), onset, offset, label))
    return rows
