#!/usr/bin/env python
"""Default model v2 and v1 on the held-out test soundscapes (sources never heard in training).

Reads the test split of a feature cache (``avtag prepare configs/default_model.yaml --splits test``),
runs each packaged model (or a checkpoint) over the clips, and reports per class: test clips,
average precision, and precision / recall / F1 at 0.5, plus micro-F1 and mAP over the classes
each model has. A class v1 does not have is left blank in its columns, and v1's figures are
computed on its own classes that the test set also labels (its "mAP on shared classes").

Scores come from ``avtag evaluate``'s inference (:func:`avtag.evaluation.inference.branch_scores`), so a
model's class prior (``model.class_prior``) and speech detector (``model.speech_detector``) are applied
as ``avtag tag`` applies them; ``--class-prior training`` leaves the scores at the training class
frequencies (those of these soundscapes: in-domain F1), ``--no-speech-detector`` leaves the detector
out. AP and mAP do not depend on the class prior.

Usage: ``.venv/bin/python scripts/held_out.py [--config configs/default_model.yaml] [--models default,v1]
[--checkpoint runs/default_model_v2/audio_model.pt] [--no-speech-detector] [--class-prior training]``;
prints a markdown table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def scores_of(model, cache, names: list[str], samples: int, batch: int = 32) -> np.ndarray:
    """Clip-wise audio scores ``(clips, model classes)`` of the cached clips ``names``."""
    from avtag.evaluation.inference import branch_scores
    from avtag.models.tagger import AudioVisualTagger

    tagger = AudioVisualTagger(model.classes, model).eval()
    return branch_scores(tagger, cache, names, samples, batch, progress=False)[0]


def per_class(y: np.ndarray, s: np.ndarray, classes) -> dict:
    from sklearn.metrics import average_precision_score

    rows = {}
    for k, c in enumerate(classes):
        pos = int(y[:, k].sum())
        pred = s[:, k] >= 0.5
        tp, fp, fn = int((pred & y[:, k]).sum()), int((pred & ~y[:, k]).sum()), int((~pred & y[:, k]).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        rows[c] = {"clips": pos, "ap": float(average_precision_score(y[:, k], s[:, k])) if pos else None,
                   "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}
    pred = s >= 0.5
    tp = int((pred & y).sum())
    micro = 2 * tp / max(1, int(pred.sum()) + int(y.sum()))
    aps = [v["ap"] for v in rows.values() if v["ap"] is not None]
    return {"classes": rows, "micro_f1": micro, "mAP": float(np.mean(aps)) if aps else None, "n_classes": len(aps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "default_model.yaml"))
    parser.add_argument("--models", default="default,v1", help="packaged models, comma-separated")
    parser.add_argument("--checkpoint", help="a model file instead of the first packaged model")
    parser.add_argument("--no-speech-detector", action="store_true",
                        help="the networks alone (model.speech_detector none)")
    parser.add_argument("--class-prior", choices=("training", "audioset"),
                        help="model.class_prior for every model (default: each model's own)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from avtag.config import load_config, resolve_path
    from avtag.config.schema import TagConfig
    from avtag.data.cache import FeatureCache
    from avtag.models.audio_post import with_tag_settings
    from avtag.models.weights import get_weights, load_audio_model

    config = load_config(args.config)
    cache = FeatureCache(resolve_path(config.cache.dir), "test")
    names = cache.names()
    if not names:
        print(f"no cached test clips in {cache.dir}: run `avtag prepare {args.config} --splits test` first")
        return 1
    test_classes = list(config.data.classes)
    labels = [set(cache.labels(n)) for n in names]
    results, order = {}, []
    for i, name in enumerate(args.models.split(",")):
        model = load_audio_model(args.checkpoint) if (i == 0 and args.checkpoint) else get_weights(name).load()
        with_tag_settings(model, TagConfig(class_prior=args.class_prior or "model",
                                           speech_detector=not args.no_speech_detector))
        shared = [c for c in model.classes if c in test_classes]
        s = scores_of(model, cache, names, int(round(config.data.clip_seconds * model.sample_rate)))
        cols = [model.classes.index(c) for c in shared]
        y = np.array([[c in lab for c in shared] for lab in labels])
        results[name] = per_class(y, s[:, cols], shared)
        order.append(name)
    print(f"held-out test soundscapes: {len(names)} clips, {len(test_classes)} classes\n")
    print("| class | test clips | " + " | ".join(f"{m} AP | {m} F1" for m in order) + " |")
    print("|---|--:|" + "--:|--:|" * len(order))
    for c in test_classes:
        cells = []
        for m in order:
            r = results[m]["classes"].get(c)
            cells += ["" if r is None or r["ap"] is None else f"{100 * r['ap']:.1f}",
                      "" if r is None else f"{100 * r['f1']:.1f}"]
        clips = next((results[m]["classes"][c]["clips"] for m in order if c in results[m]["classes"]), 0)
        print(f"| {c} | {clips} | " + " | ".join(cells) + " |")
    for m in order:
        r = results[m]
        print(f"\n{m}: micro-F1 @0.5 {100 * r['micro_f1']:.1f} %, mAP {100 * r['mAP']:.1f} % over its "
              f"{r['n_classes']} classes present in the test set")
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
