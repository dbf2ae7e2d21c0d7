"""``avtag train CONFIG [KEY.PATH=VALUE ...] [--resume [CKPT]]``: train the audio branch."""
from __future__ import annotations

from avtag.commands.common import add_config_args, load_args_config


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the audio branch (MIL CRNN) on weak labels from the feature cache",
        description="Train the audio branch with multiple-instance learning on the weak labels of the feature cache "
                    "(built first when missing). Writes checkpoints (best validation micro-F1 and last), CSV logs "
                    "and audio_model.pt under output_dir. Continue a killed run with --resume.",
    )
    add_config_args(p, config_positional=True)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue from output_dir/checkpoints/last.ckpt (or from CKPT)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or model summary")
    p.set_defaults(func=run)


def run(args) -> int:
    from avtag.training.train import train

    config = load_args_config(args)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    f1 = "n/a" if result.best_micro_f1 is None else f"{result.best_micro_f1:.4f}"
    print(f"done: {result.epochs} epochs, {result.global_step} steps in {result.seconds:.0f} s; "
          f"best validation micro-F1 {f1}")
    print(f"checkpoints: {result.best_checkpoint or '-'} (best), {result.last_checkpoint or '-'} (last)")
    if result.model_path:
        print(f"audio model: {result.model_path}")
    return 0
