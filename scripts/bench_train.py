#!/usr/bin/env python
"""Benchmark of the audio branch: training and inference throughput, peak memory.

* training: clips/s of forward + backward + Adam step on random fixed-length clips
  (``data.clip_seconds`` at ``audio.sample_rate``), model in training mode
  (SpecAugment, dropout), mix-training blend included, the precision
  ``avtag train`` would use (float32 on CPU, bf16/16-mixed autocast on GPU);
* inference: seconds of audio tagged per second (eval mode, ``inference_mode``);
* peak memory: GPU ``max_memory_allocated``; on CPU the growth of the process's
  peak resident set size (``ru_maxrss``) over its size before the model was built.

Runs on the CPU and, when one is available, on the GPU. Usage::

    python scripts/bench_train.py [--config configs/dcase2017.yaml] [KEY=VALUE ...] [--json out.json]

:func:`run_benchmarks` returns the same numbers as a list of dicts (used by
``scripts/bench.py``).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avtag.config import get, load_config  # noqa: E402
from avtag.labels import get_vocabulary  # noqa: E402
from avtag.models.audio import build_audio_model  # noqa: E402
from avtag.training.mixing import mix_batch  # noqa: E402
from avtag.training.module import weak_label_bce  # noqa: E402


def _rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def bench_device(config: dict, device: str, batch_size: int, steps: int, warmup: int) -> dict:
    """Training and inference throughput of the configured audio model on ``device``."""
    dev = torch.device(device)
    torch.manual_seed(0)
    rss_before = _rss_mb()
    classes = len(get_vocabulary(get(config, "data.classes", "dcase2017")))
    model = build_audio_model(config, classes).to(dev)
    params = sum(p.numel() for p in model.parameters())
    sr = int(get(config, "audio.sample_rate", 16000))
    seconds = float(get(config, "data.clip_seconds", 10.0))
    samples = int(sr * seconds)
    wave = torch.randn(batch_size, samples, device=dev) * 0.1
    target = (torch.rand(batch_size, classes, device=dev) < 0.1).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    amp = _autocast_dtype(dev)
    mode = str(get(config, "training.mixing.mode", "none"))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def train_step():
        x, y = mix_batch(wave, target, mode) if mode != "none" else (wave, target)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = weak_label_bce(model(x).clipwise, y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    model.train()
    for _ in range(warmup):
        train_step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(dev)
    train_s = time.perf_counter() - t0
    train_peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else _peak_rss_mb() - rss_before

    model.eval()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        for _ in range(warmup):
            model(wave)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(wave)
        _sync(dev)
        infer_s = time.perf_counter() - t0
    infer_peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "model": str(get(config, "model.name", "crnn")),
        "conv": str(get(config, "model.conv", "plain")),
        "pooling": str(get(config, "model.pooling", "attention")),
        "parameters": params,
        "precision": {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(amp, "32-true"),
        "batch_size": batch_size,
        "clip_seconds": seconds,
        "train_clips_per_s": steps * batch_size / train_s,
        "train_peak_memory_mb": round(train_peak, 1),
        "train_memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS growth",
        "inference_audio_s_per_s": steps * batch_size * seconds / infer_s,
        "inference_peak_memory_mb": None if infer_peak is None else round(infer_peak, 1),
    }


def run_benchmarks(config: dict, devices: list[str] | None = None, batch_size: int = 16,
                   steps: int | None = None, warmup: int = 1) -> list[dict]:
    """Benchmark on each device (default: ``cpu`` plus ``cuda`` when available)."""
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = []
    for device in devices:
        n = steps if steps is not None else (3 if device == "cpu" else 20)
        results.append(bench_device(config, device, batch_size, n, warmup if device == "cpu" else max(warmup, 3)))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides KEY.PATH=VALUE (e.g. model.conv=glu)")
    p.add_argument("--config", default=str(REPO / "configs" / "dcase2017.yaml"))
    p.add_argument("--devices", default=None, help="comma-separated, e.g. cpu,cuda (default: all available)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    devices = args.devices.split(",") if args.devices else None
    results = run_benchmarks(config, devices, args.batch_size, args.steps, args.warmup)
    for r in results:
        print(f"{r['device']}: {r['model']} ({r['conv']} conv, {r['pooling']} pooling, {r['parameters']:,} params, "
              f"{r['precision']}), batch {r['batch_size']} x {r['clip_seconds']:g} s")
        print(f"  training  : {r['train_clips_per_s']:8.1f} clips/s (forward+backward+step), "
              f"peak memory {r['train_peak_memory_mb']:.0f} MiB ({r['train_memory_kind']})")
        mem = "" if r["inference_peak_memory_mb"] is None else f", peak memory {r['inference_peak_memory_mb']:.0f} MiB"
        print(f"  inference : {r['inference_audio_s_per_s']:8.1f} s of audio per s{mem}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
