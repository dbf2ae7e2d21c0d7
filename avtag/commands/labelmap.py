"""``avtag labelmap``: show the video branch's object -> sound-class mapping.

For each sound class, the ImageNet objects with the largest weights in the
label-map matrix (see :mod:`avtag.models.label_map`), with the text similarity
they came from and a mark on weights set by the reviewed override file. The
matrix is built once and cached; this command shows the cached one.
"""
from __future__ import annotations

import argparse
import json

from avtag.commands.common import positive_int

HELP = "show each sound class's top ImageNet objects in the video branch's label map"


def register(subparsers) -> None:
    """Add the ``labelmap`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("labelmap", help=HELP, description=HELP + " (weights in [0, 1]; * = set by an override).")
    p.add_argument("--labels", metavar="LABELS", default=None,
                   help="sound classes: 'dcase2017' (default), a file with one name per line, "
                        "or names separated by ';'")
    p.add_argument("--encoder", metavar="minilm|FILE", default=None,
                   help="text encoder: minilm or a word2vec file (.bin binary, .txt/.vec text)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also load gensim .kv/.model files: they are Python pickles and loading one runs any code "
                        "it contains, so only for files you made yourself (config: label_map.trust_pickle: true)")
    p.add_argument("--top", type=positive_int, default=5, metavar="N", help="objects shown per class (default 5)")
    p.add_argument("--config", metavar="YAML", help="config with a label_map section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set label_map.temperature=0.05")
    p.add_argument("--json", action="store_true", help="print JSON {class: [{object, weight, similarity, override}]}")
    p.add_argument("--rebuild", action="store_true", help="ignore the cached matrix and build it again")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build or load the label map and print the top objects of each class."""
    from rich.table import Table
    from rich.text import Text

    from avtag.commands.common import console as make_console
    from avtag.config import load_config
    from avtag.inference.tagger import parse_labels
    from avtag.labels import get_vocabulary
    from avtag.models.label_map import build_label_map

    config = load_config(args.config, args.overrides)
    settings = config.label_map
    if args.encoder:
        settings.encoder = args.encoder
    if args.trust_pickle:
        settings.trust_pickle = True
    vocabulary = parse_labels(args.labels) or get_vocabulary(config.data.classes)
    lm = build_label_map(vocabulary.names, settings, rebuild=args.rebuild)
    rows = {}
    for c, name in enumerate(lm.classes):
        rows[name] = [
            {"object": obj, "weight": round(w, 4), "similarity": round(s, 4),
             "override": bool(lm.overridden[lm.objects.index(obj), c])}
            for obj, w, s in lm.top_objects(c, args.top)
        ]
    if args.json:
        print(json.dumps({"settings": lm.settings, "classes": rows}, ensure_ascii=False))
        return 0
    console = make_console()
    s = lm.settings
    table = Table(title=Text(f"label map: encoder {s.get('encoder')}, top_k {s.get('top_k')}, temperature "
                         f"{s.get('temperature')}, min_similarity {s.get('min_similarity')}"), title_justify="left")
    table.add_column("sound class")
    table.add_column(f"top {args.top} ImageNet objects: weight (similarity), * = override")
    for name, objs in rows.items():
        text = ", ".join(f"{o['object']} {o['weight']:.2f}{'*' if o['override'] else ''} ({o['similarity']:.2f})"
                         for o in objs)
        table.add_row(Text(name), Text(text or "(no object: the video branch cannot see this class)"))
    console.print(table)
    return 0
