"""``avtag explain FILE --out DIR``: what the tagger heard (and saw) as each class.

Writes into DIR, per explained class (default: the clip's top 3 tags) or conv unit:
``<name>.wav`` (the part of the clip the model responded to: an explanation mask on the complex
STFT, inverted; Choi et al. 2016) and ``<name>_residual.wav`` (the rest), both at the input's
sample rate and length; plus ``explanation.png`` and ``explanation.json``
(:mod:`avtag.inference.explain`).
"""
from __future__ import annotations

import argparse
import sys

from avtag.commands.common import add_config_args, add_device_arg, console, positive_int

HELP = "explain the tags of a clip: auralised WAVs of what the model heard, a figure, explanation.json"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected finite seconds >= 0, got {text[:40]!r}") from None
    if not 0 <= value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected finite seconds >= 0, got {text[:40]}")
    return value


def register(subparsers) -> None:
    """Add the ``explain`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "explain", help=HELP, description=HELP + ".", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "methods: guided = guided backpropagation (Springenberg et al. 2015), the projection Choi, Fazekas\n"
            "and Sandler (2016) auralise; gradcam = Grad-CAM on a conv layer (coarse, --layer); integrated =\n"
            "integrated gradients from the clip's background (covers the whole of long steady sounds, where\n"
            "guided gradients mark their edges; 16x the cost).\n"
            "explanation.json: per target the fused/audio/video scores, events, top time-frequency regions\n"
            "(onset, offset s; f_low, f_high Hz), contributing objects, WAV names; per video frame the top\n"
            "objects and their contributions (probability x label-map weight). Its JSON Schema is\n"
            "avtag.inference.explain.SCHEMA."
        ),
    )
    p.add_argument("path", metavar="FILE", help="video or audio file")
    p.add_argument("--out", metavar="DIR", help="folder for the WAVs, explanation.png and explanation.json")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                   help="class to explain (repeatable; default: the top tags)")
    p.add_argument("--unit", dest="units", action="append", default=[], metavar="LAYER:INDEX",
                   help="channel INDEX of conv layer LAYER to auralise (repeatable; see --list-layers)")
    p.add_argument("--method", choices=("guided", "gradcam", "integrated"), default="guided",
                   help="attribution method (default: guided)")
    p.add_argument("--layer", metavar="LAYER",
                   help="Grad-CAM layer, with --method gradcam only "
                        "(default: the deepest conv with >= 4 frequency rows)")
    p.add_argument("--top-k", type=positive_int, default=3, metavar="K",
                   help="explain the K best tags when no --class is given (default 3)")
    p.add_argument("--start", type=_seconds, metavar="S", help="explain the file from S seconds")
    p.add_argument("--end", type=_seconds, metavar="S", help="explain the file up to S seconds")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="trained audio model (audio_model.pt or a .ckpt from avtag train)")
    p.add_argument("--model", default="default", metavar="NAME", help="packaged audio model (default: default)")
    p.add_argument("--labels", metavar="LABELS", help="sound classes, as for avtag tag (the video branch is zero-shot)")
    p.add_argument("--only", choices=("audio",), help="audio branch only (no video decoding)")
    p.add_argument("--list-layers", action="store_true",
                   help="print the audio model's conv layers and channels, then exit")
    add_config_args(p)
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Explain one file; print a summary; 0 when done."""
    from rich.text import Text

    from avtag.commands.tag import build_tagger
    from avtag.inference.explain import ExplainInputError
    from avtag.inference.formats import print_notes
    from avtag.models.explain import conv_layers

    for name in ("fusion", "objects", "encoder"):
        setattr(args, name, None)
    args.trust_pickle = False
    if not args.list_layers and not args.out:
        raise ExplainInputError("--out DIR is required (the folder for the WAVs, figure and JSON)")
    tagger = build_tagger(args)
    out = console(soft_wrap=True)
    if args.list_layers:
        if tagger.model.audio is None:
            raise ExplainInputError("no audio model: nothing to list")
        for name, channels in conv_layers(tagger.model.audio):  # plain tab-separated lines, for scripts
            sys.stdout.write(f"{name}\t{channels}\n")
        return 0
    expl = tagger.explain(args.path, classes=args.classes or None, units=args.units, out=args.out, method=args.method,
                          top_k=args.top_k, layer=args.layer, start=args.start, end=args.end)
    print_notes(out, expl.notes, style="yellow")
    for t in expl.targets:
        line = Text(t.target, style="bold")
        if t.score is not None:
            branches = (("audio", t.audio_score), ("video", t.video_score))
            parts = [f"fused {t.score:.2f}"] + [f"{k} {v:.2f}" for k, v in branches if v is not None]
            line.append("  " + ", ".join(parts))
        if t.events:
            line.append("  events " + ", ".join(f"{e.onset:.2f}-{e.offset:.2f} s" for e in t.events[:3]))
        if t.regions:
            g = t.regions[0]
            line.append(f"  strongest region {g['onset']:.2f}-{g['offset']:.2f} s, "
                        f"{g['f_low']:.0f}-{g['f_high']:.0f} Hz")
        if t.objects:
            line.append("  seen: " + ", ".join(f"{o['label']} {o['contribution']:.2f}" for o in t.objects[:2]))
        out.print(line)
        if t.wav:
            out.print(f"  {args.out}/{t.wav}  (residual: {t.residual_wav})")
    out.print(f"wrote {expl.json_path} and {args.out}/{expl.figure}")
    return 0
