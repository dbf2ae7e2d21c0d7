"""Tagging (weak-label) and detection (strong-label) metrics for DCASE 2017 Task 4.

Weak labels, on matrices ``(clips, classes)``:
  * :func:`tagging_metrics`: micro (instance-based) P/R/F1, class-wise P/R/F1, the
    official scorer's "macro" (F1 of mean class precision and mean class recall) and
    the mean of class-wise F1 -- with the conventions of the official scorer
    (``evaluation/Models.py``; see :mod:`avtag.evaluation.scorer`), so that on clean
    files (no duplicate rows) it gives the scorer's numbers;
  * :func:`average_precision`: threshold-free mAP and per-class AP (torchmetrics);
  * :func:`optimise_thresholds`: per-class decision thresholds for micro-F1
    (Kong et al. 2020, arXiv 1912.04761), to fit on validation and apply unchanged.

Strong labels, on events ``(clip, onset_s, offset_s, label)``:
  * :func:`strong_label_metrics`: segment-based (1 s) F1 / error rate and event-based
    F1 / error rate with sed_eval (DCASE 2017 settings), clip by clip like the
    organisers' ``TaskB_evaluation/task4_subtaskB_evaluation.py``;
  (events come from :func:`avtag.events.framewise_to_events`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from avtag.events import EventRow


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 as fractions in [0, 1]."""

    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def prf_from_counts(tp: int, fp: int, fn: int) -> PRF:
    """P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R); each 0 when undefined (official scorer)."""
    p = float(tp) / float(tp + fp) if tp + fp != 0 else 0.0
    r = float(tp) / float(tp + fn) if tp + fn != 0 else 0.0
    return PRF(p, r, 2 * p * r / float(p + r) if p + r != 0.0 else 0.0)


@dataclass
class TaggingMetrics:
    """Weak-label scores. ``macro`` is the scorer's definition; ``mean_class_f1`` is the plain mean."""

    micro: PRF
    macro: PRF
    mean_class_f1: float
    classwise: dict[str, PRF]
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return {"micro": self.micro.to_dict(), "macro": self.macro.to_dict(), "mean_class_f1": self.mean_class_f1,
                "classwise": {k: v.to_dict() for k, v in self.classwise.items()}, "counts": dict(self.counts)}


def _as_bool(y, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (clips, classes), got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 decisions, not scores (threshold them with binarize())")
    return arr.astype(bool)


def binarize(scores, thresholds=0.5) -> np.ndarray:
    """Decisions ``scores >= thresholds``: ``(clips, classes)`` bool; thresholds scalar or ``(classes,)``."""
    return np.asarray(scores, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def tagging_metrics(y_true, y_pred, class_names: Sequence[str]) -> TaggingMetrics:
    """Micro, class-wise, scorer-macro and mean-class-F1 tagging scores.

    Args:
        y_true: ``(clips, classes)`` multi-hot ground truth (0/1 or bool).
        y_pred: ``(clips, classes)`` multi-hot decisions (e.g. :func:`binarize`).
        class_names: ``classes`` names in column order.
    Returns:
        :class:`TaggingMetrics`. As in the official scorer, the class-wise table (and
        so both macro scores) covers only classes with TP + FP + FN > 0, i.e. present
        in the ground truth or the predictions; a class never predicted adds 0 to
        the mean precision, a class never in the ground truth 0 to the mean recall.
    Raises:
        ValueError: shapes differ or do not match ``class_names``.
    """
    t, p = _as_bool(y_true, "y_true"), _as_bool(y_pred, "y_pred")
    if t.shape != p.shape or t.shape[1] != len(class_names):
        raise ValueError(f"y_true {t.shape}, y_pred {p.shape} and {len(class_names)} class names disagree")
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    classwise, counts = {}, {}
    p_sum = r_sum = 0.0
    for k, name in enumerate(class_names):
        if tp[k] + fp[k] + fn[k] == 0:
            continue
        m = classwise[name] = prf_from_counts(int(tp[k]), int(fp[k]), int(fn[k]))
        p_sum, r_sum = p_sum + m.precision, r_sum + m.recall
    n = len(classwise)
    mp, mr = (p_sum / n, r_sum / n) if n else (0.0, 0.0)
    counts = {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())}
    return TaggingMetrics(
        micro=prf_from_counts(counts["tp"], counts["fp"], counts["fn"]),
        macro=PRF(mp, mr, 2 * mp * mr / (mp + mr) if mp + mr != 0.0 else 0.0),
        mean_class_f1=sum(m.f1 for m in classwise.values()) / n if n else 0.0,
        classwise=classwise,
        counts=counts,
    )


def micro_f1(y_true, y_pred) -> float:
    """Instance-based F1 = 2TP / (2TP + FP + FN) over all (clip, class) pairs (0 if undefined)."""
    t, p = _as_bool(y_true, "y_true"), _as_bool(y_pred, "y_pred")
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return 2.0 * tp / (2 * tp + fp + fn) if tp else 0.0


@dataclass
class AveragePrecision:
    """``mAP``: mean AP over classes with a positive clip; ``per_class``: ``(classes,)``, NaN where no positive."""

    mAP: float
    per_class: np.ndarray

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.per_class))]
        per_class = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.per_class)}
        return {"mAP": self.mAP, "per_class": per_class}


def average_precision(y_true, scores) -> AveragePrecision:
    """Threshold-free mAP and per-class average precision (torchmetrics ``MultilabelAveragePrecision``).

    Args:
        y_true: ``(clips, classes)`` multi-hot targets; scores: ``(clips, classes)`` real scores.
    Returns:
        :class:`AveragePrecision`. torchmetrics gives 0 for a class without any positive
        clip (AP is undefined there); avtag sets it to NaN and leaves it out of the mean,
        as sklearn and PANNs-style evaluations do.
    """
    import torch
    from torchmetrics.classification import MultilabelAveragePrecision

    t = _as_bool(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float32)
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and y_true {t.shape} differ")
    metric = MultilabelAveragePrecision(num_labels=t.shape[1], average=None, thresholds=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*positive samples.*")
        ap = metric(torch.from_numpy(s), torch.from_numpy(t.astype(np.int64))).double().numpy()
    ap = np.where(t.any(0), ap, np.nan)
    return AveragePrecision(float(np.nanmean(ap)) if t.any() else float("nan"), ap)


@dataclass
class ThresholdResult:
    """Per-class thresholds ``(classes,)`` (decide ``score >= threshold``); micro-F1 before/after on the fit split."""

    thresholds: np.ndarray
    micro_f1_before: float
    micro_f1_after: float
    passes: int


def optimise_thresholds(y_true, scores, init=0.5, max_passes: int = 10) -> ThresholdResult:
    """Per-class decision thresholds that maximise micro-F1 on one split (the validation split).

    Algorithm: coordinate ascent over classes. For class k, with the other thresholds
    fixed, micro-F1 = 2(TP_o + tp_k) / (2(TP_o + tp_k) + FP_o + fp_k + FN_o + fn_k) is
    evaluated exactly at every cut of class k's sorted scores (one vectorised pass);
    the threshold moves to the best cut (midpoint between neighbouring distinct scores;
    above the maximum = never predict) only if that strictly improves micro-F1, so
    micro-F1 never decreases. Passes over all classes repeat until nothing changes.
    Kong et al. 2020 (arXiv 1912.04761, "automatic threshold optimization", eval-set
    tagging F1 0.629 -> 0.646) optimise the same objective with Adam on a numerical
    gradient; the exact line search here needs no step size and is deterministic.
    Apply the result unchanged to test/eval with :func:`binarize`.

    Args:
        y_true: ``(clips, classes)`` multi-hot; scores: ``(clips, classes)`` real.
        init: starting threshold(s), scalar or ``(classes,)``.
        max_passes: upper bound on sweeps over the classes.
    """
    y = _as_bool(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and y_true {y.shape} differ")
    n, c = s.shape
    thr = np.broadcast_to(np.asarray(init, dtype=np.float64), (c,)).copy()
    pred = s >= thr
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)

    def f1(a, b, d):
        den = 2 * a + b + d
        return np.where(den > 0, 2 * a / np.maximum(den, 1), 0.0)

    before = float(f1(tp.sum(), fp.sum(), fn.sum()))
    passes = 0
    while passes < max_passes:
        passes += 1
        changed = False
        for k in range(c):
            tp_o, fp_o, fn_o = tp.sum() - tp[k], fp.sum() - fp[k], fn.sum() - fn[k]
            order = np.argsort(-s[:, k], kind="stable")
            ss, yy = s[order, k], y[order, k]
            ctp = np.concatenate([[0], np.cumsum(yy)])  # cut j: predict the top j clips
            cfp = np.arange(n + 1) - ctp
            cfn = yy.sum() - ctp
            valid = np.ones(n + 1, dtype=bool)
            valid[1:n] = ss[:-1] > ss[1:]  # no cut inside a run of equal scores
            cand = np.where(valid, f1(tp_o + ctp, fp_o + cfp, fn_o + cfn), -1.0)
            j = int(np.argmax(cand))
            if cand[j] > f1(tp_o + tp[k], fp_o + fp[k], fn_o + fn[k]) + 1e-12:
                if j == 0:
                    thr[k] = np.nextafter(ss[0], np.inf)
                elif j == n:
                    thr[k] = ss[-1]
                else:
                    mid = (ss[j - 1] + ss[j]) / 2.0
                    thr[k] = mid if mid > ss[j] else ss[j - 1]
                tp[k], fp[k], fn[k] = ctp[j], cfp[j], cfn[j]
                changed = True
        if not changed:
            break
    return ThresholdResult(thr, before, float(f1(tp.sum(), fp.sum(), fn.sum())), passes)


@dataclass
class StrongLabelMetrics:
    """sed_eval results: ``segment`` and ``event`` overall (micro) dicts with ``f1``,
    ``precision``, ``recall``, ``error_rate``, ``substitution_rate``, ``deletion_rate``,
    ``insertion_rate``; ``segment_classwise`` / ``event_classwise``: label -> ``f1``, ``error_rate``."""

    segment: dict[str, float]
    event: dict[str, float]
    segment_classwise: dict[str, dict[str, float]]
    event_classwise: dict[str, dict[str, float]]
    clips: int

    def to_dict(self) -> dict:
        return {"segment_based": self.segment, "event_based": self.event, "clips": self.clips,
                "segment_classwise": self.segment_classwise, "event_classwise": self.event_classwise}


def _overall(metric) -> dict[str, float]:
    res = metric.results_overall_metrics()
    f, e = res["f_measure"], res["error_rate"]
    return {"f1": float(f["f_measure"]), "precision": float(f["precision"]), "recall": float(f["recall"]),
            "error_rate": float(e["error_rate"]), "substitution_rate": float(e["substitution_rate"]),
            "deletion_rate": float(e["deletion_rate"]), "insertion_rate": float(e["insertion_rate"])}


def _classwise(metric) -> dict[str, dict[str, float]]:
    return {label: {"f1": float(v["f_measure"]["f_measure"]), "error_rate": float(v["error_rate"]["error_rate"])}
            for label, v in metric.results_class_wise_metrics().items()}


def strong_label_metrics(
    reference: Iterable[EventRow],
    estimated: Iterable[EventRow],
    *,
    clips: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    time_resolution: float = 1.0,
    t_collar: float = 0.2,
    percentage_of_length: float = 0.2,
    clip_length: float | None = None,
) -> StrongLabelMetrics:
    """Subtask B scores with sed_eval: segment-based (1 s) and event-based (onset+offset).

    Args:
        reference / estimated: events ``(clip, onset_s, offset_s, label)``; "not found"
            rows (onset = offset = 0) are dropped from the reference.
        clips: clips to evaluate, one ``evaluate()`` call each (default: every clip of
            the reference, as the organisers' Subtask B script); estimated events of
            other clips are ignored. Pass the clip list of
            :func:`avtag.evaluation.scorer.read_strong_labels` to keep clips whose only
            rows were "not found" (their detections are then false positives).
        labels: event classes (default: reference labels, then any other estimated label;
            sed_eval fails on a label outside the list).
        time_resolution: segment length in s (DCASE 2017: 1.0).
        t_collar, percentage_of_length: event-based onset collar (s) and offset
            tolerance max(t_collar, percentage_of_length * reference length) (DCASE 2017: 0.2, 0.2).
        clip_length: evaluated length per clip in s for the segment-based metrics
            (default: sed_eval's max offset; only the true-negative count depends on it).
    """
    import sed_eval

    ref = [e for e in reference if not (e[1] == 0.0 and e[2] == 0.0)]
    est = list(estimated)
    clip_list = list(clips) if clips is not None else list(dict.fromkeys(e[0] for e in ref))
    label_list = list(labels) if labels is not None else list(dict.fromkeys([e[3] for e in ref] + [e[3] for e in est]))
    segment = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=label_list, time_resolution=float(time_resolution))
    event = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=label_list, t_collar=float(t_collar), percentage_of_length=float(percentage_of_length))
    by_clip: dict[str, tuple[list, list]] = {c: ([], []) for c in clip_list}
    for i, events in enumerate((ref, est)):
        for c, onset, offset, label in events:
            if c in by_clip:
                by_clip[c][i].append(
                    {"filename": c, "event_label": label, "onset": float(onset), "offset": float(offset)})
    for _clip, (r, e) in by_clip.items():
        segment.evaluate(reference_event_list=r, estimated_event_list=e, evaluated_length_seconds=clip_length)
        event.evaluate(reference_event_list=r, estimated_event_list=e)
    return StrongLabelMetrics(_overall(segment), _overall(event), _classwise(segment), _classwise(event), len(by_clip))
