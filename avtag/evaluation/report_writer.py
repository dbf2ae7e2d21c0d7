"""The folder an evaluation writes (:func:`write_evaluation`): ``metrics.json``, the prediction files,
figures and ``report.md``, the markdown tables and text of ``avtag evaluate`` / ``avtag ablate`` (the
numbers come from :mod:`avtag.evaluation.report`)."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from avtag.evaluation.report import (
    DEFAULT_THRESHOLD,
    SystemEvaluation,
    metrics_dict,
    official_score,
    write_predictions_files,
)


def pct(x) -> str:
    """A fraction as a percentage with 2 decimals (DCASE tables), ``-`` for None/NaN."""
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{100.0 * x:.2f}"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table: ``header`` and ``rows`` of cells (any values, written with ``str``)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


THRESHOLD_TITLES = {"default": "default (0.5)", "tuned": "tuned on validation"}


def summary_rows(ev: SystemEvaluation, label: str = "") -> list[list]:
    """Summary table rows (one per threshold set): micro P/R/F1, macro F1, mean class F1, mAP, detection."""
    rows = []
    for key, d in ev.decisions.items():
        t, s = d.tagging, d.strong
        rows.append(([label] if label else []) + [
            THRESHOLD_TITLES[key], pct(t.micro.precision), pct(t.micro.recall), f"**{pct(t.micro.f1)}**",
            pct(t.macro.f1), pct(t.mean_class_f1), pct(ev.ap.mAP),
            pct(s.segment["f1"]) if s else "-", f"{s.segment['error_rate']:.3f}" if s else "-",
            pct(s.event["f1"]) if s else "-"])
    return rows


SUMMARY_HEADER = ["thresholds", "micro P %", "micro R %", "micro F1 %", "macro F1 % (scorer)", "mean class F1 %",
                  "mAP %", "segment F1 %", "segment ER", "event F1 %"]


def coverage_section(cov: dict | None) -> list[str]:
    if not cov:
        return ["Coverage unknown."]
    lines = markdown_table(["listed", "cached", "evaluated", "missing media", "failed to decode", "skipped",
                            "not cached", "with video"],
                           [[cov["listed"] if cov["listed"] is not None else "?", cov["cached"],
                            cov["evaluated"], cov["missing"], cov["failed"], cov["skipped"],
                            cov["not_cached"], cov["with_video"]]])
    lines += ["", "Scores cover the evaluated clips only. The official scorer likewise scores only clips with a "
                  "prediction row, so clips without media do not count as misses; compare systems on the same clips."]
    for title, items in (("Missing media", {n: "" for n in cov["missing_clips"]}),
                         ("Failed to decode", cov["failed_clips"]), ("Skipped", cov["skipped_clips"])):
        if items:
            shown = list(items.items())[:20]
            lines += ["", f"{title} ({len(items)}{', first 20' if len(items) > 20 else ''}):", ""]
            lines += [f"- `{n}`" + (f": {r}" if r else "") for n, r in shown]
    if cov.get("missing_report") and cov["missing"]:
        lines += ["", f"Full list of missing clips: `{cov['missing_report']}`."]
    return lines


def evaluation_markdown(ev: SystemEvaluation, metrics: dict) -> str:
    """The text of ``report.md`` (GitHub markdown)."""
    setup = metrics.get("setup", {})
    out = [f"# avtag evaluation: {ev.system} system on the {ev.split} split", ""]
    out += [f"- {k}: `{v}`" for k, v in setup.items() if v not in (None, "")]
    out += [f"- clips evaluated: {len(ev.names)}; classes: {len(ev.classes)}; headline thresholds: {ev.headline}", ""]
    out += ["## Summary", "", *markdown_table(SUMMARY_HEADER, summary_rows(ev)), ""]
    out += ["micro = instance-based P/R/F1 over all (clip, class) pairs (DCASE 2017 Task 4 ranking metric); "
            "macro = the official scorer's F1 of mean class precision and mean class recall; mAP is threshold-free. "
            "Segment-based (1 s) and event-based scores are Subtask B (sed_eval)."]
    off = metrics.get("official_scorer")
    if off:
        same = abs(off["micro"]["f1"] - metrics["micro"]["f1"]) < 1e-9
        out += ["", f"Official scorer on `{metrics['files']['predictions']}` against `{off['groundtruth']}`: micro F1 "
                    f"{pct(off['micro']['f1'])} % over {off['scored_clips']} clips "
                    f"({'agrees' if same else 'DIFFERS'})."]
    out += ["", "## How the decision thresholds were chosen", ""]
    out += [f"- **default**: a clip is tagged with a class when its clip-wise score is >= {DEFAULT_THRESHOLD}."]
    if ev.tuning is not None:
        out += [f"- **tuned**: one threshold per class, chosen on the validation split ({ev.tuned_on} clips) to "
                f"maximise micro-F1 (exact coordinate ascent over classes, {ev.tuning.passes} passes), then applied "
                f"unchanged here, as Kong et al. 2020 (arXiv 1912.04761). Validation micro-F1: "
                f"{pct(ev.tuning.micro_f1_before)} % at 0.5 -> {pct(ev.tuning.micro_f1_after)} % tuned. A threshold "
                "above every validation score means the class is never predicted."]
    else:
        out += ["- **tuned**: not available (no validation scores)."]
    out += ["", "## Per-class results", ""]
    header = ["class", "positives", "AP %", "P % (0.5)", "R % (0.5)", "F1 % (0.5)"]
    if "tuned" in ev.decisions:
        header += ["threshold", "P % (tuned)", "R % (tuned)", "F1 % (tuned)"]
    rows = []
    for k, c in enumerate(ev.classes):
        row = [c, int(ev.targets[:, k].sum()), pct(float(ev.ap.per_class[k]))]
        for key in ev.decisions:
            m = ev.decisions[key].tagging.classwise.get(c)
            row += ([f"{ev.decisions[key].thresholds[k]:.3f}"] if key == "tuned" else [])
            row += [pct(m.precision), pct(m.recall), pct(m.f1)] if m else ["-", "-", "-"]
        rows.append(row)
    out += markdown_table(header, rows)
    out += ["", "A class without positives or predictions in this split has no P/R/F1 (`-`) and is left out of the "
                "macro scores, as in the official scorer; AP is undefined without positives.", ""]
    out += ["## Detection (Subtask B)", ""]
    head = ev.decisions[ev.headline]
    if head.strong is None:
        why = "no strong labels in this split" if ev.system != "video" else "the video branch has no frame-wise output"
        out += [f"Not computed: {why}."]
    else:
        s = ev.detection
        out += [f"Events from the audio frame-wise output ({ev.frame_hop * 1000:.0f} ms hop) of the classes each clip "
                f"is tagged with: probability >= {s['frame_threshold']}, median filter {s['median_filter_s']} s, "
                f"events shorter than {s['min_duration_s']} s dropped. sed_eval: segments of {s['time_resolution']} s; "
                f"events with onset collar {s['t_collar']} s and offset tolerance "
                f"max({s['t_collar']} s, {s['percentage_of_length']:.0%} of the event).", ""]
        rows = [[THRESHOLD_TITLES[k], pct(d.strong.segment["f1"]), f"{d.strong.segment['error_rate']:.3f}",
                 pct(d.strong.event["f1"]), f"{d.strong.event['error_rate']:.3f}"] for k, d in ev.decisions.items()]
        out += markdown_table(["clip tags from", "segment F1 %", "segment ER", "event F1 %", "event ER"], rows)
    out += ["", "## Data coverage", "", *coverage_section(metrics.get("coverage"))]
    if ev.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in ev.notes]]
    figs = metrics.get("files", {}).get("figures") or {}
    if figs:
        out += ["", "## Figures", ""]
        titles = {"classwise_f1": "Per-class F1", "pr_curves": "Precision-recall curves",
                  "framewise": "Frame-wise probabilities and ground-truth events"}
        out += [f"![{titles.get(k, k)}]({v})\n" for k, v in figs.items()]
    out += ["", "## Files", "", *[f"- `{v}`" for k, v in metrics.get("files", {}).items() if isinstance(v, str)],
            "- `metrics.json`: every number above"]
    return "\n".join(out) + "\n"


def write_evaluation(ev: SystemEvaluation, out_dir: str | Path, *, coverage=None, setup: dict | None = None,
                     groundtruth: Path | None = None, figures: bool = True, extra: dict | None = None) -> dict:
    """Write report.md, metrics.json, prediction files and figures; returns the metrics dict.

    ``setup`` (short strings) is listed at the top of the report; ``extra`` goes to metrics.json only.
    Everything is written into a staging folder beside ``out_dir`` first and moved in when complete, so a
    run that fails (a full disk) leaves the previous report whole instead of new predictions beside old
    metrics.

    Raises:
        OSError: ``out_dir`` is a file, or a file cannot be written (named by the error).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OSError(errno.ENOTDIR, "--out must be a folder (it is a file); the report writes several files",
                      str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        metrics = _write_all(ev, stage, coverage, setup, groundtruth, figures, extra)
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = out_dir / path.relative_to(stage)
            if target.is_dir():
                raise OSError(errno.EISDIR, "is a folder where the report writes a file", str(target))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return metrics


def _write_all(ev: SystemEvaluation, out_dir: Path, coverage, setup, groundtruth, figures: bool, extra) -> dict:
    files = write_predictions_files(ev, out_dir)
    extra = {**(extra or {}), "setup": setup or {}, "files": files}
    official = official_score(out_dir / files["predictions"], groundtruth)
    if official is not None:
        extra["official_scorer"] = official
    metrics = metrics_dict(ev, coverage, extra)
    if figures:
        from avtag.evaluation.figures import draw_evaluation_figures

        metrics["files"]["figures"] = draw_evaluation_figures(ev, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(finite(metrics), indent=1, allow_nan=False))
    (out_dir / "report.md").write_text(evaluation_markdown(ev, metrics))
    return metrics


def finite(x):
    """JSON-ready copy: NumPy scalars -> Python, NaN / inf -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, np.ndarray):
        return finite(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x
