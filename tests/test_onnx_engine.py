"""The ONNX Runtime engine: the tagger's export is cached, reused without importing torch, rebuilt
when damaged or when anything it depends on changes, and gives the PyTorch model's results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avtag.config import AvtagConfig
from avtag.inference.runtime import export_folder, export_key, onnx_wanted

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "assets" / "big_buck_bunny_10s.webm"

pytestmark = pytest.mark.skipif(not onnx_wanted("cpu", True), reason="onnxruntime (the 'fast' extra) not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AVTAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_python(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AVTAG_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


TAG_AND_REPORT = f"""
import json, sys
from avtag import Tagger
tagger = Tagger.from_pretrained("default", device="cpu")
result = tagger.tag_file({str(CLIP)!r}, segments=True, top_k=0, threshold=0.0)
print(json.dumps({{"engine": tagger.engine.name, "torch": "torch" in sys.modules,
                  "scores": {{k: [t.score, t.audio_score, t.video_score] for k, t in result.scores.items()}},
                  "segments": [list(e) for e in result.segments]}}))
"""


def test_export_is_reused_without_torch_and_matches_pytorch(cache):
    """First process: exports (PyTorch). Second: loads the export and tags without importing torch.
    Both equal the plain PyTorch model's scores within 1e-3, with the same events."""
    first = run_python(TAG_AND_REPORT, cache)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_python(TAG_AND_REPORT, cache)
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["engine"] == b["engine"] == "onnxruntime"
    assert a["torch"] and not b["torch"]  # the first run exported with torch; the second never imported it
    assert len(list((cache / "onnx").glob("tagger-*"))) == 1

    from avtag.inference.tagger import Tagger

    plain = Tagger.from_pretrained("default", device="cpu", fast=False)
    ref = plain.tag_file(CLIP, segments=True, top_k=0, threshold=0.0)
    assert plain.engine.name == "pytorch"
    for name, tag in ref.scores.items():
        got = b["scores"][name]
        assert got[0] == pytest.approx(tag.score, abs=1e-3), name
        assert got[1] == pytest.approx(tag.audio_score, abs=1e-3), name
        assert got[2] == pytest.approx(tag.video_score, abs=1e-3), name
    assert [tuple(e) for e in b["segments"]] == [tuple(e) for e in ref.segments]
    assert ref.segments  # threshold 0 in the score table, but events use tag.segment_threshold


def test_damaged_export_is_rebuilt(cache):
    from avtag.inference.tagger import Tagger

    tagger = Tagger.from_pretrained("default", device="cpu", use_video=False)
    folder = tagger.engine.folder
    (folder / "audio.onnx").write_bytes(b"not an onnx file")
    again = Tagger.from_pretrained("default", device="cpu", use_video=False)
    assert again.engine.name == "onnxruntime" and again.engine.folder == folder
    wave = 0.1 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000).astype(np.float32)
    assert again(wave, sample_rate=16000).scores["Music"].audio_score is not None


def test_export_key_covers_what_the_graphs_depend_on(tmp_path):
    from avtag.inference.tagger import parse_labels

    config = AvtagConfig()
    base = export_key("pretrained:default", None, config, True, True)
    assert base == export_key("pretrained:default", None, AvtagConfig(), True, True)
    assert base != export_key("pretrained:v1", None, config, True, True)
    assert base != export_key("pretrained:default", parse_labels("Speech;Dog"), config, True, True)
    assert base != export_key("pretrained:default", None, config, True, False)
    other = AvtagConfig()
    other.fusion.method = "gated"  # not the default
    assert base != export_key("pretrained:default", None, other, True, True)
    # a checkpoint file: its path, size and modification time; a missing one has no key (PyTorch reports it)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    first = export_key(str(ckpt), None, config, True, True)
    os.utime(ckpt, ns=(1, 1))
    assert export_key(str(ckpt), None, config, True, True) != first
    assert export_key(str(tmp_path / "missing.pt"), None, config, True, True) is None
    assert export_key("pretrained:nonesuch", None, config, True, True) is None
    other = AvtagConfig()
    other.fusion.hierarchy = "none"
    assert base != export_key("pretrained:default", None, other, True, True)


def test_export_key_follows_the_packaged_tables(monkeypatch, tmp_path):
    """The reviewed label-map pairs and the ontology are baked into the export: editing either (in an
    installed copy; here a copy of the package) must give a new key, or a stale export would run."""
    import shutil

    import avtag
    from avtag.inference import runtime

    copy = tmp_path / "avtag"
    shutil.copytree(Path(avtag.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__", "models"))
    shutil.copytree(Path(avtag.__file__).parent / "models", copy / "models",
                    ignore=shutil.ignore_patterns("__pycache__", "*.ckpt", "*.pt"))
    monkeypatch.setattr(avtag, "__file__", str(copy / "__init__.py"))
    first = runtime._source_digest()
    for name in ("label_map_overrides.yaml", "corpus_rules.yaml"):
        table = copy / "resources" / name
        table.write_text(table.read_text() + "\n# edited\n")
        assert runtime._source_digest() != first, name
        first = runtime._source_digest()


def test_engine_choice(monkeypatch):
    assert not onnx_wanted("cpu", False)  # fast=False: the plain PyTorch modules
    assert not onnx_wanted("cuda", True)
    monkeypatch.setenv("AVTAG_ONNX", "0")
    assert not onnx_wanted("cpu", True)


def test_arrays_of_any_frame_size(cache):
    """Frames not at the decode size are resized by FFmpeg's scaler before the ONNX graph; scores stay
    close to PyTorch's own (antialiased bicubic) resize: a real photograph, two sizes."""
    from skimage import data

    from avtag.inference.tagger import Tagger

    cat = np.ascontiguousarray(data.chelsea())  # (300, 451, 3): needs upscaling to a 256 short side
    frames = np.stack([cat, cat[:, ::-1]])
    fast = Tagger.from_pretrained("default", device="cpu")
    plain = Tagger.from_pretrained("default", device="cpu", fast=False)
    assert fast.engine.name == "onnxruntime"
    a, b = fast(frames=frames, top_k=0, threshold=0.0), plain(frames=frames, top_k=0, threshold=0.0)
    assert a.objects[0][0] == b.objects[0][0] and a.objects[0][0] in ("tiger cat", "tabby", "Egyptian cat")
    for name, tag in b.scores.items():  # measured: at most 0.002 apart
        assert a.scores[name].video_score == pytest.approx(tag.video_score, abs=1e-2), name
    assert export_folder(export_key("pretrained:default", None, AvtagConfig(), True, True)).is_dir()
