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


def test_comma_separated_predictions_warn_and_strict_exits_2(tmp_path):
    gt = tmp_path / "gt.tsv"
    gt.write_text("a.wav\t0.000\t10.000\tCar\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("a.wav,0.000,10.000,Car\n")
    out = avtag("score", str(pred), str(gt), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["micro"]["f1"] == 0.0
    assert f"avtag: warning: {pred}: 1 row(s) have commas but no tab" in out.stderr
    strict = avtag("score", str(pred), str(gt), "--strict")
    assert strict.returncode == 2 and strict.stdout == ""
    assert strict.stderr.count("\n") == 1 and strict.stderr.startswith(f"avtag: error: {pred}: ")


def test_large_prediction_file_is_streamed_and_summarised(tmp_path):
    """A 45 MB prediction file of 900k clips not in the ground truth: flat memory, a short JSON."""
    gt = tmp_path / "gt.tsv"
    gt.write_text("keep.wav\t0.000\t10.000\tCar\n")
    pred = tmp_path / "pred.tsv"
    with open(pred, "w") as f:
        f.write("keep.wav\t0.000\t10.000\tCar\n")
        for block in range(90):
            f.write("".join(f"clip{block:03d}x{i:05d}_0.000_10.000.wav\t0.000\t10.000\tBus\n" for i in range(10000)))
    assert pred.stat().st_size > 40e6
    # VmHWM: this process's peak RSS (ru_maxrss would include the pytest parent it was forked from)
    code = ("import sys\nfrom avtag.cli import main\nrc = main(sys.argv[1:])\n"
            "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
            "print('maxrss_kb', hwm, file=sys.stderr)\nsys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", code, "score", str(pred), str(gt), "--json"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["micro"]["f1"] == 1.0 and data["num_audio_files"] == 900_001
    assert data["ignored_prediction_clips"]["count"] == 900_000
    assert data["ignored_prediction_clips"]["first"][:2] == ["clip000x00000_0.000_10.000.wav",
                                                             "clip000x00001_0.000_10.000.wav"]
    assert len(out.stdout) < 10_000
    peak_mb = int(out.stderr.split("maxrss_kb")[1].split()[0]) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB: the prediction file was held in memory"


def test_notes_quote_long_names_cut_short(tmp_path):
    """A 100,000-character label in a prediction file is named in a note of at most a few hundred characters."""
    gt, pred = tmp_path / "gt.tsv", tmp_path / "pred.tsv"
    gt.write_text("clip\t0\t1\tCar\n")
    pred.write_text("clip\t0\t1\t" + "x" * 100_000 + "\n")
    out = avtag("score", str(pred), str(gt))
    assert out.returncode == 0, out.stderr[-300:]
    note = next(line for line in out.stderr.splitlines() if "never occur" in line)
    assert len(note) < 300 and "xxx..." in note
