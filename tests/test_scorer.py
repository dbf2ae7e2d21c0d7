"""Parity of avtag's Subtask A scorer with the official DCASE 2017 Task 4 scorer.

The official sample cases (``../shared/dcase2017/scorer_cases``) are scored and
compared with the official printed outputs; every case is also recomputed
independently from multi-hot matrices (scikit-learn, and avtag's matrix metrics).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from avtag import AvtagError
from avtag.evaluation.metrics import tagging_metrics
from avtag.evaluation.scorer import (
    ScorerError,
    ScorerFormatError,
    py2_str,
    read_label_file,
    read_strong_labels,
    score_files,
    score_labels,
    write_predictions,
)
from avtag.labels import DCASE2017_CLASSES

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = SHARED / "dcase2017" / "scorer_cases"
GT = CASES / "groundtruth" / "groundtruth_weak_label_testing_set.csv"
needs_shared = pytest.mark.skipif(not GT.is_file(), reason=f"DCASE 2017 scorer cases not found under {CASES}")

#: prediction file -> the official scorer's printed output for it
EXPECTED = {
    "perfect_prediction.csv": "output_perfect_prediction.csv",
    "imperfect_prediction.csv": "imperfect_prediction_output.csv",
    "precision_affected_prediction.csv": "precision_affected_output.txt",
    "recall_affected_prediction.csv": "recall_affected_output.txt",
}


def _expected(name: str) -> dict[str, str]:
    text = (CASES / "expected_output" / name).read_text()
    return dict(re.findall(r"^\s*(Precision|Recall|F1 Score|Number of Audio Files) = (\S+)\s*$", text, re.M))


def _independent(pred_path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Multi-hot matrices over the clips in both files (clean files: no duplicate rows)."""
    gt, pred = read_label_file(GT).labels, read_label_file(pred_path).labels
    clips = [c for c in pred if c in gt]
    names = sorted({x for c in clips for x in gt[c] + pred[c]})
    col = {n: i for i, n in enumerate(names)}
    y_true, y_pred = np.zeros((len(clips), len(names)), int), np.zeros((len(clips), len(names)), int)
    for r, c in enumerate(clips):
        y_true[r, [col[x] for x in gt[c]]] = 1
        y_pred[r, [col[x] for x in pred[c]]] = 1
    return y_true, y_pred, names


@needs_shared
@pytest.mark.parametrize("pred_name", sorted(EXPECTED))
def test_parity_with_official_outputs(pred_name):
    result = score_files(CASES / "prediction" / pred_name, GT)
    expected = _expected(EXPECTED[pred_name])
    micro = result.micro
    assert micro.precision * 100 == pytest.approx(float(expected["Precision"]), abs=1e-9)
    assert micro.recall * 100 == pytest.approx(float(expected["Recall"]), abs=1e-9)
    assert micro.f1 * 100 == pytest.approx(float(expected["F1 Score"]), abs=1e-9)
    assert result.num_audio_files == int(expected["Number of Audio Files"]) == 488
    # the official text is reproduced digit for digit
    micro_block = result.report().split("Micro Average")[1]
    for key in ("Precision", "Recall", "F1 Score"):
        assert f"\t{key} = {expected[key]}\n" in micro_block


@needs_shared
def test_perfect_is_one_everywhere():
    result = score_files(CASES / "prediction" / "perfect_prediction.csv", GT)
    assert result.micro.f1 == result.macro.f1 == result.mean_class_f1 == 1.0
    assert len(result.classwise) == 17 and all(m.f1 == 1.0 for m in result.classwise.values())
    assert result.counts == {"tp": 606, "fp": 0, "fn": 0} and not result.warnings()


@needs_shared
@pytest.mark.parametrize("pred_path", sorted((CASES / "prediction").glob("*")) if CASES.is_dir() else [],
                         ids=lambda p: p.name)
def test_every_case_matches_an_independent_computation(pred_path):
    result = score_files(pred_path, GT)
    y_true, y_pred, names = _independent(pred_path)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    assert (result.micro.precision, result.micro.recall, result.micro.f1) == pytest.approx((p, r, f), abs=1e-12)
    matrix = tagging_metrics(y_true, y_pred, names)
    assert result.macro.to_dict() == pytest.approx(matrix.macro.to_dict(), abs=1e-12)
    assert result.mean_class_f1 == pytest.approx(matrix.mean_class_f1, abs=1e-12)
    assert set(result.classwise) == set(matrix.classwise)
    for label, m in matrix.classwise.items():
        assert result.classwise[label].to_dict() == pytest.approx(m.to_dict(), abs=1e-12)


@needs_shared
def test_cases_without_official_output():
    pred = CASES / "prediction"
    extra = score_files(pred / "extra_prediction.txt", GT)  # rows for clips not in the ground truth: ignored
    assert extra.micro.f1 == 1.0 and len(extra.ignored_prediction_clips) == 2 and extra.num_audio_files == 490
    # the extra row has end time 0.000: the scorer's last revision skips such rows
    additional = read_label_file(pred / "imperfect_prediction_additional_prediction.csv")
    assert additional.skipped_zero_end == 1
    assert score_labels(additional, read_label_file(GT)).micro.f1 == 1.0
    # rows holding only a clip name: the clip is scored, its missing labels are misses
    missing = score_files(pred / "prediction_missing.csv", GT)
    assert missing.counts == {"tp": 602, "fp": 0, "fn": 4}
    # imperfect: every label renamed -> 17 unknown labels, all FP; their class rows lower the macro
    imperfect = score_files(pred / "imperfect_prediction.csv", GT)
    assert len(imperfect.unknown_labels) == 17 and len(imperfect.classwise) == 34 and imperfect.macro.f1 == 0.0
    with pytest.raises(ScorerError, match="never occur"):
        score_files(pred / "imperfect_prediction.csv", GT, strict=True)


@needs_shared
def test_invalid_case_follows_the_scorer_code_and_its_published_output_is_stale():
    """invalid_prediction.csv drops all rows of -GCwoyCnYsY: the scorer only scores clips that
    have a prediction row, so that clip is ignored: TP 603, FN 2, recall 603/605.
    The published output (recall 99.6699669967 = 604/606) needs TP = 604 > the file's 603
    rows; it is byte-identical to the recall-affected output (two rows removed), i.e. it
    was produced before the file lost its third row. Precision (100) still agrees."""
    result = score_files(CASES / "prediction" / "invalid_prediction.csv", GT)
    expected = _expected("output_invalid_prediction.csv")
    assert result.counts == {"tp": 603, "fp": 0, "fn": 2}
    assert result.micro.recall == 603 / 605 and result.micro.precision * 100 == float(expected["Precision"])
    assert result.unscored_groundtruth_clips == ["-GCwoyCnYsY_0.000_10.000.wav"]
    assert read_label_file(CASES / "prediction" / "invalid_prediction.csv").rows == 603
    assert py2_str(604 / 606 * 100) == expected["Recall"] == _expected("recall_affected_output.txt")["Recall"]
    with pytest.raises(ScorerError, match="no prediction row"):
        score_files(CASES / "prediction" / "invalid_prediction.csv", GT, strict=True)


def _write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def test_reader_rules(tmp_path):
    gt = _write(tmp_path, "gt.csv", "a.wav\t0.000\t10.000\tCar\na.wav\t0.000\t10.000\tBus\n"
                "b.wav\t0.000\t10.000\tTrain\nc.wav\t0.000\t10.000\tCar\n", newline="\r\n")
    pred = _write(tmp_path, "pred.csv",
                  "a.flac\t0.000\t10.000\tCar\n"        # .flac and .wav name the same clip
                  "a.wav\t0.000\t10.000\tCar\n"         # duplicate: a micro FP, not a class-wise FP
                  "a.wav\t0.000\t10.000\tDog\n"         # unknown label: FP, own class row
                  "b.wav\n"                             # clip without label: scored, Train is a miss
                  "b.wav\t0.000\t0.000\tTrain\n"        # end time 0: skipped
                  "x.wav\t0.000\t10.000\tCar\n"         # clip not in the ground truth: ignored
                  "\n")                                  # blank line: an empty clip key, harmless
    result = score_files(pred, gt)
    assert result.counts == {"tp": 1, "fp": 2, "fn": 2}
    assert result.classwise_counts == {"Car": {"tp": 1, "fp": 0, "fn": 0}, "Train": {"tp": 0, "fp": 0, "fn": 1},
                                       "Bus": {"tp": 0, "fp": 0, "fn": 1}, "Dog": {"tp": 0, "fp": 1, "fn": 0}}
    # scorer macro: mean P over 4 classes (Car 1, Dog 0; Train/Bus have no TP+FP) = 1/4,
    # mean R over 4 classes (Car 1, Train 0, Bus 0; Dog has no TP+FN) = 1/4
    assert result.macro.precision == result.macro.recall == 0.25 and result.macro.f1 == 0.25
    assert result.mean_class_f1 == 0.25
    assert result.unscored_groundtruth_clips == ["c.wav"] and result.ignored_prediction_clips[0] == "x.wav"
    assert result.unknown_labels == ["Dog"]


def test_malformed_rows_raise_one_line_errors(tmp_path):
    gt = _write(tmp_path, "gt.csv", "a.wav\t0\t10\tCar\n")
    bad = _write(tmp_path, "bad.csv", "a.wav\t0\t10\tCar\na.wav\t0\tten\tBus\n")
    with pytest.raises(ScorerFormatError, match=r"bad\.csv:2: end time 'ten' is not a number") as err:
        score_files(bad, gt)
    assert isinstance(err.value, AvtagError) and "\n" not in str(err.value)
    renamed = _write(tmp_path, "y.csv", "Ya.wav\t0\t10\tCar\n")
    with pytest.raises(ScorerError, match="leading 'Y'"):
        score_files(renamed, gt)
    with pytest.raises(ScorerError, match="cannot read"):
        score_files(tmp_path / "absent.csv", gt)


def test_round_trip_predictions_file_metrics(tmp_path):
    rng = np.random.default_rng(0)
    names = ["Car", "Bus", "Train horn", "Screaming"]
    clips = [f"clip{i:03d}_{10 * i:.3f}_{10 * i + 10:.3f}.wav" for i in range(60)]
    y_true = rng.random((60, 4)) < 0.3
    y_true[np.arange(60), rng.integers(0, 4, 60)] = True  # every clip has a label
    y_pred = rng.random((60, 4)) < 0.35                     # some clips get no label at all
    assert (~y_pred.any(1)).any()

    def as_dict(y):
        return {c: [n for n, v in zip(names, row) if v] for c, row in zip(clips, y)}

    write_predictions(tmp_path / "gt.tsv", as_dict(y_true))
    write_predictions(tmp_path / "pred.tsv", as_dict(y_pred))
    back = read_label_file(tmp_path / "pred.tsv")
    assert {k: sorted(v) for k, v in back.labels.items()} == {c[:-4]: sorted(v) for c, v in as_dict(y_pred).items()}
    first = as_dict(y_true)[clips[0]][0]
    assert (tmp_path / "gt.tsv").read_text().splitlines()[0] == f"{clips[0]}\t0.000\t10.000\t{first}"
    result = score_files(tmp_path / "pred.tsv", tmp_path / "gt.tsv")
    matrix = tagging_metrics(y_true, y_pred, names)
    assert result.micro.to_dict() == pytest.approx(matrix.micro.to_dict(), abs=1e-12)
    assert result.macro.to_dict() == pytest.approx(matrix.macro.to_dict(), abs=1e-12)
    assert result.scored_clips == 60  # label-less clips are still scored: their labels are misses
    assert score_files(tmp_path / "gt.tsv", tmp_path / "gt.tsv").micro.f1 == 1.0
    with pytest.raises(ScorerError, match="tab"):
        write_predictions(tmp_path / "x.tsv", {"a.wav": ["Car\tBus"]})


@needs_shared
def test_strong_label_file():
    path = SHARED / "dcase2017" / "groundtruth_release" / "groundtruth_strong_label_testing_set.csv"
    events, clips = read_strong_labels(path)
    rows = [r.split("\t") for r in path.read_text().splitlines() if r.strip()]
    not_found = sum(float(r[1]) == 0 and float(r[2]) == 0 for r in rows)
    assert len(clips) == 488 and len(events) == len(rows) - not_found and not_found > 0
    assert all(0 <= on <= off <= 10.0 for _, on, off, _ in events)
    assert {e[3] for e in events} <= set(DCASE2017_CLASSES)


# ----------------------------------------------------------------------------- hostile files
def test_streamed_prediction_file_counts_exactly_like_the_full_read(tmp_path):
    """Clips outside the ground truth are only counted while streaming; the scorer's counter stays exact
    (rows before a clip registers count, end-time-0 rows do not register, blank lines, repeats)."""
    rng = np.random.default_rng(7)
    keys = [f"k{i}" for i in range(40)]
    gt = _write(tmp_path, "gt.csv", "".join(f"{k}.wav\t0\t10\tCar\n" for k in keys[:10]))
    rows = []
    for _ in range(600):
        k = keys[rng.integers(0, 40)]
        kind = rng.integers(0, 5)
        rows.append([f"{k}.wav\t0\t10\tCar", f"{k}.wav\t0\t0\tBus", f"{k}.wav", "", f"{k}.flac\t0\t10\tTrain"][kind])
        if rng.random() < 0.3:
            rows.append(rows[-1])  # consecutive repeats
    pred = _write(tmp_path, "pred.csv", "\n".join(rows) + "\n")
    full, streamed = read_label_file(pred), read_label_file(pred, keep=read_label_file(gt).labels)
    assert streamed.count == full.count and streamed.rows == full.rows
    assert streamed.skipped_zero_end == full.skipped_zero_end and streamed.unlabelled_rows == full.unlabelled_rows
    assert streamed.labels == {k: v for k, v in full.labels.items() if k in keys[:10]}
    ignored = [full.names[k] for k in full.labels if k not in keys[:10] and k]
    assert streamed.dropped_clips == len(ignored) and streamed.dropped_names == ignored[:10]
    a, b = score_files(pred, gt), score_labels(full, read_label_file(gt))
    assert a.to_dict() == b.to_dict() and a.num_audio_files == full.count


def test_utf8_bom_is_not_part_of_the_first_clip_name(tmp_path):
    gt = _write(tmp_path, "gt.csv", "a.wav\t0\t10\tCar\nb.wav\t0\t10\tBus\n")
    pred = tmp_path / "pred.csv"
    pred.write_bytes(b"\xef\xbb\xbfa.wav\t0\t10\tCar\nb.wav\t0\t10\tBus\n")
    result = score_files(pred, gt, strict=True)
    assert result.micro.f1 == 1.0 and result.scored_clips == 2
    assert list(read_label_file(pred).names.values())[0] == "a.wav"


@pytest.mark.parametrize("layout,text,problem", [
    ("comma", "a.wav,0,10,Car\nb.wav,0,10,Bus\n", "looks comma-separated"),
    ("three columns", "a.wav\t0\tCar\nb.wav\t0\tBus\n", "the label must be the 4th field"),
])
def test_misformatted_predictions_warn_and_strict_rejects(tmp_path, layout, text, problem):
    gt = _write(tmp_path, "gt.csv", "a.wav\t0\t10\tCar\nb.wav\t0\t10\tBus\n")
    pred = _write(tmp_path, "pred.csv", text)
    result = score_files(pred, gt)  # the official numbers: every clip unlabelled, F1 0 ...
    assert result.micro.f1 == 0.0 and result.counts == {"tp": 0, "fp": 0, "fn": 2}
    first = result.warnings()[0]  # ... but said first, naming the file and the line
    assert first.startswith(f"{pred}: 2 row(s)") and problem in first and "first at line 1" in first
    with pytest.raises(ScorerError, match=problem) as err:
        score_files(pred, gt, strict=True)
    assert str(err.value).startswith(str(pred)) and "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["", "a.wav\t0\t10\nb.wav\t0\t10\n", "a.wav,0,10,Car\n"])
def test_groundtruth_without_labels_is_blamed_on_the_groundtruth(tmp_path, text):
    gt = _write(tmp_path, "gt.csv", text)
    pred = _write(tmp_path, "pred.csv", "a.wav\t0\t10\tCar\n")
    with pytest.raises(ScorerError) as err:
        score_files(pred, gt)
    message = str(err.value)
    assert message.startswith(f"{gt}: the ground truth holds no label") and str(pred) not in message


def test_rows_whose_times_are_no_span_warn_and_strict_rejects(tmp_path):
    """Start after end, negative or non-finite times were accepted silently, even with --strict; the
    weak-label scorer ignores times (their labels count, as the official scorer counts them)."""
    gt = _write(tmp_path, "gt.csv", "a.wav\t0\t10\tCar\nb.wav\t0\t10\tBus\n")
    rows = "a.wav\t0\t10\tCar\na.wav\t5\t2\tBus\nb.wav\t-1\t1e400\tBus\nb.wav\t0\tnan\tCar\n"
    pred = _write(tmp_path, "pred.csv", rows)
    result = score_files(pred, gt)
    assert result.counts == {"tp": 2, "fp": 2, "fn": 0}
    first = result.warnings()[0]
    assert first.startswith(f"{pred}: 3 row(s) have times that are not a span") and "first at line 2" in first
    with pytest.raises(ScorerError, match="not a span"):
        score_files(pred, gt, strict=True)
    assert not score_files(gt, gt).warnings()


def test_strong_labels_need_a_span_and_long_fields_are_cut(tmp_path):
    for times in ("5\t2", "-1\t3", "0\tnan", "0\tinf"):
        path = _write(tmp_path, "strong.tsv", f"a.wav\t{times}\tCar\n")
        with pytest.raises(ScorerFormatError, match=r"strong\.tsv:1: onset .* is not a span"):
            read_strong_labels(path)
    path = _write(tmp_path, "strong.tsv", "a.wav\t0\t" + "x" * 1_000_000 + "\tCar\n")
    with pytest.raises(ScorerFormatError, match="are not numbers") as err:
        read_strong_labels(path)
    assert len(str(err.value)) < 300
    gt = _write(tmp_path, "gt.csv", "a.wav\t0\t10\tCar\n")
    for text in ("b" * 1_000_000 + "\t0\t10\tCar\n", "a.wav\t0\t" + "9" * 1_000_000 + "x\tCar\n"):
        with pytest.raises(ScorerError) as err:  # a 50 MB clip name made a 50 MB "one line"
            score_files(_write(tmp_path, "pred.csv", text), gt)
        assert len(str(err.value)) < 400, str(err.value)[:200]
