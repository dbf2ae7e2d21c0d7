"""Evaluation of one system on one split, and its report: ``report.md``, ``metrics.json``, figures.

Decisions (DCASE 2017 Task 4):

* Subtask A (tagging): a clip is tagged with class ``c`` when its clip-wise score is
  ``>= threshold[c]``, under two threshold sets: ``default`` (0.5 for every class) and
  ``tuned`` (per-class thresholds that maximise micro-F1 on the validation split,
  :func:`avtag.evaluation.metrics.optimise_thresholds`, applied unchanged to the
  evaluated split, as Kong et al. 2020, arXiv 1912.04761). Scores: micro P/R/F1 (the
  ranking metric), the official scorer's macro, the mean class F1, class-wise P/R/F1
  (:func:`~avtag.evaluation.metrics.tagging_metrics`) and threshold-free mAP.
* Subtask B (detection), where strong labels exist and the system has frame-wise output:
  frame-wise audio probabilities of the classes a clip is tagged with are thresholded,
  median filtered and turned into events (:func:`avtag.events.framewise_to_events`),
  then scored with sed_eval: segment-based (1 s) F1 / error rate and event-based F1
  (collar 200 ms, offset 20 %) (:func:`~avtag.evaluation.metrics.strong_label_metrics`).

Files written by :func:`avtag.evaluation.report_writer.write_evaluation` into the output folder::

    report.md             summary, thresholds, per-class table, detection, data coverage, figures
    metrics.json          every number of the report (fractions in [0, 1])
    predictions.tsv       official Subtask A layout at the headline thresholds (tuned when available)
    predictions_default.tsv   the same at threshold 0.5 (when the headline is tuned)
    scores.tsv            clip-wise scores: header ``clip`` + class names, one row per clip
    events.tsv / events_default.tsv   detected events (Subtask B layout), when computed
    figures/classwise_f1.png, figures/pr_curves.png, figures/framewise.png
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.config import EvaluateConfig, resolve_path
from avtag.evaluation.metrics import (
    AveragePrecision,
    StrongLabelMetrics,
    TaggingMetrics,
    ThresholdResult,
    average_precision,
    binarize,
    optimise_thresholds,
    strong_label_metrics,
    tagging_metrics,
)

#: detection post-processing and sed_eval settings (override in the config's ``evaluate:`` section)
DEFAULT_THRESHOLD = 0.5
FIGURES = {"classwise_f1": "figures/classwise_f1.png", "pr_curves": "figures/pr_curves.png",
           "framewise": "figures/framewise.png"}


@dataclass
class Decision:
    """Results under one threshold set: ``thresholds (C,)``, ``decisions (N, C)`` bool, scores,
    detected ``events`` ``[(clip file, onset, offset, label)]`` (None: no detection)."""

    thresholds: np.ndarray
    decisions: np.ndarray
    tagging: TaggingMetrics
    strong: StrongLabelMetrics | None = None
    events: list[tuple[str, float, float, str]] | None = None


@dataclass
class SystemEvaluation:
    """One system (``audio``, ``video`` or ``fused``) evaluated on one split.

    ``decisions`` maps ``default`` / ``tuned`` to :class:`Decision`; ``headline`` is the
    set reported first (``tuned`` when validation thresholds exist). ``tuning`` is the
    validation fit (None when no validation scores), ``tuned_on`` its clip count.
    """

    system: str
    split: str
    classes: tuple[str, ...]
    names: list[str]
    targets: np.ndarray
    scores: np.ndarray
    ap: AveragePrecision
    decisions: dict[str, Decision]
    tuning: ThresholdResult | None = None
    tuned_on: int = 0
    framewise: np.ndarray | None = None
    frame_hop: float | None = None
    reference_events: dict[str, list[tuple[str, float, float]]] | None = None
    detection: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        return "tuned" if "tuned" in self.decisions else "default"


def file_name(clip: str) -> str:
    """Official file name of a cached clip name: ``<ytid>_<start>_<end>.wav``."""
    return clip + ".wav"


def detect_events(framewise: np.ndarray, frame_hop: float, decisions: np.ndarray, names: list[str],
                  classes, clip_seconds: float, settings: dict) -> list[tuple[str, float, float, str]]:
    """Events of every clip: frame-wise probabilities ``(N, T, C)`` of the tagged classes
    (``decisions (N, C)``) >= ``frame_threshold``, median filtered, min duration; as
    ``(clip file name, onset s, offset s, label)``."""
    from avtag.events import framewise_to_events

    out = []
    for i, name in enumerate(names):
        probs = np.where(decisions[i][None, :], framewise[i], 0.0)
        found = framewise_to_events(probs, frame_hop, list(classes), threshold=float(settings["frame_threshold"]),
                                    median_filter_s=float(settings["median_filter_s"]),
                                    min_duration_s=float(settings["min_duration_s"]), duration=clip_seconds)
        out += [(file_name(name), on, off, label) for label, on, off in found]
    return out


def evaluate_system(system: str, split, fusion=None, validation=None, detection: EvaluateConfig | None = None,
                    notes: list[str] | None = None) -> SystemEvaluation:
    """Evaluate one system on ``split`` (:class:`~avtag.evaluation.inference.SplitScores`).

    Args:
        system: ``audio``, ``video`` or ``fused`` (see :func:`~avtag.evaluation.inference.system_scores`).
        fusion: the :class:`~avtag.models.fusion.LateFusion` of ``fused``.
        validation: validation-split scores to tune per-class thresholds on (None: default only).
        detection: the ``evaluate:`` config section (detection and sed_eval settings).
    Detection runs for ``audio`` and ``fused`` when the split has strong labels.
    """
    from avtag.evaluation.inference import EvaluationError, system_scores

    notes = list(notes or [])
    scores = system_scores(split, system, fusion)
    tuning, tuned_on = None, 0
    if validation is not None:
        try:
            val_scores = system_scores(validation, system, fusion)
        except EvaluationError as exc:
            notes.append(f"thresholds not tuned on validation: {exc}")
        else:
            tuning, tuned_on = tune_thresholds(validation.targets, val_scores), len(validation.names)
    settings = detection_settings(detection)
    classes = list(split.classes)
    sets = {"default": np.full(len(classes), DEFAULT_THRESHOLD)}
    if tuning is not None:
        sets["tuned"] = np.asarray(tuning.thresholds, dtype=np.float64)
    strong_ok = system in ("audio", "fused") and split.framewise is not None and split.events is not None
    decisions = {}
    for key, thr in sets.items():
        dec = binarize(scores, thr)
        d = Decision(thr, dec, tagging_metrics(split.targets, dec, classes))
        if strong_ok:
            d.events = detect_events(split.framewise, split.frame_hop, dec, split.names, classes,
                                     split.clip_seconds, settings)
            reference = [(file_name(n), on, off, lab) for n in split.names for lab, on, off in split.events[n]]
            d.strong = strong_label_metrics(
                reference, d.events, clips=[file_name(n) for n in split.names], labels=classes,
                time_resolution=settings["time_resolution"], t_collar=settings["t_collar"],
                percentage_of_length=settings["percentage_of_length"], clip_length=split.clip_seconds)
        decisions[key] = d
    return SystemEvaluation(system, split.split, tuple(classes), list(split.names), split.targets, scores,
                            average_precision(split.targets, scores), decisions, tuning, tuned_on,
                            split.framewise if strong_ok else None, split.frame_hop,
                            split.events if strong_ok else None, settings, notes)


def detection_settings(section: EvaluateConfig | None = None) -> dict:
    """The Subtask B detection settings of the config's ``evaluate:`` section as a dict
    (schema defaults: :class:`avtag.config.EvaluateConfig`)."""
    return dataclasses.asdict(section or EvaluateConfig())


def tune_thresholds(validation_targets: np.ndarray, validation_scores: np.ndarray) -> ThresholdResult:
    """Per-class thresholds maximising validation micro-F1, starting from 0.5 (Kong et al. 2020)."""
    return optimise_thresholds(validation_targets, validation_scores, init=DEFAULT_THRESHOLD)


# ----------------------------------------------------------------------------- metrics.json
def _tagging_dict(d: Decision) -> dict:
    out = d.tagging.to_dict()
    if d.strong is not None:
        out["strong"] = d.strong.to_dict()
    return out


def metrics_dict(ev: SystemEvaluation, coverage=None, extra: dict | None = None) -> dict:
    """Everything of the report as a JSON-ready dict (fractions in [0, 1]); the top-level
    ``micro`` / ``macro`` / ``mean_class_f1`` / ``classwise`` / ``counts`` / ``strong`` are
    those of the headline thresholds; ``by_thresholds`` holds both sets."""
    head = ev.decisions[ev.headline]
    thresholds = {"default": {"how": f"fixed {DEFAULT_THRESHOLD} for every class",
                              "values": dict.fromkeys(ev.classes, DEFAULT_THRESHOLD)}}
    if ev.tuning is not None:
        thresholds["tuned"] = {
            "how": "per-class thresholds maximising micro-F1 on the validation split by exact coordinate ascent, "
                   "applied unchanged to this split (Kong et al. 2020, arXiv 1912.04761)",
            "fit_on": "validation", "clips": ev.tuned_on, "passes": ev.tuning.passes,
            "validation_micro_f1_default": ev.tuning.micro_f1_before,
            "validation_micro_f1_tuned": ev.tuning.micro_f1_after,
            "values": {c: float(t) for c, t in zip(ev.classes, ev.tuning.thresholds)}}
    strong = None
    if head.strong is not None:
        strong = {k: d.strong.to_dict() for k, d in ev.decisions.items()}
        strong.update(settings=ev.detection, headline=ev.headline)
    out = {
        "system": ev.system, "split": ev.split, "clips": len(ev.names), "classes": list(ev.classes),
        "decision_thresholds": ev.headline,
        **head.tagging.to_dict(),
        "mAP": ev.ap.mAP, "average_precision": ev.ap.to_dict(list(ev.classes))["per_class"],
        "thresholds": thresholds,
        "by_thresholds": {k: _tagging_dict(d) for k, d in ev.decisions.items()},
        "strong": strong,
        "coverage": coverage.to_dict() if coverage is not None else None,
        "notes": ev.notes,
    }
    out.update(extra or {})
    return out


# ----------------------------------------------------------------------------- files
def write_predictions_files(ev: SystemEvaluation, out_dir: Path) -> dict[str, str]:
    """Prediction, score and event files; returns ``{kind: file name}``."""
    from avtag.evaluation.scorer import write_predictions
    from avtag.events import write_events_tsv

    files = {}
    for key, d in ev.decisions.items():
        suffix = "" if key == ev.headline else f"_{key}"
        preds = {file_name(n): [c for c, on in zip(ev.classes, d.decisions[i]) if on] for i, n in enumerate(ev.names)}
        write_predictions(out_dir / f"predictions{suffix}.tsv", preds)
        files[f"predictions{suffix}"] = f"predictions{suffix}.tsv"
        if d.events is not None:
            write_events_tsv(d.events, out_dir / f"events{suffix}.tsv")
            files[f"events{suffix}"] = f"events{suffix}.tsv"
    rows = ["clip\t" + "\t".join(ev.classes)]
    # repr: shortest text that reads back to the same float64, so thresholds re-apply exactly
    rows += [file_name(n) + "\t" + "\t".join(repr(float(s)) for s in ev.scores[i]) for i, n in enumerate(ev.names)]
    (out_dir / "scores.tsv").write_text("\n".join(rows) + "\n")
    files["scores"] = "scores.tsv"
    return files


def official_score(pred_path: Path, groundtruth: Path | None) -> dict | None:
    """The official scorer's micro/macro on ``pred_path`` against the split's released weak ground truth."""
    if groundtruth is None or not Path(groundtruth).is_file():
        return None
    from avtag.evaluation.scorer import score_files

    r = score_files(pred_path, groundtruth)
    return {"groundtruth": str(groundtruth), "micro": r.micro.to_dict(), "macro": r.macro.to_dict(),
            "scored_clips": r.scored_clips, "unscored_groundtruth_clips": len(r.unscored_groundtruth_clips)}


def official_groundtruth(config: dict, split: str) -> Path | None:
    """The released weak ground-truth file of ``test`` / ``eval``, when it exists."""
    tag = {"test": "testing", "eval": "evaluation"}.get(split)
    if tag is None or config.data.metadata_dir is None:
        return None
    path = resolve_path(config.data.metadata_dir) / "groundtruth_release" / f"groundtruth_weak_label_{tag}_set.csv"
    return path if path.is_file() else None


def describe_fusion(fusion, system: str = "fused") -> str | None:
    """One line: the fusion method and its weight(s), and whether the true-path rule follows;
    for a one-branch ``system`` (``audio``, ``video``) only the rule, which is all that applies."""
    if fusion is None:
        return None
    rule = "" if fusion.closure is None else ", then the true-path rule (AudioSet ontology)"
    if system != "fused":
        return "none (one branch)" + rule
    w = fusion.audio_weight
    if fusion.method in ("weighted", "gated"):
        text = (f"weighted mean, audio weight {float(w):.2f}" if w.ndim == 0
                else "weighted mean, per-class audio weights")
        text = "gated: audio alone where no object stands for the class, else " + text \
            if fusion.method == "gated" else text
    elif fusion.method == "logistic":
        n = 0 if fusion.fitted_ is None else int(fusion.fitted_.sum())
        text = f"per-class logistic regression ({n} classes fitted on validation, weighted mean for the others)"
    elif fusion.method == "boost":
        text = f"boost: audio raised towards 1 by {fusion.video_boost:.2f} x video (noisy-OR)"
    else:
        text = "element-wise maximum"
    return text + rule
