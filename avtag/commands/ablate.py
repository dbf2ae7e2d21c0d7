"""``avtag ablate CONFIG [KEY.PATH=VALUE ...]``: audio-only vs video-only vs fused, side by side.

Re-uses the feature cache (a split that is not cached is prepared first) and the trained
audio model of the config's ``output_dir`` (trained first when there is none, unless
``--no-train``). See :mod:`avtag.evaluation.ablation` for what is written.
"""
from __future__ import annotations

import argparse

from avtag.commands.common import (
    add_audio_post_args,
    add_config_args,
    add_device_arg,
    audio_post_overrides,
    load_args_config,
    positive_int,
)

HELP = "compare audio-only, video-only and fused systems on one split (markdown table, per-class F1 figure)"


def register(subparsers) -> None:
    """Add the ``ablate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "ablate", help=HELP, description=HELP + ". Every system is scored from one inference pass, with "
        "threshold 0.5 and with per-class thresholds tuned on the validation split.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys: ablation.split, ablation.systems, ablation.out, ablation.train_if_missing "
               "(see configs/ablation.yaml); evaluate.* for the detection settings.",
    )
    add_config_args(p, config_positional=True)
    p.add_argument("--split", choices=("test", "eval", "validation"), help="split (default: ablation.split or test)")
    p.add_argument("--checkpoint", metavar="CKPT", help="audio model (default: the run in output_dir)")
    p.add_argument("--systems", metavar="LIST", help="comma-separated subset of audio,video,fused,prior (default: all)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: ablation.out or <output_dir>/ablation/<split>)")
    p.add_argument("--no-train", action="store_true", help="fail instead of training when no audio model exists")
    add_audio_post_args(p)
    p.add_argument("--no-tune", action="store_true", help="default threshold only (no validation split)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figure")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="clips per forward pass (default 16)")
    add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def audio_model_for(config, checkpoint: str | None, train_if_missing: bool, device, progress: bool):
    """``(audio model, its path, notes)``: ``checkpoint``, else the run in ``output_dir``, else one
    trained now with ``avtag train`` when allowed.

    Raises:
        EvaluationError: no model and training not allowed (or training wrote nothing).
    """
    from avtag.evaluation.ablation import find_checkpoint
    from avtag.evaluation.inference import EvaluationError
    from avtag.models.weights import load_audio_model

    notes = []
    if checkpoint is None:
        checkpoint = find_checkpoint(config)
        if checkpoint is None:
            if not train_if_missing:
                raise EvaluationError(f"no trained audio model under {config.output_dir}: run `avtag train` "
                                      "first, give --checkpoint, or allow training")
            from avtag.training.train import train

            print(f"no trained audio model under {config.output_dir}: training one first")
            result = train(config, progress=progress)
            checkpoint = result.model_path or result.last_checkpoint
            if checkpoint is None:
                raise EvaluationError("training wrote no checkpoint")
            notes.append(f"audio model trained for this ablation ({result.epochs} epochs)")
        else:
            notes.append(f"re-used the trained audio model {checkpoint}")
    from avtag.models.audio_post import with_tag_settings

    model = load_audio_model(checkpoint, device)
    with_tag_settings(model, config.tag)
    return model, str(checkpoint), notes


def run(args: argparse.Namespace) -> int:
    """Run the ablation, write its files and print the table."""
    from rich.table import Table

    from avtag.commands.common import console as make_console
    from avtag.config import resolve_path
    from avtag.evaluation.ablation import run_ablation, write_ablation
    from avtag.evaluation.inference import SYSTEMS, EvaluationError
    from avtag.evaluation.report import official_groundtruth
    from avtag.evaluation.report_writer import pct
    from avtag.inference.formats import print_notes
    from avtag.models.device import resolve_device

    config = load_args_config(args, audio_post_overrides(args))
    split = args.split or config.ablation.split
    systems = args.systems.split(",") if args.systems else list(config.ablation.systems)
    systems = [s.strip() for s in systems if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise EvaluationError(f"--systems: unknown system(s) {', '.join(unknown)[:200] or '(none)'}; "
                              f"choose from {', '.join(SYSTEMS)}")
    progress = not args.no_progress
    audio_model, checkpoint, notes = None, args.checkpoint, []
    if any(s in ("audio", "fused") for s in systems):
        audio_model, checkpoint, notes = audio_model_for(config, args.checkpoint,
                                                         not args.no_train and config.ablation.train_if_missing,
                                                         resolve_device(args.device), progress)
    result = run_ablation(config, split, audio_model, checkpoint, systems=systems, tune=not args.no_tune,
                          batch_size=args.batch_size, progress=progress, notes=notes)
    out_dir = resolve_path(args.out or config.ablation.out or resolve_path(config.output_dir) / "ablation" / split)
    data = write_ablation(result, out_dir, figures=not args.no_figures, groundtruth=official_groundtruth(config, split))

    table = Table(title=f"ablation, {split} split, %", title_justify="left")
    for col in ("system", "thr", "micro P", "micro R", "micro F1", "macro F1", "mAP", "seg F1"):
        table.add_column(col, justify="left" if col in ("system", "thr") else "right")
    for row in data["rows"]:
        table.add_row(row["system"], "0.5" if row["thresholds"] == "default" else row["thresholds"],
                      pct(row["micro"]["precision"]), pct(row["micro"]["recall"]), pct(row["micro"]["f1"]),
                      pct(row["macro"]["f1"]), pct(row["mAP"]), pct(row["segment_f1"]))
    console = make_console()
    console.print(table)
    print_notes(console, result.notes)
    console.print(f"written: {out_dir / 'ablation.md'}")
    return 0
