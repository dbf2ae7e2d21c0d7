"""``avtag soundscapes OUT_DIR``: mix labelled 10 s soundscapes from real recordings (DCASE 2017 layout)."""
from __future__ import annotations

import argparse

HELP = "mix weakly/strongly labelled 10 s soundscapes from the labelled recordings (DCASE 2017 layout)"


def register(subparsers) -> None:
    """Add the ``soundscapes`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "soundscapes", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=HELP + ". Foreground events from the recordings in --sounds are placed at random onsets and "
                    "SNRs over a low-level noise background, with exact onsets/offsets; train and test clips use "
                    "disjoint source recordings. Only recordings whose licence allows redistributing a trained model "
                    "are used unless --allow-noncommercial is given.",
        epilog="The default model: avtag soundscapes cache/soundscapes, then avtag train configs/default_model.yaml.",
    )  # fmt: skip
    p.add_argument("out_dir", metavar="OUT_DIR", help="empty folder for metadata/ and audio/")
    p.add_argument("--sounds", default="../shared/sounds", metavar="DIR",
                   help="folder with sounds.csv and the recordings (default ../shared/sounds)")
    p.add_argument("--n-train", type=int, default=1000, metavar="N", help="training soundscapes (default 1000)")
    p.add_argument("--n-test", type=int, default=300, metavar="N", help="held-out test soundscapes (default 300)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; the same seed gives the same files")
    p.add_argument("--sample-rate", type=int, default=16000, metavar="HZ", help="sample rate of the wav files")
    p.add_argument("--min-recordings", type=int, default=3, metavar="K",
                   help="distinct source recordings a class needs to be its own output (default 3)")
    p.add_argument("--test-fraction", type=float, default=0.3, metavar="F",
                   help="share of each class's source recordings held out for test (default 0.3)")
    p.add_argument("--allow-noncommercial", action="store_true",
                   help="also use non-commercial, share-alike and unknown-licence recordings (research models only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avtag.data.soundscapes import SoundscapeConfig, SoundscapeError, generate_soundscapes

    if args.sample_rate < 8000:
        raise SoundscapeError(f"--sample-rate {args.sample_rate}: too low (at least 8000 Hz)")
    if not 0.0 < args.test_fraction < 1.0:
        raise SoundscapeError(f"--test-fraction {args.test_fraction}: must lie between 0 and 1")
    cfg = SoundscapeConfig(sample_rate=args.sample_rate, min_recordings=args.min_recordings,
                           test_fraction=args.test_fraction)  # fmt: skip
    result = generate_soundscapes(args.out_dir, args.sounds, args.n_train, args.n_test, args.seed, cfg,
                                  args.allow_noncommercial, progress=not args.no_progress)  # fmt: skip
    print(f"wrote {result.clips['train']} training and {result.clips['test']} test soundscapes to {result.root}")
    if result.excluded:
        print(f"left out {len(result.excluded)} recording(s) for their licence: "
              + ", ".join(f"{k} ({v})" for k, v in sorted(result.excluded.items())))
    width = max(len(c) for c in result.vocabulary)
    print(f"\n{'class':<{width}}  recordings train/test  clips train/test")
    for c in result.vocabulary:
        rec, clips = result.recordings_per_class, result.clips_per_class
        print(f"{c:<{width}}  {rec['train'][c]:>10}/{rec['test'][c]:<4}  {clips['train'][c]:>11}/{clips['test'][c]}")
    print(f"\nmetadata: {result.metadata_dir}  (data.classes for a config: the {len(result.vocabulary)} names above, "
          "in this order)")
    return 0
