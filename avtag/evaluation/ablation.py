"""Branch ablation (``avtag ablate``): audio-only vs video-only vs fused on the same split.

Every system is scored from ONE inference pass: the audio model runs once over the
cached split (and the validation split), the video branch is read from the cached
frame logits, and the three systems are the two branch outputs and their late fusion
(:func:`avtag.evaluation.inference.system_scores`). Each system is evaluated with the
default threshold (0.5) and with per-class thresholds tuned on the validation split
(Kong et al. 2020), as :func:`avtag.evaluation.report.evaluate_system` does, so the
rows differ only in the branch switch -- the comparison of Li et al. (2017), "A
Light-Weight Multimodal Framework for Improved Environmental Audio Tagging".

Written into the output folder::

    ablation.md                         the side-by-side table and notes
    ablation.json                       every row's numbers (fractions in [0, 1])
    ablation_classwise_f1.png           per-class F1 of each system
    <system>/report.md, metrics.json, predictions*.tsv, scores.tsv, events*.tsv
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag.config import AvtagConfig, resolve_path
from avtag.evaluation.inference import EvaluationError

SYSTEM_TITLES = {"audio": "audio only", "video": "video only", "fused": "fused (audio + video)",
                 "prior": "reference: class prior"}


def find_checkpoint(config: AvtagConfig) -> Path | None:
    """The trained audio model of the config's run: ``output_dir/audio_model.pt``, else the
    newest ``checkpoints/best-*.ckpt``, else ``checkpoints/last.ckpt``; None when there is none."""
    run_dir = resolve_path(config.output_dir)
    if (run_dir / "audio_model.pt").is_file():
        return run_dir / "audio_model.pt"
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


@dataclass
class AblationResult:
    """The evaluated systems (``audio``/``video``/``fused`` -> SystemEvaluation) of one split."""

    split: str
    systems: dict = field(default_factory=dict)
    coverage: object = None
    checkpoint: str | None = None
    fusion: object = None
    notes: list[str] = field(default_factory=list)


def run_ablation(config: AvtagConfig, split: str = "test", audio_model=None, checkpoint: str | None = None, *,
                 systems=("audio", "video", "fused", "prior"), tune: bool = True, batch_size: int = 16,
                 progress: bool = True, notes: list[str] | None = None) -> AblationResult:
    """Evaluate ``systems`` on ``split`` from one inference pass.

    Args:
        audio_model: the trained :class:`~avtag.models.audio.AudioModel` (None: video and prior only).
        checkpoint: where it came from (for the report).
        systems: any of ``audio``, ``video``, ``fused``, ``prior`` (the validation class
            frequencies for every clip: the constant-predictor floor); a system whose input
            is missing (no audio model, no cached video logits, no validation) is left out with a note.

    Raises:
        EvaluationError: nothing to evaluate.
    """
    from avtag.evaluation.inference import build_fusion, score_with_validation
    from avtag.evaluation.report import evaluate_system

    detection = config.evaluate
    notes = list(notes or [])
    scores, validation, score_notes = score_with_validation(config, split, audio_model, tune=tune,
                                                            batch_size=batch_size, progress=progress)
    notes += score_notes
    if "fused" in systems and scores.audio is not None:
        fusion, fit_notes = build_fusion(config, scores.classes, validation)
        notes += fit_notes
    else:  # no fused system: the fusion section's true-path rule still ends every branch
        from avtag.models.fusion import LateFusion

        fusion = LateFusion.from_config(config.fusion, scores.classes)
    out = AblationResult(split, {}, scores.coverage, None if checkpoint is None else str(checkpoint), fusion, notes)
    for system in systems:
        if system in ("audio", "fused") and scores.audio is None:
            notes.append(f"{SYSTEM_TITLES[system]}: left out, no trained audio model")
            continue
        if system == "video" and scores.video is None:
            notes.append(f"video only: left out, split {split!r} has no cached video logits (cache.video: true and "
                         "media with a video stream are needed)")
            continue
        if system == "prior" and scores.prior is None:
            notes.append("reference: class prior left out (needs the validation split)")
            continue
        if system == "fused" and scores.video is None:
            notes.append("fused: the split has no cached video logits, so the fused system equals audio only")
        out.systems[system] = evaluate_system(system, scores, fusion, validation, detection)
    if not out.systems:
        raise EvaluationError(f"no system could be evaluated on split {split!r}")
    if scores.video is not None:
        notes.append(f"{scores.coverage.with_video} of {len(scores.names)} clips have video; video only scores 0 on "
                     "the others, fused keeps their audio scores")
    return out


def ablation_rows(result: AblationResult) -> list[dict]:
    """One row per (system, threshold set): micro P/R/F1, macro F1, mean class F1, mAP, detection."""
    rows = []
    for system, ev in result.systems.items():
        for key, d in ev.decisions.items():
            t, s = d.tagging, d.strong
            rows.append({"system": system, "thresholds": key, "micro": t.micro.to_dict(), "macro": t.macro.to_dict(),
                         "mean_class_f1": t.mean_class_f1, "mAP": ev.ap.mAP,
                         "segment_f1": s.segment["f1"] if s else None,
                         "segment_error_rate": s.segment["error_rate"] if s else None,
                         "event_f1": s.event["f1"] if s else None})
    return rows


def ablation_markdown(result: AblationResult, figure: str | None) -> str:
    """``ablation.md``: the side-by-side table, how thresholds were chosen, coverage, notes."""
    from avtag.evaluation.report_writer import SUMMARY_HEADER, coverage_section, markdown_table, summary_rows

    out = [f"# avtag ablation: audio vs video vs fused on the {result.split} split", ""]
    if result.checkpoint:
        out += [f"- audio model: `{result.checkpoint}`"]
    if result.fusion is not None:
        from avtag.evaluation.report import describe_fusion

        out += [f"- fusion: {describe_fusion(result.fusion, 'fused' if 'fused' in result.systems else 'audio')}"]
    first = next(iter(result.systems.values()))
    out += [f"- clips: {len(first.names)}; all systems are scored on the same clips from one inference pass", ""]
    rows = []
    for system, ev in result.systems.items():
        rows += summary_rows(ev, SYSTEM_TITLES[system])
    out += markdown_table(["system", *SUMMARY_HEADER], rows)
    out += ["", "micro = instance-based P/R/F1 (DCASE 2017 Task 4 ranking); macro = the official scorer's F1 of mean "
                "class precision and recall; mAP is threshold-free, so it is the same for both threshold rows. "
                "Tuned thresholds: per class and per system, maximising micro-F1 on the validation split "
                "(Kong et al. 2020), applied unchanged. Detection (segment/event) needs the audio frame-wise output. "
                "The class-prior reference gives every clip the validation class frequencies: tuned, it is the best "
                "constant predictor (the same classes for every clip), the floor a system has to beat."]
    if figure:
        out += ["", f"![Per-class F1 of each system]({figure})"]
    out += ["", "## Data coverage", "", *coverage_section(result.coverage.to_dict() if result.coverage else None)]
    if result.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in result.notes]]
    out += ["", "Per-system reports, prediction and score files: " +
            ", ".join(f"`{s}/report.md`" for s in result.systems) + "."]
    return "\n".join(out) + "\n"


def write_ablation(result: AblationResult, out_dir: str | Path, figures: bool = True,
                   groundtruth: Path | None = None) -> dict:
    """Write ablation.md / ablation.json / the figure and one report folder per system."""
    from avtag.evaluation.report_writer import finite, write_evaluation

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for system, ev in result.systems.items():
        write_evaluation(ev, out_dir / system, coverage=result.coverage, groundtruth=groundtruth, figures=False,
                         setup={"checkpoint": result.checkpoint, "ablation": str(out_dir / "ablation.md")})
    figure = None
    if figures:
        from avtag.evaluation.figures import classwise_f1_figure

        first = next(iter(result.systems.values()))
        present = [k for k in range(len(first.classes)) if first.targets[:, k].any()]
        series = {}
        for system, ev in result.systems.items():
            if system == "prior":
                continue
            d = ev.decisions[ev.headline]
            series[f"{SYSTEM_TITLES[system]} ({ev.headline})"] = np.array(
                [d.tagging.classwise[ev.classes[k]].f1 if ev.classes[k] in d.tagging.classwise else np.nan
                 for k in present])
        figure = "ablation_classwise_f1.png"
        classwise_f1_figure([first.classes[k] for k in present], series, out_dir / figure,
                            f"Per-class F1 by system, {result.split} split (classes with positive clips)")
    data = {"split": result.split, "checkpoint": result.checkpoint, "rows": ablation_rows(result),
            "fusion": None if result.fusion is None else result.fusion.to_dict(),
            "coverage": result.coverage.to_dict() if result.coverage else None, "notes": result.notes,
            "files": {"figure": figure, **{s: f"{s}/metrics.json" for s in result.systems}}}
    (out_dir / "ablation.json").write_text(json.dumps(finite(data), indent=1, allow_nan=False))
    (out_dir / "ablation.md").write_text(ablation_markdown(result, figure))
    return data
