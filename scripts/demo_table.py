#!/usr/bin/env python
"""Markdown table of ``avtag tag`` on the real clips: hand labels vs fused / audio / video top tags.

Runs one ``avtag tag --format json`` process over ../shared/clips with the default model and
prints the table that README.md and assets/default_model.md show.
Usage: ``.venv/bin/python scripts/demo_table.py [CLIPS_DIR] [--top N]``
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def top(tags: list[dict], key: str, n: int) -> str:
    scored = sorted((t for t in tags if t.get(key) is not None), key=lambda t: -t[key])[:n]
    return ", ".join(f"{t['label']} {t[key]:.2f}" for t in scored) or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="?", default=str(REPO.parent / "shared" / "clips"))
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    clips_dir = Path(args.clips)
    hand = {r["filename"]: r["labels"].replace(";", "; ") for r in csv.DictReader(open(clips_dir / "clips.csv"))}
    files = sorted(str(clips_dir / name) for name in hand)
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", *files, "--format", "json", "--top-k", "0",
                           "--threshold", "0", "--no-progress"], capture_output=True, text=True)
    print("| clip | hand labels (clips.csv) | fused | audio | video |\n|---|---|---|---|---|")
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        name = Path(rec["file"]).name
        print(f"| `{name}` | {hand[name]} | {top(rec['tags'], 'score', args.top)} | "
              f"{top(rec['tags'], 'audio_score', args.top)} | {top(rec['tags'], 'video_score', args.top)} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
