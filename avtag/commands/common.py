"""What every sub-command shares: config arguments, ``key=value`` overrides, the device flag, consoles.

Every command takes overrides the same way, ``--set KEY.PATH=VALUE`` (repeatable); commands
whose first argument is a config file (``prepare``, ``train``, ``ablate``) also take them as bare
``KEY.PATH=VALUE`` arguments after it. Unknown keys and wrong types fail before any work
(:mod:`avtag.config`).
"""
from __future__ import annotations

import argparse
import math


def add_config_args(parser: argparse.ArgumentParser, config_positional: bool = False) -> None:
    """``CONFIG [KEY=VALUE ...]`` (positional) or ``--config YAML``, plus ``--set KEY=VALUE``."""
    if config_positional:
        parser.add_argument("config", metavar="CONFIG", help="YAML config, e.g. configs/dcase2017.yaml")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="config overrides, e.g. training.max_epochs=5 model.pooling=linear_softmax")
    else:
        parser.add_argument("--config", metavar="YAML", help="config file (default: built-in settings)")
    parser.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set video.fps=2 (repeatable)")


def add_audio_post_args(parser: argparse.ArgumentParser) -> None:
    """``--class-prior`` and ``--no-speech-detector``: what follows the audio network (``tag.class_prior``,
    ``tag.speech_detector``; :mod:`avtag.models.audio_post`)."""
    parser.add_argument("--class-prior", choices=("training", "audioset"),
                        help="class frequencies the audio scores are given for: as trained, or AudioSet's (YouTube "
                             "video's); default: the model's (audioset for the default model; tag.class_prior)")
    parser.add_argument("--no-speech-detector", action="store_true",
                        help="Speech from the audio network alone, without the model's speech detector (Silero VAD "
                             "for the default model; tag.speech_detector=false)")


def audio_post_overrides(args) -> list[str]:
    """The config overrides of :func:`add_audio_post_args`' options."""
    extra = ["tag.speech_detector=false"] if getattr(args, "no_speech_detector", False) else []
    return extra + ([f"tag.class_prior={args.class_prior}"] if getattr(args, "class_prior", None) else [])


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="DEV",
                        help="auto (GPU when available), cpu, cuda or cuda:N (default: auto)")


def overrides_of(args: argparse.Namespace, extra: list[str] = ()) -> list[str]:
    """All ``key=value`` overrides of a command line, in order (bare ones, ``--set``, then ``extra``)."""
    return [*getattr(args, "overrides", []), *getattr(args, "set_overrides", []), *extra]


def load_args_config(args: argparse.Namespace, extra: list[str] = (), base=None):
    """The typed config of a command line: ``CONFIG``/``--config`` (or ``base``, e.g. the one stored
    in a checkpoint, or the defaults) with every override applied.

    Raises:
        ConfigError: unknown key (with the closest valid one), wrong type, bad file.
    """
    from avtag.config import apply_overrides, build_config, config_to_dict, load_config

    overrides = overrides_of(args, extra)
    path = getattr(args, "config", None)
    if path or base is None:
        return load_config(path, overrides)
    return build_config(apply_overrides(config_to_dict(base), overrides), "stored config + overrides")


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text[:40]!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _whole_number(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of things shown, clips per batch, processes)."""
    return _whole_number(text, 1)


def probability(text: str) -> float:
    """argparse type: a number in [0, 1] (no NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text[:40]!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text[:40]}")
    return value


def console(stderr: bool = False, **kwargs):
    """A rich console that never parses user strings as markup, emoji codes or highlights them."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, **kwargs)


def tag_config(args):
    """The config a ``tag`` command line describes: ``--config``/``--set`` plus the tag options."""
    extra = [f"fusion.mode={args.only}"] if args.only else []
    extra += [f"fusion.method={args.fusion}"] if args.fusion else []
    extra += [f"fusion.hierarchy={args.hierarchy}"] if getattr(args, "hierarchy", None) else []
    extra += [f"tag.objects={args.objects}"] if args.objects is not None else []
    extra += ["label_map.trust_pickle=true"] if args.trust_pickle else []
    extra += audio_post_overrides(args)
    config = load_args_config(args, extra)
    if args.encoder:
        config.label_map.encoder = args.encoder
    return config
