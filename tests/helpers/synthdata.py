"""A small DCASE 2017 Task 4 style dataset, generated at test time.

Each class present gets its own learnable sound (a harmonic tone with a class
frequency and modulation, or band-limited noise), placed at random onsets over a
quiet noise background. The metadata is written in the official layout
(``training_set.csv``, ``testing_set.csv``, ``groundtruth_release/...``, the
17-class list) and the media as ``Y<ytid>_<start>_<end>.wav`` (or ``.mp4``), so
every avtag command reads it exactly as it reads the real release.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from avtag.labels import DCASE2017

from .mediagen import write_media, write_wav

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLASSES = ("Car", "Train horn", "Screaming", "Bicycle")
AUDIOSET_IDS = {
    "Train horn": "/m/0284vy3", "Air horn, truck horn": "/m/05x_td", "Car alarm": "/m/02mfyn",
    "Reversing beeps": "/m/02rhddq", "Bicycle": "/m/0199g", "Skateboard": "/m/06_fw",
    "Ambulance (siren)": "/m/012n7d", "Fire engine, fire truck (siren)": "/m/012ndj",
    "Civil defense siren": "/m/0dgbq", "Police car (siren)": "/m/04qvtq", "Screaming": "/m/03qc9zr",
    "Car": "/m/0k4j", "Car passing by": "/t/dd00134", "Bus": "/m/01bjv", "Truck": "/m/07r04",
    "Motorcycle": "/m/04_sv", "Train": "/m/07jdr",
}


@dataclass
class SynthDataset:
    """Where the generated dataset lives and what it contains."""

    root: Path
    metadata_dir: Path
    media_dirs: dict[str, Path]
    clips: dict[str, list[dict]] = field(default_factory=dict)  # split -> [{name, labels, events, path}]

    def config(self, tmp: Path, **overrides) -> Path:
        """Write a config that includes ``configs/dcase2017.yaml`` and points at this data.

        ``overrides`` are merged as nested dicts (e.g. ``training={"max_epochs": 2}``).
        """
        cfg = {
            "include": [str(REPO / "configs" / "dcase2017.yaml")],
            "data": {
                "metadata_dir": str(self.metadata_dir),
                "media_dirs": {k: str(v) for k, v in self.media_dirs.items()},
                "validation_fraction": 0.25,
            },
            "cache": {"dir": str(tmp / "cache"), "workers": 0, "video": False},
            "output_dir": str(tmp / "runs"),
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                cfg.setdefault(key, {}).update(value)
            else:
                cfg[key] = value
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path


def class_sound(label: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A class-specific sound ``(samples,)``: deterministic timbre per class, random phase."""
    k = DCASE2017.index(label)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    if k % 2 == 0:  # harmonic tone, class-specific pitch and tremolo rate
        f0 = 180.0 * 1.35 ** (k % 9)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.28)) / h for h in (1, 2, 3))
        x = x * (0.6 + 0.4 * np.sin(2 * np.pi * (2 + k % 5) * t))
    else:  # band-limited noise, class-specific band
        lo = 300.0 + 550.0 * (k % 11)
        spec = np.fft.rfft(rng.standard_normal(t.size))
        freqs = np.fft.rfftfreq(t.size, 1 / sample_rate)
        spec[(freqs < lo) | (freqs > lo * 1.6)] = 0
        x = np.fft.irfft(spec, t.size)
    x = x / (np.abs(x).max() + 1e-9)
    ramp = min(len(x) // 10, int(0.02 * sample_rate))
    if ramp:
        env = np.ones_like(x)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        x = x * env
    return x.astype(np.float32)


def _ytid(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(rng.choice(list(alphabet), 11))


def make_clip(labels, seconds: float, sample_rate: int, rng: np.random.Generator):
    """Mix a background and one event per label; returns ``(waveform, events)``."""
    x = 0.01 * rng.standard_normal(int(seconds * sample_rate)).astype(np.float32)
    events = []
    for label in labels:
        dur = float(rng.uniform(1.5, min(4.0, seconds * 0.6)))
        onset = float(rng.uniform(0, seconds - dur))
        s = class_sound(label, dur, sample_rate, rng) * float(rng.uniform(0.25, 0.45))
        a = int(onset * sample_rate)
        x[a : a + len(s)] += s
        events.append((label, round(onset, 3), round(onset + dur, 3)))
    return np.clip(x, -1, 1), events


def make_dcase_dataset(
    root: str | Path,
    n_train: int = 40,
    n_test: int = 12,
    n_eval: int = 0,
    classes=DEFAULT_CLASSES,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    seed: int = 0,
    video_every: int = 0,
    max_labels: int = 2,
) -> SynthDataset:
    """Generate clips and official-layout metadata under ``root``.

    Args:
        n_train, n_test, n_eval: clips per split (train holds the validation hold-out).
        classes: which of the 17 DCASE 2017 classes appear.
        video_every: every k-th clip is written as an mp4 with a video stream (0: all wav).
        max_labels: at most this many classes per clip (at least one).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    meta = root / "metadata"
    gt = meta / "groundtruth_release"
    gt.mkdir(parents=True, exist_ok=True)
    media_dirs = {s: root / "audio" / s for s in ("train", "test", "eval")}
    for d in media_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    src = REPO.parent / "shared" / "dcase2017" / "sound_event_list_17_classes.txt"
    lines = ["Class_ID\tConfidenceofAnnotation(by Google)\tClass_Label"]
    lines += [f"{AUDIOSET_IDS[c]}\t8\t{c}" for c in DCASE2017.names]
    (meta / "sound_event_list_17_classes.txt").write_text(src.read_text() if src.is_file() else "\n".join(lines) + "\n")
    ds = SynthDataset(root, meta, media_dirs)
    counter = 0
    for split, n in (("train", n_train), ("test", n_test), ("eval", n_eval)):
        rows = []
        for _ in range(n):
            k = int(rng.integers(1, max_labels + 1))
            labels = [str(c) for c in rng.choice(list(classes), size=min(k, len(classes)), replace=False)]
            labels = [c for c in DCASE2017.names if c in labels]  # official order
            start = float(rng.integers(0, 30)) * 10
            name = f"{_ytid(rng)}_{start:.3f}_{start + seconds:.3f}"
            wav, events = make_clip(labels, seconds, sample_rate, rng)
            counter += 1
            if video_every and counter % video_every == 0:
                path = write_media(media_dirs[split] / f"Y{name}.mp4", seconds=seconds, audio=wav,
                                   sample_rate=sample_rate, fps=5, size=(96, 64))
            else:
                path = write_wav(media_dirs[split] / f"Y{name}.wav", wav, sample_rate)
            rows.append({"name": name, "labels": labels, "events": events, "path": path, "start": start})
        ds.clips[split] = rows
    _write_metadata(ds, seconds)
    return ds


def _write_metadata(ds: SynthDataset, seconds: float) -> None:
    meta, gt = ds.metadata_dir, ds.metadata_dir / "groundtruth_release"

    def csv_line(r):
        ytid = r["name"].rsplit("_", 2)[0]
        start, end = r["name"].rsplit("_", 2)[1:]
        labels = ",".join(r["labels"])
        ids = ",".join(AUDIOSET_IDS[c] for c in r["labels"])
        q = (lambda s: f'"{s}"' if "," in s else s)
        return f"{ytid},{start},{end},{q(labels)},{q(ids)}\n"

    for split, fname in (("train", "training_set.csv"), ("test", "testing_set.csv")):
        (meta / fname).write_text("".join(csv_line(r) for r in ds.clips.get(split, [])))
    for split, tag in (("train", "training"), ("test", "testing"), ("eval", "evaluation")):
        weak, strong = [], []
        for r in ds.clips.get(split, []):
            start, end = r["name"].rsplit("_", 2)[1:]
            for label in r["labels"]:
                weak.append(f"{r['name']}.wav\t{start}\t{end}\t{label}\n")
            for label, on, off in r["events"]:
                strong.append(f"{r['name']}.wav\t{on}\t{off}\t{label}\n")
        (gt / f"groundtruth_weak_label_{tag}_set.csv").write_text("".join(weak))
        if split != "train":
            (gt / f"groundtruth_strong_label_{tag}_set.csv").write_text("".join(strong))
