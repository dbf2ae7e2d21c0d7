"""DCASE 2017 Task 4 label files and the official Subtask A (tagging) scorer.

File layout (tab-separated, no header, LF or CRLF line ends, as in the official
``groundtruth_release/`` and ``evaluation/prediction/`` files)::

    <clip file name>\\t<start>\\t<end>\\t<label>

Weak files carry the clip's segment times (``60.000  70.000``); strong files carry
the event onset/offset in seconds, with ``0 0`` meaning "sound not found".

:func:`score_files` replicates ``TaskAEvaluate.py`` + ``Models.py`` (class
``FileFormat``, method ``computeMetricsString``) from the organisers' repository
``ankitshah009/Task-4-Large-scale-weakly-supervised-sound-event-detection-for-smart-cars``
(folder ``evaluation/``, the last revision: the one with ``self.count`` and the
``end time == 0`` skip). The rules, all reproduced here:

Reading (:func:`read_label_file`, both files, same rules)
  * lines are split on ``\\n`` only; every field is stripped of ASCII white space
    (so ``\\r`` from CRLF files goes away), fields are split on ``\\t``; a UTF-8
    byte-order mark at the start of a file is dropped (avtag; the scorer kept it in
    the first clip name);
  * the clip key is the first field cut at the first ``.wav`` / ``.flac``;
  * a row with exactly 4 fields whose end time (3rd field) is not a number makes
    the whole file invalid (the scorer raises) -> :class:`ScorerFormatError`;
  * a row with exactly 4 fields and end time ``0.0`` is skipped (strong-label
    "not found" rows; also any prediction row written with end 0);
  * any other row (1, 2, 3 or 5+ fields) is kept: label = 4th field or none.
    A row without a label registers its clip with no labels, so the clip is
    scored and its ground-truth labels count as false negatives;
  * duplicate rows are kept (labels are lists, not sets).

Scoring (:func:`score_labels`)
  * only clips present in BOTH files are scored: prediction clips absent from the
    ground truth are ignored, and ground-truth clips without any prediction row
    are ignored too (their labels are NOT false negatives);
  * micro (instance-based, the ranking metric): every predicted label is matched
    to the first still-unmatched equal ground-truth label (TP) or counts as FP; a
    duplicate of an already matched label is therefore an FP; unmatched
    ground-truth labels are FN; P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R),
    each 0 when its denominator is 0;
  * class-wise: a ground-truth label (duplicates counted) is TP if it occurs in
    the clip's predictions, else FN; a predicted label (duplicates counted) not in
    the clip's ground truth is FP. Any label string is a class, so an unknown
    label gets its own row (P = 0) and lowers the macro scores;
  * scorer "macro": mean class precision over the class-wise table (a class
    whose TP+FP = 0 adds 0 but still counts), likewise recall, then
    F1 = 2 P R / (P + R) of those two means. It is NOT the mean of class F1,
    which avtag reports separately as ``mean_class_f1``;
  * "Number of Audio Files" printed by the scorer is the prediction file's clip
    counter (:attr:`LabelFile.count`).

Diagnostics (avtag, numbers unchanged): rows that look comma-separated (no tab, a
comma) or have 2-3 tab-separated fields are label-less rows to the scorer, so such
a file scores 0; :meth:`ScoreResult.warnings` says so first, and ``strict`` rejects
it. A ground truth without any label is an error naming the ground truth.
:func:`score_files` streams the prediction file and keeps only the clips of the
ground truth (memory follows the ground truth, not a 200 MB prediction file); the
ignored clips are summarised as a count and the first :data:`SHOWN_CLIPS` names.

Deviations: where no prediction clip is in the ground truth the scorer dies with
``ZeroDivisionError``; avtag raises :class:`ScorerError` with a hint instead (and
gives macro 0 where the scored clips hold no label at all, another division by 0).
Older revisions printed the ground truth's clip count as "Number of Audio Files"
and did not skip end-time-0 rows; the published ``output_invalid_prediction.csv``
predates the current ``invalid_prediction.csv`` (see ``tests/test_scorer.py``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from avtag.evaluation.metrics import PRF, prf_from_counts
from avtag.evaluation.scorer_files import (
    PY2_WHITESPACE,
    SHOWN_CLIPS,
    LabelFile,
    ScorerError,
    ScorerFormatError,
    clip_key,
    iter_lines,
    read_label_file,
)
from avtag.io.common import shorten
from avtag.labels import DCASE2017_CLASSES

_SEGMENT_TIMES = re.compile(r"_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)(?:\.wav|\.flac)?$")

__all__ = ["SHOWN_CLIPS", "LabelFile", "ScoreResult", "ScorerError", "ScorerFormatError", "clip_key", "py2_str",
           "read_label_file", "read_strong_labels", "score_files", "score_labels", "segment_times",
           "write_predictions"]


def py2_str(x: float) -> str:
    """``str(x)`` of a float on Python 2 (12 significant digits), the scorer's number format."""
    text = f"{x:.12g}"
    return text if any(c in text for c in ".eni") else text + ".0"


@dataclass
class ScoreResult:
    """Subtask A scores, all fractions in [0, 1].

    Attributes:
        micro: instance-based P/R/F1 pooled over (clip, label) pairs (the ranking metric).
        macro: the scorer's "macro": F1 of mean class precision and mean class recall.
        mean_class_f1: the plain mean of the class-wise F1 values (not the scorer's macro).
        classwise: label -> P/R/F1, official class order first, then other labels.
        counts: ``{"tp", "fp", "fn"}`` of the micro score; classwise_counts: per label.
        num_audio_files: what the scorer prints as "Number of Audio Files".
        scored_clips: clips in both files.
        ignored_prediction_count: prediction clips not in the ground truth;
        ignored_prediction_clips: the first :data:`SHOWN_CLIPS` of their names.
        unscored_groundtruth_clips: ground-truth clips without a prediction row.
        unknown_labels: predicted labels absent from the ground truth.
        format_warnings: layout problems of either file (see :meth:`LabelFile.format_warnings`).
    """

    micro: PRF
    macro: PRF
    mean_class_f1: float
    classwise: dict[str, PRF]
    counts: dict[str, int]
    classwise_counts: dict[str, dict[str, int]]
    num_audio_files: int = 0
    scored_clips: int = 0
    ignored_prediction_clips: list[str] = field(default_factory=list)
    unscored_groundtruth_clips: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    ignored_prediction_count: int = 0
    format_warnings: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per scorer behaviour that silently changed the numbers, layout problems first."""
        out = list(self.format_warnings)
        if self.ignored_prediction_count:
            out.append(f"{self.ignored_prediction_count} prediction clip(s) not in the ground truth were ignored "
                       f"(e.g. {shorten(self.ignored_prediction_clips[0])!r})")
        if self.unscored_groundtruth_clips:
            first = shorten(self.unscored_groundtruth_clips[0])
            out.append(f"{len(self.unscored_groundtruth_clips)} ground-truth clip(s) have no prediction row and were "
                       f"not scored, as the official scorer does (e.g. {first!r}); "
                       "write a label-less row per clip to count their labels as misses")
        if self.unknown_labels:
            shown = ", ".join(repr(shorten(x)) for x in self.unknown_labels[:3])
            out.append(f"{len(self.unknown_labels)} predicted label(s) never occur in the ground truth and count as "
                       f"false positives: {shown}")
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict: ``micro``, ``macro``, ``classwise`` (label -> P/R/F1) and diagnostics.

        Clip lists are summarised as ``{"count": N, "first": [up to SHOWN_CLIPS names]}``.
        """
        return {
            "micro": self.micro.to_dict(),
            "macro": self.macro.to_dict(),
            "mean_class_f1": self.mean_class_f1,
            "classwise": {k: v.to_dict() for k, v in self.classwise.items()},
            "counts": dict(self.counts),
            "classwise_counts": {k: dict(v) for k, v in self.classwise_counts.items()},
            "num_audio_files": self.num_audio_files,
            "scored_clips": self.scored_clips,
            "ignored_prediction_clips": {"count": self.ignored_prediction_count,
                                         "first": self.ignored_prediction_clips[:SHOWN_CLIPS]},
            "unscored_groundtruth_clips": {"count": len(self.unscored_groundtruth_clips),
                                           "first": self.unscored_groundtruth_clips[:SHOWN_CLIPS]},
            "unknown_labels": list(self.unknown_labels),
            "format_warnings": list(self.format_warnings),
            "definitions": {
                "micro": "instance-based: TP, FP, FN pooled over all (clip, label) pairs (DCASE 2017 Task 4 ranking)",
                "macro": "official scorer: F1 of the mean class precision and the mean class recall",
                "mean_class_f1": "mean of the class-wise F1 values",
            },
        }

    def report(self) -> str:
        """Text in the official scorer's layout and number format (class-wise as fractions, totals in %)."""
        lines = ["", "", "Class-wise Metrics", ""]
        for label, m in self.classwise.items():
            lines.append(f"\tClass = {label}, Precision = {py2_str(m.precision)}, Recall = {py2_str(m.recall)}, "
                         f"F1 Score = {py2_str(m.f1)}")
        blocks = (("Complete Metrics (Macro Average or Class-Based)", self.macro),
                  ("Complete Metrics (Micro Average or Instance-Based) - "
                   "These metrics will be used for system evaluation.", self.micro))
        for title, m in blocks:
            lines += ["", "", f"\t{title}", "", f"\tPrecision = {py2_str(m.precision * 100.0)}",
                      f"\tRecall = {py2_str(m.recall * 100.0)}", f"\tF1 Score = {py2_str(m.f1 * 100.0)}",
                      f"\tNumber of Audio Files = {self.num_audio_files}", ""]
        return "\n".join(lines) + "\n"


def _class_order(labels: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(labels))
    official = [c for c in DCASE2017_CLASSES if c in seen]
    return official + [c for c in seen if c not in DCASE2017_CLASSES]


def score_labels(predicted: LabelFile, groundtruth: LabelFile) -> ScoreResult:
    """Score predictions against ground truth exactly as ``computeMetricsString`` does.

    Args:
        predicted / groundtruth: files read by :func:`read_label_file`.
    Returns:
        :class:`ScoreResult`.
    Raises:
        ScorerError: no prediction clip is in the ground truth (the scorer would crash).
    """
    gt, pred = groundtruth.labels, predicted.labels
    tp = fp = fn = 0
    cls: dict[str, list[int]] = {}  # label -> [tp, fp, fn], in order of first appearance
    if not any(gt.values()):
        hint = " ".join(groundtruth.format_warnings()).removeprefix(f"{groundtruth.path}: ")
        raise ScorerError(
            f"{groundtruth.path}: the ground truth holds no label ({groundtruth.rows} row(s)"
            + (f"; {hint}" if hint else "; rows need <clip>\\t<start>\\t<end>\\t<label>") + ")"
        )
    scored = [k for k in pred if k in gt]
    if not scored:
        example = next(iter(predicted.names.values()), "") or next(iter(predicted.dropped_names), "")
        clips = len(pred) + predicted.dropped_clips
        raise ScorerError(
            f"{predicted.path}: none of its {clips} clip(s) is in {groundtruth.path} "
            f"(e.g. {shorten(example)!r}; ground-truth names look like "
            f"{shorten(next(iter(groundtruth.names.values()), ''))!r}; "
            "downloaded DCASE files carry a leading 'Y' that the ground truth does not)"
        )
    for clip in scored:
        truth, guess = gt[clip], pred[clip]
        matched = [False] * len(truth)
        for label in guess:  # micro: first unmatched equal ground-truth label
            for i, ref in enumerate(truth):
                if label == ref and not matched[i]:
                    matched[i] = True
                    tp += 1
                    break
            else:
                fp += 1
        fn += matched.count(False)
        for ref in truth:  # class-wise
            cls.setdefault(ref, [0, 0, 0])[0 if ref in guess else 2] += 1
        for label in guess:
            if label not in truth:
                cls.setdefault(label, [0, 0, 0])[1] += 1

    classwise: dict[str, PRF] = {}
    p_sum = r_sum = 0.0
    for label in cls:  # sums in first-appearance order, like the scorer's loop
        c_tp, c_fp, c_fn = cls[label]
        m = prf_from_counts(c_tp, c_fp, c_fn)
        classwise[label] = m
        p_sum += m.precision if c_tp + c_fp else 0.0
        r_sum += m.recall if c_tp + c_fn else 0.0
    n = len(cls)
    mp, mr = (p_sum / n, r_sum / n) if n else (0.0, 0.0)
    macro = PRF(mp, mr, 2 * mp * mr / (mp + mr) if mp + mr != 0.0 else 0.0)
    order = _class_order(cls)
    gt_vocab = {label for labels in gt.values() for label in labels}
    ignored = [predicted.names[k] for k in pred if k not in gt and k]  # "" = blank line
    pred_vocab = dict.fromkeys(label for k in scored for label in pred[k])
    return ScoreResult(
        micro=prf_from_counts(tp, fp, fn),
        macro=macro,
        mean_class_f1=sum(m.f1 for m in classwise.values()) / n if n else 0.0,
        classwise={k: classwise[k] for k in order},
        counts={"tp": tp, "fp": fp, "fn": fn},
        classwise_counts={k: dict(zip(("tp", "fp", "fn"), cls[k], strict=True)) for k in order},
        num_audio_files=predicted.count,
        scored_clips=len(scored),
        ignored_prediction_clips=(ignored + predicted.dropped_names)[:SHOWN_CLIPS],
        ignored_prediction_count=len(ignored) + predicted.dropped_clips,
        unscored_groundtruth_clips=[groundtruth.names[k] for k in gt if k not in pred and k],
        unknown_labels=[x for x in pred_vocab if x not in gt_vocab],
        format_warnings=predicted.format_warnings() + groundtruth.format_warnings(),
    )


def score_files(pred_path: str | Path, gt_path: str | Path, *, strict: bool = False) -> ScoreResult:
    """``TaskAEvaluate.py GROUNDTRUTH PREDICTIONS``: read both files and score them.

    The ground truth is read first; the prediction file is streamed and only its
    clips that are in the ground truth are kept (others are counted), so memory does
    not grow with the prediction file.

    Args:
        pred_path: prediction file; gt_path: weak ground-truth file.
        strict: raise :class:`ScorerError` for anything the scorer silently tolerates
            (comma-separated or 3-column rows, prediction clips not in the ground truth,
            ground-truth clips without a prediction row, labels that never occur in the
            ground truth).
    Returns:
        :class:`ScoreResult` (``.to_dict()`` for JSON).
    Raises:
        ScorerFormatError / ScorerError: see :func:`read_label_file`, :func:`score_labels`;
            the message starts with the file at fault.
    """
    groundtruth = read_label_file(gt_path)
    result = score_labels(read_label_file(pred_path, keep=groundtruth.labels), groundtruth)
    if strict and result.warnings():
        first = result.warnings()[0]
        named = first.startswith((f"{pred_path}: ", f"{gt_path}: "))
        raise ScorerError(f"{first if named else f'{pred_path}: {first}'} (--strict)")
    return result


def segment_times(clip_name: str) -> tuple[float, float] | None:
    """``(start, end)`` seconds from a DCASE clip name ``<id>_<start>_<end>.wav``, else None."""
    m = _SEGMENT_TIMES.search(clip_name.strip())
    return (float(m.group(1)), float(m.group(2))) if m else None


def write_predictions(path: str | Path, predictions: Mapping[str, Iterable[str]], *, clip_length: float = 10.0) -> None:
    """Write weak predictions in the official layout ``<clip>\\t<start>\\t<end>\\t<label>`` (LF).

    Args:
        path: output file.
        predictions: clip file name (e.g. ``-5QrBL6MzLg_60.000_70.000.wav``) -> labels.
            Start/end come from the name, else ``0.000``/``clip_length``.
            A clip with no label is written as a row holding only its name (as in the
            official ``prediction_missing.csv``), so the scorer still scores it.
    Raises:
        ScorerError: a label or name with a tab/newline, or an end time of 0
            (the scorer would silently drop that row).
    """
    rows = []
    for clip, labels in predictions.items():
        times = segment_times(clip) or (0.0, clip_length)
        if times[1] == 0.0:
            raise ScorerError(f"{clip}: end time 0 would make the official scorer skip this row")
        labels = list(dict.fromkeys(labels))
        for text in [clip, *labels]:
            if any(c in text for c in "\t\r\n"):
                raise ScorerError(f"{shorten(clip)}: {shorten(repr(text))} contains a tab or line break")
        rows += [f"{clip}\t{times[0]:.3f}\t{times[1]:.3f}\t{label}" for label in labels] or [clip]
    Path(path).write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def read_strong_labels(path: str | Path) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    """Read a strong-label file ``<clip>\\t<onset>\\t<offset>\\t<label>`` (seconds).

    Returns:
        ``(events, clips)``: events ``(clip, onset, offset, label)`` with the clip file
        name as written; rows with ``0 0`` times ("not found") give no event, but
        their clip is listed in ``clips`` (every clip, in file order).
    Raises:
        ScorerFormatError: a row without 4 fields, non-numeric times, offset < onset.
    """
    path = Path(path)
    events, clips = [], {}
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip(PY2_WHITESPACE):
            continue
        fields = [f.strip(PY2_WHITESPACE) for f in line.split("\t")]
        if len(fields) != 4 or not fields[0] or not fields[3]:
            raise ScorerFormatError(f"{path}:{lineno}: expected <clip>\\t<onset>\\t<offset>\\t<label>, "
                                    f"got {shorten(repr(line))}")
        try:
            onset, offset = float(fields[1]), float(fields[2])
        except ValueError:
            raise ScorerFormatError(f"{path}:{lineno}: onset/offset {shorten(repr(fields[1]), 40)}/"
                                    f"{shorten(repr(fields[2]), 40)} are not numbers") from None
        if not 0.0 <= onset <= offset < float("inf"):  # NaN fails too
            raise ScorerFormatError(f"{path}:{lineno}: onset {onset} / offset {offset} is not a span of seconds "
                                    "(0 <= onset <= offset, finite)")
        clips.setdefault(fields[0], None)
        if not (onset == 0.0 and offset == 0.0):
            events.append((fields[0], onset, offset, fields[3]))
    return events, list(clips)
