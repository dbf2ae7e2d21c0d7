#!/usr/bin/env python
"""The default model on the real clips of ../shared/clips: audio, video and fused, beside each other.

Hand labels (``clips.csv``: AudioSet names of what is clearly audible) are mapped onto the model's
classes through the AudioSet ontology: a clip labelled "Acoustic guitar" is positive for Guitar,
Plucked string instrument, Musical instrument and Music when the model has them (ancestors from
the ``ontology`` section of ``avtag/resources/corpus_rules.yaml``). For every clip the tagger runs once
(``top_k 0, threshold 0``: all scores); the fusion rules are then applied to the same audio and
video scores through :meth:`AudioVisualTagger.combine`, so the rows differ only in the rule.

"Audio only" is the audio branch as ``avtag tag`` runs it: the network's scores moved to the model's
class prior (AudioSet's for the default model, ``avtag/models/class_prior.py``), then the model's speech
detector (Silero VAD for the default model) joined. "Audio, training prior" leaves the scores at the
training class frequencies (``--class-prior training``); "audio network alone" is the network without
either (``--class-prior training --no-speech-detector``).

Metrics over (clip, class) pairs at threshold 0.5: micro precision, recall and F1; and the
label-ranking average precision (scikit-learn; clips without any positive class in the
vocabulary are left out of it, and counted). Prints a markdown table and a JSON line.

Usage: ``.venv/bin/python scripts/real_clips.py [--model default] [--checkpoint FILE] [--no-speech-detector]
[--class-prior training|audioset] [--rules weighted:0.5,max,gated:0.5,boost:0.5,boost:1.0] [--bootstrap 2000]``
(the default rules; ``boost:1.0`` is noisy-OR, the default of ``avtag tag``)
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "clips"


def truth(classes: tuple[str, ...], labels: list[str]) -> np.ndarray:
    """``(classes,)`` bool: the hand labels and their AudioSet ancestors that are model classes."""
    from avtag.ontology import load_ontology

    expanded = set(load_ontology().expand(labels))
    return np.array([c in expanded for c in classes])


def audio_scores(result, classes) -> list[float]:
    """The audio branch's score of every class in a :class:`TagResult` (NaN where it has none)."""
    return [np.nan if result.scores[c].audio_score is None else result.scores[c].audio_score for c in classes]


def metrics(y: np.ndarray, scores: np.ndarray) -> dict:
    from sklearn.metrics import label_ranking_average_precision_score

    pred = scores >= 0.5
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    rows = y.any(axis=1)
    lrap = float(label_ranking_average_precision_score(y[rows], scores[rows])) if rows.any() else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "lrap": lrap, "tp": tp, "fp": fp, "fn": fn,
            "clips_in_lrap": int(rows.sum())}


def paired_bootstrap(y: np.ndarray, systems: dict[str, np.ndarray], reference: str, n: int,
                     seed: int = 0) -> dict[str, dict]:
    """Each system's F1 and LRAP minus the ``reference`` system's, over ``n`` resamples of the clips
    (drawn with replacement, the same draw for every system: a paired bootstrap, Efron & Tibshirani
    1993); returns the 5th and 95th percentiles of both differences and of the system's own LRAP (90 %
    intervals: how far 13 clips pin a figure down)."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(n)]
    ref = [metrics(y[d], systems[reference][d]) for d in draws]
    out = {}
    for name, scores in systems.items():
        diffs = [(m["f1"] - r["f1"], m["lrap"] - r["lrap"], m["lrap"])
                 for m, r in zip((metrics(y[d], scores[d]) for d in draws), ref)]
        lo, hi = np.nanpercentile(np.array(diffs), [5, 95], axis=0)
        out[name] = {"f1_diff_90": [float(lo[0]), float(hi[0])], "lrap_diff_90": [float(lo[1]), float(hi[1])],
                     "lrap_90": [float(lo[2]), float(hi[2])]}
    return out


def fusion_for(rule: str, classes, tagger, section):
    """A :class:`LateFusion` from ``method[:parameter]`` (``boost:0.5``, ``weighted:0.5``, ``gated``, ``max``,
    ``audio``, ``video``: one branch alone), with the config ``section``'s other settings (the hierarchy)."""
    import dataclasses

    from avtag.models.fusion import LateFusion

    method, _, value = rule.partition(":")
    if method in ("audio", "video"):
        section = dataclasses.replace(section, mode=method)
    elif method == "boost":
        section = dataclasses.replace(section, method=method, video_boost=float(value or 1.0))
    else:
        section = dataclasses.replace(section, method=method, audio_weight=float(value or 0.5))
    fusion = LateFusion.from_config(section, classes)
    if method == "gated":
        fusion.gate(tagger.model.object_map.sum(dim=0).cpu().numpy())
    return fusion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="packaged model name (default: default)")
    parser.add_argument("--checkpoint", help="a trained audio model file instead of a packaged model")
    parser.add_argument("--common-with", metavar="MODEL",
                        help="score only the classes this model shares with packaged model MODEL (a fair comparison)")
    parser.add_argument("--fps", type=float, help="video frames sampled per second (default: the config's, 1)")
    parser.add_argument("--rules", default="weighted:0.5,max,gated:0.5,boost:0.5,boost:1.0",
                        help="fusion rules to compare, method[:parameter], comma-separated")
    parser.add_argument("--no-speech-detector", action="store_true",
                        help="every row from the audio network alone (tag.speech_detector false)")
    parser.add_argument("--class-prior", choices=("training", "audioset"),
                        help="every row with this class prior (tag.class_prior; default: the model's)")
    parser.add_argument("--hierarchy", choices=("audioset", "none"),
                        help="every row with or without the true-path rule (fusion.hierarchy; default: audioset)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also give 90 %% intervals of each row's F1 and LRAP minus the audio branch's, and of its "
                             "LRAP, from N paired resamples of the clips (e.g. 2000)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--scores", metavar="FILE",
                        help="also write the per-clip scores (NumPy .npz: clips, classes, truth, audio, video, fused)")
    args = parser.parse_args()
    if not (CLIPS / "clips.csv").is_file():
        print(f"skipped: {CLIPS / 'clips.csv'} not found (the ../shared folder beside the repository)")
        return 0
    sys.path.insert(0, str(REPO))
    import torch

    from avtag.inference.tagger import Tagger
    from avtag.models.tagger import AudioVisualTagger

    rows = list(csv.DictReader(open(CLIPS / "clips.csv")))
    import dataclasses
    import time

    from avtag.config import AvtagConfig

    config = AvtagConfig()
    if args.fps:
        config = dataclasses.replace(config, video=dataclasses.replace(config.video, fps=args.fps))
    if args.no_speech_detector:
        config = dataclasses.replace(config, tag=dataclasses.replace(config.tag, speech_detector=False))
    if args.class_prior:
        config = dataclasses.replace(config, tag=dataclasses.replace(config.tag, class_prior=args.class_prior))
    if args.hierarchy:
        config = dataclasses.replace(config, fusion=dataclasses.replace(config.fusion, hierarchy=args.hierarchy))
    checkpoint = args.checkpoint or f"pretrained:{args.model}"
    tagger = Tagger.from_config(config, checkpoint=checkpoint, device="cpu")
    t0 = time.perf_counter()
    classes = tagger.classes
    files = [CLIPS / row["filename"] for row in rows]
    y, audio, video, names = [], [], [], []
    with tagger:
        for r in tagger.tag_files(files, top_k=0, threshold=0.0):
            row = next(x for x in rows if Path(r.file).name == x["filename"])
            names.append(row["filename"])
            y.append(truth(classes, row["labels"].split(";")))
            audio.append(audio_scores(r, classes))
            video.append([np.nan if r.scores[c].video_score is None else r.scores[c].video_score for c in classes])
    seconds = time.perf_counter() - t0
    y, a, v = np.array(y), np.array(audio), np.array(video)
    def audio_with(**tag) -> np.ndarray:
        """``(clips, classes)`` audio scores with these ``tag`` settings changed."""
        changed = dataclasses.replace(config, tag=dataclasses.replace(config.tag, **tag))
        with Tagger.from_config(changed, checkpoint=checkpoint, device="cpu", use_video=False) as other:
            scores = {Path(r.file).name: audio_scores(r, classes) for r in other.tag_files(files, top_k=0,
                                                                                          threshold=0.0)}
        return np.array([scores[n] for n in names])

    extra = {}
    if tagger.engine.shifts_prior:
        extra["audio, training prior"] = audio_with(class_prior="training")
    if tagger.engine.joins_speech or tagger.engine.shifts_prior:
        extra["audio network alone (training prior, no speech detector)"] = audio_with(class_prior="training",
                                                                                      speech_detector=False)
    if args.common_with:
        from avtag.models.weights import get_weights

        keep = [i for i, c in enumerate(classes) if c in get_weights(args.common_with).classes]
        classes, y, a, v = tuple(classes[i] for i in keep), y[:, keep], a[:, keep], v[:, keep]
        extra = {k: x[:, keep] for k, x in extra.items()}
        if tagger.model.object_map is not None:
            tagger.model.object_map = tagger.model.object_map[:, keep]
    results = {"model": args.checkpoint or args.model, "clips": len(names), "classes": len(classes),
               "fps": config.video.fps, "tag_seconds": round(seconds, 2), "positives": int(y.sum()), "systems": {}}
    def system(rule: str, audio: np.ndarray, video: np.ndarray) -> np.ndarray:
        """``(clips, classes)`` scores of a rule, through the tagger's own late fusion (and hierarchy)."""
        fusion = fusion_for(rule, classes, tagger, config.fusion)
        with torch.no_grad():
            return AudioVisualTagger(classes, fusion=fusion).combine(torch.as_tensor(audio),
                                                                    torch.as_tensor(video)).numpy()

    per_rule = {"audio": system("audio", a, v)}
    rows = {"audio only": per_rule["audio"]}
    for name, x in extra.items():
        rows[name] = system("audio", x, v)
    per_rule["video"] = rows["video only"] = system("video", a, v)
    for rule in args.rules.split(","):
        per_rule[rule.strip()] = rows[f"fused, {rule.strip()}"] = system(rule.strip(), a, v)
    results["systems"] = {name: metrics(y, x) for name, x in rows.items()}
    if args.bootstrap:
        for name, ci in paired_bootstrap(y, rows, "audio only", args.bootstrap).items():
            results["systems"][name].update(ci)
    print(f"{results['model']} model, {len(names)} real clips of ../shared/clips, {len(classes)} classes, "
          f"{int(y.sum())} positive (clip, class) pairs (hand labels + AudioSet ancestors); video at "
          f"{config.video.fps:g} frames/s, {seconds:.1f} s to tag them all\n")
    ci = args.bootstrap > 0
    print("| system | micro P @0.5 | micro R @0.5 | micro F1 @0.5 | label-ranking AP |"
          + (" F1 - audio, 90 % | LRAP - audio, 90 % | LRAP, 90 % |" if ci else ""))
    print("|---|--:|--:|--:|--:|" + ("--:|--:|--:|" if ci else ""))
    for name, m in results["systems"].items():
        bands = "".join(f" {m[k][0]:+.2f} .. {m[k][1]:+.2f} |" for k in ("f1_diff_90", "lrap_diff_90") if ci)
        bands += f" {m['lrap_90'][0]:.2f} .. {m['lrap_90'][1]:.2f} |" if ci else ""
        print(f"| {name} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['lrap']:.2f} |{bands}")
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.scores:
        np.savez(args.scores, clips=np.array(names), classes=np.array(classes), truth=y, audio=a, video=v,
                 **{f"system_{k}": x for k, x in per_rule.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
