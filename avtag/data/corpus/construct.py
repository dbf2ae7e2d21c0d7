"""Constructed crowd sounds: applause layered from real single claps, babble from many real speakers.

The registries hold almost no applause and no crowd babble, but plenty of
single hand claps and hours of speech, so both are built from real recordings
(the procedure SOURCES.md proposes) and marked ``constructed`` in the manifest,
with the ids of every component recording:

* **Applause** ("Applause"): per clap source group (one kit, one library),
  clips of ``U(5, 10)`` s with ``U{8..60}`` clappers. Each clapper claps at
  ``U(3, 6)`` Hz with 15 % timing jitter, from ``U(0, 0.6)`` s until up to
  1.5 s before the end, with one clap sample of the group played at a speed of
  ``U(0.85, 1.2)`` (hand size) and a gain of ``U(-15, 0)`` dB (distance), each
  clap varied by +-2 dB. The sum goes through a room reverb.
* **Babble** ("Hubbub, speech noise, speech babble"): speaker groups are
  sorted by a seeded hash and cut into pools of 6 speakers; every clip of a pool
  has all 6 talking at once for 10 s (utterances of each speaker chained with
  ``U(0.1, 0.6)`` s pauses from a start ``U(-2, 1)`` s, one gain ``U(-10, 0)``
  dB per speaker), then a room reverb. A pool's clips share one source group and
  list the pool's speaker groups in ``component_groups``, so the soundscape split
  keeps those speakers on the same side as the babble made from them.
* **Reverb**: an exponentially decaying Gaussian noise tail with RT60
  ``U(0.3, 1.2)`` s (60 dB decay), mixed at a wet/dry ratio of ``U(0.2, 0.5)``.
  Clips are levelled to -20 dBFS RMS (peaks limited to 0.99).

Every clip is seeded by ``(seed, kind, group, index)``, so a resumed build
makes the same files.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from avtag import __version__
from avtag.data.corpus.convert import SAMPLE_RATE, audio_hash, pcm16, write_flac
from avtag.data.corpus.degrade import apply_room, room_response
from avtag.data.corpus.licences import TRAINING_KINDS

APPLAUSE_PER_GROUP = 8
BABBLE_POOLS, BABBLE_POOL_SIZE, BABBLE_PER_POOL = 12, 6, 5
PACKAGE = "avtag-constructed"


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.sha1("|".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _load(root, record) -> np.ndarray:
    import soundfile as sf

    x, _ = sf.read(root / record["file"], dtype="float32")
    return x


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (linear interpolation; pitch and tempo together)."""
    n = max(2, int(len(x) / factor))
    return np.interp(np.arange(n) * factor, np.arange(len(x)), x).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` through a synthetic room (decaying noise tail, see module docstring); same length."""
    rt60 = rng.uniform(0.3, 1.2)
    ir = room_response(rt60, SAMPLE_RATE, rng)
    return apply_room(x.astype(np.float32), ir, rng.uniform(0.2, 0.5))


def _level(x: np.ndarray, dbfs: float = -20.0) -> np.ndarray:
    x = x * (10 ** (dbfs / 20) / (np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12))
    peak = float(np.max(np.abs(x)))
    return (x * (0.99 / peak) if peak > 0.99 else x).astype(np.float32)


def applause(claps: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Applause layered from ``claps`` (single clap recordings at 16 kHz; see module docstring)."""
    dur = rng.uniform(5.0, 10.0)
    out = np.zeros(int(dur * SAMPLE_RATE) + SAMPLE_RATE, dtype=np.float32)
    for _ in range(int(rng.integers(8, 61))):
        clap = _speed(claps[int(rng.integers(len(claps)))], rng.uniform(0.85, 1.2)) * 10 ** (rng.uniform(-15, 0) / 20)
        period = 1.0 / rng.uniform(3.0, 6.0)
        t, stop = rng.uniform(0.0, 0.6), dur - rng.uniform(0.0, 1.5)
        while t < stop:
            a = int(t * SAMPLE_RATE)
            piece = clap[: len(out) - a] * 10 ** (rng.uniform(-2, 2) / 20)
            out[a : a + len(piece)] += piece
            t += period * rng.uniform(0.85, 1.15)
    return _level(reverb(out[: int(dur * SAMPLE_RATE)], rng))


def babble(speakers: list[list[np.ndarray]], rng: np.random.Generator, dur: float = 10.0) -> np.ndarray:
    """All ``speakers`` (lists of utterances, 16 kHz) talking at once for ``dur`` s, in a room."""
    n = int(dur * SAMPLE_RATE)
    out = np.zeros(n, dtype=np.float32)
    for utterances in speakers:
        gain = 10 ** (rng.uniform(-10, 0) / 20)
        t = rng.uniform(-2.0, 1.0)
        order = rng.permutation(len(utterances))
        k = 0
        while t < dur:
            u = utterances[order[k % len(order)]]
            u = u / (np.sqrt(np.mean(u.astype(np.float64) ** 2)) + 1e-12) * 0.05 * gain
            a = int(t * SAMPLE_RATE)
            lo, hi = max(0, a), min(n, a + len(u))
            if hi > lo:
                out[lo:hi] += u[lo - a : hi - a]
            t += len(u) / SAMPLE_RATE + rng.uniform(0.1, 0.6)
            k += 1
    return _level(reverb(out, rng))


def _licence(components: list[dict]) -> tuple[str, str]:
    kinds = [c["licence_kind"] for c in components]
    kind = max(kinds, key=lambda k: TRAINING_KINDS.index(k) if k in TRAINING_KINDS else len(TRAINING_KINDS))
    return "; ".join(sorted({c["licence"] for c in components})), kind


def _record(root, ledger, table, kind: str, label: str, group: str, index: int, audio: np.ndarray,
            components: list[dict], how: str) -> None:
    path = f"constructed/{kind}/{group}/{index}"
    x16 = pcm16(audio)
    key = audio_hash(x16)[:16]
    rel = f"audio/{PACKAGE}/{key}.flac"
    write_flac(root / rel, x16)
    text, lic_kind = _licence(components)
    ledger.keep({
        "id": key, "file": rel, "package": PACKAGE, "registry": "constructed", "version": __version__, "path": path,
        "classes": [label], "labels": list(table.expand([label])), "group": f"constructed:{kind}:{group}",
        "licence": text, "licence_source": "components", "licence_kind": lic_kind,
        "share_alike": lic_kind == "share-alike", "training": lic_kind in TRAINING_KINDS, "background": False,
        "constructed": True, "construction": how, "components": sorted({c["id"] for c in components}),
        "component_groups": sorted({c["group"] for c in components}), "duration_s": round(len(x16) / SAMPLE_RATE, 3),
        "rms_dbfs": round(float(20 * np.log10(np.sqrt(np.mean((x16 / 32768.0) ** 2)) + 1e-12)), 2),
        "peak_dbfs": round(float(20 * np.log10(np.max(np.abs(x16)) / 32768.0 + 1e-12)), 2),
        "source_rate": SAMPLE_RATE, "channels": 1, "codec": "constructed", "rule": None,
    })


def construct_all(root, table, ledger, seed: int = 0, progress: bool = False, log=print) -> int:
    """Add the constructed applause and babble clips to the corpus in ``root``; returns how many were made.

    Uses the kept, training-licensed records: "Clapping" ones for applause,
    "Speech" ones (speaker groups with >= 10 files and >= 20 s) for babble.
    """
    from avtag.progress import track

    base = [r for r in ledger.records if not r["constructed"] and r["training"]]
    claps: dict[str, list[dict]] = defaultdict(list)
    speech: dict[str, list[dict]] = defaultdict(list)
    for r in base:
        if "Clapping" in r["classes"]:
            claps[r["group"]].append(r)
        if "Speech" in r["classes"]:
            speech[r["group"]].append(r)
    jobs = []
    for g in sorted(claps):
        jobs += [("applause", g, i) for i in range(APPLAUSE_PER_GROUP)]
    for rs in (*claps.values(), *speech.values()):  # independent of the order the build kept the files in
        rs.sort(key=lambda r: (r["package"], r["path"]))
    usable = [g for g, rs in speech.items() if len(rs) >= 10 and sum(r["duration_s"] for r in rs) >= 20]
    usable.sort(key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    pools = [usable[i : i + BABBLE_POOL_SIZE] for i in range(0, len(usable), BABBLE_POOL_SIZE)]
    pools = [p for p in pools if len(p) == BABBLE_POOL_SIZE][:BABBLE_POOLS]
    for k in range(len(pools)):
        jobs += [("babble", f"pool{k:02d}", i) for i in range(BABBLE_PER_POOL)]
    before = ledger.new_kept
    for kind, group, i in track(jobs, total=len(jobs), description="constructed", unit="clips", enabled=progress):
        if (PACKAGE, f"constructed/{kind}/{group.replace(':', '_')}/{i}") in ledger.seen:
            continue  # made by an earlier (killed) run
        rng = _rng(seed, kind, group, str(i))
        if kind == "applause":
            members = claps[group]
            audio = applause([_load(root, r) for r in members], rng)
            how = f"applause layered from {len(members)} real clap recording(s) of {group}"
            _record(root, ledger, table, kind, "Applause", group.replace(":", "_"), i, audio, members, how)
        else:
            pool = pools[int(group[4:])]
            picked = []
            speakers = []
            for g in pool:
                chosen = [speech[g][j] for j in rng.choice(len(speech[g]), size=min(12, len(speech[g])), replace=False)]
                picked += chosen
                speakers.append([_load(root, r) for r in chosen])
            audio = babble(speakers, rng)
            how = f"babble: {len(pool)} speakers talking at once ({', '.join(pool)})"
            _record(root, ledger, table, kind, "Hubbub, speech noise, speech babble", group, i, audio, picked, how)
    made = ledger.new_kept - before
    log(f"constructed: {made} new clip(s) ({len(claps)} clap groups, {len(pools)} babble pools)")
    return made
