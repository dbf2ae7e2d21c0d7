"""The AudioSet ontology (avtag/ontology.py) and the true-path rule of late fusion (fusion.hierarchy).

The packaged ontology is read from the rule table's ``ontology`` section; the rule is checked on hand-made
scores (exact expectations), through the config, the DCASE 2017 configs (off), the ONNX export and the
``avtag tag --hierarchy`` switch on a real clip.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from avtag.config import AvtagConfig, FusionConfig, load_config
from avtag.models.fusion import FusionError, LateFusion
from avtag.ontology import Ontology, OntologyError, load_ontology

REPO = Path(__file__).resolve().parents[1]


def test_packaged_ontology_knows_audioset_ancestry():
    onto = load_ontology()
    assert onto.ancestors("Speech") == ("Human voice",)
    assert set(onto.ancestors("Bark")) == {"Dog", "Domestic animals, pets", "Animal"}
    assert "Sounds of things" not in onto.ancestors("Jet engine")  # abstract roots are never labels
    assert onto.ancestors("not an AudioSet class") == ()
    assert load_ontology() is onto  # read once


def test_closure_goes_through_ancestors_outside_the_vocabulary():
    onto = load_ontology()
    classes = ("Animal", "Bark", "Speech", "Human voice", "Car")
    m = onto.closure(classes)
    assert m.dtype == bool and m.shape == (5, 5) and m.diagonal().all()
    # Bark -> Dog -> Domestic animals, pets -> Animal: neither middle class is in the vocabulary
    assert m[1, 0] and m[2, 3] and not m[0, 1] and not m[3, 2]
    assert m.sum() == 5 + 2


def test_malformed_ontologies_fail_in_one_line():
    with pytest.raises(OntologyError, match="cycle through 'A'"):
        Ontology({"A": ["B"], "B": ["A"]}, origin="x.yaml").check()
    with pytest.raises(OntologyError, match="parent 'Z' of 'A' is not in the ontology section"):
        Ontology({"A": ["Z"]}, origin="x.yaml").check()


def _fusion(method="max", hierarchy="audioset", classes=("Human voice", "Speech", "Dog", "Animal"), **kw):
    return LateFusion.from_config(FusionConfig(method=method, hierarchy=hierarchy, **kw), classes)


def test_true_path_raises_parents_to_their_most_likely_child():
    audio = torch.tensor([[0.1, 0.9, 0.2, 0.05]])
    video = torch.tensor([[0.0, 0.0, 0.7, 0.3]])
    fused = _fusion()(audio, video)
    assert fused[0].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.7])
    plain = _fusion(hierarchy="none")(audio, video)
    assert plain[0].tolist() == pytest.approx([0.1, 0.9, 0.7, 0.3])
    # it only raises, and only parents: every fused score >= the plain one, leaves unchanged
    assert (fused >= plain).all() and fused[0, 1] == plain[0, 1] and fused[0, 2] == plain[0, 2]


def test_true_path_in_every_mode_and_method_and_on_frame_wise_shapes():
    a = torch.tensor([[0.2, 0.6, 0.1, 0.1]])
    assert _fusion(mode="audio")(a, None)[0, 0] == pytest.approx(0.6)
    for method in ("weighted", "boost", "gated", "max"):
        out = _fusion(method)(a, torch.zeros_like(a))
        assert out[0, 0] >= out[0, 1] and out[0, 3] >= out[0, 2], method
    frames = torch.rand(2, 7, 4)  # (batch, frames, classes)
    closed = _fusion(mode="audio")(frames, None)
    assert torch.allclose(closed[..., 0], frames[..., :2].amax(-1))


def test_true_path_keeps_nan_only_where_nothing_below_has_a_score():
    fusion = _fusion(mode="audio")
    out = fusion(torch.tensor([[float("nan"), 0.4, float("nan"), float("nan")]]), None)
    assert out[0, 0] == pytest.approx(0.4) and torch.isnan(out[0, 2]) and torch.isnan(out[0, 3])


def test_a_closure_for_other_classes_is_one_line():
    fusion = _fusion()
    with pytest.raises(FusionError, match="hierarchy has 4 classes, scores have 3"):
        fusion(torch.zeros(1, 3), torch.zeros(1, 3))


def test_config_default_on_dcase_off_and_bad_value_refused(tmp_path):
    from avtag.config import ConfigError

    assert AvtagConfig().fusion.hierarchy == "audioset"
    assert load_config(REPO / "configs" / "default_model.yaml").fusion.hierarchy == "audioset"
    # DCASE 2017 Task 4's labels do not follow the ontology ("Car passing by" without "Car")
    for name in ("dcase2017.yaml", "dcase2017_real.yaml"):
        assert load_config(REPO / "configs" / name).fusion.hierarchy == "none", name
    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion:\n  hierarchy: wordnet\n")
    with pytest.raises(ConfigError, match="hierarchy"):
        load_config(bad)


def test_evaluate_scores_every_branch_with_the_rule_as_tag_does():
    from avtag.evaluation.inference import SplitScores, system_scores

    classes = ["Animal", "Dog"]
    targets = np.array([[True, True], [False, False]])
    audio = np.array([[0.1, 0.9], [0.2, 0.3]])
    video = np.array([[0.0, 0.6], [np.nan, np.nan]])  # the second clip has no video
    split = SplitScores("test", ["a", "b"], tuple(classes), targets, audio, None, None, video, None, 10.0, None)
    on = LateFusion.from_config(FusionConfig(method="max"), classes)
    off = LateFusion.from_config(FusionConfig(method="max", hierarchy="none"), classes)
    np.testing.assert_allclose(system_scores(split, "audio", on), [[0.9, 0.9], [0.3, 0.3]])
    np.testing.assert_allclose(system_scores(split, "video", on), [[0.6, 0.6], [0.0, 0.0]])
    np.testing.assert_allclose(system_scores(split, "fused", on), [[0.9, 0.9], [0.3, 0.3]])
    np.testing.assert_allclose(system_scores(split, "audio", off), audio)
    np.testing.assert_allclose(system_scores(split, "fused", off), [[0.1, 0.9], [0.2, 0.3]])


def test_weights_file_fusion_gets_the_configured_hierarchy(tmp_path):
    classes = ("Human voice", "Speech")
    path = LateFusion("weighted", 0.3, classes=classes).save(tmp_path / "fusion.json")
    fusion = LateFusion.from_config(FusionConfig(weights_file=str(path)), classes)
    assert fusion.closure is not None and float(fusion.audio_weight) == pytest.approx(0.3)
    out = fusion(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]]))
    assert out[0].tolist() == pytest.approx([0.3, 0.3])


def test_onnx_fusion_graph_carries_the_rule(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from avtag.models.export import _export, _FusionGraph
    from avtag.models.tagger import AudioVisualTagger

    classes = ("Human voice", "Speech", "Dog", "Animal")
    tagger = AudioVisualTagger(classes, fusion=_fusion(classes=classes))
    graph = _export(_FusionGraph(tagger), (torch.zeros(1, 4), torch.zeros(1, 4)), ["audio", "video"], ["fused"],
                    {"audio": {0: "n"}, "video": {0: "n"}, "fused": {0: "n"}})
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    a = np.array([[0.1, 0.9, 0.2, 0.05]], np.float32)
    v = np.array([[0.0, 0.0, 0.7, 0.3]], np.float32)
    (out,) = session.run(None, {"audio": a, "video": v})
    assert out[0].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.7])


@pytest.mark.shared
def test_avtag_tag_hierarchy_switch_on_a_real_clip(tmp_path):
    clip = shared_path("clips", "0lFf-HP86Q0.mp4")  # a woman reading: Speech from the speech detector

    def scores(*flags: str) -> dict[str, float]:
        out = subprocess.run([sys.executable, "-m", "avtag", "tag", "--only", "audio", "--format", "json",
                              "--top-k", "0", "--threshold", "0", "--no-progress", *flags, str(clip)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return {t["label"]: (t["score"], t["audio_score"]) for t in json.loads(out.stdout.splitlines()[0])["tags"]}

    on, off = scores(), scores("--hierarchy", "none")
    onto = load_ontology()
    for label, (score, audio) in on.items():
        below = [a for c, (_, a) in on.items() if label in (c, *onto.ancestors(c))]
        assert score == pytest.approx(max(below), abs=1e-6), label
        assert off[label][0] == pytest.approx(audio, abs=1e-6), label  # off: the branch's own score
    assert on["Human voice"][0] >= on["Speech"][0] > 0.5


@pytest.mark.parametrize("hierarchy", ["audioset", "none"])
def test_segments_follow_the_rule_a_parent_is_active_where_its_child_is(hierarchy):
    import avtag
    from avtag.inference.pipeline import _events
    from avtag.io.common import Clip

    config = load_config(None, [f"fusion.hierarchy={hierarchy}"])
    tagger = avtag.Tagger.from_pretrained("default", device="cpu", config=config, use_video=False)
    classes = list(tagger.engine.classes)
    framewise = np.zeros((16, len(classes)), np.float32)  # (frames, classes), one frame per 0.64 s
    framewise[3:9, classes.index("Dog")] = 0.9  # the child barks from frame 3 to 8; Animal itself stays low
    clip = Clip(path=Path("x.wav"), start=2.0, duration=10.24)
    events = {(e.label, e.onset, e.offset) for e in _events(tagger, framewise, clip)}
    hop = float(tagger.engine.frame_hop)
    dog = ("Dog", round(2.0 + 3 * hop, 3), round(2.0 + 9 * hop, 3))
    assert dog in events
    parents = {(name, dog[1], dog[2]) for name in ("Animal", "Domestic animals, pets")}
    assert parents <= events if hierarchy == "audioset" else not parents & events
