"""``avtag soundscapes OUT_DIR``: mix labelled 10 s soundscapes from real recordings (DCASE 2017 layout)."""
from __future__ import annotations

import argparse

#: the highest --sample-rate (a 10 s clip and its stems must fit in memory)
MAX_SAMPLE_RATE = 192000

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
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="empty folder for metadata/ and audio/")
    p.add_argument("--sounds", default="../shared/sounds", metavar="DIR",
                   help="folder with sounds.csv and the recordings (default ../shared/sounds)")
    p.add_argument("--corpus", metavar="DIR", default=None, action="append",
                   help="mix the corpus built by 'avtag corpus build DIR' (plus --sounds when that folder exists; "
                        "repeatable with --vocabulary dcase2017, e.g. a second corpus of optional sources): "
                        "vocabulary v2, train/validation/test split by source group, real ambience beds, random "
                        "low-pass and codec degradation of every class, per-class cap of source minutes")
    p.add_argument("--no-sounds", action="store_true", help="with --corpus: leave out the --sounds recordings")
    p.add_argument("--vocabulary", choices=("v2", "dcase2017"), default="v2",
                   help="with --corpus: v2 (the AudioSet classes the corpus covers, default) or dcase2017 (the 17 "
                        "official DCASE 2017 Task 4 classes in the official layout: real recordings where they exist, "
                        "synthesised reversing beeps, car alarms, ambulance and civil-defence sirens marked "
                        "constructed, missing classes left without clips; writes coverage.md)")
    p.add_argument("--devices", type=int, default=16, metavar="N",
                   help="with --vocabulary dcase2017: synthetic alarm units per constructed class (default 16)")
    p.add_argument("--renditions", type=int, default=3, metavar="N",
                   help="with --vocabulary dcase2017: recordings made of each unit (default 3)")
    p.add_argument("--n-train", type=int, default=None, metavar="N",
                   help="training soundscapes (default 1000; 6000 with --corpus; 1500 with --vocabulary dcase2017)")
    p.add_argument("--n-validation", type=int, default=None, metavar="N",
                   help="with --corpus: validation soundscapes from their own source groups (default 600; 200 with "
                        "--vocabulary dcase2017)")
    p.add_argument("--n-test", type=int, default=None, metavar="N",
                   help="held-out test soundscapes (default 300; 1200 with --corpus; 500 with --vocabulary dcase2017)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; the same seed gives the same files")
    p.add_argument("--sample-rate", type=int, default=16000, metavar="HZ", help="sample rate of the wav files")
    p.add_argument("--min-recordings", type=int, default=None, metavar="K",
                   help="distinct source recordings (groups) a class needs to be its own output (default 3; 6 with "
                        "--corpus)")
    p.add_argument("--test-fraction", type=float, default=None, metavar="F",
                   help="share of each class's source recordings held out for test (default 0.3; 0.2 with --corpus)")
    p.add_argument("--validation-fraction", type=float, default=0.1, metavar="F",
                   help="with --corpus: share of source groups for validation, and the data.validation_fraction of "
                        "the training config the clip names are made for (default 0.1)")
    p.add_argument("--max-minutes", type=float, default=30.0, metavar="M",
                   help="with --corpus: source minutes used per class and split, at most (default 30)")
    p.add_argument("--lowpass-probability", type=float, default=0.5, metavar="P",
                   help="with --corpus: chance that an event is low-passed at 3-8 kHz (default 0.5)")
    p.add_argument("--codec-probability", type=float, default=0.3, metavar="P",
                   help="with --corpus: chance that an event goes through MP3/mu-law (default 0.3)")
    p.add_argument("--bed-probability", type=float, default=0.5, metavar="P",
                   help="with --corpus: chance of a real ambience bed under a clip (default 0.5)")
    p.add_argument("--reverb-probability", type=float, default=0.0, metavar="P",
                   help="with --corpus: chance that an event is put in a synthetic room first (default 0)")
    p.add_argument("--class-draw", choices=("uniform", "branch"), default="uniform",
                   help="with --corpus: draw each event's class uniformly (default), or share each top-level branch "
                        "of the vocabulary (sqrt of its class count) with Speech x4")
    p.add_argument("--speech-turns", action="store_true",
                   help="with --corpus: mix speech as turns of one speaker talking on (utterances of a speaker "
                        "chained with short pauses, excerpts of 2-10 s) instead of single utterances")
    p.add_argument("--allow-noncommercial", action="store_true",
                   help="also use non-commercial, share-alike and unknown-licence recordings (research models only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avtag.data.soundscapes import SoundscapeConfig, SoundscapeError, generate_soundscapes

    corpus = args.corpus is not None
    test_fraction = args.test_fraction if args.test_fraction is not None else (0.2 if corpus else 0.3)
    if args.sample_rate < 8000:
        raise SoundscapeError(f"--sample-rate {args.sample_rate}: too low (at least 8000 Hz)")
    if args.sample_rate > MAX_SAMPLE_RATE:
        raise SoundscapeError(f"--sample-rate {args.sample_rate}: too high (at most {MAX_SAMPLE_RATE} Hz)")
    if args.seed < 0:
        raise SoundscapeError(f"--seed {args.seed}: must be >= 0")
    for flag, value in (("--test-fraction", test_fraction), ("--validation-fraction", args.validation_fraction)):
        if not 0.0 < value < 1.0:
            raise SoundscapeError(f"{flag} {value}: must lie between 0 and 1")
    for flag in ("lowpass_probability", "codec_probability", "bed_probability", "reverb_probability"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise SoundscapeError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must lie between 0 and 1")
    for flag, value in (("--devices", args.devices), ("--renditions", args.renditions),
                        ("--min-recordings", args.min_recordings), ("--max-minutes", args.max_minutes)):
        if value is not None and not value > 0:
            raise SoundscapeError(f"{flag} {value}: must be > 0")
    for flag, value in (("--n-train", args.n_train), ("--n-validation", args.n_validation), ("--n-test", args.n_test)):
        if value is not None and value < 1:  # None: the default; every split needs a clip (0 is not "default")
            raise SoundscapeError(f"{flag} {value}: must be >= 1")
    if args.vocabulary == "dcase2017":
        if not corpus:
            raise SoundscapeError("--vocabulary dcase2017 needs --corpus DIR")
        return _run_dcase2017(args, test_fraction)
    if corpus:
        if len(args.corpus) > 1:
            raise SoundscapeError("several --corpus folders: only with --vocabulary dcase2017")
        args.corpus = args.corpus[0]
        return _run_corpus(args, test_fraction)
    cfg = SoundscapeConfig(sample_rate=args.sample_rate, min_recordings=_given(args.min_recordings, 3),
                           test_fraction=test_fraction)
    result = generate_soundscapes(args.out_dir, args.sounds, _given(args.n_train, 1000), _given(args.n_test, 300),
                                  args.seed, cfg, args.allow_noncommercial, progress=not args.no_progress)
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


def _given(value: int | None, default: int) -> int:
    """An option's value; its default only when the option was not given (an explicit 0 stays 0)."""
    return default if value is None else value


def _run_corpus(args: argparse.Namespace, test_fraction: float) -> int:
    from pathlib import Path

    from avtag.data.corpus.mixing import generate_corpus_soundscapes
    from avtag.data.soundscapes import SoundscapeConfig

    cfg = SoundscapeConfig(sample_rate=args.sample_rate, min_recordings=_given(args.min_recordings, 6),
                           test_fraction=test_fraction, lowpass_probability=args.lowpass_probability,
                           codec_probability=args.codec_probability, bed_probability=args.bed_probability,
                           reverb_probability=args.reverb_probability)
    sounds = None if args.no_sounds or not (Path(args.sounds) / "sounds.csv").is_file() else args.sounds
    result = generate_corpus_soundscapes(args.out_dir, args.corpus, sounds, _given(args.n_train, 6000),
                                         _given(args.n_validation, 600), _given(args.n_test, 1200), args.seed, cfg,
                                         args.max_minutes, args.validation_fraction, 0, args.allow_noncommercial,
                                         progress=not args.no_progress, class_draw=args.class_draw,
                                         speech_turns=args.speech_turns)
    c = result.clips
    print(f"wrote {c['train']} training, {c['validation']} validation and {c['test']} test soundscapes to {result.root}"
          + (f" (with the recordings of {sounds})" if sounds else ""))
    width = max(len(x) for x in result.vocabulary)
    print(f"\n{'class':<{width}}  recordings train/val/test  clips train/val/test")
    rec, clips = result.recordings_per_class, result.clips_per_class
    for x in result.vocabulary:
        print(f"{x:<{width}}  {rec['train'][x]:>10}/{rec['validation'][x]}/{rec['test'][x]:<6}  "
              f"{clips['train'][x]:>9}/{clips['validation'][x]}/{clips['test'][x]}")
    print(f"\nmetadata: {result.metadata_dir}  (data.classes for a config: the {len(result.vocabulary)} names above, "
          "in this order; validation clips sit in audio/train and are found by data.validation_fraction "
          f"{args.validation_fraction}, data.seed 0)")
    return 0


def _run_dcase2017(args: argparse.Namespace, test_fraction: float) -> int:
    from dataclasses import replace
    from pathlib import Path

    from avtag.data.corpus.dcase2017_real import DEFAULTS, generate_dcase2017_real
    from avtag.data.soundscapes import SoundscapeConfig

    cfg = replace(SoundscapeConfig(), **{**DEFAULTS, "sample_rate": args.sample_rate, "test_fraction": test_fraction,
                                         "lowpass_probability": args.lowpass_probability,
                                         "codec_probability": args.codec_probability})
    sounds = None if args.no_sounds or not (Path(args.sounds) / "sounds.csv").is_file() else args.sounds
    result = generate_dcase2017_real(args.out_dir, args.corpus, sounds, _given(args.n_train, 1500),
                                     _given(args.n_validation, 200), _given(args.n_test, 500), args.seed, cfg,
                                     args.devices, args.renditions,
                                     validation_fraction=args.validation_fraction,
                                     allow_restricted=args.allow_noncommercial,
                                     progress=not args.no_progress)
    c = result.clips
    print(f"wrote {c['train']} training, {c['validation']} validation and {c['test']} test clips for the 17 DCASE 2017 "
          f"classes to {result.root}" + (f" (with the recordings of {sounds})" if sounds else ""))
    width = max(len(r["class"]) for r in result.coverage)
    print(f"\n{'class':<{width}}  {'status':<11}  files  groups tr/va/te  clips tr/va/te")
    for r in result.coverage:
        g, k = r["groups"], r["clips"]
        files = r["real_files"] + r["constructed_files"]
        print(f"{r['class']:<{width}}  {r['status']:<11}  {files:>5}  {len(g['train']):>6}/{len(g['validation'])}/"
              f"{len(g['test']):<4}  {k['train']:>5}/{k['validation']}/{k['test']}")
    media = result.media_dirs
    print(f"\nmetadata: {result.metadata_dir}  (data.metadata_dir; data.media_dirs.train/test: {media['train']}, "
          f"{media['test']}); coverage table: {result.root / 'coverage.md'}")
    return 0
