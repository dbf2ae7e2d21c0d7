#!/usr/bin/env python
"""avtag benchmarks: prints one JSON object and a short table.

Sections (``--only`` picks some):

- ``decode``: avtag's loader (mono 16 kHz audio + 1 frame/s at 224 px) on the real
  clips in ../shared/clips against the ``ffmpeg`` command line decoding the same
  media to raw PCM and frames (the physical floor), as a ratio from the same run.
- ``prepare``: ``avtag prepare`` on a generated DCASE-layout set: clips/s and peak
  memory (RSS of the process tree).
- ``train`` / ``tag``: ``scripts/bench_train.py`` and ``scripts/bench_tag.py``, when present.

Usage: ``.venv/bin/python scripts/bench.py [--only decode,prepare] [--clips N]``
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests"))


def bench_decode(repeats: int = 2) -> dict:
    from avtag.io.media import load_clip

    clips = sorted(p for p in (SHARED / "clips").glob("*") if p.suffix in (".mp4", ".webm"))
    if not clips:
        return {"skipped": f"no clips in {SHARED / 'clips'}"}
    media_s = 0.0
    t_avtag = t_ffmpeg = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        media_s = sum(load_clip(p, fps=1.0, frame_short_side=224).duration for p in clips)
        t_avtag = min(t_avtag, time.perf_counter() - t0)
        if shutil.which("ffmpeg"):
            t0 = time.perf_counter()
            for p in clips:
                subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(p), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                               stdout=subprocess.DEVNULL, check=True)
                subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(p), "-vf", "fps=1,scale=-2:224", "-f", "rawvideo",
                                "-pix_fmt", "rgb24", "-"], stdout=subprocess.DEVNULL, check=True)
            t_ffmpeg = min(t_ffmpeg, time.perf_counter() - t0)
    out = {"files": len(clips), "media_seconds": round(media_s, 1), "avtag_s": round(t_avtag, 3),
           "avtag_media_s_per_s": round(media_s / t_avtag, 1)}
    if t_ffmpeg < float("inf"):
        out.update(ffmpeg_s=round(t_ffmpeg, 3), ffmpeg_media_s_per_s=round(media_s / t_ffmpeg, 1),
                   avtag_over_ffmpeg_time=round(t_avtag / t_ffmpeg, 2))
    else:
        out["ffmpeg"] = "not installed"
    return out


def bench_prepare(n_clips: int = 40, workers: int = 2) -> dict:
    from synthdata import make_dcase_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = make_dcase_dataset(tmp / "data", n_train=n_clips, n_test=0, seed=1)
        config = ds.config(tmp, cache={"workers": workers, "video": False}, data={"validation_fraction": 0.0})
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "avtag", "prepare", str(config), "--splits", "train",
                               "--no-progress"], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": proc.stderr.strip()[-300:]}
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"clips": n_clips, "workers": workers, "seconds": round(seconds, 2),
                "clips_per_s": round(n_clips / seconds, 1), "peak_rss_mb_largest_process": round(peak_kb / 1024, 1),
                "note": "includes interpreter and worker start-up"}


def run_script(name: str, json_to_file: bool = False) -> dict | list:
    """Run ``scripts/<name>`` and return its JSON (last stdout line, or the file given to ``--json``)."""
    path = REPO / "scripts" / name
    if not path.is_file():
        return {"skipped": f"{name} not present"}
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "result.json"
        args = ["--json", str(out_file)] if json_to_file else ["--json"]
        proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip()[-300:]}
        try:
            if json_to_file:
                return json.loads(out_file.read_text())
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError, FileNotFoundError):
            return {"error": "no JSON in output"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="decode,prepare,train,tag")
    parser.add_argument("--clips", type=int, default=40, help="clips for the prepare benchmark")
    args = parser.parse_args()
    wanted = args.only.split(",")
    results = {}
    if "decode" in wanted:
        results["decode"] = bench_decode()
    if "prepare" in wanted:
        results["prepare"] = bench_prepare(args.clips)
    if "train" in wanted:
        results["train"] = run_script("bench_train.py", json_to_file=True)
    if "tag" in wanted:
        results["tag"] = run_script("bench_tag.py")
    print(json.dumps(results))
    for section, values in results.items():
        print(f"\n[{section}]")
        for row in values if isinstance(values, list) else [values]:
            for key, value in row.items():
                print(f"  {key:32s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
