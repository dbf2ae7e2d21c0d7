#!/usr/bin/env python
"""Benchmark rows for ``avtag tag``: each figure beside FFmpeg's decode of the same media, from the same run.

* ``startup``: ``avtag --help`` in a new process, beside ``python -c pass``;
* ``warm clip``: :meth:`Tagger.tag_file` on one 10 s clip (22olCB3wQaA.mp4) in a process that
  has tagged before (median), beside ``ffmpeg -threads 1 -i CLIP -f null -`` (every sample and
  frame decoded, one thread: the floor the issue's targets use);
* ``cold clip``: ``avtag tag CLIP`` in a new process (avtag cache warm): start-up = cold - warm;
* ``batch``: one warm tagger over every clip in ../shared/clips (both branches), beside FFmpeg's
  full decode of the same files (one thread, and FFmpeg's default threading for reference); again
  with one busy-loop process beside both (a loaded machine; the new tagger's load is included);
* ``long audio``: a 20-minute FLAC made of the real recordings in ../shared/sounds, tagged with
  ``--segments`` in a new process: real-time factor and peak memory;
* peak RSS of the batch and long-file processes: the largest process (``wait4``) and the sum over the
  process tree (main process + decode workers), each command started from a small launcher process;
* ``first run``: ``avtag tag`` with an empty cache, which exports the model to ONNX once.

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


#: Runs the measured command from a small process, because on Linux a process's peak RSS counts the
#: memory of the process it was forked from (kept across exec): forked from this one (torch, a tagger:
#: ~1 GB) the command would be charged this process's memory. It prints wall seconds, the largest
#: process's peak RSS (kB, wait4) and exit status, and the peak of the RSS summed over the command's
#: process tree (main process + decode workers; /proc sampled every 50 ms, only for the memory rows:
#: sampling costs CPU).
LAUNCHER = """
import os, subprocess, sys, time

def tree_rss_kb(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total

t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
peak_tree, sample = 0, os.environ.get("BENCH_SAMPLE_RSS") == "1"
while proc.poll() is None:
    if sample:
        peak_tree = max(peak_tree, tree_rss_kb(proc.pid))
    time.sleep(0.01 if not sample else 0.05)
seconds = time.perf_counter() - t0
import resource  # poll() reaped the child: its rusage is in RUSAGE_CHILDREN
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.returncode, peak_tree)
"""


def run_process(args: list[str], sample_rss: bool = False) -> tuple[float, float, int, float]:
    """Wall seconds, peak RSS of the largest process (MB), exit status, and (``sample_rss``) the peak RSS
    summed over the process tree (MB) of one new process."""
    env = {**os.environ, "BENCH_SAMPLE_RSS": "1" if sample_rss else "0"}
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *args], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024, int(out[2]), int(out[3]) / 1024


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
    cold_s = statistics.median(c[0] for c in cold)
    out.append({"section": "latency", "what": "cold avtag tag, same clip (new process)", "unit": "s",
                "avtag": round(cold_s, 2), "peer": "warm + 1.5 s", "peer_value": round(warm_s + 1.5, 2),
                "ratio": round(cold_s / (warm_s + 1.5), 2), "target": "start-up (cold - warm) <= 1.5 s",
                "startup_s": round(cold_s - warm_s, 2), "engine": tagger.engine.name})
    with tempfile.TemporaryDirectory() as tmp:  # an empty cache: the first run ever exports the model
        env = {**os.environ, "AVTAG_CACHE": tmp}
        t0 = time.perf_counter()
        subprocess.run([*avtag_cmd, "tag", str(CLIP)], env=env, check=True, capture_output=True)
        first_s = time.perf_counter() - t0
    out.append({"section": "latency", "what": "first avtag tag ever (empty cache: exports to ONNX)", "unit": "s",
                "avtag": round(first_s, 2), "peer": "cold avtag tag", "peer_value": round(cold_s, 2),
                "ratio": round(first_s / cold_s, 2)})

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
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a loaded machine: one core kept busy
    try:
        t0 = time.perf_counter()
        with Tagger.from_pretrained("default") as loaded:
            list(loaded.tag_files(clips))
        loaded_s = time.perf_counter() - t0
        ff_loaded = ffmpeg_decode(clips)
    finally:
        hog.kill()
    out.append({"section": "throughput", "what": "batch tag, same clips, one busy process beside", "unit": "s",
                "avtag": round(loaded_s, 2), "peer": "ffmpeg full decode (1 thread), same load",
                "peer_value": round(ff_loaded, 2), "ratio": round(loaded_s / ff_loaded, 2), "target": "<= 1.5x"})
    _, rss_batch, _, tree_batch = run_process([*avtag_cmd, "tag", *map(str, clips), "--format", "json"], True)
    out.append({"section": "memory", "what": f"peak RSS, avtag tag of {len(clips)} clips (new process)",
                "unit": "MB", "avtag": round(rss_batch), "peer": "summed over the process tree (decode workers)",
                "peer_value": round(tree_batch), "target": "<= 800 MB"})
    with tempfile.TemporaryDirectory() as tmp:
        flac = long_audio(Path(tmp))
        command = [*avtag_cmd, "tag", str(flac), "--segments", "--format", "json"]
        t, _, code, _ = run_process(command)
        _, rss, _, tree = run_process(command, True)
        ff = ffmpeg_decode([flac])
    out.append({"section": "throughput", "what": "20-min FLAC, tag --segments (new process)", "unit": "x real time",
                "avtag": round(1200 / t, 1), "peer": "ffmpeg full decode", "peer_value": round(1200 / ff, 1),
                "target": ">= 300x", "seconds": round(t, 2), "exit": code})
    out.append({"section": "memory", "what": "peak RSS, 20-min FLAC with --segments", "unit": "MB",
                "avtag": round(rss), "peer": "summed over the process tree (decode workers)",
                "peer_value": round(tree), "target": "<= 800 MB"})
    return out


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(REPO))
    for row in rows():
        print(json.dumps(row))
