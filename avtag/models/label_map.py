"""Object -> sound-class mapping of the video branch (zero-shot, from text embeddings).

Li et al. (2017), "A Light-Weight Multimodal Framework for Improved
Environmental Audio Tagging", map the ImageNet objects an image CNN sees to
sound classes through the similarity of word embeddings of the two label sets.
Here the mapping is a matrix ``M`` ``(1000 objects, classes)`` with entries in
[0, 1]; the video clip score of class ``c`` is ``sum_o p(o) M[o, c]``, the
object-probability mass that points to ``c`` (<= 1 since ``sum_o p(o) = 1``).

Building ``M``:

1. embed every ImageNet category name (with its WordNet kind for the dog, cat,
   bird, snake and monkey subtrees: "Pomeranian" is also "dog", so a class
   "Dog" reaches every breed) and every sound-class name with a text
   encoder (:mod:`avtag.models.text_encoders`: all-MiniLM-L6-v2 by default, or
   word2vec/GloVe vectors via gensim); a comma-separated class name such as
   ``"Air horn, truck horn"`` counts as synonyms (the best matching one wins);
2. cosine similarity ``S`` ``(1000, classes)``;
3. per class keep the ``top_k`` most similar objects with ``S >= min_similarity``
   and weight them ``exp((S - S_best) / temperature)`` (best object -> 1);
4. apply the reviewed overrides (``avtag/resources/label_map_overrides.yaml``): object
   aliases fix ambiguous ImageNet names before embedding ("passenger car" is a
   railway carriage), explicit (object, sound, weight) pairs fix what
   embeddings get wrong ("French horn" is no "Train horn"), and for reviewed
   classes (the DCASE 2017 ones) the confirmed pairs are the whole column.

``M`` is cached on disk under :func:`avtag.models.text_encoders.cache_dir`
keyed by encoder, vocabulary and settings; ``avtag labelmap`` prints it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import avtag
from avtag import AvtagError
from avtag.config.schema import LabelMapConfig
from avtag.io.common import require_regular
from avtag.models.text_encoders import TextEncoder, cache_dir, get_encoder

#: bump when the construction changes, so stale cached matrices are rebuilt
MAP_VERSION = 1

class LabelMapError(AvtagError):
    """A bad override file, settings or label-map cache file."""


class CacheWarning(UserWarning):
    """The on-disk cache could not be used; work goes on in memory."""


def default_overrides_path() -> Path | None:
    """The reviewed override file: package data first, then the repository's ``assets/``."""
    pkg = Path(avtag.__file__).resolve().parent
    for candidate in (pkg / "resources" / "label_map_overrides.yaml",
                      pkg.parent / "assets" / "label_map_overrides.yaml"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Overrides:
    """Reviewed corrections, read from YAML (see ``avtag/resources/label_map_overrides.yaml``).

    Attributes:
        object_aliases: object index -> texts embedded instead of the ImageNet name.
        sound_aliases: lower-cased class name -> extra synonyms.
        pairs: ``(object index, lower-cased class name, weight)`` set after sparsification.
        reviewed: lower-cased class names whose pairs are complete (other weights -> 0).
        digest: content hash (part of the cache key).
    """

    object_aliases: dict[int, list[str]] = field(default_factory=dict)
    sound_aliases: dict[str, list[str]] = field(default_factory=dict)
    pairs: list[tuple[int, str, float]] = field(default_factory=list)
    reviewed: set[str] = field(default_factory=set)
    digest: str = "none"


def load_overrides(path: str | Path | None, objects: Sequence[str]) -> Overrides:
    """Parse an override file against the object list ``objects``.

    Raises:
        LabelMapError: unreadable YAML, an unknown object name, a weight outside [0, 1].
    """
    if path is None:
        return Overrides()
    path = Path(path)
    import yaml

    try:
        text = require_regular(path).read_text()
        data = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LabelMapError(f"{path}: cannot read label-map overrides ({str(exc).splitlines()[0]})") from None
    _check_override_sections(path, data)
    index = {name.lower(): i for i, name in enumerate(objects)}

    def obj(ref: Any, where: str) -> int:
        if isinstance(ref, int) and 0 <= ref < len(objects):
            return ref
        if isinstance(ref, str) and ref.lower() in index:
            return index[ref.lower()]
        raise LabelMapError(f"{path}: {where}: unknown ImageNet object {ref!r}")

    out = Overrides(digest=hashlib.sha1(text.encode()).hexdigest()[:16])
    for k, entry in enumerate(data.get("object_groups") or []):
        try:
            lo, hi = (int(x) for x in entry["range"])
            texts = list(_as_list(entry["texts"]))
        except (KeyError, TypeError, ValueError):
            raise LabelMapError(f"{path}: object_groups[{k}]: needs range: [first, last] and texts: [...]") from None
        for i in range(max(lo, 0), min(hi, len(objects) - 1) + 1):
            try:
                out.object_aliases[i] = [str(t).format(objects[i]) for t in texts]
            except (ValueError, IndexError, KeyError) as exc:
                raise LabelMapError(f"{path}: object_groups[{k}]: texts must hold at most one '{{}}' ({exc})") from None
    for k, entry in enumerate(data.get("object_aliases") or []):
        texts = [str(t) for t in _as_list(entry.get("text"))]
        out.object_aliases[obj(entry.get("object"), f"object_aliases[{k}]")] = texts
    for name, texts in (data.get("sound_aliases") or {}).items():
        out.sound_aliases[str(name).lower()] = [str(t) for t in _as_list(texts)]
    out.reviewed = {str(name).lower() for name in data.get("reviewed_classes") or []}
    for k, entry in enumerate(data.get("pairs") or []):
        try:
            weight = float(entry.get("weight", 1.0))
        except (AttributeError, TypeError, ValueError):
            raise LabelMapError(f"{path}: pairs[{k}]: expected {{object, sound, weight}}, got {entry!r}") from None
        if not 0.0 <= weight <= 1.0:
            raise LabelMapError(f"{path}: pairs[{k}]: weight {weight} outside [0, 1]")
        objs = _as_list(entry.get("object"))
        for span in _as_list(entry.get("ranges")):
            try:
                lo, hi = (int(x) for x in span)
            except (TypeError, ValueError):
                raise LabelMapError(f"{path}: pairs[{k}]: ranges must be [[first, last], ...], got {span!r}") from None
            objs += list(range(max(lo, 0), min(hi, len(objects) - 1) + 1))
        for ref in objs:
            for sound in _as_list(entry.get("sound")):
                out.pairs.append((obj(ref, f"pairs[{k}]"), str(sound).lower(), weight))
    return out


#: the sections of an override file: the type of the section, and of each of its entries (None: any)
_SECTIONS = {"object_groups": (list, dict), "object_aliases": (list, dict), "sound_aliases": (dict, None),
             "reviewed_classes": (list, None), "pairs": (list, dict)}


def _check_override_sections(path: Path, data: Any) -> None:
    """LabelMapError naming the first section of ``data`` (parsed YAML) of the wrong shape."""
    if not isinstance(data, dict):
        raise LabelMapError(f"{path}: label-map overrides must be a mapping of sections "
                            f"({', '.join(_SECTIONS)}), got {type(data).__name__}")
    for key, value in data.items():
        if key not in _SECTIONS:
            raise LabelMapError(f"{path}: unknown section {str(key)[:60]!r} (one of {', '.join(_SECTIONS)})")
        kind, entry_kind = _SECTIONS[key]
        if value is not None and not isinstance(value, kind):
            raise LabelMapError(f"{path}: {key}: expected a {kind.__name__}, got {type(value).__name__}")
        bad = next((k for k, e in enumerate(value or []) if entry_kind and not isinstance(e, entry_kind)), None)
        if bad is not None:
            raise LabelMapError(f"{path}: {key}[{bad}]: expected a mapping, got {value[bad]!r:.60}")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def sound_synonyms(name: str) -> list[str]:
    """Texts for a sound-class name: ``"Fire engine, fire truck (siren)"`` ->
    ``["Fire engine", "fire truck siren"]`` (comma = synonyms, brackets dropped)."""
    parts = [re.sub(r"\s+", " ", re.sub(r"[()]", " ", p)).strip() for p in name.split(",")]
    return [p for p in parts if p] or [name]


@dataclass
class LabelMap:
    """The object -> sound-class matrix and what it was built from.

    Attributes:
        matrix: ``(objects, classes)`` float32 in [0, 1].
        similarity: ``(objects, classes)`` float32 cosine similarity of the texts.
        objects: ImageNet category names (rows).
        classes: sound-class names (columns).
        settings: the construction settings (encoder id, top_k, ...).
        overridden: ``(objects, classes)`` bool, True where a reviewed pair set the weight.
    """

    matrix: np.ndarray
    similarity: np.ndarray
    objects: tuple[str, ...]
    classes: tuple[str, ...]
    settings: dict
    overridden: np.ndarray

    def frame_scores(self, frame_probs: np.ndarray) -> np.ndarray:
        """Per-frame class scores ``(frames, classes)`` from object probabilities ``(frames, objects)``."""
        p = np.asarray(frame_probs, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != self.matrix.shape[0]:
            raise LabelMapError(f"object probabilities must be (frames, {self.matrix.shape[0]}), got {p.shape}")
        return np.clip(p @ self.matrix, 0.0, 1.0)

    def clip_scores(self, frame_probs: np.ndarray, aggregate: str = "max") -> np.ndarray:
        """Video-branch clip scores ``(classes,)`` in [0, 1]: frame scores pooled by
        ``aggregate`` (``mean``, ``max`` or ``meanmax``, see :func:`avtag.models.video.aggregate_frames`)."""
        from avtag.models.video import aggregate_frames

        return aggregate_frames(self.frame_scores(frame_probs), aggregate).numpy()

    def top_objects(self, sound: int | str, n: int = 5) -> list[tuple[str, float, float]]:
        """The ``n`` heaviest objects of a class: ``(object, weight, similarity)``, weight > 0 only."""
        c = self.classes.index(sound) if isinstance(sound, str) else int(sound)
        col = self.matrix[:, c]
        order = np.argsort(-col, kind="stable")[:n]
        return [(self.objects[i], float(col[i]), float(self.similarity[i, c])) for i in order if col[i] > 0]

    def save(self, path: str | Path) -> Path:
        """Write the map as ``.npz`` (atomically: a temp file then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        np.savez_compressed(
            tmp, matrix=self.matrix, similarity=self.similarity, overridden=self.overridden,
            objects=np.array(self.objects), classes=np.array(self.classes),
            settings=np.array(json.dumps(self.settings)),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read a map written by :meth:`save`. Raises LabelMapError if unreadable."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    matrix=z["matrix"].astype(np.float32), similarity=z["similarity"].astype(np.float32),
                    objects=tuple(str(s) for s in z["objects"]), classes=tuple(str(s) for s in z["classes"]),
                    settings=json.loads(str(z["settings"])), overridden=z["overridden"].astype(bool),
                )
        except Exception as exc:
            raise LabelMapError(f"{path}: not a readable label map ({type(exc).__name__}: {exc})") from None


def similarity_matrix(
    encoder: TextEncoder, objects: Sequence[str], classes: Sequence[str], overrides: Overrides,
    object_template: str = "{}", sound_template: str = "{}",
) -> np.ndarray:
    """Cosine similarity ``(objects, classes)``: max over each side's texts (aliases, synonyms)."""
    obj_texts = [[object_template.format(t) for t in overrides.object_aliases.get(i, [name])]
                 for i, name in enumerate(objects)]
    snd_texts = [
        [sound_template.format(t) for t in sound_synonyms(name) + overrides.sound_aliases.get(name.lower(), [])]
        for name in classes
    ]
    obj_emb = _cached_embeddings(encoder, [t for ts in obj_texts for t in ts])
    snd_emb = encoder.encode([t for ts in snd_texts for t in ts])
    full = obj_emb @ snd_emb.T  # (object texts, sound texts)
    rows = np.repeat(np.arange(len(obj_texts)), [len(t) for t in obj_texts])
    cols = np.repeat(np.arange(len(snd_texts)), [len(t) for t in snd_texts])
    by_row = np.full((len(obj_texts), full.shape[1]), -np.inf, dtype=np.float32)
    np.maximum.at(by_row, rows, full)
    sim = np.full((len(obj_texts), len(snd_texts)), -np.inf, dtype=np.float32)
    np.maximum.at(sim.T, cols, by_row.T)
    return sim


def _cached_embeddings(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Embeddings of the (fixed) object texts, cached per encoder and text list."""
    key = hashlib.sha1(json.dumps([encoder.id, texts]).encode()).hexdigest()[:20]
    path = cache_dir() / "label_map" / f"objects-{key}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except Exception:
            pass  # damaged cache: recompute
    emb = encoder.encode(texts)

    def save(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, target)

    _cache_quietly(save, path)
    return emb


def _cache_quietly(save, path: Path) -> None:
    """``save(path)``; an unwritable cache folder (read-only, not a folder, full) only costs a
    warning: the result stays in memory."""
    try:
        save(path)
    except OSError as exc:
        warnings.warn(f"label-map cache {path.parent} is not writable ({exc.strerror or exc}); "
                      "the map is built in memory each run", CacheWarning, stacklevel=1)


def sparsify(similarity: np.ndarray, top_k: int, temperature: float, min_similarity: float) -> np.ndarray:
    """Per class keep the ``top_k`` most similar objects (and any tied with the
    k-th) above ``min_similarity``, weighted ``exp((S - S_best) / temperature)``;
    ``(objects, classes)`` float32 in [0, 1]."""
    if top_k < 1 or temperature <= 0:
        raise LabelMapError(f"label map needs top_k >= 1 and temperature > 0 (got {top_k}, {temperature})")
    m = np.zeros_like(similarity, dtype=np.float32)
    for c in range(similarity.shape[1]):
        col = similarity[:, c]
        order = np.argsort(-col, kind="stable")
        kth = col[order[min(top_k, len(order)) - 1]]
        idx = order[(col[order] >= kth) & (col[order] >= min_similarity)]  # ties with the k-th are kept
        if len(idx):
            m[idx, c] = np.exp((col[idx] - col[idx[0]]) / temperature)
    return m


def build_label_map(classes: Sequence[str], settings: LabelMapConfig | None = None, *, use_cache: bool = True,
                    rebuild: bool = False) -> LabelMap:
    """The label map of a vocabulary, from the disk cache when present.

    Args:
        classes: sound-class names (any vocabulary: zero-shot).
        settings: the ``label_map:`` config section (default: the schema's defaults).
        use_cache: read/write ``<cache>/label_map/map-<key>.npz`` (an unwritable cache folder
            degrades to building in memory, with a warning).
        rebuild: build anew even if cached (and overwrite the cache entry).

    Raises:
        LabelMapError: bad settings or override file; TextEncoderError: encoder problems.
    """
    from avtag.models.video import imagenet_categories

    s = settings or LabelMapConfig()
    objects = imagenet_categories()
    over_path = default_overrides_path() if s.overrides == "default" else s.overrides
    overrides = load_overrides(over_path, objects)
    encoder = get_encoder(s.encoder, trust_pickle=s.trust_pickle)
    record = {
        "version": MAP_VERSION, "encoder": encoder.id, "classes": list(classes), "top_k": int(s.top_k),
        "temperature": float(s.temperature), "min_similarity": float(s.min_similarity),
        "overrides": str(over_path) if over_path else None, "overrides_digest": overrides.digest,
        "object_template": str(s.object_template), "sound_template": str(s.sound_template),
    }
    key = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "label_map" / f"map-{key}.npz"
    if use_cache and not rebuild and path.is_file():
        try:
            return LabelMap.load(path)
        except LabelMapError:
            pass  # damaged cache: rebuild
    sim = similarity_matrix(encoder, objects, classes, overrides, s.object_template, s.sound_template)
    matrix = sparsify(sim, record["top_k"], record["temperature"], record["min_similarity"])
    overridden = np.zeros_like(matrix, dtype=bool)
    lower = {name.lower(): c for c, name in enumerate(classes)}
    for name in overrides.reviewed & lower.keys():
        matrix[:, lower[name]] = 0.0
    for o, sound, weight in overrides.pairs:
        if sound in lower:
            matrix[o, lower[sound]] = weight
            overridden[o, lower[sound]] = True
    lm = LabelMap(matrix, sim, tuple(objects), tuple(classes), {**record, "key": key}, overridden)
    if use_cache:
        _cache_quietly(lm.save, path)
    return lm
