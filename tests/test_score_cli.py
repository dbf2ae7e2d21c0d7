"""``avtag score`` run as a subprocess on the official scorer cases."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = SHARED / "dcase2017" / "scorer_cases"
GT = CASES / "groundtruth" / "groundtruth_weak_label_testing_set.csv"
needs_shared = pytest.mark.skipif(not GT.is_file(), reason=f"DCASE 2017 scorer cases not found under {CASES}")


def avtag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avtag", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


@needs_shared
def test_score_json():
    out = avtag("score", str(CASES / "prediction" / "precision_affected_prediction.csv"), str(GT), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"micro", "macro", "classwise"} <= set(data)
    for block in [data["micro"], data["macro"], *data["classwise"].values()]:
        assert set(block) == {"precision", "recall", "f1"} and all(0.0 <= v <= 1.0 for v in block.values())
    # official output: Precision = 99.6710526316, Recall = 100.0, F1 Score = 99.8352553542
    assert data["micro"]["precision"] == pytest.approx(0.996710526316, abs=1e-11)
    assert data["micro"]["recall"] == 1.0
    assert data["micro"]["f1"] == pytest.approx(0.998352553542, abs=1e-11)
    assert data["macro"]["precision"] == pytest.approx(17 / 19) and data["macro"]["recall"] == pytest.approx(17 / 19)
    assert len(data["classwise"]) == 19 and data["classwise"]["Random Class Added1"]["precision"] == 0.0
    assert "never occur in the ground truth" in out.stderr  # the unknown labels are reported, not hidden


@needs_shared
def test_score_tables_and_official_text():
    pred = str(CASES / "prediction" / "recall_affected_prediction.csv")
    out = avtag("score", pred, str(GT))
    assert out.returncode == 0, out.stderr
    assert "micro" in out.stdout and "99.67" in out.stdout and "mean of class-wise F1" in out.stdout
    assert "Train horn" in out.stdout
    text = avtag("score", pred, str(GT), "--official-text")
    assert "\tRecall = 99.6699669967\n" in text.stdout and "\tF1 Score = 99.8347107438\n" in text.stdout


def test_score_errors_are_one_line(tmp_path):
    gt = tmp_path / "gt.tsv"
    gt.write_text("a.wav\t0.000\t10.000\tCar\n")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.wav\t0.000\t10.000\tCar\nb.wav\t0.000\t\tBus\n")
    out = avtag("score", str(bad), str(gt))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "bad.tsv:2:" in out.stderr and "Traceback" not in out.stderr
    help_out = avtag("--help")
    assert help_out.returncode == 0 and "score" in help_out.stdout
