"""``avtag score PREDICTIONS GROUNDTRUTH [--json]``: DCASE 2017 Task 4 Subtask A scoring.

Scores any prediction file exactly as the official ``TaskAEvaluate.py`` does (see
:mod:`avtag.evaluation.scorer` for the rules: clips absent from the ground truth are
ignored, ground-truth clips without a prediction row are not scored, duplicate rows,
unknown labels and label-less rows are handled as the scorer handles them). What the
scorer tolerates silently is reported on stderr (``avtag: warning:`` for a file
layout that zeroes the score, ``avtag: note:`` otherwise); the prediction file is
streamed, so its size does not matter.
"""
from __future__ import annotations

import argparse
import json
import sys

HELP = "score a Subtask A (tagging) prediction file as the official DCASE 2017 Task 4 scorer does"


def register(subparsers) -> None:
    """Add the ``score`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "score",
        help=HELP,
        description=HELP + ". Files: <clip file name>\\t<start>\\t<end>\\t<label>, tab-separated, no header.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "micro  = instance-based P/R/F1 over all (clip, label) pairs (the DCASE 2017 ranking metric)\n"
            "macro  = the official scorer's: F1 of mean class precision and mean class recall\n"
            "mean class F1 = plain mean of the class-wise F1 values\n"
            "--json prints {micro, macro, classwise, ...} with fractions in [0, 1]; clip lists as\n"
            "{count, first: [the first 10 names]}.\n"
            "Comma-separated or 3-column rows are read as clips without labels, as the official\n"
            "scorer does (the score drops to 0): avtag warns, and --strict rejects the file."
        ),
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="prediction file (official layout)")
    p.add_argument("groundtruth", metavar="GROUNDTRUTH", help="weak-label ground-truth file (official layout)")
    output = p.add_mutually_exclusive_group()  # one output format per run
    output.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    output.add_argument("--official-text", action="store_true",
                        help="print the official scorer's own text output (same numbers, its layout)")
    p.add_argument("--strict", action="store_true",
                   help="fail on what the scorer silently tolerates (comma-separated or 3-column rows, unknown "
                        "clips or labels, unscored clips)")
    p.set_defaults(func=run)


def _print_tables(result) -> None:
    from rich.table import Table

    from avtag.commands.common import console as make_console

    def pct(x: float) -> str:
        return f"{100.0 * x:.2f}"

    console = make_console()  # class names are printed as written, never as rich markup
    overall = Table(title="DCASE 2017 Task 4 Subtask A (tagging)", title_justify="left")
    for col in ("metric", "P %", "R %", "F1 %"):
        overall.add_column(col, justify="left" if col == "metric" else "right")
    overall.add_row("micro (instance-based, ranking)", pct(result.micro.precision), pct(result.micro.recall),
                    pct(result.micro.f1), style="bold")
    overall.add_row("macro (scorer: F1 of mean P, mean R)", pct(result.macro.precision), pct(result.macro.recall),
                    pct(result.macro.f1))
    overall.add_row("mean of class-wise F1", "", "", pct(result.mean_class_f1))
    console.print(overall)
    c = result.counts
    console.print(f"TP {c['tp']}  FP {c['fp']}  FN {c['fn']}  |  scored clips {result.scored_clips}  |  "
                  f"Number of Audio Files (scorer) {result.num_audio_files}")
    classwise = Table(title="Class-wise", title_justify="left")
    for col in ("class", "P %", "R %", "F1 %", "TP", "FP", "FN"):
        classwise.add_column(col, justify="left" if col == "class" else "right")
    for label, m in result.classwise.items():
        k = result.classwise_counts[label]
        classwise.add_row(label, pct(m.precision), pct(m.recall), pct(m.f1), str(k["tp"]), str(k["fp"]), str(k["fn"]))
    console.print(classwise)


def run(args: argparse.Namespace) -> int:
    """Score ``args.predictions`` against ``args.groundtruth``; print tables, JSON or the scorer's text."""
    from avtag.evaluation.scorer import score_files

    result = score_files(args.predictions, args.groundtruth, strict=args.strict)
    for line in result.warnings():
        kind = "warning" if line in result.format_warnings else "note"
        print(f"avtag: {kind}: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.official_text:
        sys.stdout.write(result.report())
    else:
        _print_tables(result)
    return 0
