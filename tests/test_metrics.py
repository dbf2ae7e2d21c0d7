"""Tagging metrics on matrices, mAP, threshold optimisation and sed_eval strong-label metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from avtag.evaluation.metrics import (
    average_precision,
    binarize,
    micro_f1,
    optimise_thresholds,
    prf_from_counts,
    strong_label_metrics,
    tagging_metrics,
)
from avtag.evaluation.scorer import read_strong_labels

SHARED = Path(__file__).resolve().parents[2] / "shared"
STRONG_GT = SHARED / "dcase2017" / "groundtruth_release" / "groundtruth_strong_label_testing_set.csv"


def test_prf_conventions():
    assert prf_from_counts(0, 0, 0).to_dict() == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    m = prf_from_counts(3, 1, 2)
    assert (m.precision, m.recall) == (0.75, 0.6) and m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))


def test_tagging_metrics_against_sklearn_and_hand_values():
    rng = np.random.default_rng(1)
    y_true = rng.random((200, 6)) < 0.25
    y_pred = rng.random((200, 6)) < 0.3
    names = [f"c{i}" for i in range(6)]
    m = tagging_metrics(y_true, y_pred, names)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    assert (m.micro.precision, m.micro.recall, m.micro.f1) == pytest.approx((p, r, f))
    assert m.micro.f1 == pytest.approx(micro_f1(y_true, y_pred))
    pc, rc, fc, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for k, name in enumerate(names):
        assert m.classwise[name].to_dict() == pytest.approx({"precision": pc[k], "recall": rc[k], "f1": fc[k]})
    assert m.mean_class_f1 == pytest.approx(fc.mean())                      # mean of class F1
    assert m.macro.f1 == pytest.approx(2 * pc.mean() * rc.mean() / (pc.mean() + rc.mean()))  # scorer macro
    assert m.macro.f1 != pytest.approx(m.mean_class_f1)

    # hand case: class 2 absent from both -> not in the table; class 1 never predicted
    t = np.array([[1, 1, 0], [1, 0, 0]])
    q = np.array([[1, 0, 0], [0, 0, 0]])
    h = tagging_metrics(t, q, ["a", "b", "c"])
    assert list(h.classwise) == ["a", "b"] and h.counts == {"tp": 1, "fp": 0, "fn": 2}
    assert h.macro.precision == 0.5 and h.macro.recall == 0.25  # (1 + 0)/2, (0.5 + 0)/2
    assert h.mean_class_f1 == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="not scores"):
        tagging_metrics(t, q * 0.7, ["a", "b", "c"])


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.random((300, 5)) < 0.2
    y[:, 4] = False  # a class without positives
    s = np.clip(y * 0.3 + rng.random((300, 5)), 0, 1)
    ap = average_precision(y, s)
    for k in range(4):
        assert ap.per_class[k] == pytest.approx(average_precision_score(y[:, k], s[:, k]), abs=1e-5)
    assert np.isnan(ap.per_class[4]) and ap.mAP == pytest.approx(np.mean(ap.per_class[:4]))
    assert ap.to_dict(["a", "b", "c", "d", "e"])["per_class"]["e"] is None


def _biased_scores(rng, n, biases):
    """Scores whose best threshold differs per class (miscalibrated classes)."""
    y = rng.random((n, len(biases))) < np.array([0.1, 0.3, 0.5, 0.2, 0.05])
    logits = 2.5 * (y - 0.5) + rng.normal(0, 1.0, y.shape) + np.asarray(biases)
    return y, 1 / (1 + np.exp(-logits))


def test_threshold_optimisation_improves_micro_f1_and_transfers():
    rng = np.random.default_rng(3)
    biases = [-2.0, 1.5, 0.0, -1.0, 2.5]
    y_val, s_val = _biased_scores(rng, 600, biases)
    y_test, s_test = _biased_scores(rng, 600, biases)
    fit = optimise_thresholds(y_val, s_val, init=0.5)
    base_val = micro_f1(y_val, binarize(s_val, 0.5))
    assert fit.micro_f1_before == pytest.approx(base_val)
    assert fit.micro_f1_after == pytest.approx(micro_f1(y_val, binarize(s_val, fit.thresholds)))
    assert fit.micro_f1_after > base_val + 0.03
    assert fit.thresholds.shape == (5,) and len(set(np.round(fit.thresholds, 3))) > 1
    # coordinate-wise optimal: no single class threshold does better on the fit split
    for k in range(5):
        for t in np.unique(s_val[:, k]):
            trial = fit.thresholds.copy()
            trial[k] = t
            assert micro_f1(y_val, binarize(s_val, trial)) <= fit.micro_f1_after + 1e-12
    # applied unchanged to another split: still better than the default 0.5
    frozen = fit.thresholds.copy()
    assert micro_f1(y_test, binarize(s_test, frozen)) > micro_f1(y_test, binarize(s_test, 0.5)) + 0.02
    np.testing.assert_array_equal(frozen, fit.thresholds)


def test_threshold_optimisation_never_hurts_and_handles_ties():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    s = np.array([[0.4, 0.2], [0.4, 0.9], [0.4, 0.9], [0.1, 0.1]])  # ties in both columns
    fit = optimise_thresholds(y, s, init=0.5)
    assert fit.micro_f1_after >= fit.micro_f1_before
    assert fit.micro_f1_after == pytest.approx(micro_f1(y, binarize(s, fit.thresholds)))


def test_strong_label_metrics_hand_computed():
    ref = [("a", 1.0, 3.5, "Car"), ("a", 5.0, 7.0, "Bus"), ("b", 0.0, 2.0, "Car"), ("c", 0.0, 0.0, "Bus")]
    est = [("a", 1.1, 3.9, "Car"), ("a", 8.0, 9.0, "Bus"), ("b", 0.5, 1.5, "Bus"),
           ("c", 2.0, 3.0, "Bus"), ("z", 1.0, 2.0, "Car")]
    m = strong_label_metrics(ref, est, clip_length=10.0)
    # 1 s segments. a: Car ref 1-3 / sys 1-3 -> 3 TP; Bus ref 5,6 missed (2 D); Bus sys 8 (1 I).
    # b: segments 0,1 hold Car in ref and Bus in sys -> 2 substitutions. c ("not found") and z: not evaluated.
    # Nref = 7, Nsys = 6, TP = 3 -> P 1/2, R 3/7, F1 6/13; ER = (S 2 + D 2 + I 1)/7.
    seg = m.segment
    assert (seg["precision"], seg["recall"], seg["f1"]) == pytest.approx((0.5, 3 / 7, 6 / 13))
    assert (seg["error_rate"], seg["substitution_rate"], seg["deletion_rate"], seg["insertion_rate"]) == \
        pytest.approx((5 / 7, 2 / 7, 2 / 7, 1 / 7))
    assert m.segment_classwise["Car"]["f1"] == pytest.approx(0.75)  # Car: ref 5 segments, sys 3, TP 3
    # events: only a/Car matches (onset 0.1 <= 0.2 s; offset 0.4 <= max(0.2, 0.2 * 2.5 s)).
    ev = m.event
    assert (ev["precision"], ev["recall"], ev["f1"], ev["error_rate"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 4 / 3))
    # offset tolerance 0.2 * length: 0.6 s late on a 2.5 s event is a miss
    late = strong_label_metrics([("a", 1.0, 3.5, "Car")], [("a", 1.0, 4.1, "Car")])
    assert late.event["f1"] == 0.0 and late.segment["f1"] == pytest.approx(2 * 3 / (3 + 4))
    # clip c listed explicitly: its detection counts as an insertion
    with_c = strong_label_metrics(ref, est, clips=["a", "b", "c"], clip_length=10.0)
    assert with_c.segment["precision"] == pytest.approx(3 / 7) and with_c.segment["error_rate"] == pytest.approx(6 / 7)


@pytest.mark.skipif(not STRONG_GT.is_file(), reason=f"DCASE 2017 strong labels not found at {STRONG_GT}")
def test_strong_label_metrics_on_real_ground_truth():
    events, clips = read_strong_labels(STRONG_GT)
    perfect = strong_label_metrics(events, events, clips=clips, clip_length=10.0)
    assert perfect.segment["f1"] == 1.0 and perfect.segment["error_rate"] == 0.0 and perfect.event["f1"] == 1.0
    assert perfect.clips == 488
    def shift(dt):
        return [(c, on + dt, off + dt, lab) for c, on, off, lab in events]

    within = strong_label_metrics(events, shift(0.1), clips=clips)  # inside the 0.2 s collar
    assert within.event["f1"] == 1.0
    late = strong_label_metrics(events, shift(0.5), clips=clips, clip_length=10.0)  # every onset out of the collar
    assert late.event["f1"] == 0.0 and 0.5 < late.segment["f1"] < 1.0
