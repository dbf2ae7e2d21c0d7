"""Rendering :class:`~avtag.inference.tag.TagResult` for ``avtag tag``: table, JSON lines, TSV.

* ``json``: one JSON object per file and line: ``file``, ``duration``, ``tags``
  (best first; ``label``, ``score``, ``audio_score``, ``video_score``, null where
  a branch did not run), ``objects`` (``label``, ``probability``), ``notes``,
  ``branches`` and, with ``--segments``, ``segments`` (``label``, ``onset``,
  ``offset`` in seconds).
* ``tsv``: header ``file kind label score audio_score video_score onset offset``;
  ``kind`` is ``tag`` (scores filled) or ``segment`` (times filled).
* ``table``: a rich table per file with the top objects seen and the notes.
"""
from __future__ import annotations

import json

from avtag.inference.tag import TagResult

TSV_COLUMNS = ("file", "kind", "label", "score", "audio_score", "video_score", "onset", "offset")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def result_to_dict(result: TagResult) -> dict:
    """JSON-ready dict of one file's result (``segments`` only when they were asked for)."""
    d = {
        "file": result.file,
        "duration": _r(result.duration, 3),
        "tags": [
            {"label": t.label, "score": _r(t.score), "audio_score": _r(t.audio_score), "video_score": _r(t.video_score)}
            for t in result.tags
        ],
        "objects": [{"label": name, "probability": _r(p)} for name, p in result.objects],
        "branches": dict(result.branches),
        "notes": list(result.notes),
    }
    if result.segments is not None:
        d["segments"] = [{"label": lab, "onset": on, "offset": off} for lab, on, off in result.segments]
    return d


def format_json(result: TagResult) -> str:
    """One line of JSON (no trailing newline)."""
    return json.dumps(result_to_dict(result), ensure_ascii=False)


def tsv_header() -> str:
    return "\t".join(TSV_COLUMNS)


def format_tsv(result: TagResult) -> list[str]:
    """TSV rows (no header) for one file: its tags, then its segments."""

    def cell(x) -> str:
        return "" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))

    rows = [
        [result.file, "tag", t.label, cell(t.score), cell(t.audio_score), cell(t.video_score), "", ""]
        for t in result.tags
    ]
    rows += [[result.file, "segment", lab, "", "", "", f"{on:.3f}", f"{off:.3f}"] for lab, on, off in result.segments or []]
    return ["\t".join(r) for r in rows]


def render_table(result: TagResult, console, skip_notes: tuple[str, ...] = ()) -> None:
    """Print one file's tags as a rich table on ``console`` (notes in ``skip_notes``
    were already printed once for all files)."""
    from rich.table import Table

    def cell(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    console.print(f"[bold]{result.file}[/bold]  ({result.duration:.1f} s)", highlight=False, soft_wrap=True)
    table = Table(show_edge=False)
    table.add_column("tag")
    table.add_column("score", justify="right")
    table.add_column("audio", justify="right")
    table.add_column("video", justify="right")
    for t in result.tags:
        table.add_row(t.label, cell(t.score), cell(t.audio_score), cell(t.video_score))
    if not result.tags:
        table.add_row("(no tag above the threshold)", "", "", "")
    console.print(table)
    if result.objects:
        console.print("objects seen: " + ", ".join(f"{n} {p:.2f}" for n, p in result.objects), highlight=False, soft_wrap=True)
    if result.segments is not None:
        seg = ", ".join(f"{lab} {on:.2f}-{off:.2f} s" for lab, on, off in result.segments) or "none"
        console.print(f"segments: {seg}", highlight=False)
    for note in (n for n in result.notes if n not in skip_notes):
        console.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)
    console.print()
