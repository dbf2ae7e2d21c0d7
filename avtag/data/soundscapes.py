"""Weakly and strongly labelled 10 s soundscapes from real recordings, in the DCASE 2017 layout.

A small mixing step in the spirit of Scaper (Salamon et al. 2017, "Scaper: A
library for soundscape synthesis and augmentation"; its last release, 1.6.5,
fails under NumPy 2 and needs libsox to build). Each soundscape is a background
plus foreground events drawn from the recordings of :mod:`avtag.data.recordings`;
every event's onset and offset are recorded exactly (to the sample, written in
milliseconds). The distributions, all uniform and all drawn from one seeded
NumPy generator (the same seed gives byte-identical files):

* **Background**: stationary coloured noise with a ``1/f^beta`` power spectrum,
  ``beta ~ U(0, 2)`` (white to brown noise), at ``U(-60, -40)`` dBFS RMS. The
  recordings are short foreground sounds, and every long one is labelled (music,
  speech), so none can serve as an unlabelled background bed; low-level noise
  gives each clip a noise floor without adding labels.
* **Events**: ``U{1..4}`` labelled events per clip. For each, a class is drawn
  uniformly from the vocabulary (rare classes as often as common ones, as
  Scaper's ``choose``), then a recording of that class uniformly from the split.
  A recording up to 10 s long is used whole (after trimming leading/trailing
  silence 50 dB below its peak); a longer one contributes an excerpt of
  ``U(2, 10)`` s at a uniform offset. Each event is played at a speed drawn from
  {0.9, 0.95, 1, 1.05, 1.1} (speed perturbation: pitch and tempo together, so
  two readers or pieces sound like more). Onset ``U(0, 10 - duration)`` s; events may
  overlap. Level: event SNR ``U(6, 30)`` dB over the background (RMS over the
  event's samples; the range of the DESED synthetic soundscapes, Turpault et al.
  2019). 10 ms fades at both ends.
* **Distractors**: with probability 0.3 one more event from an out-of-vocabulary
  recording (same duration/onset/SNR rules), not labelled, so the model also
  hears sounds it must not tag.
* The mixture is scaled down when its peak exceeds 0.9 (SNRs unchanged).

Train and test soundscapes come from disjoint source recordings
(:func:`split_recordings`): every class has at least one test recording.

Corpus mode (``avtag soundscapes OUT --corpus DIR``, :mod:`avtag.data.corpus.mixing`)
mixes the registry corpus instead, with real ambience beds (looped, labelled
events under the whole clip), random low-pass and codec degradation of every
class (``lowpass_probability``, ``codec_probability``; 0 here) and a
train/validation/test split by source group.

Output (every avtag command reads it as it reads the official release)::

    OUT/metadata/training_set.csv, testing_set.csv       ytid,start,end,"labels",  (MID column empty)
    OUT/metadata/groundtruth_release/groundtruth_{weak,strong}_label_{training,testing}_set.csv
    OUT/metadata/sound_event_list_17_classes.txt         the vocabulary (file name kept for the layout)
    OUT/audio/{train,test}/Y<ytid>_0.000_10.000.wav      16-bit PCM
    OUT/soundscapes.jsonl                                 the recipe of every clip (sources, offsets, SNR, gain)
    OUT/recordings.csv, ATTRIBUTION.md, summary.json      split, labels and credits of the recordings

A killed build resumes when run again with the same settings
(:class:`avtag.data.soundscape_files.MixingLog`, ``OUT/.mixing/`` until it is done): the files are those
of an uninterrupted build.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.data.mixdown import render
from avtag.data.recordings import (
    Recording,
    SoundVocabulary,
    build_vocabulary,
    read_recordings,
    redistributable,
)
from avtag.data.soundscape_files import MixingLog, write_metadata, write_summary


class SoundscapeError(AvtagError):
    """Bad soundscape settings, or recordings that cannot make a split."""


@dataclass(frozen=True)
class SoundscapeConfig:
    """The distributions of the mixing step (see module docstring); times in s, levels in dB."""

    duration: float = 10.0
    sample_rate: int = 16000
    events: tuple[int, int] = (1, 4)
    excerpt_s: tuple[float, float] = (2.0, 10.0)
    speeds: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)
    snr_db: tuple[float, float] = (6.0, 30.0)
    background_dbfs: tuple[float, float] = (-60.0, -40.0)
    background_beta: tuple[float, float] = (0.0, 2.0)
    distractor_probability: float = 0.3
    fade_s: float = 0.01
    trim_db: float = 50.0
    peak: float = 0.9
    test_fraction: float = 0.3
    min_recordings: int = 3
    # shortcut guards and real beds (corpus mode, avtag.data.corpus.mixing; 0 = off, the ../shared/sounds default)
    lowpass_probability: float = 0.0
    lowpass_hz: tuple[float, float] = (3000.0, 8000.0)
    codec_probability: float = 0.0
    codecs: tuple[str, ...] = ("mp3-24", "mp3-32", "mp3-48", "mulaw")
    bed_probability: float = 0.0
    bed_db_over_noise: tuple[float, float] = (10.0, 25.0)
    reverb_probability: float = 0.0
    rt60_s: tuple[float, float] = (0.3, 1.2)
    reverb_wet: tuple[float, float] = (0.2, 0.5)


@dataclass
class PlacedEvent:
    """One placed event; ``labels`` is empty for a distractor. Times in seconds.

    ``room`` / ``lowpass_hz`` / ``codec``: reverb and degradation of the event (:mod:`avtag.data.corpus.degrade`);
    ``bed``: a looped ambience under the whole clip, levelled ``snr_db`` over the noise floor;
    ``constructed``: the source was synthesised or layered, not recorded (e.g.
    :mod:`avtag.data.corpus.warning_signals`).
    """

    file: str
    labels: tuple[str, ...]
    onset: float
    offset: float
    source_offset: float
    snr_db: float
    gain: float = 1.0
    speed: float = 1.0
    lowpass_hz: float | None = None
    codec: str | None = None
    room: tuple[float, float, int] | None = None  # (RT60 s, wet fraction, impulse-response seed)
    bed: bool = False
    constructed: bool = False


@dataclass
class Soundscape:
    """The recipe of one clip."""

    name: str
    split: str
    background_beta: float
    background_dbfs: float
    events: list[PlacedEvent] = field(default_factory=list)
    scale: float = 1.0  # peak scaling applied to the whole mixture (background included)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lab for e in self.events for lab in e.labels))


def load_sources(recordings: list[Recording], sample_rate: int, top_db: float = 50.0) -> dict[str, np.ndarray]:
    """Decode every recording to mono float32 at ``sample_rate`` and trim its silent ends."""
    from avtag.data.corpus.convert import trim_silence
    from avtag.io.media import load_clip

    out = {}
    for r in recordings:
        clip = load_clip(r.path, sample_rate=sample_rate, video=False)
        if clip.waveform is None or not np.any(clip.waveform):
            raise SoundscapeError(f"{r.path}: no audio to mix")
        out[r.filename] = trim_silence(clip.waveform.astype(np.float32), top_db, frame=max(1, sample_rate // 100))
    return out


def split_recordings(sv: SoundVocabulary, test_fraction: float, seed: int) -> dict[str, str]:
    """``{filename: "train" | "test"}`` with whole source groups on one side.

    Classes are served rarest first: each gets ``max(1, round(test_fraction * n))``
    of its ``n`` groups in test, chosen at random; the rest go to train. Groups of
    out-of-vocabulary (distractor) recordings are split with the same fraction.

    Raises:
        SoundscapeError: a class left without a training or a test recording.
    """
    rng = np.random.default_rng([seed, 7])
    by_class: dict[str, list[str]] = {c: [] for c in sv.vocabulary.names}
    for f, labels in sv.labels.items():
        for c in labels:
            if sv.groups[f] not in by_class[c]:
                by_class[c].append(sv.groups[f])
    side: dict[str, str] = {}
    for c in sorted(by_class, key=lambda c: (len(by_class[c]), c)):
        groups = sorted(by_class[c])
        want = max(1, int(round(test_fraction * len(groups))))
        have = sum(side.get(g) == "test" for g in groups)
        for g in rng.permutation(groups):
            if have >= want:
                break
            if g not in side:
                side[str(g)], have = "test", have + 1
        for g in groups:
            side.setdefault(g, "train")
    rest = sorted({g for g in sv.groups.values() if g not in side})
    for g in rng.permutation(rest):
        side[str(g)] = "test" if rng.random() < test_fraction else "train"
    for c, groups in by_class.items():
        sides = {side[g] for g in groups}
        if sides != {"train", "test"}:
            raise SoundscapeError(f"class {c!r} has {len(groups)} source recording(s): cannot have both a training "
                                  "and a test recording; raise min_recordings")
    return {f: side[g] for f, g in sv.groups.items()}


def _place(rng, cfg: SoundscapeConfig, available: int) -> tuple[int, int, int]:
    """``(onset sample, length in samples, offset sample)`` on a 1 ms grid, for a (speed-changed)
    recording of ``available`` samples."""
    sr, ms = cfg.sample_rate, cfg.sample_rate / 1000.0
    length_s = available / sr
    dur = length_s if length_s <= cfg.excerpt_s[1] else rng.uniform(*cfg.excerpt_s)
    dur_ms = max(1, int(np.floor(min(dur, length_s, cfg.duration) * 1000)))
    n = min(available, int(round(dur_ms * ms)))
    off = int(rng.integers(0, available - n + 1))
    onset_ms = int(rng.integers(0, int(cfg.duration * 1000) - dur_ms + 1))
    return int(round(onset_ms * ms)), n, off


def sample_soundscape(rng, name: str, split: str, pools: dict[str, list[str]], distractors: list[str],
                      sources: dict[str, np.ndarray], labels: dict[str, tuple[str, ...]],
                      cfg: SoundscapeConfig, weights: dict[str, float] | None = None) -> Soundscape:
    """Draw one clip's recipe (background and events) from ``rng``.

    Args:
        pools: ``{class: filenames of this split carrying it}``.
        weights: ``{class: relative weight}`` of the per-event class draw (default: uniform).
        distractors: out-of-vocabulary filenames of this split.
        sources: decoded, trimmed recordings.
        labels: ``{filename: labels}``.
    """
    sr = cfg.sample_rate
    scape = Soundscape(name, split, float(rng.uniform(*cfg.background_beta)), float(rng.uniform(*cfg.background_dbfs)))
    classes = sorted(pools)
    n_events = int(rng.integers(cfg.events[0], cfg.events[1] + 1))
    if weights:
        p = np.array([weights.get(c, 1.0) for c in classes], dtype=float)
        picks = [(pools[classes[int(k)]], False) for k in rng.choice(len(classes), size=n_events, p=p / p.sum())]
    else:
        picks = [(pools[classes[int(rng.integers(len(classes)))]], False) for _ in range(n_events)]
    if distractors and rng.random() < cfg.distractor_probability:
        picks.append((distractors, True))
    for pool, is_distractor in picks:
        f = pool[int(rng.integers(len(pool)))]
        speed = float(cfg.speeds[int(rng.integers(len(cfg.speeds)))])
        a, n, off = _place(rng, cfg, int((len(sources[f]) - 1) / speed))
        snr = float(rng.uniform(*cfg.snr_db))
        scape.events.append(PlacedEvent(f, () if is_distractor else labels[f], round(a / sr, 3), round((a + n) / sr, 3),
                                  round(int(off * speed) / sr, 6), snr, speed=speed))
        draw_degradation(rng, scape.events[-1], cfg)
    return scape


def draw_degradation(rng, e: PlacedEvent, cfg: SoundscapeConfig) -> None:
    """Set ``e.lowpass_hz`` / ``e.codec`` / ``e.room`` at random (no draw at all when the probabilities are 0)."""
    if cfg.lowpass_probability > 0 and rng.random() < cfg.lowpass_probability:
        e.lowpass_hz = float(round(rng.uniform(*cfg.lowpass_hz)))
    if cfg.codec_probability > 0 and rng.random() < cfg.codec_probability:
        e.codec = str(cfg.codecs[int(rng.integers(len(cfg.codecs)))])
    if cfg.reverb_probability > 0 and rng.random() < cfg.reverb_probability:
        e.room = (round(float(rng.uniform(*cfg.rt60_s)), 3), round(float(rng.uniform(*cfg.reverb_wet)), 3),
                  int(rng.integers(2**31)))


@dataclass
class SoundscapeSet:
    """What :func:`generate_soundscapes` wrote."""

    root: Path
    metadata_dir: Path
    media_dirs: dict[str, Path]
    vocabulary: tuple[str, ...]
    clips: dict[str, int]
    clips_per_class: dict[str, dict[str, int]]
    recordings_per_class: dict[str, dict[str, int]]
    excluded: dict[str, str]


def generate_soundscapes(out_dir: str | Path, sounds_dir: str | Path, n_train: int = 1000, n_test: int = 300,
                         seed: int = 0, config: SoundscapeConfig | None = None, allow_noncommercial: bool = False,
                         progress: bool = False) -> SoundscapeSet:
    """Build the vocabulary, split the recordings and write both splits (see module docstring).

    Raises:
        RecordingsError / SoundscapeError: unusable recordings or settings, or an
            ``out_dir`` that already holds soundscapes.
    """
    from avtag.progress import track

    cfg = config or SoundscapeConfig()
    if n_train < 1 or n_test < 1:
        raise SoundscapeError("need at least one training and one test soundscape")
    out = Path(out_dir).expanduser()
    if (out / "metadata" / "training_set.csv").exists():
        raise SoundscapeError(f"{out}: already holds soundscapes; choose an empty folder")
    recordings, excluded = redistributable(read_recordings(sounds_dir), allow_noncommercial)
    sv = build_vocabulary(recordings, cfg.min_recordings)
    side = split_recordings(sv, cfg.test_fraction, seed)
    sources = load_sources(recordings, cfg.sample_rate, cfg.trim_db)
    import soundfile as sf

    media = {s: out / "audio" / s for s in ("train", "test")}
    rows: dict[str, list[Soundscape]] = {}
    log = MixingLog(out, [asdict(cfg), seed, n_train, n_test, sorted((f, side[f], sv.labels[f]) for f in sources)])
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        media[split].mkdir(parents=True, exist_ok=True)
        files = [f for f in sorted(sources) if side[f] == split]
        pools = {c: [f for f in files if c in sv.labels[f]] for c in sv.vocabulary.names}
        distractors = [f for f in files if not sv.labels[f]]
        rng = np.random.default_rng([seed, k])
        rows[split], state = log.written(split)
        if state is not None:
            rng.bit_generator.state = state
        for i in track(range(len(rows[split]), n), total=n, description=f"soundscapes {split}", unit="clips",
                       enabled=progress, done=len(rows[split])):
            name = f"ss{split[:2]}{i:07d}_0.000_{cfg.duration:.3f}"
            scape = sample_soundscape(rng, name, split, pools, distractors, sources, sv.labels, cfg)
            mix, _, _ = render(scape, sources, cfg, rng)
            sf.write(media[split] / f"Y{name}.wav", mix, cfg.sample_rate, subtype="PCM_16")
            rows[split].append(scape)
            log.append(split, scape, rng.bit_generator.state)
    write_metadata(out / "metadata", rows, sv.vocabulary.names)
    with open(out / "soundscapes.jsonl", "w") as f:
        for scape in rows["train"] + rows["test"]:
            f.write(json.dumps(asdict(scape)) + "\n")
    summary = write_summary(out, recordings, sv, side, rows, excluded, cfg, seed)
    log.finish()
    return SoundscapeSet(out, out / "metadata", media, sv.vocabulary.names, {s: len(r) for s, r in rows.items()},
                         summary["clips_per_class"], summary["recordings_per_class"], excluded)
