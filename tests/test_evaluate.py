"""``avtag evaluate`` and ``avtag ablate`` end to end on a generated DCASE-format dataset.

One tiny audio model is trained once for the module. The numbers in metrics.json are
recomputed here independently (scikit-learn, and a NumPy segment-based scorer) from the
written prediction/score/event files and the generator's own ground truth.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.synthdata import make_dcase_dataset
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from avtag.cli import main
from avtag.config import load_config
from avtag.labels import DCASE2017

pytestmark = pytest.mark.slow  # trains a model for its fixture: the long tier

CLASSES = list(DCASE2017.names)
# a small, fast CRNN and a short schedule (as tests/test_training.py); the rest is the shipped config
TINY = ["model.crnn.channels=[8,16,16]", "model.crnn.freq_pool=[2,2,2]", "model.crnn.rnn_hidden=16",
        "model.spec_augment=false", "training.batch_size=8",
        "training.workers=0", "training.lr=0.003", "training.lr_schedule=constant", "training.warmup_epochs=0",
        "training.sampler=shuffle", "training.mixing.mode=none", "training.max_epochs=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Generated data (4 s clips, every 3rd an mp4 with video), one clip without media in
    test, one corrupt clip in eval, and an audio model trained on it."""
    from avtag.training.train import train

    root = tmp_path_factory.mktemp("evaluate")
    ds = make_dcase_dataset(root / "data", n_train=64, n_test=16, n_eval=8, seconds=4.0, video_every=3, seed=3)
    removed = next(c for c in ds.clips["test"] if c["path"].suffix == ".wav")
    removed["path"].unlink()
    corrupt = ds.clips["eval"][0]
    corrupt["path"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(500))
    config = ds.config(root, data={"clip_seconds": 4.0},
                       cache={"dir": str(root / "cache"), "workers": 0, "video": True})
    result = train(load_config(config, TINY), progress=False)
    return {"root": root, "ds": ds, "config": config, "model": result.model_path, "removed": removed["name"],
            "corrupt": corrupt["name"]}


# ----------------------------------------------------------------------------- independent scoring
def truth(ds, split: str, names: list[str]) -> np.ndarray:
    labels = {c["name"]: c["labels"] for c in ds.clips[split]}
    return np.array([[c in labels[n] for c in CLASSES] for n in names])


def read_predictions(path: Path) -> dict[str, set[str]]:
    """Official layout: name-only rows for clips without labels."""
    out: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        out.setdefault(fields[0][: -len(".wav")], set())
        if len(fields) == 4:
            out[fields[0][: -len(".wav")]].add(fields[3])
    return out


def read_scores(path: Path) -> tuple[list[str], np.ndarray]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert header[1:] == CLASSES
    return [r[0][: -len(".wav")] for r in rows], np.array([[float(x) for x in r[1:]] for r in rows])


def check_tagging(block: dict, y: np.ndarray, p: np.ndarray) -> None:
    """micro, class-wise and the official scorer's macro against scikit-learn."""
    mp, mr, mf, _ = precision_recall_fscore_support(y, p, average="micro", zero_division=0)
    assert block["micro"] == pytest.approx({"precision": mp, "recall": mr, "f1": mf}, abs=1e-12)
    cp, cr, cf, _ = precision_recall_fscore_support(y, p, average=None, zero_division=0)
    active = [k for k in range(len(CLASSES)) if (y[:, k] | p[:, k]).any()]  # TP + FP + FN > 0
    assert sorted(block["classwise"]) == sorted(CLASSES[k] for k in active)
    for k in active:
        assert block["classwise"][CLASSES[k]] == pytest.approx({"precision": cp[k], "recall": cr[k], "f1": cf[k]})
    P, R = np.mean(cp[active]), np.mean(cr[active])
    assert block["macro"]["f1"] == pytest.approx(2 * P * R / (P + R) if P + R else 0.0)
    assert block["mean_class_f1"] == pytest.approx(np.mean(cf[active]))


def check_map(metrics: dict, y: np.ndarray, scores: np.ndarray) -> None:
    present = [k for k in range(len(CLASSES)) if y[:, k].any()]
    ap = [average_precision_score(y[:, k], scores[:, k]) for k in present]
    assert metrics["mAP"] == pytest.approx(np.mean(ap), abs=1e-5)
    for k, value in zip(present, ap):
        assert metrics["average_precision"][CLASSES[k]] == pytest.approx(value, abs=1e-5)


def segment_scores(reference, estimated, clips, clip_seconds: float, res: float = 1.0) -> tuple[float, float]:
    """Segment-based F1 and error rate (Mesaros et al. 2016), written out with NumPy."""
    n_seg = math.ceil(clip_seconds / res)

    def roll(events, clip):
        r = np.zeros((n_seg, len(CLASSES)), dtype=bool)
        for c, on, off, label in events:
            if c == clip:
                r[math.floor(on / res): math.ceil(off / res), CLASSES.index(label)] = True
        return r

    tp = fp = fn = s = d = i = n_ref = 0
    for clip in clips:
        ref, est = roll(reference, clip), roll(estimated, clip)
        tp += (ref & est).sum()
        fp += (~ref & est).sum()
        fn += (ref & ~est).sum()
        nr, ns, ntp = ref.sum(1), est.sum(1), (ref & est).sum(1)
        s += (np.minimum(nr, ns) - ntp).sum()
        d += np.maximum(0, nr - ns).sum()
        i += np.maximum(0, ns - nr).sum()
        n_ref += nr.sum()
    return 2 * tp / (2 * tp + fp + fn), (s + d + i) / n_ref


def read_events(path: Path) -> list[tuple[str, float, float, str]]:
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return [(r[0][: -len(".wav")], float(r[1]), float(r[2]), r[3]) for r in rows]


def check_report_folder(out: Path, ds, split: str) -> dict:
    """Every number of metrics.json that a prediction/score/event file backs, recomputed."""
    metrics = json.loads((out / "metrics.json").read_text())
    names, scores = read_scores(out / "scores.tsv")
    y = truth(ds, split, names)
    for key, suffix in (("tuned", ""), ("default", "_default")):
        if key not in metrics["by_thresholds"]:
            continue
        preds = read_predictions(out / f"predictions{suffix}.tsv")
        assert sorted(preds) == sorted(names)  # every evaluated clip has a row, labelled or not
        p = np.array([[c in preds[n] for c in CLASSES] for n in names])
        check_tagging(metrics["by_thresholds"][key], y, p)
        thr = np.array([metrics["thresholds"][key]["values"][c] for c in CLASSES])
        assert np.array_equal(scores >= thr, p)  # the stated thresholds reproduce the decisions
        if metrics["strong"] is not None:
            reference = [(c["name"], on, off, lab) for c in ds.clips[split] if c["name"] in names
                         for lab, on, off in c["events"]]
            f1, er = segment_scores(reference, read_events(out / f"events{suffix}.tsv"), names, 4.0)
            seg = metrics["strong"][key]["segment_based"]
            assert seg["f1"] == pytest.approx(f1) and seg["error_rate"] == pytest.approx(er)
            assert 0.0 <= metrics["strong"][key]["event_based"]["f1"] <= 1.0
    head = metrics["by_thresholds"][metrics["decision_thresholds"]]
    assert metrics["micro"] == head["micro"] and metrics["macro"] == head["macro"]
    check_map(metrics, y, scores)
    return metrics


# ----------------------------------------------------------------------------- units
def _split(names, targets, audio, framewise=None, video=None, events=None):
    from avtag.evaluation.inference import Coverage, SplitScores

    n = len(names)
    return SplitScores("test", names, tuple(CLASSES), targets, audio, framewise,
                       0.04 if framewise is not None else None, video, events, 10.0, Coverage("test", n, n, n))


def test_oracle_frame_probabilities_detect_every_event_and_untagged_classes_stay_silent():
    from avtag.evaluation.report import evaluate_system

    events = {"a_0.000_10.000": [("Car", 1.0, 3.52), ("Bus", 5.0, 9.0)], "b_0.000_10.000": [("Train", 0.48, 2.0)]}
    names = list(events)
    framewise = np.full((2, 250, len(CLASSES)), 0.05, dtype=np.float32)
    for i, n in enumerate(names):
        for label, on, off in events[n]:
            framewise[i, round(on / 0.04): round(off / 0.04), CLASSES.index(label)] = 0.9
    truck = CLASSES.index("Truck")
    framewise[1, 100:150, truck] = 0.9  # loud frames, but the clip is not tagged with Truck
    audio = framewise.max(axis=1).astype(np.float64)
    audio[1, truck] = 0.1
    targets = np.array([[c in {e[0] for e in events[n]} for c in CLASSES] for n in names])
    ev = evaluate_system("audio", _split(names, targets, audio, framewise, events=events))
    d = ev.decisions["default"]
    assert d.tagging.micro.f1 == 1.0 and ev.ap.mAP == 1.0 and "tuned" not in ev.decisions
    assert sorted((c, on, off, lab) for c, on, off, lab in d.events) == sorted(
        (n + ".wav", on, off, lab) for n in names for lab, on, off in events[n])
    assert d.strong.segment["f1"] == 1.0 and d.strong.segment["error_rate"] == 0.0 and d.strong.event["f1"] == 1.0


def test_system_scores_video_gaps_and_prior():
    from avtag.evaluation.inference import EvaluationError, build_fusion, system_scores

    names = ["a", "b", "c"]
    targets = np.zeros((3, len(CLASSES)), dtype=bool)
    targets[:, 0] = [True, False, True]
    audio = np.full((3, len(CLASSES)), 0.8)
    video = np.full((3, len(CLASSES)), 0.2)
    video[1] = np.nan  # clip b has no video
    split = _split(names, targets, audio, video=video)
    fusion, _ = build_fusion(load_config(None, ["fusion.method=weighted", "fusion.audio_weight=0.5"]), CLASSES, None)
    np.testing.assert_allclose(system_scores(split, "fused", fusion)[:, 0], [0.5, 0.8, 0.5])
    np.testing.assert_allclose(system_scores(split, "video")[:, 0], [0.2, 0.0, 0.2])
    with pytest.raises(EvaluationError, match="validation"):
        system_scores(split, "prior")
    split.prior = targets.mean(axis=0)
    assert np.allclose(system_scores(split, "prior")[:, 0], 2 / 3)
    no_video = _split(names, targets, audio)
    with pytest.raises(EvaluationError, match="video logits"):
        system_scores(no_video, "video")
    np.testing.assert_array_equal(system_scores(no_video, "fused", fusion), audio)


def test_logistic_fusion_without_validation_video_falls_back_to_the_weighted_mean():
    """``avtag ablate fusion.method=logistic`` on a split without video ended in a TypeError (np.mean
    of the torch buffer) while writing the note that says it falls back."""
    from avtag.evaluation.inference import build_fusion

    fusion, notes = build_fusion(load_config(None, ["fusion.method=logistic", "fusion.audio_weight=0.7"]),
                                 CLASSES, None)
    assert fusion.method == "weighted"
    assert notes == ["fusion 'logistic' not fitted: fewer than 2 validation clips with audio and video; weighted "
                     "mean with audio_weight 0.70 used"]


# ----------------------------------------------------------------------------- end to end
def test_a_failed_evaluation_leaves_the_previous_report_whole(run, capsys, monkeypatch):
    """The report was written file by file in place: a run that failed halfway (a full disk while drawing a
    figure, found by a hostile sweep) left new predictions beside the old metrics.json and report.md."""
    import avtag.evaluation.figures as figures

    out = run["root"] / "eval-twice"
    args = ["evaluate", "--checkpoint", str(run["model"]), "--split", "test", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")  # what PIL raises, without a file name

    monkeypatch.setattr(figures, "draw_evaluation_figures", full_disk)
    assert main([*args, "--no-tune"]) == 2
    assert "cannot write the output" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # nothing of the failed run, nothing lost
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_evaluate_writes_a_report_whose_numbers_recompute(run, capsys):
    out = run["root"] / "eval-test"
    code = main(["evaluate", "--checkpoint", str(run["model"]), "--split", "test", "--out", str(out), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0 and "tuned" in stdout and "report.md" in stdout
    for name in ("report.md", "metrics.json", "predictions.tsv", "predictions_default.tsv", "scores.tsv", "events.tsv"):
        assert (out / name).is_file(), name
    for fig in ("classwise_f1", "pr_curves", "framewise"):
        assert (out / "figures" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = check_report_folder(out, run["ds"], "test")
    assert metrics["system"] == "fused" and metrics["decision_thresholds"] == "tuned"
    tuned = metrics["thresholds"]["tuned"]
    assert tuned["fit_on"] == "validation"
    assert tuned["validation_micro_f1_tuned"] >= tuned["validation_micro_f1_default"]
    cov = metrics["coverage"]
    n_video = sum(c["path"].suffix == ".mp4" for c in run["ds"].clips["test"])
    assert (cov["listed"], cov["cached"], cov["evaluated"], cov["missing"]) == (16, 15, 15, 1)
    assert cov["missing_clips"] == [run["removed"]] and cov["with_video"] == n_video
    # the official scorer reads the written prediction file to the same micro scores
    assert metrics["official_scorer"]["micro"] == pytest.approx(metrics["micro"])
    report = (out / "report.md").read_text()
    for section in ("## Summary", "## How the decision thresholds were chosen", "## Per-class results",
                    "## Detection (Subtask B)", "## Data coverage", "figures/pr_curves.png"):
        assert section in report
    assert run["removed"] in report and f"{100 * metrics['micro']['f1']:.2f}" in report


def test_evaluate_eval_split_prepares_it_and_reports_a_corrupt_clip(run):
    out = run["root"] / "eval-eval"
    code = main(["evaluate", "--checkpoint", str(run["model"]), "--split", "eval", "--only", "audio",
                 "--out", str(out), "--no-figures", "--no-progress"])
    assert code == 0
    metrics = check_report_folder(out, run["ds"], "eval")
    assert metrics["system"] == "audio"
    assert metrics["coverage"]["failed"] == 1 and run["corrupt"] in metrics["coverage"]["failed_clips"]
    assert metrics["coverage"]["evaluated"] == 7
    assert run["corrupt"] in (out / "report.md").read_text()


def test_ablate_compares_branches_on_the_same_clips(run, capsys):
    out = run["root"] / "ablation"
    code = main(["ablate", str(run["config"]), "--split", "test", "--out", str(out), "--no-train", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "ablation.json").read_text())
    assert (out / "ablation_classwise_f1.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "ablation.md").read_text()
    assert {(r["system"], r["thresholds"]) for r in data["rows"]} == {
        (s, t) for s in ("audio", "video", "fused", "prior") for t in ("default", "tuned")}
    assert any("re-used the trained audio model" in n for n in data["notes"])
    for system in ("audio", "video", "fused", "prior"):
        metrics = check_report_folder(out / system, run["ds"], "test")
        for row in (r for r in data["rows"] if r["system"] == system):
            block = metrics["by_thresholds"][row["thresholds"]]
            assert row["micro"] == block["micro"] and row["mAP"] == metrics["mAP"]
            assert f"{100 * row['micro']['f1']:.2f}" in table
    # the prior reference predicts the same labels for every clip
    assert len({frozenset(v) for v in read_predictions(out / "prior" / "predictions.tsv").values()}) == 1
    # rows are aligned with clips: the trained audio branch ranks far better than the class prior
    audio_map, prior_map = ({r["system"]: r["mAP"] for r in data["rows"]}[s] for s in ("audio", "prior"))
    assert audio_map > prior_map + 0.15
    # same clips, same fusion, same thresholds: the fused system equals what `evaluate` reported
    evaluated = run["root"] / "eval-test" / "metrics.json"
    if evaluated.is_file():
        fused = json.loads((out / "fused" / "metrics.json").read_text())
        assert fused["by_thresholds"] == json.loads(evaluated.read_text())["by_thresholds"]


def test_bad_input_gives_one_line_errors(run, tmp_path, capsys):
    code = main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--split", "test"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint not found" in err and err.strip().count("\n") == 0
    empty = tmp_path / "no-media"
    empty.mkdir()
    code = main(["evaluate", "--checkpoint", str(run["model"]), "--split", "test", "--no-progress",
                 "--set", f"cache.dir={tmp_path / 'cache'}", "--set", f"data.media_dirs.test={empty}"])
    err = capsys.readouterr().err
    assert code == 2 and "not prepared" in err and "no media files" in err and err.strip().count("\n") == 0
    code = main(["evaluate", "--checkpoint", str(run["model"]), "--set", "evaluate.frame_treshold=0.3"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key 'evaluate.frame_treshold'" in err and "frame_threshold" in err
    code = main(["ablate", str(run["config"]), f"output_dir={tmp_path / 'nothing'}", "--no-train", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no trained audio model" in err
