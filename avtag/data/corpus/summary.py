"""The corpus summary: classes x files x minutes x source groups x packages (markdown and JSON)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from avtag.data.corpus.licences import TRAINING_KINDS

#: a class "has enough sources" at this many distinct source groups (issue 10's target: >= 25 such classes)
ENOUGH_GROUPS = 8


def class_table(records: list[dict], roots=()) -> dict[str, dict]:
    """``{class: {files, minutes, groups, packages, constructed}}`` over the records' expanded labels."""
    files: Counter = Counter()
    minutes: Counter = Counter()
    groups: dict[str, set] = defaultdict(set)
    packages: dict[str, set] = defaultdict(set)
    constructed: Counter = Counter()
    for r in records:
        for c in r["labels"]:
            if c in roots:
                continue
            files[c] += 1
            minutes[c] += r["duration_s"] / 60.0
            groups[c].add(r["group"])
            packages[c].add(r["package"])
            constructed[c] += bool(r["constructed"])
    return {c: {"files": files[c], "minutes": round(minutes[c], 2), "groups": len(groups[c]),
                "packages": len(packages[c]), "constructed_files": constructed[c]}
            for c in sorted(files, key=lambda c: (-len(groups[c]), -minutes[c], c))}


def write_summary(root: Path, records: list[dict], dropped: list[dict], table) -> dict:
    """Write ``summary.md`` and ``summary.json`` for the corpus in ``root``; return the summary dict."""
    from avtag.data.corpus.vocabulary import MIN_GROUPS, CorpusItem, choose_vocabulary

    classes = class_table(records, table.roots)
    total_min = sum(r["duration_s"] for r in records) / 60.0
    enough = [c for c, v in classes.items() if v["groups"] >= ENOUGH_GROUPS]
    kinds = Counter(r["licence_kind"] for r in records)
    per_package: dict[str, dict] = defaultdict(lambda: {"files": 0, "minutes": 0.0, "version": "", "kinds": set()})
    for r in records:
        p = per_package[r["package"]]
        p["files"] += 1
        p["minutes"] += r["duration_s"] / 60.0
        p["version"] = r["version"]
        p["kinds"].add(r["licence_kind"])
    reasons = Counter(d["reason"].split(":")[0].split(" (")[0] for d in dropped)
    items = [CorpusItem(r["id"], root / r["file"], tuple(r["classes"]), tuple(r["labels"]), r["group"],
                        tuple(r.get("component_groups") or ()), r["licence_kind"]) for r in records
             if r["licence_kind"] in TRAINING_KINDS]
    try:
        vocab = choose_vocabulary(items, table, MIN_GROUPS).classes if items else ()
    except Exception:  # noqa: BLE001 - a tiny corpus covers no class; the summary still gets written
        vocab = ()
    summary = {
        "files": len(records), "hours": round(total_min / 60.0, 2), "dropped": len(dropped),
        "dropped_reasons": dict(reasons.most_common()), "licence_kinds": dict(kinds.most_common()),
        "share_alike_files": sum(r["share_alike"] for r in records),
        "constructed_files": sum(r["constructed"] for r in records),
        "classes_with_enough_sources": len(enough), "enough_sources": ENOUGH_GROUPS, "classes": classes,
        "vocabulary_v2": list(vocab),
        "packages": {k: {"version": v["version"], "files": v["files"], "minutes": round(v["minutes"], 1),
                         "licence_kinds": sorted(v["kinds"])} for k, v in sorted(per_package.items())},
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    lines = [
        "# Corpus summary", "",
        f"{len(records)} files, {total_min / 60:.2f} h of audio (16 kHz mono FLAC) from {len(per_package)} packages; "
        f"{len(dropped)} files dropped. **{len(enough)} classes have >= {ENOUGH_GROUPS} distinct source groups.**",
        "", "Licence kinds: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        + f". Share-alike files: {summary['share_alike_files']} (a model trained on them is released share-alike). "
        f"Constructed files: {summary['constructed_files']}.", "",
        "Dropped: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ".", "",
        "| class | files | minutes | source groups | packages | constructed files |", "|---|---:|---:|---:|---:|---:|",
    ]
    for c, v in classes.items():
        mark = "**" if v["groups"] >= ENOUGH_GROUPS else ""
        lines.append(f"| {mark}{c}{mark} | {v['files']} | {v['minutes']:.1f} | {v['groups']} | {v['packages']} | "
                     f"{v['constructed_files'] or ''} |")
    lines += ["", f"Vocabulary v2 from this corpus alone (classes with >= {MIN_GROUPS} joined source groups, parents "
              f"with the same sources as a child left out; {len(vocab)} classes; `avtag soundscapes --corpus` adds "
              "../shared/sounds): " + ", ".join(vocab), "",
              "| package | version | files | minutes | licence kinds |", "|---|---|---:|---:|---|"]
    for k, v in summary["packages"].items():
        lines.append(f"| {k} | {v['version']} | {v['files']} | {v['minutes']:.1f} | {', '.join(v['licence_kinds'])} |")
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    return summary
