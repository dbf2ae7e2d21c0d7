"""The ``avtag`` command: argument parsing and dispatch only.

Each sub-command lives in ``avtag/commands/<name>.py`` with ``register(subparsers)``
(adds its parser and sets ``func``). Errors derived from :class:`avtag.AvtagError`
are printed as one line ``avtag: error: ...`` with exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from avtag import AvtagError, __version__

#: sub-command modules in help order
COMMANDS = ("prepare", "train", "tag", "labelmap", "evaluate", "score", "ablate", "soundscapes", "corpus", "explain")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit 2), pointing to ``--help``."""

    def error(self, message: str):
        if len(message) > 300:  # argparse quotes the offending value whole ("invalid choice: 'xxxx…'")
            message = message[:300] + "..."
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command that is installed."""
    parser = OneLineParser(
        prog="avtag", description="Multimodal audio-visual sound event tagging (audio CRNN + video CNN, late fusion)."
    )
    parser.add_argument("--version", action="version", version=f"avtag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"avtag.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"avtag.commands.{name}":
                continue  # command not written yet
            raise
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one line ``avtag: warning: ...`` (no source line, no path)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"avtag: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``avtag`` console script; returns the process exit code.

    Exit codes: 0 done; 1 some inputs failed (each reported in one line) or an internal error;
    2 a usage error or bad input (one line naming the file and the problem); 130 interrupted;
    141 stdout was closed early (e.g. ``| head``), quietly, as Unix tools do.
    """
    import warnings

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides after an option (argparse takes positionals only before them)
        if not (isinstance(getattr(args, "overrides", None), list)
                and all("=" in e and not e.startswith("-") for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)[:200]}")
        args.overrides += extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    try:
        code = args.func(args)
    except AvtagError as exc:
        from avtag.io.common import visible

        print(f"avtag: error: {visible(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avtag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except Exception as exc:  # an unexpected failure: one line unless asked for the traceback
        if os.environ.get("AVTAG_DEBUG"):
            raise
        from avtag.io.common import shorten, visible

        if isinstance(exc, OSError) and exc.filename is not None:  # a file the system refuses: bad input
            print(f"avtag: error: {visible(shorten(exc.filename))}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno is not None:  # no file named: stdout, or a library's writer
            print(f"avtag: error: cannot write the output (standard output or a file written): "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
        if sys.stdout is None or (isinstance(exc, (AttributeError, ValueError)) and _stdout_failed()):
            print("avtag: error: standard output is closed", file=sys.stderr)
            return 2
        print(f"avtag: internal error: {type(exc).__name__}: {visible(exc)} (set AVTAG_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as exc:
        print(f"avtag: error: cannot write standard output: {exc.strerror or exc}", file=sys.stderr)
        _silence_stdout()
        return 2
    return int(code or 0)


def _stdout_failed() -> bool:
    """Standard output is closed or cannot take a write (a full disk, /dev/full)."""
    try:
        if sys.stdout is None or sys.stdout.closed:
            return True
        sys.stdout.flush()
        return False
    except (OSError, ValueError):
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
