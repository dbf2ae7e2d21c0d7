#!/usr/bin/env python
"""Scale rehearsal: the whole training path at N clips, timed and measured, for docs/scaling.md.

For each N (default 2,000 and 5,000 clips of 10 s, DCASE 2017 Task 4 layout, generated here with the
test suite's class-specific sounds, tests/helpers/synthdata.py: nothing is read from ../shared):

1. generate   the media (16-bit WAV) and the official metadata files
2. prepare    ``avtag prepare --format shards``: decode in isolated workers into the per-clip cache,
              then pack it into litdata shards (phases timed apart from avtag's own report)
3. train      one epoch, ``trainer.devices=2 trainer.strategy=ddp`` on CPU (gloo), streaming the shards,
              with the validation pass at its end (the evaluation: micro-F1 and mAP of the held-out 10 %)

Each phase runs as a subprocess whose process tree is sampled every 0.5 s from /proc: wall time, CPU
time of the tree (user + system, summed over its processes: on a shared machine this is the figure that
does not depend on what else runs), peak resident memory of the whole tree (RSS summed: pages shared
between processes counted once per process, an upper bound) and of its largest process. Disk is
measured per folder afterwards. Results go to ``<work>/rehearsal.json`` (one entry per N and phase)
and a Markdown table on stdout. A phase whose output is already there is not run again (a killed
rehearsal resumes); ``--fresh`` starts over.

    nice -n 15 .venv/bin/python scripts/scale_rehearsal.py --clips 2000 5000 --work /tmp/avtag-rehearsal
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def tree_usage(root_pid: int, cpu_seen: dict[int, float]) -> tuple[int, int]:
    """``(sum, max)`` of the resident bytes of ``root_pid`` and all its descendants (from /proc); their CPU
    seconds so far (user + system) are recorded in ``cpu_seen`` by pid."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
    total, largest, todo = 0, 0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            cpu_seen[pid] = max(cpu_seen.get(pid, 0.0), cpu[pid])
        total += rss.get(pid, 0)
        largest = max(largest, rss.get(pid, 0))
        todo.extend(children.get(pid, []))
    return total, largest


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (output to ``log``); return wall and CPU seconds, peak tree / process RSS, load average."""
    peak = {"tree": 0, "process": 0}
    cpu_seen: dict[int, float] = {}
    load_before = os.getloadavg()[0]
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                total, largest = tree_usage(proc.pid, cpu_seen)
                peak["tree"], peak["process"] = max(peak["tree"], total), max(peak["process"], largest)
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    if code != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"scale_rehearsal: {' '.join(cmd[:4])} ... failed (exit {code}); end of {log}:\n{tail}")
    return {"seconds": round(seconds, 1), "cpu_seconds": round(sum(cpu_seen.values()), 1),
            "peak_rss_tree_mb": round(peak["tree"] / 2**20), "peak_rss_process_mb": round(peak["process"] / 2**20),
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def du(path: Path) -> int:
    """Bytes of the files under ``path``."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


GENERATE = """
import sys
sys.path.insert(0, {tests!r})
from helpers.synthdata import make_dcase_dataset
from avtag.labels import DCASE2017
make_dcase_dataset({root!r}, n_train={n}, n_test=0, classes=DCASE2017.names, seconds=10.0, seed={seed}, max_labels=3)
"""


def rehearse(n: int, work: Path, devices: int, batch: int) -> dict:
    """All phases for ``n`` clips under ``work/n<N>``; returns the measurements."""
    base = work / f"n{n}"
    base.mkdir(parents=True, exist_ok=True)
    data, cache, run_dir = base / "data", base / "cache", base / "run"
    state_path = base / "phases.json"
    phases = json.loads(state_path.read_text()) if state_path.is_file() else {}

    def phase(name: str, cmd: list[str], env: dict | None = None) -> None:
        if name in phases:
            print(f"N={n}: {name} already done ({phases[name]['seconds']} s)", flush=True)
            return
        print(f"N={n}: {name} ...", flush=True)
        phases[name] = run_measured(cmd, base / f"{name}.log", env)
        state_path.write_text(json.dumps(phases, indent=1))
        print(f"N={n}: {name} {phases[name]}", flush=True)

    py = sys.executable
    phase("generate", [py, "-c", GENERATE.format(tests=str(REPO / "tests"), root=str(data), n=n, seed=n)])
    config = base / "config.yaml"
    config.write_text(json.dumps({
        "include": [str(REPO / "configs" / "dcase2017.yaml")],
        "data": {"metadata_dir": str(data / "metadata"), "media_dirs": {"train": str(data / "audio" / "train")},
                 "validation_fraction": 0.1},
        "cache": {"dir": str(cache), "workers": 2, "video": False, "format": "shards", "shard_size": "64MB"},
        "training": {"max_epochs": 1, "batch_size": batch, "workers": 1, "sampler": "shuffle"},
        "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto"},
        "output_dir": str(run_dir),
    }))  # JSON is YAML
    avtag = [py, "-m", "avtag"]
    # the per-clip cache (decode + log-mel), then the packing, measured apart
    phase("prepare_clips", [*avtag, "prepare", str(config), "--splits", "train,validation", "--format", "clips",
                            "--no-progress"])
    phase("pack_shards", [*avtag, "prepare", str(config), "--splits", "train,validation", "--format", "shards",
                          "--no-progress"])
    if "train_epoch" not in phases:
        shutil.rmtree(run_dir, ignore_errors=True)  # a killed epoch starts over
    phase("train_epoch", [*avtag, "train", str(config), "--no-progress"], env={"OMP_NUM_THREADS": "1"})
    summary_path = base / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    log = (base / "train_epoch.log").read_text()
    f1 = next((line.split("micro-F1")[-1].strip() for line in log.splitlines() if line.startswith("done:")), "")
    train_clips = sum(1 for _ in (cache / "train" / "manifest.jsonl").open())
    val_clips = sum(1 for _ in (cache / "validation" / "manifest.jsonl").open())
    index = json.loads((cache / "shards" / "train" / "index.json").read_text())
    disk = {"media": du(data / "audio"), "clip_cache": du(cache / "train") + du(cache / "validation"),
            "shards": du(cache / "shards"), "run": du(run_dir)}
    summary = {"clips": n, "train_clips": train_clips, "validation_clips": val_clips, "phases": phases,
               "disk_mb": {k: round(v / 2**20) for k, v in disk.items()}, "train_shards": len(index["chunks"]),
               "validation_micro_f1": f1, "devices": devices, "batch_size": batch, "cpus": os.cpu_count(),
               "load_average_after": os.getloadavg()}
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def table(results: list[dict]) -> str:
    """Markdown: per phase, time / peak memory at each N, and time and disk per 1,000 clips."""
    lines = ["| N clips | phase | wall s | wall s per 1,000 clips | CPU s per 1,000 clips | peak RSS, tree (MB) | "
             "largest process (MB) | load avg (start, end) |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for name, p in r["phases"].items():
            k = 1000 / r["clips"]
            lines.append(f"| {r['clips']:,} | {name} | {p['seconds']:.0f} | {p['seconds'] * k:.1f} | "
                         f"{p.get('cpu_seconds', 0) * k:.1f} | {p['peak_rss_tree_mb']:,} | "
                         f"{p['peak_rss_process_mb']:,} | {p.get('load_average', '')} |")
    lines += ["", "| N clips | media MB | per-clip cache MB | shards MB (train shards) | MB per 1,000 clips "
              "(media / cache / shards) | validation micro-F1 |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        d, k = r["disk_mb"], 1000 / r["clips"]
        lines.append(f"| {r['clips']:,} | {d['media']:,} | {d['clip_cache']:,} | {d['shards']:,} "
                     f"({r['train_shards']}) | {d['media'] * k:.0f} / {d['clip_cache'] * k:.0f} / "
                     f"{d['shards'] * k:.0f} | {r['validation_micro_f1']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[2000, 5000], help="dataset sizes N")
    parser.add_argument("--work", type=Path, default=Path("/tmp/avtag-rehearsal"), help="working folder")
    parser.add_argument("--devices", type=int, default=2, help="training processes (DDP on CPU)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per batch per process")
    parser.add_argument("--fresh", action="store_true", help="delete earlier results of these N first")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and caches")
    args = parser.parse_args()
    results = []
    for n in args.clips:
        if args.fresh:
            shutil.rmtree(args.work / f"n{n}", ignore_errors=True)
        results.append(rehearse(n, args.work, args.devices, args.batch_size))
        (args.work / "rehearsal.json").write_text(json.dumps(results, indent=1))
        if not args.keep:
            for folder in ("data", "cache"):
                shutil.rmtree(args.work / f"n{n}" / folder, ignore_errors=True)
    print(table(results))
    print(f"\nfull results: {args.work / 'rehearsal.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
