"""``avtag prepare CONFIG [--format clips|shards]``: build the resumable feature cache of the config's splits.

``--format shards`` (or ``cache.format: shards``) also packs each split into litdata shards at
``cache.shards`` (a folder or an object-store URL) for streamed training: :mod:`avtag.data.shards`.
"""
from __future__ import annotations

import sys

from avtag.commands.common import nonnegative_int
from avtag.config import load_config


def register(sub) -> None:
    p = sub.add_parser("prepare", help="decode clips once into the feature cache (resumable)",
                       description="Decode each clip of the given splits once and store waveform, log-mel and "
                                   "video-branch features in cache.dir. A second run skips clips already done.")
    p.add_argument("config", help="YAML config, e.g. configs/dcase2017.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides KEY.PATH=VALUE, e.g. cache.workers=4")
    p.add_argument("--splits", default="train,validation,test",
                   help="comma-separated splits: train, validation, test, eval (default: %(default)s)")
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help="decoding processes, at least 1: a clip that crashes or hangs its decoder is recorded in "
                        "failed.tsv (default: cache.workers)")
    p.add_argument("--limit", type=nonnegative_int, default=None, help="cache at most N clips per split")
    p.add_argument("--retry-failed", action="store_true", help="try again clips listed in failed.tsv")
    p.add_argument("--format", choices=("clips", "shards"), default=None,
                   help="clips: the per-clip .npy cache; shards: that cache packed into litdata shards at cache.shards "
                        "(a folder or s3://...) for streamed training (default: cache.format)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class _LazyVideoEncoder:
    """``VideoBranch().frame_logits``, with the network built on the first call (only if frames come)."""

    def __init__(self) -> None:
        self._branch = None

    def __call__(self, frames):
        if self._branch is None:
            from avtag.models.video import VideoBranch

            self._branch = VideoBranch().eval()
        return self._branch.frame_logits(frames)


def run(args) -> int:
    """Prepare each split; exit 0 even when clips failed (they are listed in the split's failed.tsv)."""
    from avtag.data.cache import prepare_split

    config = load_config(args.config, args.overrides)
    encoder = _LazyVideoEncoder() if config.cache.video else None
    shards = (args.format or config.cache.format) == "shards"
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        kwargs = dict(workers=args.workers, progress=not args.no_progress, retry_failed=args.retry_failed,
                      limit=args.limit, frame_encoder=encoder)
        if shards:
            from avtag.data.shards import prepare_shards

            r, packed = prepare_shards(config, split, **kwargs)
        else:
            r, packed = prepare_split(config, split, **kwargs), None
        print(f"{split}: {r.listed} clips listed, {r.missing} missing (see {r.missing_report}), "
              f"{r.already_done} already cached, {r.written} written, {len(r.failed)} failed "
              f"({r.clips_per_second:.1f} clips/s)")
        for name, reason in list(r.failed.items())[:5]:
            print(f"  failed: {name}: {reason}", file=sys.stderr)
        if len(r.failed) > 5:
            print(f"  ... {len(r.failed) - 5} more in the split's failed.tsv", file=sys.stderr)
        if packed is not None:
            done = "up to date" if packed.skipped else f"written in {packed.seconds:.0f} s"
            size = f", {packed.bytes / 1e6:.0f} MB" if packed.bytes else ""
            print(f"{split}: {packed.clips} clips in {packed.shards or '?'} shard(s) at {packed.location}{size} "
                  f"({done})")
    return 0
