"""Evaluation figures (matplotlib, no display needed: ``Figure`` objects saved with the Agg renderer).

* :func:`classwise_f1_figure`: horizontal grouped bars, one group per class, one bar per series
  (threshold sets of one system, or systems of an ablation);
* :func:`pr_curves_figure`: precision-recall curve of every class with a positive clip
  (scikit-learn ``precision_recall_curve``), AP in each panel title;
* :func:`framewise_figure`: frame-wise probabilities over time for a few clips, with the
  ground-truth events shaded and the frame threshold dashed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def classwise_f1_figure(classes: Sequence[str], series: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Per-class F1 bars. ``series``: legend label -> ``(C,)`` F1 in [0, 1] (NaN: no score, no bar)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, k = len(classes), max(len(series), 1)
    fig = _figure(8.0, 1.6 + 0.28 * n * max(1.0, k / 2))
    ax = fig.add_subplot()
    height = 0.8 / k
    y = np.arange(n)
    for j, (label, values) in enumerate(series.items()):
        vals = 100.0 * np.asarray(values, dtype=np.float64)
        ax.barh(y - 0.4 + height * (j + 0.5), np.nan_to_num(vals, nan=0.0), height=height, label=label)
    ax.set_yticks(y, list(classes), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("F1 %")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncol=min(k, 3))
    fig.savefig(path)
    return path


def pr_curves_figure(targets: np.ndarray, scores: np.ndarray, classes: Sequence[str], ap: np.ndarray,
                     path: str | Path, title: str) -> Path:
    """Precision-recall curves ``(N, C)`` targets/scores; one panel per class with positives."""
    from sklearn.metrics import precision_recall_curve

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = [k for k in range(len(classes)) if targets[:, k].any()]
    cols = min(4, max(1, len(present)))
    rows = max(1, -(-len(present) // cols))
    fig = _figure(3.0 * cols, 2.6 * rows + 0.4)
    fig.suptitle(title, fontsize=10)
    for i, k in enumerate(present):
        ax = fig.add_subplot(rows, cols, i + 1)
        precision, recall, _ = precision_recall_curve(targets[:, k].astype(int), scores[:, k])
        ax.step(recall, precision, where="post")
        base = targets[:, k].mean()
        ax.axhline(base, color="grey", ls=":", lw=0.8)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{classes[k]}\nAP {100 * ap[k]:.1f} %, {int(targets[:, k].sum())} positives", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
    if not present:
        fig.add_subplot().text(0.5, 0.5, "no class has a positive clip", ha="center")
    fig.savefig(path)
    return path


def pick_clips(names: list[str], events: dict, n: int = 4) -> list[int]:
    """Up to ``n`` clip indices for frame-wise plots: most distinct ground-truth classes first, then name."""
    order = sorted(range(len(names)), key=lambda i: (-len({e[0] for e in events.get(names[i], [])}), names[i]))
    return order[:n]


def framewise_figure(names: list[str], framewise: np.ndarray, frame_hop: float, classes: Sequence[str],
                     events: dict, decisions: np.ndarray, frame_threshold: float, path: str | Path,
                     title: str, n_clips: int = 4) -> Path:
    """Frame-wise probabilities ``(N, T, C)`` of a few clips: the ground-truth classes and tagged
    classes as lines, ground-truth events (``events[name] = [(label, on, off)]``) as shaded spans."""
    import matplotlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = pick_clips(names, events, n_clips)
    fig = _figure(9.0, 2.2 * max(1, len(chosen)) + 0.4)
    fig.suptitle(title, fontsize=10)
    colours = matplotlib.colormaps["tab20"]
    t = (np.arange(framewise.shape[1]) + 0.5) * frame_hop
    for row, i in enumerate(chosen):
        ax = fig.add_subplot(len(chosen), 1, row + 1)
        truth = {e[0] for e in events.get(names[i], [])}
        shown = [k for k, c in enumerate(classes) if c in truth or decisions[i, k]]
        for k in shown:
            colour = colours(k % 20)
            style = "-" if classes[k] in truth else "--"
            ax.plot(t, framewise[i, :, k], style, color=colour, lw=1.2,
                    label=classes[k] + ("" if style == "-" else " (FP tag)"))
            for label, on, off in events.get(names[i], []):
                if label == classes[k]:
                    ax.axvspan(on, off, color=colour, alpha=0.18, lw=0)
        ax.axhline(frame_threshold, color="black", ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, t[-1] + frame_hop / 2 if len(t) else 1)
        ax.set_title(names[i], fontsize=8)
        ax.set_ylabel("probability", fontsize=7)
        ax.tick_params(labelsize=7)
        if shown:
            ax.legend(fontsize=6, loc="upper right", ncol=2)
    if chosen:
        fig.axes[-1].set_xlabel("time (s); shaded: ground-truth events; dotted: frame threshold", fontsize=7)
    fig.savefig(path)
    return path


def draw_evaluation_figures(ev, out_dir: str | Path) -> dict[str, str]:
    """The figures of one :class:`~avtag.evaluation.report.SystemEvaluation`; returns ``{kind: relative path}``."""
    out_dir = Path(out_dir)
    files = {}
    series = {}
    for key, d in ev.decisions.items():
        label = "threshold 0.5" if key == "default" else "thresholds tuned on validation"
        series[label] = np.array([d.tagging.classwise[c].f1 if c in d.tagging.classwise else np.nan
                                  for c in ev.classes])
    classwise_f1_figure(ev.classes, series, out_dir / "figures" / "classwise_f1.png",
                        f"Per-class F1, {ev.system} system, {ev.split} split")
    files["classwise_f1"] = "figures/classwise_f1.png"
    pr_curves_figure(ev.targets, ev.scores, ev.classes, ev.ap.per_class, out_dir / "figures" / "pr_curves.png",
                     f"Precision-recall per class, {ev.system} system, {ev.split} split (dotted: positive rate)")
    files["pr_curves"] = "figures/pr_curves.png"
    if ev.framewise is not None and ev.reference_events is not None:
        head = ev.decisions[ev.headline]
        framewise_figure(ev.names, ev.framewise, ev.frame_hop, ev.classes, ev.reference_events, head.decisions,
                         float(ev.detection["frame_threshold"]), out_dir / "figures" / "framewise.png",
                         f"Frame-wise audio probabilities ({ev.split} split)")
        files["framewise"] = "figures/framewise.png"
    return files
