"""Reading DCASE 2017 Task 4 weak-label files with the official scorer's rules (its quirks kept).

The rules are listed in :mod:`avtag.evaluation.scorer`, which scores what is read
here. :func:`read_label_file` streams a file line by line; with ``keep`` (the
ground truth's clips) it stores only those clips and counts the rest, so a huge
prediction file costs about 9 bytes per row of an ignored clip.
"""
from __future__ import annotations

from array import array
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.io.common import require_regular, shorten

#: characters Python 2 ``str.strip()`` removes (the scorer ran on Python 2)
PY2_WHITESPACE = " \t\n\r\x0b\x0c"
#: clip names listed in diagnostics before "... and N more"
SHOWN_CLIPS = 10


class ScorerError(AvtagError):
    """Input that cannot be scored (nothing in common with the ground truth, strict-mode problems)."""


class ScorerFormatError(ScorerError):
    """A label file the official scorer would also reject: ``file:line: problem``."""


def clip_key(name: str) -> str:
    """The scorer's clip key: ``name`` cut at the first ``.wav`` then ``.flac``, stripped."""
    return name.split(".wav")[0].split(".flac")[0].strip(PY2_WHITESPACE)


def _py2_float(text: str) -> float:
    """``float()`` as on Python 2: no ``_`` digit separators."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of ``path`` split on ``\\n`` only (the final newline starts no row), one at a time; BOM dropped."""
    try:
        f = open(require_regular(path), "rb")
    except OSError as exc:
        raise ScorerError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        first = True
        try:
            for raw in f:
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if first:
                    line, first = line.removeprefix(b"\xef\xbb\xbf"), False
                yield line.decode("utf-8", errors="surrogateescape")
        except OSError as exc:
            raise ScorerError(f"{path}: cannot read ({exc.strerror or exc})") from None


@dataclass
class LabelFile:
    """A weak-label file as the official scorer reads it.

    Attributes:
        path: the file.
        labels: clip key -> labels in file order (duplicates kept, may be empty).
        names: clip key -> the first clip file name as written.
        count: the scorer's "Number of Audio Files" counter for this file.
        rows: rows read; skipped_zero_end: 4-field rows dropped for end time 0;
        unlabelled_rows: rows kept without a label.
        comma_rows, short_rows: rows with no tab but a comma / with 2-3 fields (the
            label missing), each ``[count, first line number]``.
        bad_times: 4-field rows whose times are no span (start after end, negative, not a
            finite number), ``[count, first line number]``; the weak-label scorer ignores them.
        dropped_clips: clips left out by ``keep`` (counted, not stored);
        dropped_names: the first :data:`SHOWN_CLIPS` of their names.
    """

    path: str
    labels: dict[str, list[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    count: int = 0
    rows: int = 0
    skipped_zero_end: int = 0
    unlabelled_rows: int = 0
    comma_rows: list[int] = field(default_factory=lambda: [0, 0])
    short_rows: list[int] = field(default_factory=lambda: [0, 0])
    bad_times: list[int] = field(default_factory=lambda: [0, 0])
    dropped_clips: int = 0
    dropped_names: list[str] = field(default_factory=list)

    def format_warnings(self) -> list[str]:
        """One line per layout problem that silently turns rows into label-less rows."""
        out = []
        layout = "<clip>\\t<start>\\t<end>\\t<label>"
        if self.comma_rows[0]:
            out.append(f"{self.path}: {self.comma_rows[0]} row(s) have commas but no tab (first at line "
                       f"{self.comma_rows[1]}): the file looks comma-separated; the scorer reads each such row as a "
                       f"clip without labels (scores 0). Use tabs: {layout}")
        if self.bad_times[0]:
            out.append(f"{self.path}: {self.bad_times[0]} row(s) have times that are not a span (start after end, "
                       f"negative or not a finite number; first at line {self.bad_times[1]}): the weak-label scorer "
                       "ignores times, so their labels count")
        if self.short_rows[0]:
            out.append(f"{self.path}: {self.short_rows[0]} row(s) have 2-3 tab-separated fields (first at line "
                       f"{self.short_rows[1]}): the label must be the 4th field ({layout}); the scorer reads them "
                       "as clips without labels")
        return out


class _Dropped:
    """Rows of clips left out of a :class:`LabelFile`: enough to give the scorer's count exactly.

    The scorer counts a row when its clip is not registered yet; a clip registers at
    its first row whose end time is not 0. Per row only a 64-bit hash of the clip
    key and that flag are kept (9 bytes), and the count is worked out at the end.
    """

    def __init__(self) -> None:
        self.hashes, self.registers = array("q"), bytearray()
        self._last: tuple[str, bool] | None = None
        self.shown: dict[str, str] = {}

    def add(self, key: str, name: str, registers: bool) -> None:
        """Record a row of clip ``key`` (``registers``: its end time is not 0, so the scorer registers the clip)."""
        if self._last == (key, True):
            return  # consecutive rows of a registered clip count for nothing
        self._last = (key, registers)
        self.hashes.append(hash(key))
        self.registers.append(registers)
        if registers and key and len(self.shown) < SHOWN_CLIPS and key not in self.shown:
            self.shown[key] = name

    def finish(self, out: LabelFile) -> None:
        """Add the count and the registered clips (blank key excluded) to ``out``."""
        n = len(self.hashes)
        if not n:
            return
        order = np.argsort(np.frombuffer(self.hashes, dtype=np.int64), kind="stable")  # clips together, file order
        h = np.frombuffer(self.hashes, dtype=np.int64)[order]
        regs = np.frombuffer(self.registers, dtype=np.bool_)[order]
        del order
        is_start = np.empty(n, dtype=np.bool_)
        is_start[0] = True
        np.not_equal(h[1:], h[:-1], out=is_start[1:])
        start = np.flatnonzero(is_start).astype(np.int32)
        blank = h[start] == hash("")
        del h, is_start
        reg_rows = np.flatnonzero(regs).astype(np.int32)
        del regs
        end = np.empty_like(start)
        end[:-1], end[-1] = start[1:], n
        # first registering row at or after each clip's first row; it is the clip's own if before `end`
        first = reg_rows[np.minimum(np.searchsorted(reg_rows, start), reg_rows.size - 1)] if reg_rows.size \
            else np.full_like(start, n)
        del reg_rows
        registered = (first >= start) & (first < end)
        # the scorer counts every row of a clip up to its first registering row, or all of them
        np.copyto(end, first + 1, where=registered)
        out.count += int((end - start).sum(dtype=np.int64))
        out.dropped_clips += int(np.count_nonzero(registered & ~blank))
        out.dropped_names = list(self.shown.values())


def _is_span(start: str, end: float) -> bool:
    """``start`` (text) and ``end`` (seconds) make a span: finite, 0 <= start <= end."""
    try:
        return 0.0 <= _py2_float(start) <= end < float("inf")
    except ValueError:
        return False


def read_label_file(path: str | Path, keep: Container[str] | None = None) -> LabelFile:
    """Read a weak-label (ground-truth or prediction) file with the official scorer's rules.

    Args:
        path: tab-separated file ``<clip>\\t<start>\\t<end>\\t<label>``.
        keep: only store clips whose key is in ``keep`` (e.g. the ground truth's
            labels); the others are only counted, so memory does not grow with them.
    Returns:
        :class:`LabelFile` (see the module docstring for what is tolerated).
    Raises:
        ScorerFormatError: a 4-field row whose end time is not a number.
        ScorerError: the file cannot be read.
    """
    path = Path(path)
    out = LabelFile(path=str(path))
    dropped = _Dropped()
    for lineno, line in enumerate(iter_lines(path), start=1):
        out.rows += 1
        fields = line.split("\t")
        key = clip_key(fields[0])
        if len(fields) == 1 and "," in line:
            out.comma_rows[0] += 1
            out.comma_rows[1] = out.comma_rows[1] or lineno
        elif len(fields) in (2, 3):
            out.short_rows[0] += 1
            out.short_rows[1] = out.short_rows[1] or lineno
        stored = keep is None or key in keep
        if stored and key not in out.labels:
            out.count += 1
        if len(fields) == 4:
            end = fields[2].strip(PY2_WHITESPACE)
            try:
                end_time = _py2_float(end)
            except ValueError:
                raise ScorerFormatError(
                    f"{path}:{lineno}: end time {shorten(repr(end), 60)} is not a number (4-field rows need "
                    "<clip>\\t<start>\\t<end>\\t<label>; the official scorer rejects this file)"
                ) from None
            if not _is_span(fields[1].strip(PY2_WHITESPACE), end_time):
                out.bad_times[0] += 1
                out.bad_times[1] = out.bad_times[1] or lineno
            if end_time == 0.0:
                out.skipped_zero_end += 1
                if not stored:
                    dropped.add(key, "", False)
                continue
        label = fields[3].strip(PY2_WHITESPACE) if len(fields) > 3 else ""
        if not label:
            out.unlabelled_rows += 1
        if not stored:
            dropped.add(key, fields[0].strip(PY2_WHITESPACE), True)
            continue
        if key not in out.labels:
            out.labels[key] = []
            out.names[key] = fields[0].strip(PY2_WHITESPACE)
        if label:
            out.labels[key].append(label)
    dropped.finish(out)
    return out
