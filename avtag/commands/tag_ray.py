"""``avtag tag PATHS --ray [ADDRESS] --out results.jsonl``: the ``tag`` command's Ray branch.

Builds the same config, checkpoint and labels from the command line as ``avtag tag`` and hands them
to :func:`avtag.inference.distributed.tag_with_ray`; prints a summary on stderr. Exit code 1 when a
file of this run failed (its line in the output says why), as ``avtag tag``.
"""
from __future__ import annotations

import sys

from avtag.inference.distributed import RayTagError


def run_ray(args, paths) -> int:
    """Tag ``paths`` on Ray as the ``tag`` command line ``args`` says."""
    from avtag.inference.distributed import tag_with_ray

    if args.ray is None:
        raise RayTagError("--out is the result file of --ray: add --ray [ADDRESS]")
    if not args.out:
        raise RayTagError("--ray needs --out FILE: the JSON-lines file the results are appended to")
    if args.format == "tsv":
        raise RayTagError("--ray writes JSON lines (the lines of --format json); --format tsv is not available")
    from avtag.commands.common import tag_config

    config = tag_config(args)
    report = tag_with_ray(paths, args.out, address=args.ray, config=config,
                          checkpoint=args.checkpoint or f"pretrained:{args.model}", labels=args.labels,
                          segments=args.segments, top_k=args.top_k, threshold=args.threshold,
                          gpus=args.device != "cpu", progress=not args.no_progress)
    where = "a local Ray instance" if args.ray == "local" else f"Ray at {args.ray}"
    print(f"avtag: {report.tagged} file(s) tagged on {where} ({report.actors} tagger actor(s)"
          f"{', 1 GPU each' if report.gpus_per_actor else ', CPU'}), {report.failed} failed, "
          f"{report.already_done} already in {report.out}; {report.seconds:.0f} s", file=sys.stderr)
    return 1 if report.failed else 0
