#!/usr/bin/env python
"""Benchmark of ``avtag tag``: latency, throughput and peak memory, each next to
FFmpeg's decode time of the same media (the physical floor).

* ``first_run``: ``avtag tag CLIP`` in a new process with an empty avtag cache
  (MiniLM extracted, label map built) -- what a fresh install pays once;
* ``cold``: ``avtag tag CLIP`` in a new process, cache warm (median of runs);
* ``warm``: :meth:`Tagger.tag_file` on the same clip in a process that has
  already tagged once (median of runs);
* ``batch``: one warm :class:`Tagger` over every clip in ../shared/clips, in
  seconds of media per second;
* ``ffmpeg``: ``ffmpeg -i FILE -f null -`` (every audio sample and frame decoded)
  and the decode of what avtag needs (1 frame/s scaled + 16 kHz mono audio);
* peak memory: the resident-set peak of each new process (``wait4`` rusage) and
  of this process after the batch.

The clip is ``22olCB3wQaA.mp4`` (10 s, 480 px, H.264 + AAC). Load average is
printed too: timings on a shared machine vary with what else runs.

Usage: ``.venv/bin/python scripts/bench_tag.py [--runs 3] [--json]`` (with
``--json`` only the JSON line is printed; ``scripts/bench.py`` reads it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP = SHARED / "clips" / "22olCB3wQaA.mp4"


def run_process(args: list[str], env: dict) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit status of one new process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode


def ffmpeg_times(files: list[Path]) -> dict:
    """Seconds for FFmpeg to decode ``files`` fully, and to decode what avtag reads."""
    if not shutil.which("ffmpeg"):
        return {"ffmpeg": "not installed"}
    t0 = time.perf_counter()
    for f in files:
        subprocess.run(["ffmpeg", "-v", "quiet", "-threads", "1", "-i", str(f), "-f", "null", "-"], check=True)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in files:
        cmd = ["ffmpeg", "-v", "quiet", "-i", str(f), "-map", "0:v:0?", "-vf", "fps=1,scale=-2:256", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-y", os.devnull, "-map", "0:a:0?", "-ac", "1", "-ar", "16000", "-f", "f32le", "-y",
               os.devnull]  # fmt: skip
        subprocess.run(cmd, check=True)
    needed = time.perf_counter() - t0
    return {"ffmpeg_full_decode_s": round(full, 3), "ffmpeg_needed_decode_s": round(needed, 3)}


def bench(runs: int) -> dict:
    if not CLIP.is_file():
        return {"skipped": f"{CLIP} not found (the ../shared folder beside the repository)"}
    from avtag.io.media import probe

    def duration_of(path: Path) -> float:
        return probe(path).duration

    out: dict = {"clip": CLIP.name, "clip_seconds": round(duration_of(CLIP), 2), "cpu_count": os.cpu_count(),
                 "load_average_1min": round(os.getloadavg()[0], 2)}  # fmt: skip
    cmd = [sys.executable, "-m", "avtag", "tag", str(CLIP), "--format", "json", "--no-progress"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "AVTAG_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        first, first_mb, code = run_process(cmd, env)
        if code != 0:
            return {**out, "error": f"avtag tag exited with {code}"}
        cold = [run_process(cmd, env) for _ in range(runs)]
        os.environ["AVTAG_CACHE"] = cache
        from avtag.inference.tag import Tagger

        t0 = time.perf_counter()
        tagger = Tagger()
        tagger.tag_file(CLIP)
        load_and_first = time.perf_counter() - t0
        warm = []
        for _ in range(runs):
            t0 = time.perf_counter()
            tagger.tag_file(CLIP)
            warm.append(time.perf_counter() - t0)
        clips = sorted(p for p in (SHARED / "clips").iterdir() if p.suffix in (".mp4", ".webm"))
        media_s = sum(duration_of(p) for p in clips)
        t0 = time.perf_counter()
        failed = sum(1 for _, result, _ in tagger.tag_files(clips) if result is None)
        batch = time.perf_counter() - t0
    ff_clip, ff_batch = ffmpeg_times([CLIP]), ffmpeg_times(clips)
    out["first_run"] = {"seconds": round(first, 2), "peak_rss_mb": round(first_mb, 1),
                        "note": "new process, empty cache: MiniLM extraction + label-map build"}  # fmt: skip
    out["cold"] = {"median_s": round(statistics.median(t for t, _, _ in cold), 2),
                   "runs_s": [round(t, 2) for t, _, _ in cold], "peak_rss_mb": round(max(m for _, m, _ in cold), 1),
                   **ff_clip}  # fmt: skip
    out["warm"] = {"median_s": round(statistics.median(warm), 3), "runs_s": [round(t, 3) for t in warm],
                   "in_process_load_and_first_s": round(load_and_first, 2), **ff_clip}  # fmt: skip
    out["batch"] = {"files": len(clips), "failed": failed, "media_seconds": round(media_s, 1),
                    "seconds": round(batch, 2), "media_s_per_s": round(media_s / batch, 1), **ff_batch,
                    "peak_rss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if "ffmpeg_full_decode_s" in ff_batch:
        out["batch"]["ffmpeg_full_media_s_per_s"] = round(media_s / ff_batch["ffmpeg_full_decode_s"], 1)
        out["batch"]["avtag_over_ffmpeg_full_time"] = round(batch / ff_batch["ffmpeg_full_decode_s"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the cold and warm measurements")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    result = bench(args.runs)
    if not args.json:
        print(f"avtag tag on {result.get('clip')} ({result.get('clip_seconds')} s), load average "
              f"{result.get('load_average_1min')} on {result.get('cpu_count')} CPUs")  # fmt: skip
        for section in ("first_run", "cold", "warm", "batch"):
            for key, value in (result.get(section) or {}).items():
                print(f"  {section:10s} {key:32s} {value}")
    print(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
