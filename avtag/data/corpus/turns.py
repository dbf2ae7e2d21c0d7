"""Speech turns: one speaker's utterances joined into long, continuous talk for the corpus soundscapes.

The corpus's speech is read prompts, one short utterance per file (a few
seconds), while the constructed babble is 10 s of uninterrupted talk. Placed as
they are, a speech event is a short burst and "talk that fills the clip" is only
ever babble, so a model learns continuity as a cue for babble and calls the
continuous speech of real video (a vlog, a commentary) "Hubbub, speech noise,
speech babble". With ``speech_turns`` the mixing step replaces every Speech
recording by **turns**: per split and source group (a speaker) with the same
labels, the group's utterances in a seeded order, chained with pauses of
``U(0.15, 0.8)`` s, cut into turns of at most ``MAX_TURN_S`` seconds. A speech
event is then an excerpt (2-10 s, as for any long recording) of one speaker
talking on. The pieces of every turn are written to ``turns.jsonl`` so that
each clip can still be rebuilt exactly from its recipe (:func:`join_turn`).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from avtag.data.corpus.vocabulary import CorpusItem

SPEECH = "Speech"
MAX_TURN_S = 30.0
PAUSE_S = (0.15, 0.8)


def join_turn(parts: list[tuple[str, int]], sources: dict[str, np.ndarray]) -> np.ndarray:
    """The turn ``parts`` (``(item id, onset in samples)``, in order) laid out on silence; ``(samples,)`` float32."""
    end = max(a + len(sources[i]) for i, a in parts)
    out = np.zeros(end, dtype=np.float32)
    for i, a in parts:
        out[a : a + len(sources[i])] = sources[i]
    return out


def make_turns(items: list[CorpusItem], labels: dict[str, tuple[str, ...]], side: dict[str, str],
               sources: dict[str, np.ndarray], sample_rate: int, seed: int) -> tuple[list[CorpusItem], list[dict]]:
    """Replace the Speech items of ``items`` by speech turns (see module docstring).

    Adds each turn's audio to ``sources`` and its labels and split to ``labels`` / ``side`` (in place).

    Args:
        labels: ``{item id: output labels}``; an item is speech when its labels hold ``"Speech"``.
        side: ``{item id: split}``; sources: decoded audio of every item, ``(samples,)`` at ``sample_rate`` Hz.

    Returns:
        ``(items to mix, turn records)``: the non-speech items plus one item per turn (id ``turn:<group>:<k>``);
        each record holds ``id``, ``split``, ``group``, ``labels`` and ``parts`` (``[item id, onset sample]``).
    """
    rng = np.random.default_rng([seed, 17])
    runs: dict[tuple, list[CorpusItem]] = defaultdict(list)
    keep = []
    for it in items:
        if SPEECH in labels[it.id] and not it.background:
            runs[(side[it.id], it.group, labels[it.id])].append(it)
        else:
            keep.append(it)
    records = []
    for (split, group, labs), members in sorted(runs.items()):
        members = [members[j] for j in rng.permutation(len(members))]
        k, parts, t = 0, [], 0
        for n, it in enumerate(members):
            parts.append((it.id, t))
            t += len(sources[it.id]) + int(rng.uniform(*PAUSE_S) * sample_rate)
            if t >= MAX_TURN_S * sample_rate or n == len(members) - 1:
                tid = f"turn:{group}:{'/'.join(labs[-1:])}:{k}"
                sources[tid] = join_turn(parts, sources)
                labels[tid], side[tid] = labs, split
                first = next(m for m in members if m.id == parts[0][0])
                keep.append(replace(first, id=tid, duration_s=len(sources[tid]) / sample_rate,
                                    source=f"{len(parts)} utterances of {group}"))
                records.append({"id": tid, "split": split, "group": group, "labels": list(labs),
                                "parts": [[i, a] for i, a in parts]})
                k, parts, t = k + 1, [], 0
    return keep, records


def write_turns(out: Path, records: list[dict]) -> None:
    """``out/turns.jsonl``: one turn record per line (empty file when there are none)."""
    (out / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
