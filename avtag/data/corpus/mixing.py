"""Soundscapes from the corpus (``avtag soundscapes OUT --corpus DIR``), in the DCASE 2017 layout.

The mixing step of :mod:`avtag.data.soundscapes` (events, SNRs, speeds, exact
onsets) with four additions for training data from the registry corpus:

* **Vocabulary v2** (:func:`avtag.data.corpus.vocabulary.choose_vocabulary`):
  classes with >= ``min_groups`` distinct source groups in the corpus plus
  ``../shared/sounds``; rarer classes grouped under their parent.
* **Split by source group, three ways**: train / validation / test get disjoint
  joined source groups (a speaker, recording or kit never straddles them;
  constructed babble joins the speakers it was made from). Classes are served
  rarest first: each gets ``max(1, round(f * n))`` of its ``n`` groups in test
  and in validation. Validation clips are written with the training clips (the
  layout has no validation list) under names that
  :func:`avtag.data.dcase2017.in_validation` puts in the validation split for
  the ``validation_fraction`` and ``split_seed`` of the training config (0.1 and
  0 by default), and training clips under names it keeps out of it.
* **Per-class cap**: within each split, at most ``max_minutes`` of source audio
  per most-specific class (recordings drawn round-robin over source groups, so
  the cap keeps the diversity and drops the bulk), so 14 h of speech weigh as
  much as 3 minutes of doors.
* **Class draw**: uniform over the classes by default (the packaged default
  model's recipe). Since 15 of the 61 classes are animals (every subclass draw is
  also an Animal event), that puts an animal in half the clips and speech in 8 %.
  ``class_draw="branch"`` (:func:`class_weights`) gives each top-level branch of
  the vocabulary (Animal, Music, Vehicle, Human voice, Door, ...) the square root
  of its class count, shared equally by its classes, and Speech ``CLASS_BOOST``
  (4) times more (with Music the most frequent sound of web video: each labels
  about half of AudioSet's 2 M segments, Gemmeke et al. 2017): Animal 36 %,
  Music 31 %, Speech 21 % of training clips.
* **Shortcut guards and real beds**: every event, whatever its class, is
  low-passed at ``U(3, 8)`` kHz with probability ``lowpass_probability`` and put
  through a lossy codec (MP3 24/32/48 kbit/s or mu-law) with probability
  ``codec_probability``; with probability ``bed_probability`` a real ambience of
  the split (rain, wind, traffic, crowd, birds: rule-table ``background``) is
  looped under the whole clip ``U(10, 25)`` dB over the noise floor and labelled
  0-10 s; otherwise the coloured-noise floor alone, as before. With probability
  ``reverb_probability`` (0 by default) an event (bed included) is put in a
  synthetic room first (RT60 ``U(0.3, 1.2)`` s, wet ``U(0.2, 0.5)``:
  :func:`avtag.data.corpus.degrade.reverb`), as the constructed babble and
  applause are, so that reverb alone does not say "babble".
* **Speech turns** (``speech_turns``, off by default): Speech recordings are
  mixed as turns of one speaker talking on (:mod:`avtag.data.corpus.turns`), so
  that continuous talk alone does not say "babble" either.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from avtag.data.corpus.turns import make_turns, write_turns
from avtag.data.corpus.vocabulary import CorpusItem, VocabularyV2, choose_vocabulary, read_corpus, sounds_items
from avtag.data.mixdown import render
from avtag.data.soundscape_files import MixingLog
from avtag.data.soundscapes import (
    PlacedEvent,
    Soundscape,
    SoundscapeConfig,
    SoundscapeError,
    SoundscapeSet,
    draw_degradation,
    sample_soundscape,
    write_metadata,
)

SPLITS = ("train", "validation", "test")
CORPUS_DEFAULTS = dict(lowpass_probability=0.5, codec_probability=0.3, bed_probability=0.5, test_fraction=0.2,
                       min_recordings=6)
CLASS_BOOST = {"Speech": 4.0}
CLASS_DRAWS = ("uniform", "branch")


def class_weights(classes: tuple[str, ...], ancestors, boost: dict[str, float] | None = None) -> dict[str, float]:
    """``{class: weight}`` of the per-event class draw (see module docstring).

    Args:
        ancestors: ``class -> its AudioSet ancestors``, nearest first (:meth:`RuleTable.ancestors`); a class's
            branch is its farthest ancestor among ``classes`` (itself when it has none).
        boost: extra factor per class (default :data:`CLASS_BOOST`).
    """
    boost = CLASS_BOOST if boost is None else boost
    inside = set(classes)
    branch = {c: ([a for a in ancestors(c) if a in inside] or [c])[-1] for c in classes}
    size = Counter(branch.values())
    return {c: boost.get(c, 1.0) / float(np.sqrt(size[branch[c]])) for c in classes}


def split_groups(vocab: VocabularyV2, validation_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """``{item id: "train" | "validation" | "test"}`` with whole joined groups on one side (see module docstring).

    Raises:
        SoundscapeError: a class left without a group on one of the sides.
    """
    rng = np.random.default_rng([seed, 11])
    by_class: dict[str, set[str]] = {c: set() for c in vocab.classes}
    for i, labels in vocab.labels.items():
        for c in labels:
            by_class[c].add(vocab.groups[i])
    side: dict[str, str] = {}
    for c in sorted(by_class, key=lambda c: (len(by_class[c]), c)):
        groups = sorted(by_class[c])
        for name, frac in (("test", test_fraction), ("validation", validation_fraction)):
            want = max(1, int(round(frac * len(groups))))
            have = sum(side.get(g) == name for g in groups)
            for j in rng.permutation(len(groups)):  # the groups themselves as keys, whatever their type
                if have >= want:
                    break
                if groups[j] not in side:
                    side[groups[j]], have = name, have + 1
        for g in groups:
            side.setdefault(g, "train")
    rest = sorted(set(vocab.groups.values()) - set(side))
    for j in rng.permutation(len(rest)):
        u = rng.random()
        side[rest[j]] = "test" if u < test_fraction else "train"
        if test_fraction <= u < test_fraction + validation_fraction:
            side[rest[j]] = "validation"
    for c, groups in by_class.items():
        missing = [s for s in SPLITS if s not in {side[g] for g in groups}]
        if missing:
            raise SoundscapeError(f"class {c!r} has {len(groups)} source group(s): none left for "
                                  f"{', '.join(missing)}; raise --min-recordings")
    return {i: side[g] for i, g in vocab.groups.items()}


def cap_minutes(items: list[CorpusItem], vocab: VocabularyV2, side: dict[str, str], max_minutes: float,
                seed: int) -> set[str]:
    """Ids to use: per split and most specific vocabulary class (or distractor), at most ``max_minutes``
    of audio, drawn round-robin over source groups in a seeded order."""
    rng = np.random.default_rng([seed, 13])
    buckets: dict[tuple[str, str], dict[str, list[CorpusItem]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        labels = vocab.labels[it.id]
        leaf = labels[-1] if labels else "(distractor)"
        buckets[(side[it.id], leaf)][vocab.groups[it.id]].append(it)
    chosen: set[str] = set()
    for key in sorted(buckets):
        queues = [[v[j] for j in rng.permutation(len(v))] for _, v in sorted(buckets[key].items())]
        queues = [queues[j] for j in rng.permutation(len(queues))]
        total = 0.0
        while total < max_minutes * 60 and any(queues):
            for q in queues:
                if q and total < max_minutes * 60:
                    it = q.pop()
                    chosen.add(it.id)
                    total += it.duration_s
    return chosen


def load_items(items: list[CorpusItem], sample_rate: int) -> dict[str, np.ndarray]:
    """Decode each item to mono float32 at ``sample_rate`` (corpus FLAC is 16 kHz; others via PyAV).

    A multi-channel FLAC (a corpus not built by ``avtag corpus build``) is mixed down to mono.

    Raises:
        SoundscapeError / DecodeError: a file that cannot be decoded (named by its path), or one without audio.
    """
    import soundfile as sf

    from avtag.data.corpus.convert import SAMPLE_RATE, decode, trim_silence  # DecodeError names the path

    out = {}
    for it in items:
        try:
            if it.path.suffix == ".flac":
                x, sr = sf.read(it.path, dtype="float32", always_2d=True)
                x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
            else:
                x, sr = trim_silence(decode(it.path, str(it.path)).audio), SAMPLE_RATE
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise SoundscapeError(f"{it.path}: cannot decode as audio ({_reason(exc)})") from None
        if sr != sample_rate:
            import torch
            import torchaudio

            x = torchaudio.functional.resample(torch.from_numpy(x), sr, sample_rate).numpy()
        if not len(x) or not np.any(x):
            raise SoundscapeError(f"{it.path}: no audio to mix")
        out[it.id] = x.astype(np.float32)
    return out


def _reason(exc: Exception) -> str:
    """The reason of a decoding error, without the file name libsndfile puts in front."""
    text = str(getattr(exc, "error_string", "") or exc)
    return text.rstrip(".")


def _names(prefix: str, n: int, want_validation: bool | None, fraction: float, seed: int, duration: float) -> list[str]:
    from avtag.data.dcase2017 import in_validation

    names, j = [], 0
    while len(names) < n:
        name = f"ss{prefix}{j:07d}_0.000_{duration:.3f}"
        if want_validation is None or in_validation(name, fraction, seed) == want_validation:
            names.append(name)
        j += 1
    return names


def generate_corpus_soundscapes(out_dir: str | Path, corpus_dir: str | Path, sounds_dir: str | Path | None = None,
                                n_train: int = 6000, n_validation: int = 600, n_test: int = 1200, seed: int = 0,
                                config: SoundscapeConfig | None = None, max_minutes: float = 30.0,
                                validation_fraction: float = 0.1, split_seed: int = 0, allow_restricted: bool = False,
                                progress: bool = False, class_draw: str = "uniform",
                                speech_turns: bool = False) -> SoundscapeSet:
    """Mix train / validation / test soundscapes from a built corpus (see module docstring).

    Args:
        out_dir: empty folder for ``metadata/`` and ``audio/{train,test}``.
        corpus_dir: a folder built by ``avtag corpus build``.
        sounds_dir: ``../shared/sounds`` (or None) to add its recordings.
        config: mixing distributions (default: :data:`CORPUS_DEFAULTS` over :class:`SoundscapeConfig`).
        max_minutes: cap of source audio per class and split.
        validation_fraction, split_seed: the training config's ``data.validation_fraction`` and ``data.seed``.
        allow_restricted: also use freeware/non-commercial/unknown-licence recordings (research only).
        class_draw: ``"uniform"`` (every class alike, as the packaged default model was trained) or ``"branch"``
            (:func:`class_weights`).
        speech_turns: mix Speech as turns of one speaker talking on (:mod:`avtag.data.corpus.turns`), not as
            single utterances; the turns are listed in ``turns.jsonl``.

    Raises:
        CorpusError / SoundscapeError: no corpus, a class that cannot be split, a non-empty ``out_dir``.
    """
    from avtag.data.corpus.rules import load_rules

    cfg = config or replace(SoundscapeConfig(), **CORPUS_DEFAULTS)
    out = Path(out_dir).expanduser()
    if (out / "metadata" / "training_set.csv").exists():
        raise SoundscapeError(f"{out}: already holds soundscapes; choose an empty folder")
    if min(n_train, n_validation, n_test) < 1:
        raise SoundscapeError("need at least one training, validation and test soundscape")
    if class_draw not in CLASS_DRAWS:
        raise SoundscapeError(f"class draw {class_draw!r}: expected one of {', '.join(CLASS_DRAWS)}")
    table = load_rules()
    items = read_corpus(corpus_dir, allow_restricted)
    if sounds_dir is not None:
        items += sounds_items(sounds_dir, table, allow_restricted)
    vocab = choose_vocabulary(items, table, cfg.min_recordings)
    side = split_groups(vocab, validation_fraction, cfg.test_fraction, seed)
    used = cap_minutes(items, vocab, side, max_minutes, seed)
    items = [it for it in items if it.id in used]
    sources = load_items(items, cfg.sample_rate)
    counts = {"train": n_train, "validation": n_validation, "test": n_test}
    weights = class_weights(vocab.classes, table.ancestors) if class_draw == "branch" else None
    labels, mixed_items, turns = vocab.labels, items, []
    if speech_turns:
        labels, side = dict(vocab.labels), dict(side)
        mixed_items, turns = make_turns(items, labels, side, sources, cfg.sample_rate, seed)
    rows = mix_splits(out, mixed_items, labels, vocab.classes, side, sources, counts, cfg, seed, validation_fraction,
                      split_seed, progress=progress, weights=weights)
    if speech_turns:
        write_turns(out, turns)
    media = {"train": out / "audio" / "train", "test": out / "audio" / "test"}
    summary = _write_records(out, items, vocab, side, rows, cfg, seed, max_minutes, validation_fraction, split_seed,
                             weights, len(turns))
    return SoundscapeSet(out, out / "metadata", media, vocab.classes, {s: len(r) for s, r in rows.items()},
                         summary["clips_per_class"], summary["recordings_per_class"], {})


def mix_splits(out: Path, items: list[CorpusItem], labels: dict[str, tuple[str, ...]], classes: tuple[str, ...],
               side: dict[str, str], sources: dict[str, np.ndarray], counts: dict[str, int], cfg: SoundscapeConfig,
               seed: int, validation_fraction: float, split_seed: int, beds: dict[str, list[str]] | None = None,
               constructed: frozenset[str] = frozenset(), progress: bool = False,
               weights: dict[str, float] | None = None) -> dict[str, list[Soundscape]]:
    """Mix ``counts[split]`` clips per split into ``out/audio/{train,test}`` and write the metadata and recipes.

    Args:
        labels: ``{item id: output labels}`` (empty: a distractor); ``classes``: the output classes in order.
        side: ``{item id: split}``; ``sources``: decoded audio of every item.
        beds: ``{split: bed item ids}`` (an id may repeat to weigh it); default: the split's background items.
        constructed: ids of constructed items; their events are marked ``constructed`` in the recipe.
        weights: ``{class: weight}`` of the per-event class draw (default: uniform).

    Returns:
        ``{split: [Soundscape]}`` in the order written.
    """
    import soundfile as sf

    from avtag.progress import track

    media = {"train": out / "audio" / "train", "test": out / "audio" / "test"}
    rows: dict[str, list[Soundscape]] = {}
    log = MixingLog(out, [asdict(cfg), seed, counts, validation_fraction, split_seed, weights, sorted(constructed),
                          beds, [(it.id, side[it.id], labels[it.id], it.background) for it in items]])
    plan = (("train", "tr", False), ("validation", "va", True), ("test", "te", None))
    for k, (split, prefix, want_val) in enumerate(plan):
        n = counts[split]
        folder = media["test" if split == "test" else "train"]
        folder.mkdir(parents=True, exist_ok=True)
        ids = sorted(it.id for it in items if side[it.id] == split)
        pools = {c: [i for i in ids if c in labels[i]] for c in classes}
        pools = {c: p for c, p in pools.items() if p}
        distractors = [i for i in ids if not labels[i]]
        split_beds = [it.id for it in items if side[it.id] == split and it.background] if beds is None else beds[split]
        rng = np.random.default_rng([seed, 100 + k])
        rows[split], state = log.written(split)
        if state is not None:
            rng.bit_generator.state = state
        names = _names(prefix, n, want_val, validation_fraction, split_seed, cfg.duration)[len(rows[split]):]
        for name in track(names, total=n, description=f"soundscapes {split}", unit="clips", enabled=progress,
                          done=len(rows[split])):
            scape = sample_soundscape(rng, name, split, pools, distractors, sources, labels, cfg, weights)
            if split_beds and rng.random() < cfg.bed_probability:
                f = split_beds[int(rng.integers(len(split_beds)))]
                start = round(float(rng.uniform(0, len(sources[f]) / cfg.sample_rate)), 3)
                level = float(rng.uniform(*cfg.bed_db_over_noise))
                bed = PlacedEvent(f, labels[f], 0.0, cfg.duration, start, level, bed=True)
                draw_degradation(rng, bed, cfg)
                scape.events.insert(0, bed)
            for e in scape.events:
                e.constructed = e.file in constructed
            mix, _, _ = render(scape, sources, cfg, rng)
            sf.write(folder / f"Y{name}.wav", mix, cfg.sample_rate, subtype="PCM_16")
            rows[split].append(scape)
            log.append(split, scape, rng.bit_generator.state)
    write_metadata(out / "metadata", {"train": rows["train"] + rows["validation"], "test": rows["test"]}, classes)
    with open(out / "soundscapes.jsonl", "w") as f:
        for split in SPLITS:
            for scape in rows[split]:
                f.write(json.dumps(asdict(scape)) + "\n")
    log.finish()
    return rows


def _write_records(out: Path, items, vocab: VocabularyV2, side, rows, cfg, seed, max_minutes, vfrac, vseed,
                   weights: dict[str, float] | None = None, turns: int = 0) -> dict:
    """recordings.csv (every used recording, its labels, group, split, licence), ATTRIBUTION.md, summary.json."""
    with open(out / "recordings.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "source", "labels", "source_group", "split", "licence_kind", "licence", "constructed"])
        for it in items:
            w.writerow([it.id, it.source, ";".join(vocab.labels[it.id]) or "(distractor)", vocab.groups[it.id],
                        side[it.id], it.licence_kind, it.licence, int(it.constructed)])
    kinds = Counter(it.licence_kind for it in items)
    by_source: dict[str, set[str]] = defaultdict(set)
    for it in items:
        by_source[it.source.split(":")[0]].add(it.licence)
    share_alike = kinds.get("share-alike", 0) > 0
    (out / "ATTRIBUTION.md").write_text(
        "# Recordings mixed into these soundscapes\n\n"
        + f"Licence kinds (recordings): {', '.join(f'{k} {v}' for k, v in kinds.most_common())}.\n"
        + ("Share-alike recordings are included: a model trained on these soundscapes should be released under a "
           "share-alike licence compatible with CC BY-SA 3.0 / GPL.\n" if share_alike else "")
        + "\nPer-file sources and licences: recordings.csv.\n\n"
        + "\n".join(f"- {src}: {'; '.join(sorted(lic))}" for src, lic in sorted(by_source.items())) + "\n")
    clips = {s: Counter(lab for sc in rows[s] for lab in sc.labels) for s in SPLITS}
    recs = {s: Counter(lab for it in items if side[it.id] == s for lab in vocab.labels[it.id]) for s in SPLITS}
    groups = {s: {c: len({vocab.groups[it.id] for it in items if side[it.id] == s and c in vocab.labels[it.id]})
                  for c in vocab.classes} for s in SPLITS}
    minutes = {c: round(sum(it.duration_s for it in items if c in vocab.labels[it.id]) / 60, 1) for c in vocab.classes}
    summary = {
        "seed": seed, "config": asdict(cfg), "max_minutes_per_class": max_minutes, "validation_fraction": vfrac,
        "split_seed": vseed, "class_weights": {c: round(w, 4) for c, w in (weights or {}).items()} or "uniform",
        "speech_turns": turns, "classes": list(vocab.classes), "clips": {s: len(r) for s, r in rows.items()},
        "clips_per_class": {s: {c: clips[s].get(c, 0) for c in vocab.classes} for s in SPLITS},
        "recordings_per_class": {s: {c: recs[s].get(c, 0) for c in vocab.classes} for s in SPLITS},
        "source_groups_per_class": groups, "source_minutes_per_class": minutes, "folded_classes": vocab.folded,
        "licence_kinds": dict(kinds), "share_alike": share_alike,
        "constructed_recordings": sum(it.constructed for it in items),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary

