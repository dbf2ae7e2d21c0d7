#!/usr/bin/env python
"""Benchmark rows for ``avtag tag``: each figure beside FFmpeg's decode of the same media, from the same run.

* ``startup``: ``avtag --help`` in a new process, beside ``python -c pass``;
* ``warm clip``: :meth:`Tagger.tag_file` on one 10 s clip (22olCB3wQaA.mp4) in a process that
  has tagged before (median), beside ``ffmpeg -threads 1 -i CLIP -f null -`` (every sample and
  frame decoded, one thread: the floor the issue's targets use);
* ``cold clip``: ``avtag tag CLIP`` in a new process (avtag cache warm): start-up = cold - warm;
* ``batch``: one warm tagger over every clip in ../shared/clips (both branches), beside FFmpeg's
  full decode of the same files (one thread, and FFmpeg's default threading for reference);
* ``long audio``: a 20-minute FLAC made of the real recordings in ../shared/sounds, tagged with
  ``--segments`` in a new process: real-time factor and peak memory;
* peak RSS of the batch process (``wait4`` rusage of a new ``avtag tag`` process).

:func:`rows` returns the rows for ``scripts/bench.py``.
"""
from __future__ import annotations

import os
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


def run_process(args: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit status of one new process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def ffmpeg_decode(files: list[Path], threads: int | None = 1) -> float:
    """Seconds for FFmpeg to decode every audio sample and video frame of ``files``."""
    t0 = time.perf_counter()
    for f in files:
        cmd = ["ffmpeg", "-v", "quiet", *(["-threads", str(threads)] if threads else []), "-i", str(f), "-f", "null",
               "-"]
        subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def long_audio(folder: Path, minutes: float = 20.0) -> Path:
    """A mono 16 kHz FLAC of ``minutes`` made by concatenating the real recordings of ../shared/sounds."""
    import numpy as np
    import soundfile as sf

    from avtag.io import load_clip

    parts, total = [], 0
    sounds = sorted(p for p in (SHARED / "sounds").iterdir() if p.suffix in (".wav", ".ogg"))
    while total < minutes * 60 * 16000:
        for p in sounds:
            wave = load_clip(p, sample_rate=16000, video=False).waveform
            parts.append(wave)
            total += len(wave)
    path = folder / "long.flac"
    sf.write(path, np.concatenate(parts)[: int(minutes * 60 * 16000)], 16000)
    return path


def rows(runs: int = 3) -> list[dict]:
    if not CLIP.is_file() or not shutil.which("ffmpeg"):
        return [{"section": "tag", "what": "skipped", "note": f"needs {CLIP} (../shared) and ffmpeg"}]
    from avtag.inference.tagger import Tagger
    from avtag.io import probe

    out = []
    avtag_cmd = [sys.executable, "-m", "avtag"]
    help_s = statistics.median(run_process([*avtag_cmd, "--help"])[0] for _ in range(5))
    python_s = statistics.median(run_process([sys.executable, "-c", "pass"])[0] for _ in range(5))
    out.append({"section": "start-up", "what": "avtag --help", "unit": "s", "avtag": round(help_s, 2),
                "peer": "python -c pass", "peer_value": round(python_s, 2), "target": "< 0.5 s"})

    tagger = Tagger.from_pretrained("default")
    tagger.tag_file(CLIP)  # load everything, start the decode workers
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        tagger.tag_file(CLIP)
        warm.append(time.perf_counter() - t0)
    warm_s = statistics.median(warm)
    ff_clip = min(ffmpeg_decode([CLIP]) for _ in range(runs))
    out.append({"section": "latency", "what": f"warm Tagger.tag_file, {probe(CLIP).duration:.0f} s clip", "unit": "s",
                "avtag": round(warm_s, 2), "peer": "ffmpeg full decode (1 thread)", "peer_value": round(ff_clip, 2),
                "ratio": round(warm_s / ff_clip, 2), "target": "<= 1.2x"})
    cold = [run_process([*avtag_cmd, "tag", str(CLIP), "--format", "json"]) for _ in range(runs)]
    cold_s = statistics.median(t for t, _, _ in cold)
    out.append({"section": "latency", "what": "cold avtag tag, same clip (new process)", "unit": "s",
                "avtag": round(cold_s, 2), "peer": "warm + 1.5 s", "peer_value": round(warm_s + 1.5, 2),
                "ratio": round(cold_s / (warm_s + 1.5), 2), "target": "start-up (cold - warm) <= 1.5 s",
                "startup_s": round(cold_s - warm_s, 2)})

    clips = sorted(p for p in (SHARED / "clips").iterdir() if p.suffix in (".mp4", ".webm"))
    media_s = sum(probe(p).duration for p in clips)
    t0 = time.perf_counter()
    failed = sum(not r.ok for r in tagger.tag_files(clips))
    batch_s = time.perf_counter() - t0
    tagger.close()
    ff_one, ff_default = ffmpeg_decode(clips), ffmpeg_decode(clips, threads=None)
    out.append({"section": "throughput", "what": f"batch tag, {len(clips)} clips ({media_s:.0f} s), both branches",
                "unit": "s", "avtag": round(batch_s, 2), "peer": "ffmpeg full decode (1 thread)",
                "peer_value": round(ff_one, 2), "ratio": round(batch_s / ff_one, 2), "target": "<= 1.0x",
                "failed": failed, "media_s_per_s": round(media_s / batch_s, 1),
                "ffmpeg_default_threads_s": round(ff_default, 2)})
    _, rss_batch, _ = run_process([*avtag_cmd, "tag", *map(str, clips), "--format", "json"])
    out.append({"section": "memory", "what": f"peak RSS, avtag tag of {len(clips)} clips (new process)",
                "unit": "MB", "avtag": round(rss_batch), "target": "<= 800 MB"})
    with tempfile.TemporaryDirectory() as tmp:
        flac = long_audio(Path(tmp))
        t, rss, code = run_process([*avtag_cmd, "tag", str(flac), "--segments", "--format", "json"])
        ff = ffmpeg_decode([flac])
    out.append({"section": "throughput", "what": "20-min FLAC, tag --segments (new process)", "unit": "x real time",
                "avtag": round(1200 / t, 1), "peer": "ffmpeg full decode", "peer_value": round(1200 / ff, 1),
                "target": ">= 300x", "seconds": round(t, 2), "exit": code})
    out.append({"section": "memory", "what": "peak RSS, 20-min FLAC with --segments", "unit": "MB",
                "avtag": round(rss), "target": "<= 800 MB"})
    return out


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(REPO))
    for row in rows():
        print(json.dumps(row))
