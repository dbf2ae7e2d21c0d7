"""YAML configuration: small per-concern files joined with ``include:``, plus
``key.sub=value`` overrides from the command line.

A config is a plain nested ``dict``. ``include:`` (a list of paths relative to the
including file) is merged first, then the file's own keys on top (deep merge).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from avtag import AvtagError


class ConfigError(AvtagError):
    """A config file that cannot be read or an override that cannot be applied."""


def deep_merge(base: dict, top: dict) -> dict:
    """Return a copy of ``base`` with ``top`` merged into it recursively (``top`` wins)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: Iterable[str] = (), _seen: tuple = ()) -> dict:
    """Load a YAML config with its ``include:`` files and apply ``overrides``.

    Args:
        path: YAML file.
        overrides: strings ``"a.b=value"``; ``value`` is parsed as YAML (numbers,
            booleans, lists).

    Returns:
        The merged config as a nested dict; ``config["_path"]`` is the resolved file.

    Raises:
        ConfigError: missing file, bad YAML, include cycle, malformed override.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle")
    data = _read_yaml(path)
    merged: dict = {}
    for inc in data.pop("include", []) or []:
        merged = deep_merge(merged, load_config(path.parent / inc, (), _seen + (path,)))
    merged = deep_merge(merged, data)
    for item in overrides:
        apply_override(merged, item)
    merged["_path"] = str(path)
    return merged


def apply_override(config: dict, item: str) -> None:
    """Set ``config[a][b] = value`` for ``item = "a.b=value"`` (in place)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = config
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def get(config: dict, dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``dotted = "a.b"``, or ``default`` when absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def resolve_path(value: str | Path) -> Path:
    """A path from a config: ``~`` expanded; relative paths are relative to the
    working directory (the repository root in the README's commands)."""
    return Path(value).expanduser()
