"""Rendering :class:`~avtag.inference.results.TagResult` for ``avtag tag``: table, JSON lines, TSV.

* ``json``: one JSON object per file and line (:meth:`TagResult.to_dict`): ``file``, ``duration``,
  ``tags`` (best first; ``label``, ``score``, ``audio_score``, ``video_score``, null where a branch
  did not run), ``objects`` (``label``, ``probability``), ``notes``, ``branches`` and, with
  ``--segments``, ``segments`` (``label``, ``onset``, ``offset`` in seconds); a file that failed is
  ``{"file", "error"}``.
* ``tsv``: header ``file kind label score audio_score video_score onset offset``; ``kind`` is
  ``tag`` (scores filled) or ``segment`` (times filled). Tabs, newlines, backslashes and other control
  characters inside a cell are written as ``\\t``, ``\\n``, ``\\\\`` and ``\\xNN``, so every row has
  8 cells and no cell carries a terminal escape sequence.
* ``table``: a rich table per file with the top objects seen and the notes. File names, labels and
  notes are printed as plain text (never parsed as rich markup), control characters written out.
"""
from __future__ import annotations

import json

from avtag.inference.results import TagResult
from avtag.io.common import CONTROL_ESCAPES, visible

TSV_COLUMNS = ("file", "kind", "label", "score", "audio_score", "video_score", "onset", "offset")
_TSV_ESCAPES = {**CONTROL_ESCAPES, ord("\\"): "\\\\"}


def format_json(result: TagResult) -> str:
    """One line of JSON (no trailing newline); a file name that is not valid UTF-8 (kept by Python as
    surrogate escapes) makes the line ASCII with ``\\u`` escapes, so it stays valid UTF-8 JSON."""
    text = json.dumps(result.to_dict(), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(result.to_dict())
    return text


def tsv_header() -> str:
    return "\t".join(TSV_COLUMNS)


def tsv_cell(x) -> str:
    """One TSV cell: empty for None, 4 decimals for a score; backslashes and control characters escaped
    (``\\\\``, ``\\t``, ``\\n``, ``\\r``, ``\\xNN``), so a cell never holds a tab, a line break or a
    terminal escape sequence."""
    if x is None:
        return ""
    return f"{x:.4f}" if isinstance(x, float) else str(x).translate(_TSV_ESCAPES)


def format_tsv(result: TagResult) -> list[str]:
    """TSV rows (no header) for one file: its tags, then its segments."""
    c = tsv_cell
    rows = [[c(result.file), "tag", c(t.label), c(t.score), c(t.audio_score), c(t.video_score), "", ""]
            for t in result.tags]
    rows += [[c(result.file), "segment", c(e.label), "", "", "", f"{e.onset:.3f}", f"{e.offset:.3f}"]
             for e in result.segments or []]
    return ["\t".join(r) for r in rows]


def render_table(result: TagResult, console, skip_notes: tuple[str, ...] = ()) -> None:
    """Print one file's tags as a rich table on ``console`` (notes in ``skip_notes`` were already
    printed once for all files). User strings go in as :class:`rich.text.Text`, never as markup."""
    from rich.table import Table
    from rich.text import Text

    def cell(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    console.print(Text.assemble((visible(result.file), "bold"), f"  ({result.duration:.1f} s)"), soft_wrap=True)
    table = Table(show_edge=False)
    for name in ("tag", "score", "audio", "video"):
        table.add_column(name, justify="left" if name == "tag" else "right")
    for t in result.tags:
        table.add_row(Text(visible(t.label)), cell(t.score), cell(t.audio_score), cell(t.video_score))
    if not result.tags:
        table.add_row("(no tag above the threshold)", "", "", "")
    console.print(table)
    if result.objects:
        console.print(Text(visible("objects seen: " + ", ".join(f"{n} {p:.2f}" for n, p in result.objects))),
                      soft_wrap=True)
    if result.segments is not None:
        seg = ", ".join(f"{e.label} {e.onset:.2f}-{e.offset:.2f} s" for e in result.segments) or "none"
        console.print(Text(visible(f"segments: {seg}")), soft_wrap=True)
    print_notes(console, [n for n in result.notes if n not in skip_notes], style="yellow", soft_wrap=True)
    console.print()


def print_notes(out, notes, prefix: str = "note: ", style: str | None = None, soft_wrap: bool | None = None) -> None:
    """Print each note on ``out`` (a rich console) as one line, its control characters written out
    (:func:`avtag.io.common.visible`: a file name in a note cannot drive the terminal); ``soft_wrap``
    None keeps the console's own setting. Used by ``tag`` (here and for the tagger's notes),
    ``explain``, ``evaluate`` and ``ablate``."""
    from rich.text import Text

    for note in notes:
        out.print(Text(visible(f"{prefix}{note}"), style=style or ""), soft_wrap=soft_wrap)
