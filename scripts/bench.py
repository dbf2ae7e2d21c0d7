#!/usr/bin/env python
"""avtag benchmarks: one table and one JSON, each figure beside its floor or peer from the same run.

Sections (``--only`` picks some):

* ``tag`` (:mod:`bench_tag`): start-up, warm and cold latency of one clip, batch tagging of
  ../shared/clips and a 20-minute audio file, peak memory; floors: FFmpeg decoding the same media.
* ``models`` (:mod:`bench_models`): audio-model inference (s of audio/s) beside PANNs CNN14 and
  MobileNetV3-Small on the same log-mel; training clips/s from a feature cache with a projection
  to one DCASE 2017 epoch. CPU, and CUDA when present.

The machine's core count and load average are recorded: timings on a shared machine vary with
what else runs, ratios much less. Needs ``ffmpeg`` and, for the peers, the ``bench`` extra
(``pip install -e '.[bench]'``: panns-inference, torchlibrosa).

Usage: ``.venv/bin/python scripts/bench.py [--only tag,models] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

COLUMNS = ("section", "what", "avtag", "unit", "peer", "peer_value", "ratio", "target")


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (missing cells empty)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="tag,models", help="comma-separated sections: tag, models")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
    args = parser.parse_args()
    wanted = {s.strip() for s in args.only.split(",")}
    result = {"machine_before": machine(), "rows": []}
    if "tag" in wanted:
        import bench_tag

        result["rows"] += bench_tag.rows()
    if "models" in wanted:
        import bench_models

        result["rows"] += bench_models.rows()
    result["machine_after"] = machine()
    before, after = result["machine_before"], result["machine_after"]
    print(f"{before['cpu_count']} CPU cores, load average {before['load_average_1_5_15']} before, "
          f"{after['load_average_1_5_15']} after; GPU: {before['gpu'] or 'none'}\n")
    print(table(result["rows"]))
    text = json.dumps(result)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
