#!/usr/bin/env python
"""Does mixed precision keep the default tagger's outputs? Measured on the real clips of ../shared/clips.

For every clip the plain PyTorch tagger (no folded batch norms) runs once in float32 and once per
reduced precision under ``torch.autocast`` (float16, bfloat16; the log-mel front end and the BCE stay
float32 by design). Reported per precision and branch: the largest absolute change of any clip-wise
probability over all clips and classes, how many clips move by more than the tolerance (1e-3, the
bound issue 12 sets for mixed precision), and whether the top-3 tags change. On CUDA it also times
the video network, the expensive branch, on 64 frames in each precision (frames/s, ratio to float32).

The result decides ``avtag tag``'s precision: mixed precision is used only where every clip stays
within the tolerance (on CPU, autocast float16 moves scores by up to 5e-3 on 11 of 13 clips and bfloat16 by up to 9e-2,
so inference stays float32). Prints a markdown table and a JSON line.

Usage: ``.venv/bin/python scripts/precision.py [--device cpu|cuda] [--tolerance 1e-3] [--json FILE]``
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from real_clips import CLIPS  # noqa: E402 - the real clips and their hand-label table: one place (scripts/)

BRANCHES = ("audio_clipwise", "video_clipwise", "clipwise")


def autocast(device, dtype):
    """``torch.autocast`` on ``device`` in ``dtype``; no cast (float32) when ``dtype`` is None."""
    import contextlib

    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def run(model, clip, device, dtype=None):
    """The tagger's clip-wise outputs ``{branch: (classes,)}`` for one decoded clip, under autocast ``dtype``."""
    import torch

    wave = torch.from_numpy(np.asarray(clip.waveform, np.float32))[None].to(device)
    frames = torch.as_tensor(np.asarray(clip.frames))[None].to(device) if len(clip.frames) else None
    with torch.inference_mode(), autocast(device, dtype):
        out = model(waveform=wave, frames=frames)
    return {b: None if getattr(out, b) is None else np.nan_to_num(getattr(out, b)[0].float().cpu().numpy())
            for b in BRANCHES}


def video_speed(model, device, dtype=None, n: int = 64, repeats: int = 5) -> float:
    """Frames per second of the frame network on ``n`` 224 x 224 images (best of ``repeats``)."""
    import torch

    images = torch.randn(n, 3, 224, 224, device=device)
    best = float("inf")
    with torch.inference_mode(), autocast(device, dtype):
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.video(images)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> int:
    import torch

    import avtag
    from avtag.inference.tagger import Tagger
    from avtag.io.media import MediaError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    if not (CLIPS / "clips.csv").is_file():
        print(f"precision.py: {CLIPS / 'clips.csv'} is absent (the real clips: ../shared/clips)", file=sys.stderr)
        return 2
    tagger = Tagger.from_pretrained("default", device=args.device, fast=False)
    model, device = tagger.model, tagger.device
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    files = [CLIPS / row["filename"] for row in csv.DictReader(open(CLIPS / "clips.csv"))]
    decoded = 0
    worst = {(p, b): 0.0 for p in dtypes for b in BRANCHES}
    moved = {(p, b): 0 for p in dtypes for b in BRANCHES}
    top_changed = {p: 0 for p in dtypes}
    for path in files:
        try:
            clip = avtag.load_clip(path, sample_rate=tagger.engine.sample_rate)
        except MediaError as exc:
            print(f"precision.py: {path.name}: skipped ({exc})", file=sys.stderr)
            continue
        decoded += 1
        ref = run(model, clip, device)
        for name, dtype in dtypes.items():
            out = run(model, clip, device, dtype)
            for b in BRANCHES:
                if ref[b] is None:
                    continue
                d = float(np.abs(ref[b] - out[b]).max())
                worst[name, b] = max(worst[name, b], d)
                moved[name, b] += d > args.tolerance
            top_changed[name] += list(np.argsort(-ref["clipwise"])[:3]) != list(np.argsort(-out["clipwise"])[:3])
    base = video_speed(model, device) if device.type == "cuda" else None  # float32 frames/s, measured once
    rows = []
    for name in dtypes:
        row = {"precision": name, "clips": decoded, "top3_changed": top_changed[name]}
        for b in BRANCHES:
            row[f"{b}_max_abs_change"] = round(worst[name, b], 5)
            row[f"{b}_clips_over_tolerance"] = moved[name, b]
        row["within_tolerance"] = all(worst[name, b] <= args.tolerance for b in BRANCHES)
        if base is not None:
            row["video_frames_per_s"] = round(video_speed(model, device, dtypes[name]), 1)
            row["video_frames_per_s_float32"] = round(base, 1)
            row["video_speedup"] = round(row["video_frames_per_s"] / base, 2)
        rows.append(row)
    print(f"device {device}, {decoded} clips, tolerance {args.tolerance:g} on clip-wise probabilities\n")
    print("| precision | audio max change (clips over) | video max change (clips over) | fused max change "
          "(clips over) | top-3 changed | within tolerance |")
    print("|---|--:|--:|--:|--:|---|")
    for r in rows:
        cells = [f"{r[f'{b}_max_abs_change']:.4f} ({r[f'{b}_clips_over_tolerance']})" for b in BRANCHES]
        ok = "yes" if r["within_tolerance"] else "no"
        print(f"| {r['precision']} | {' | '.join(cells)} | {r['top3_changed']} | {ok} |")
    text = json.dumps({"device": str(device), "tolerance": args.tolerance, "rows": rows})
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
