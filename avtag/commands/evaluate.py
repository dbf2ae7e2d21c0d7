"""``avtag evaluate --checkpoint CKPT --split test|eval [--config YAML] [--out DIR]``.

Runs the trained audio model (and the video branch from the cached frame logits, late
fusion) over a cached split, tunes per-class thresholds on the validation split, and
writes ``report.md``, ``metrics.json``, the prediction file(s) and figures (see
:mod:`avtag.evaluation.report`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from avtag.commands.common import (
    add_audio_post_args,
    add_config_args,
    add_device_arg,
    audio_post_overrides,
    load_args_config,
    positive_int,
)
from avtag.config.schema import CHOICES

HELP = "evaluate a trained model on the DCASE 2017 test or evaluation split (report, metrics, figures)"
MODES = {"audio": "audio", "video": "video", "both": "fused"}


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate", help=HELP, description=HELP + ". Splits that are not cached yet are prepared first.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "system: the config's fusion.mode (both = audio + video late fusion), or --only.\n"
            "thresholds: 0.5 (default) and per-class thresholds tuned for micro-F1 on the validation split,\n"
            "applied unchanged (Kong et al. 2020); the headline numbers use the tuned ones.\n"
            "Subtask B (segment-based 1 s F1/ER, event-based F1, sed_eval) where strong labels exist."
        ),
    )
    p.add_argument("--checkpoint", metavar="CKPT", help="audio model: audio_model.pt or a .ckpt from avtag train "
                                                        "(not needed with --only video)")
    p.add_argument("--split", default="test", choices=("test", "eval", "validation"),
                   help="split to evaluate (default: test)")
    add_config_args(p)  # default config: the one stored in the checkpoint
    p.add_argument("--out", metavar="DIR", help="output folder (default: <output_dir>/evaluation/<split>-<system>)")
    p.add_argument("--only", choices=("audio", "video"), help="evaluate one branch alone")
    p.add_argument("--fusion", choices=CHOICES["fusion.method"], help="late-fusion method")
    p.add_argument("--hierarchy", choices=CHOICES["fusion.hierarchy"],
                   help="audioset: after fusion a parent class scores at least its children "
                        "(true-path rule); none: off")
    add_audio_post_args(p)
    p.add_argument("--no-tune", action="store_true", help="do not tune thresholds on the validation split")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="clips per forward pass (default 16)")
    add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def load_setup(args):
    """``(config, audio model or None)`` from ``--config`` / ``--checkpoint`` / ``--set`` / ``--only`` / ``--fusion``;
    without ``--config`` the config stored in the checkpoint is used."""
    from avtag.evaluation.inference import EvaluationError
    from avtag.models.device import resolve_device

    audio_model = None
    device = resolve_device(args.device)
    if args.only != "video":
        if not args.checkpoint:
            raise EvaluationError("give --checkpoint CKPT (audio_model.pt or a .ckpt from avtag train), "
                                  "or --only video to evaluate the video branch alone")
        from avtag.models.weights import load_audio_model

        audio_model = load_audio_model(args.checkpoint, device)
    elif not args.config:
        raise EvaluationError("--only video needs --config (where the cache and the official files are)")
    extra = [f"fusion.mode={args.only}"] if args.only else []
    extra += [f"fusion.method={args.fusion}"] if args.fusion else []
    extra += [f"fusion.hierarchy={args.hierarchy}"] if getattr(args, "hierarchy", None) else []
    config = load_args_config(args, extra + audio_post_overrides(args),
                              base=None if audio_model is None else audio_model.config)
    if audio_model is not None:
        from avtag.models.audio_post import with_tag_settings

        with_tag_settings(audio_model, config.tag)
    return config, audio_model


def print_summary(ev, out_dir: Path) -> None:
    """The summary table (both threshold sets) and notes on the console."""
    from rich.table import Table

    from avtag.commands.common import console as make_console
    from avtag.evaluation.report_writer import summary_rows
    from avtag.inference.formats import print_notes

    table = Table(title=f"{ev.system} system, {ev.split} split ({len(ev.names)} clips), %", title_justify="left")
    for col in ("thresholds", "micro P", "micro R", "micro F1", "macro F1", "class F1", "mAP", "seg F1", "seg ER",
                "event F1"):
        table.add_column(col, justify="left" if col == "thresholds" else "right")
    for row in summary_rows(ev):
        table.add_row(*[str(c).replace("**", "").replace(" on validation", "").replace("default (0.5)", "0.5")
                        for c in row])
    console = make_console()
    console.print(table)
    print_notes(console, ev.notes)
    console.print(f"report: {out_dir / 'report.md'}")


def run(args: argparse.Namespace) -> int:
    """Evaluate; write the report; print the summary table."""
    import avtag
    from avtag.config import resolve_path
    from avtag.evaluation.inference import build_fusion, score_with_validation
    from avtag.evaluation.report import describe_fusion, evaluate_system, official_groundtruth
    from avtag.evaluation.report_writer import write_evaluation
    from avtag.models.fusion import LateFusion

    config, audio_model = load_setup(args)
    progress = not args.no_progress
    system = MODES[config.fusion.mode]
    scores, validation, notes = score_with_validation(config, args.split, audio_model, tune=not args.no_tune,
                                             batch_size=args.batch_size, progress=progress)
    fusion = None
    if system == "fused":
        if scores.video is None:
            notes.append("no cached video logits in this split (cache.video: false or no video streams): "
                         "the fused system equals the audio branch")
        fusion, fit_notes = build_fusion(config, scores.classes, validation)
        notes += fit_notes
    else:  # one branch: the fusion section's true-path rule only, as `avtag tag --only` applies it
        fusion = LateFusion.from_config(config.fusion, scores.classes)
    ev = evaluate_system(system, scores, fusion, validation, config.evaluate, notes)
    out_dir = resolve_path(args.out) if args.out else \
        resolve_path(config.output_dir) / "evaluation" / f"{args.split}-{system}"
    setup = {"avtag": avtag.__version__, "checkpoint": args.checkpoint, "config": args.config or "stored in checkpoint",
             "cache": str(resolve_path(config.cache.dir)),
             "fusion": describe_fusion(fusion, system)}
    write_evaluation(ev, out_dir, coverage=scores.coverage, setup=setup,
                     groundtruth=official_groundtruth(config, args.split), figures=not args.no_figures,
                     extra={"fusion": None if fusion is None else fusion.to_dict()})
    print_summary(ev, out_dir)
    return 0
