"""Reading configs: YAML files joined with ``include:``, ``key.sub=value`` overrides, schema checks.

A config file is a YAML mapping of the sections of :class:`avtag.config.schema.AvtagConfig`.
``include:`` (one path or a list, relative to the including file) is merged first, then
the file's own keys on top (deep merge); overrides from the command line come last.
The merged mapping is then checked against the schema with OmegaConf structured
configs: an unknown key is an error naming it and the closest valid key, a value of
the wrong type or outside its choices is an error naming the key, all before any work.

The result is a plain :class:`~avtag.config.schema.AvtagConfig` of dataclasses
(``OmegaConf.to_object``): attribute access, picklable, no OmegaConf in hot paths.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable

from avtag import AvtagError
from avtag.config.schema import CHOICES, AvtagConfig


class ConfigError(AvtagError):
    """A config file that cannot be read, or a key or value the schema does not allow."""


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
    import yaml

    from avtag.io.common import read_small_text

    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(read_small_text(path)) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return data


def read_yaml_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """The merged mapping of a YAML file and its ``include:`` files (no schema check).

    Raises:
        ConfigError: missing file, bad YAML, include cycle, an ``include`` that is not a path or list of paths.
    """
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle")
    data = _read_yaml(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: include: expected a file name or a list of file names, got {includes!r}")
    merged: dict = {}
    for inc in includes:
        merged = deep_merge(merged, read_yaml_tree(path.parent / inc, _seen + (path,)))
    return deep_merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value)``; ``value`` is parsed as YAML (numbers, booleans, lists).

    Raises:
        ConfigError: no ``=``, or an empty key part.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key part in {key.strip()!r}")
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(tree: dict, overrides: Iterable[str]) -> dict:
    """``tree`` (a copy) with each ``key.path=value`` set; unknown keys are caught later by the schema."""
    tree = copy.deepcopy(tree)
    for item in overrides:
        parts, value = parse_override(item)
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return tree


def _check_keys(tree: Any, schema: type, where: str, source: str) -> None:
    """Unknown keys of ``tree`` against the dataclass ``schema``: one-line error with the closest key."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: {where or 'config'}: expected a section (mapping), got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in tree.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown config key {full!r}" + _suggest(str(key), where, schema))
        sub = _dataclass_type(schema, key)
        if sub is not None:
            _check_keys(value, sub, full, source)


def _dataclass_type(schema: type, name: str) -> type | None:
    """The dataclass type of field ``name`` of ``schema`` (None for a plain value or dict)."""
    default = next(f for f in dataclasses.fields(schema) if f.name == name).default_factory
    if default is not dataclasses.MISSING:
        value = default()
        if dataclasses.is_dataclass(value):
            return type(value)
    return None


def _all_keys(schema: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(schema):
        full = f"{prefix}.{f.name}" if prefix else f.name
        out.append(full)
        sub = _dataclass_type(schema, f.name)
        if sub is not None:
            out += _all_keys(sub, full)
    return out


def _suggest(key: str, where: str, schema: type) -> str:
    names = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    moved = [k for k in _all_keys(AvtagConfig) if k.endswith("." + key)]
    if moved:
        return f" (did you mean {moved[0]!r}?)"
    return f" (known keys{' of ' + where if where else ''}: {', '.join(names)})"


def _lookup(cfg: AvtagConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def build_config(tree: dict, source: str = "config") -> AvtagConfig:
    """Check a merged mapping against the schema and return the typed config.

    Raises:
        ConfigError: unknown key (with the closest valid one), wrong type, value outside its choices.
    """
    _check_keys(tree, AvtagConfig, "", source)
    if tree:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            merged = OmegaConf.merge(OmegaConf.structured(AvtagConfig), tree)
            cfg = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            reason = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{source}: config key {key!r}: {reason}") from None
    else:  # the defaults: the schema's dataclasses as they are (OmegaConf costs ~0.3 s at start-up)
        cfg = AvtagConfig()
    for dotted, allowed in CHOICES.items():
        value = _lookup(cfg, dotted)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: {dotted}: {value!r} is not one of {', '.join(allowed)}{hint}")
    _check_values(cfg, source)
    return cfg


#: upper bounds of the video sampling settings: beyond them a tiny file decodes for minutes
MAX_FPS, MAX_FRAMES, MAX_SHORT_SIDE = 240.0, 1000, 4096
#: ``(key, low, high)``: numbers outside these end the config load in one line instead of in a
#: library error (torch's "Invalid learning rate"), a 4 GB allocation or 100,000 worker processes.
#: high None: unbounded above; NaN fails every bound.
RANGES = (
    ("training.max_epochs", 1, None), ("training.batch_size", 1, None),
    ("tag.top_k", 0, None), ("tag.objects", 0, None), ("tag.decode_workers", 0, None), ("tag.batch_clips", 1, None),
    ("tag.median_filter_s", 0, None), ("tag.min_duration_s", 0, None), ("tag.segment_threshold", 0, 1),
    ("evaluate.frame_threshold", 0, 1),
    ("audio.sample_rate", 4000, 192000), ("audio.n_fft", 16, 65536), ("audio.win_length", 16, 65536),
    ("audio.hop_length", 1, 65536), ("audio.n_mels", 1, 512), ("audio.f_min", 0.0, None), ("audio.f_max", 1.0, None),
    ("training.lr", 1e-12, 10.0), ("training.weight_decay", 0.0, 10.0), ("training.workers", 0, 256),
    ("training.threshold", 0.0, 1.0), ("training.warmup_epochs", 0, None), ("training.seed", 0, 2**32 - 1),
    ("training.checkpoint_every_n_steps", 0, None), ("cache.workers", 0, 256), ("model.dropout", 0.0, 0.99),
    ("model.crnn.kernel_size", 1, 31), ("model.crnn.convs_per_block", 1, 16), ("model.crnn.rnn_hidden", 0, 4096),
    ("model.crnn.rnn_layers", 1, 16), ("model.efficientnet.head_dim", 1, 8192),
    ("model.waveform.stem_channels", 1, 1024), ("model.waveform.stem_kernel", 1, 1025),
    ("model.waveform.stem_stride", 1, 1024), ("model.waveform.kernel_size", 1, 31),
    ("model.waveform_cnn.head_dim", 1, 8192),
)
#: lists of layer widths / pooling factors: every entry in ``[1, high]``
LIST_RANGES = (("model.crnn.channels", 1024), ("model.crnn.freq_pool", 64), ("model.crnn.time_pool", 64),
               ("model.waveform.channels", 1024), ("model.waveform.pools", 64), ("model.waveform_cnn.channels", 1024),
               ("model.waveform_cnn.freq_pool", 64), ("model.waveform_cnn.time_pool", 64))


def _range_problems(cfg: AvtagConfig) -> list[str]:
    problems = []
    for key, low, high in RANGES:
        value = _lookup(cfg, key)
        if not (value >= low and (high is None or value <= high)):  # NaN fails too
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            problems.append(f"{key} must be {bound}, got {value}")
    for key, high in LIST_RANGES:
        values = _lookup(cfg, key)
        if not values or any(not 1 <= v <= high for v in values):
            problems.append(f"{key}: every entry must be in [1, {high}], got {values}")
    audio = cfg.audio
    if audio.win_length > audio.n_fft:
        problems.append(f"audio.win_length ({audio.win_length}) must be <= audio.n_fft ({audio.n_fft})")
    if not audio.f_min < audio.f_max <= audio.sample_rate / 2:
        problems.append(f"audio.f_min < audio.f_max <= audio.sample_rate / 2 must hold, got {audio.f_min} / "
                        f"{audio.f_max} / {audio.sample_rate}")
    return problems


def _template_problem(template: str) -> str | None:
    """Why ``template`` is not a format string with exactly one empty field ``{}``, or None."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"not a format string ({exc}): {template[:60]!r}"
    if fields not in ([""], ["0"]):
        return f"needs exactly one '{{}}' where the name goes, got {template[:60]!r}"
    return None


def _check_values(cfg: AvtagConfig, source: str) -> None:
    """Ranges and cross-field rules the types cannot express."""
    crnn = cfg.model.crnn
    problems = []
    if not (len(crnn.channels) == len(crnn.freq_pool) == len(crnn.time_pool)):
        problems.append("model.crnn: channels, freq_pool and time_pool need one entry per conv block "
                        f"(got {len(crnn.channels)}, {len(crnn.freq_pool)}, {len(crnn.time_pool)})")
    if cfg.model.output_prior is not None and not 0 < cfg.model.output_prior < 1:
        problems.append(f"model.output_prior must be in (0, 1) or null, got {cfg.model.output_prior}")
    if not -1 <= cfg.model.efficientnet.trainable_blocks <= 16:
        problems.append(f"model.efficientnet.trainable_blocks: expected -1 (all), 0 (frozen) or 1..16, "
                        f"got {cfg.model.efficientnet.trainable_blocks}")
    if cfg.training.mixing.alpha <= 0:
        problems.append("training.mixing.alpha must be > 0")
    if not 0 <= cfg.training.mixing.probability <= 1:
        problems.append("training.mixing.probability must lie in [0, 1]")
    problems += _range_problems(cfg)
    weights = cfg.fusion.audio_weight if isinstance(cfg.fusion.audio_weight, list) else [cfg.fusion.audio_weight]
    if any(not 0 <= w <= 1 for w in weights):
        problems.append(f"fusion.audio_weight must lie in [0, 1], got {cfg.fusion.audio_weight}")
    if cfg.model.speech_detector != "none" and cfg.audio.sample_rate != 16000:
        problems.append(f"model.speech_detector {cfg.model.speech_detector} needs audio.sample_rate 16000, "
                        f"got {cfg.audio.sample_rate}")
    if not 0 <= cfg.tag.threshold <= 1:
        problems.append(f"tag.threshold must lie in [0, 1], got {cfg.tag.threshold}")
    for key in ("tag.long_file_s", "tag.window_s"):
        if not _lookup(cfg, key) > 0:
            problems.append(f"{key} must be > 0 seconds, got {_lookup(cfg, key)}")
    if not 0 < cfg.video.fps <= MAX_FPS:  # NaN and inf fail too
        problems.append(f"video.fps must be > 0 and <= {MAX_FPS} frames per second, got {cfg.video.fps}")
    for key, high in (("video.num_frames", MAX_FRAMES), ("video.frame_short_side", MAX_SHORT_SIDE),
                      ("video.batch_size", None)):
        if (value := _lookup(cfg, key)) is not None and not (value >= 1 and (high is None or value <= high)):
            problems.append(f"{key} must be >= 1" + (f" and <= {high}" if high else "") + f", got {value}")
    for key in ("label_map.object_template", "label_map.sound_template"):
        if (why := _template_problem(_lookup(cfg, key))) is not None:
            problems.append(f"{key}: {why}")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> AvtagConfig:
    """Load a YAML config (with its ``include:`` files), apply ``overrides``, check it.

    Args:
        path: YAML file, or None for the built-in defaults alone.
        overrides: strings ``"a.b=value"`` (value parsed as YAML).

    Returns:
        The typed :class:`AvtagConfig`.

    Raises:
        ConfigError: missing file, bad YAML, include cycle, malformed override, unknown key
            (named, with the closest valid key), wrong type or value.
    """
    overrides = list(overrides)
    tree = read_yaml_tree(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    if overrides:
        tree = apply_overrides(tree, overrides)
        source = f"{source} + overrides" if path is not None else "overrides"
    return build_config(tree, source)


def config_to_dict(cfg: AvtagConfig) -> dict:
    """The config as plain nested dicts and lists (YAML / JSON / checkpoint ready)."""
    return dataclasses.asdict(cfg)


#: keys of the flat ``model:`` section of avtag 0.1 checkpoints, by the backbone section they moved to
_LEGACY_MODEL = {
    "crnn": ("conv", "channels", "kernel_size", "convs_per_block", "freq_pool", "time_pool", "rnn_hidden",
             "rnn_layers"),
    "efficientnet": ("pretrained", "trainable_blocks", "input_channels", "head_dim"),
}
_LEGACY_TRAINER = {"accelerator": "accelerator", "devices": "devices", "precision": "precision",
                   "gradient_clip": "gradient_clip_val", "log_every_n_steps": "log_every_n_steps", "trainer": "extra"}


def upgrade_legacy(tree: dict) -> dict:
    """Map an avtag 0.1 config (stored in older checkpoints) onto the current schema.

    The flat CRNN / EfficientNet keys of ``model:`` move to ``model.crnn`` /
    ``model.efficientnet``; ``training.accelerator`` & co. move to ``trainer:``;
    the loader's ``_path`` bookkeeping key is dropped.
    """
    tree = copy.deepcopy(tree)
    tree.pop("_path", None)
    model = tree.get("model")
    if isinstance(model, dict):
        model.setdefault("backbone", "crnn")
        for section, keys in _LEGACY_MODEL.items():
            moved = {k: model.pop(k) for k in keys if k in model}
            if moved:
                model[section] = {**moved, **(model.get(section) or {})}
    training = tree.get("training")
    if isinstance(training, dict):
        moved = {new: training.pop(old) for old, new in _LEGACY_TRAINER.items() if old in training}
        if moved:
            tree["trainer"] = {**moved, **(tree.get("trainer") or {})}
    return tree


def config_from_dict(tree: dict, source: str = "config") -> AvtagConfig:
    """The typed config of a plain mapping (e.g. stored in a checkpoint), legacy layouts upgraded."""
    return build_config(upgrade_legacy(tree or {}), source)


def resolve_path(value: str | Path) -> Path:
    """A path from a config: ``~`` expanded; relative paths are relative to the working directory."""
    return Path(value).expanduser()
