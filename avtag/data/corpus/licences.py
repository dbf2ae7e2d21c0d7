"""Licences: read them from a package's copyright file or metadata, and sort them into kinds.

Debian copyright files in the machine-readable format (DEP-5,
https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/) give
``Files:`` glob patterns with a ``License:``; the last matching paragraph wins.
Their patterns name upstream source paths, not installed ones, so a pattern
matches an installed path when it matches the whole path or any trailing part
of it (``data/globalmods/apoc/*`` matches
``usr/share/games/scorched3d/data/globalmods/apoc/...``). Non-DEP-5 files
give no per-file answer; the rule table's licence for the source is used.

Kinds (:func:`licence_kind`), and whether the default, model-training corpus takes them:

* ``public-domain`` (CC0, public domain, WTFPL), ``permissive`` (MIT, BSD, ISC,
  Apache, Artistic-1.0, zlib), ``attribution`` (CC-BY): in;
* ``share-alike`` (CC-BY-SA, GPL, LGPL, GFDL, Free Art License): in, and recorded, because a model
  trained on them should be released share-alike;
* ``non-commercial`` (any NC), ``sampling-plus`` (CC Sampling+), ``freeware``
  (custom "free to copy, may not sell" game licences), ``unknown``: out.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

TRAINING_KINDS = ("public-domain", "permissive", "attribution", "share-alike")
KINDS = TRAINING_KINDS + ("non-commercial", "sampling-plus", "freeware", "unknown")


def licence_kind(text: str) -> str:
    """The kind of a licence name (see module docstring); ``unknown`` when unrecognised."""
    t = text.upper().replace("_", "-")
    if re.search(r"\bNC\b|NON-?COMMERCIAL", t):
        return "non-commercial"
    if "SAMPLING" in t:
        return "sampling-plus"
    if "FREEWARE" in t or "FOTAQ" in t or "DRASCULA" in t:
        return "freeware"
    if re.search(r"BY-SA|\bGPL|LGPL|GFDL|\bSA\b|FREE-ART|ART LIBRE", t):
        return "share-alike"
    if re.search(r"CC-?BY|CC BY", t):
        return "attribution"
    if re.search(r"CC0|PUBLIC[- ]DOMAIN|WTFPL", t):
        return "public-domain"
    if re.search(r"\bMIT\b|EXPAT|BSD|\bISC\b|APACHE|ARTISTIC-1|ZLIB", t):
        return "permissive"
    return "unknown"


@dataclass(frozen=True)
class Paragraph:
    """One ``Files:`` paragraph of a DEP-5 copyright file."""

    patterns: tuple[str, ...]
    licence: str


def parse_dep5(text: str) -> list[Paragraph] | None:
    """The ``Files:`` paragraphs of a DEP-5 copyright file, or None when it is not DEP-5.

    Continuation lines of ``Files:`` are joined; paragraphs without patterns or
    without a ``License:`` short name, and ``debian/*`` paragraphs, are skipped.
    """
    if not re.match(r"\s*Format:\s*\S*(copyright-format|dep5)", text):
        return None
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                if key == "Files":  # only Files continues over lines; License's text follows its name
                    fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        files, lic = fields.get("Files", "").split(), fields.get("License", "").strip()
        if files and lic and not all(f.startswith("debian/") for f in files):
            out.append(Paragraph(tuple(files), lic))
    return out


def dep5_licence(paragraphs: list[Paragraph], path: str) -> tuple[str, str] | None:
    """``(licence, pattern)`` of the last paragraph whose pattern matches ``path`` (or a trailing part), or None."""
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    hit = None
    for p in paragraphs:
        for pattern in p.patterns:
            if pattern == "*" or any(fnmatch.fnmatchcase(t, pattern) for t in tails):
                hit = (p.licence, pattern)
                break
    return hit


def metadata_licence(files: dict[str, bytes]) -> str | None:
    """The licence a wheel's METADATA or an npm ``package.json`` declares, or None."""
    for name, data in files.items():
        text = data.decode("utf-8", "replace")
        if name.endswith("package.json"):
            try:
                value = json.loads(text).get("license")
            except ValueError:
                continue
            if value:
                return str(value if isinstance(value, str) else value.get("type", value))
        if name.endswith(".dist-info/METADATA"):
            m = re.search(r"^License(?:-Expression)?: *(.+)$", text, re.M)
            if m and m.group(1).strip() not in ("UNKNOWN", ""):
                return m.group(1).strip()
            m = re.search(r"^Classifier: License :: (.+)$", text, re.M)
            if m:
                return m.group(1).split("::")[-1].strip()
    return None
