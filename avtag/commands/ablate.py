"""``avtag ablate CONFIG [KEY.PATH=VALUE ...]``: audio-only vs video-only vs fused, side by side.

Re-uses the feature cache (a split that is not cached is prepared first) and the trained
audio model of the config's ``output_dir`` (trained first when there is none, unless
``--no-train``). See :mod:`avtag.evaluation.ablation` for what is written.
"""
from __future__ import annotations

import argparse

HELP = "compare audio-only, video-only and fused systems on one split (markdown table, per-class F1 figure)"


def register(subparsers) -> None:
    """Add the ``ablate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "ablate", help=HELP, description=HELP + ". Every system is scored from one inference pass, with "
        "threshold 0.5 and with per-class thresholds tuned on the validation split.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys: ablation.split, ablation.systems, ablation.out, ablation.train_if_missing "
               "(see configs/ablation.yaml); evaluate.* for the detection settings.",
    )  # fmt: skip
    p.add_argument("config", metavar="CONFIG", help="YAML config, e.g. configs/ablation.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides KEY.PATH=VALUE, e.g. fusion.method=logistic")
    p.add_argument("--split", choices=("test", "eval", "validation"), help="split (default: ablation.split or test)")
    p.add_argument("--checkpoint", metavar="CKPT", help="audio model (default: the run in output_dir)")
    p.add_argument("--systems", metavar="LIST", help="comma-separated subset of audio,video,fused,prior (default: all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ablation.out or <output_dir>/ablation/<split>)")
    p.add_argument("--no-train", action="store_true", help="fail instead of training when no audio model exists")
    p.add_argument("--no-tune", action="store_true", help="default threshold only (no validation split)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figure")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per forward pass (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ablation, write its files and print the table."""
    from rich.console import Console
    from rich.table import Table

    from avtag.config import get, load_config, resolve_path
    from avtag.evaluation.ablation import run_ablation, write_ablation
    from avtag.evaluation.inference import SYSTEMS, EvaluationError
    from avtag.evaluation.report import official_groundtruth, pct

    config = load_config(args.config, args.overrides)
    split = args.split or str(get(config, "ablation.split", "test"))
    systems = args.systems.split(",") if args.systems else list(get(config, "ablation.systems", list(SYSTEMS)))
    systems = [s.strip() for s in systems if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise EvaluationError(f"--systems: unknown system(s) {', '.join(unknown) or '(none)'}; "
                              f"choose from {', '.join(SYSTEMS)}")
    train_ok = not args.no_train and bool(get(config, "ablation.train_if_missing", True))
    result = run_ablation(config, split, args.checkpoint, systems=systems, train_if_missing=train_ok,
                          tune=not args.no_tune, batch_size=args.batch_size, progress=not args.no_progress)
    out = args.out or get(config, "ablation.out") or resolve_path(get(config, "output_dir", "runs/avtag")) / "ablation" / split
    out_dir = resolve_path(out)
    data = write_ablation(result, out_dir, figures=not args.no_figures, groundtruth=official_groundtruth(config, split))

    table = Table(title=f"ablation, {split} split, %", title_justify="left")
    for col in ("system", "thr", "micro P", "micro R", "micro F1", "macro F1", "mAP", "seg F1"):
        table.add_column(col, justify="left" if col in ("system", "thr") else "right")
    for row in data["rows"]:
        table.add_row(row["system"], "0.5" if row["thresholds"] == "default" else row["thresholds"], pct(row["micro"]["precision"]),
                      pct(row["micro"]["recall"]), pct(row["micro"]["f1"]), pct(row["macro"]["f1"]), pct(row["mAP"]),
                      pct(row["segment_f1"]))
    console = Console()
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"written: {out_dir / 'ablation.md'}", highlight=False)
    return 0
