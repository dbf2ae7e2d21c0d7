"""Late fusion: weighted mean, per-class logistic regression, max, ablation modes, save/load."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from avtag.config import FusionConfig
from avtag.models.fusion import FusionError, LateFusion

A = np.array([[0.9, 0.2, 0.4], [0.1, 0.6, 0.0]])
V = np.array([[0.5, 0.4, 0.8], [0.3, 0.2, 1.0]])


def test_weighted_mean_and_per_class_weights():
    assert np.allclose(LateFusion("weighted", 0.5).fuse(A, V), (A + V) / 2)
    assert np.allclose(LateFusion("weighted", 0.8).fuse(A, V), 0.8 * A + 0.2 * V)
    w = np.array([1.0, 0.0, 0.25])
    assert np.allclose(LateFusion("weighted", w).fuse(A, V), w * A + (1 - w) * V)
    assert np.allclose(LateFusion("weighted").fuse(A[0], V[0]), (A[0] + V[0]) / 2)  # one clip (classes,)


def test_max_and_ablation_modes():
    assert np.allclose(LateFusion("max").fuse(A, V), np.maximum(A, V))
    assert np.allclose(LateFusion("max", mode="audio").fuse(A, V), A)
    assert np.allclose(LateFusion("weighted", mode="video").fuse(A, V), V)
    with pytest.raises(FusionError, match="did not run"):
        LateFusion(mode="audio").fuse(None, V)


def test_missing_branch_and_missing_classes():
    f = LateFusion("weighted", 0.5)
    assert np.allclose(f.fuse(None, V), V) and np.allclose(f.fuse(A, None), A)
    a = A.copy()
    a[:, 2] = np.nan  # a class the audio model does not know
    out = f.fuse(a, V)
    assert np.allclose(out[:, 2], V[:, 2]) and np.allclose(out[:, :2], (A[:, :2] + V[:, :2]) / 2)


def test_bad_settings_and_shapes():
    with pytest.raises(FusionError, match="unknown fusion method"):
        LateFusion("product")
    with pytest.raises(FusionError, match="unknown fusion mode"):
        LateFusion(mode="none")
    with pytest.raises(FusionError, match=r"\[0, 1\]"):
        LateFusion(audio_weight=1.5)
    with pytest.raises(FusionError, match="differ in shape"):
        LateFusion().fuse(A, V[:, :2])
    with pytest.raises(FusionError, match="not fitted"):
        LateFusion("logistic").fuse(A, V)


def _validation_set(n=400, seed=0):
    """Class 0 is heard (audio informative), class 1 is seen (video informative), class 2 never occurs."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 3))
    y[:, 0] = rng.random(n) < 0.4
    y[:, 1] = rng.random(n) < 0.4
    noise = lambda: rng.uniform(0, 1, n)  # noqa: E731
    audio = np.stack([np.clip(0.35 * y[:, 0] + 0.5 * noise(), 0, 1), noise(), 0.3 * noise()], 1)
    video = np.stack([noise(), np.clip(0.35 * y[:, 1] + 0.5 * noise(), 0, 1), 0.3 * noise()], 1)
    return audio, video, y


def test_logistic_fusion_learns_which_branch_to_trust(tmp_path):
    a, v, y = _validation_set(seed=0)
    fusion = LateFusion("logistic", classes=["heard", "seen", "absent"]).fit(a, v, y)
    assert fusion.fitted_.tolist() == [True, True, False]  # no positives for class 2: weighted-mean fallback
    assert fusion.coef_[0, 0] > abs(fusion.coef_[0, 1]) and fusion.coef_[1, 1] > abs(fusion.coef_[1, 0])
    ta, tv, ty = _validation_set(seed=1)  # held-out clips
    fused = fusion.fuse(ta, tv)
    mean = LateFusion("weighted", 0.5).fuse(ta, tv)
    for k in (0, 1):
        assert average_precision_score(ty[:, k], fused[:, k]) > average_precision_score(ty[:, k], mean[:, k]) + 0.03
    assert np.allclose(fused[:, 2], mean[:, 2])
    loaded = LateFusion.load(fusion.save(tmp_path / "fusion.json"))
    assert loaded.classes == ("heard", "seen", "absent")
    assert np.allclose(loaded.fuse(ta, tv), fused)


def test_weighted_fit_picks_the_informative_branch():
    a, v, y = _validation_set()
    y = y[:, :1]
    fusion = LateFusion("weighted").fit(a[:, :1], v[:, :1], y)
    assert float(fusion.audio_weight) >= 0.7


def test_from_config(tmp_path):
    f = LateFusion.from_config(FusionConfig(method="max", mode="video"))
    assert f.method == "max" and f.mode == "video"
    path = LateFusion("weighted", 0.3, classes=["a", "b"]).save(tmp_path / "w.json")
    g = LateFusion.from_config(FusionConfig(weights_file=str(path)), ["a", "b"])
    assert float(g.audio_weight) == pytest.approx(0.3)
    with pytest.raises(FusionError, match="other classes"):
        LateFusion.from_config(FusionConfig(weights_file=str(path)), ["x", "y"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FusionError, match=r"bad\.json"):
        LateFusion.load(tmp_path / "bad.json")


def test_boost_only_adds_visual_evidence():
    """boost: a + (1 - a) * beta * v. A class no object stands for keeps its audio score; an object
    seen but not heard cannot reach 0.5 alone (beta <= 0.5); seeing a heard class raises it."""
    f = LateFusion("boost", video_boost=0.5)
    a = np.array([[0.9, 0.0, 0.4, 0.3]])
    v = np.array([[0.0, 0.95, 0.8, np.nan]])
    out = f.fuse(a, v)
    np.testing.assert_allclose(out[0, :3], [0.9, 0.475, 0.4 + 0.6 * 0.5 * 0.8])
    assert out[0, 3] == pytest.approx(0.3)  # no video score for the class: audio as is
    assert np.all(out >= a - 1e-12)  # never below the audio score
    with pytest.raises(FusionError, match="video_boost"):
        LateFusion("boost", video_boost=1.5)


def test_gated_uses_audio_alone_where_nothing_can_be_seen():
    f = LateFusion("gated", 0.5, classes=["Speech", "Dog"]).gate(np.array([0.0, 2.5]))
    np.testing.assert_allclose(f.fuse(np.array([0.8, 0.2]), np.array([0.0, 0.9])), [0.8, 0.55])
    assert LateFusion.from_dict(f.to_dict()).fuse(np.array([0.8, 0.2]), np.array([0.0, 0.9]))[0] == pytest.approx(0.8)


@pytest.mark.parametrize("text, problem", [
    ("[1, 2]", r"expected a JSON object, got list"),  # was AttributeError: internal error
    ('{"method": "logistic", "classes": ["Dog"], "coef": [[NaN, 1]], "intercept": [Infinity], "fitted": [true]}',
     "must be finite"),
    ('{"method": "logistic", "classes": ["Dog"], "coef": [[0, 1]], "intercept": [0]}', r"missing 'fitted'"),
    ('{"method": "logistic", "coef": [[0, 1], [1, 0]], "intercept": [0], "fitted": [true]}', "one entry per class"),
    ('{"audio_weight": 7}', r"audio_weight must lie in \[0, 1\]"), ("{not json", "Expecting"),
])
def test_bad_weights_files_are_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "fw.json"
    path.write_text(text)
    with pytest.raises(FusionError, match=r"fw\.json: not a readable fusion weights file.*" + problem):
        LateFusion.load(path)
    assert LateFusion.load(LateFusion("max").save(tmp_path / "ok.json")).method == "max"
