"""The DCASE 2017 Task 4 data layer on the official files as released."""
from __future__ import annotations

import csv

import pytest

from avtag.data.dcase2017 import (
    DatasetError,
    class_counts,
    read_class_list,
    read_label_file,
    read_split,
    resolve_media,
    write_missing_report,
)
from avtag.labels import DCASE2017


def test_class_list_is_the_official_17_in_order(dcase_dir):
    vocab = read_class_list(dcase_dir)
    assert len(vocab) == 17 and vocab.names == DCASE2017.names
    assert vocab.names[1] == "Air horn, truck horn" and vocab.names[7] == "Fire engine, fire truck (siren)"


def test_split_sizes(dcase_dir):
    full = read_split(dcase_dir, "train_full")
    train, val = read_split(dcase_dir, "train"), read_split(dcase_dir, "validation")
    assert len(full) == 51172
    assert len(train) + len(val) == 51172 and 0.08 < len(val) / 51172 < 0.12
    assert not {r.name for r in train} & {r.name for r in val}
    assert len(read_split(dcase_dir, "test")) == 488
    assert len(read_split(dcase_dir, "eval")) == 1103


def test_validation_split_is_seeded_and_stable(dcase_dir):
    a = [r.name for r in read_split(dcase_dir, "validation", seed=0)]
    b = [r.name for r in read_split(dcase_dir, "validation", seed=0)]
    c = [r.name for r in read_split(dcase_dir, "validation", seed=1)]
    assert a == b and a != c


def test_training_counts_per_class_equal_the_official_table(dcase_dir):
    with open(dcase_dir / "training_set_num_files_per_class.csv") as f:
        official = {row[0]: int(row[1]) for row in csv.reader(f) if row}
    assert class_counts(read_split(dcase_dir, "train_full")) == official
    assert official["Car"] == 25077 and official["Car alarm"] == 180


def test_testing_counts_per_class_equal_the_official_table(dcase_dir):
    with open(dcase_dir / "testing_set_num_files_per_class.csv") as f:
        official = {row[0]: int(row[1]) for row in csv.reader(f) if row}
    assert class_counts(read_split(dcase_dir, "test")) == official


@pytest.mark.parametrize("name", [
    "groundtruth_weak_label_training_set.csv", "groundtruth_weak_label_testing_set.csv",
    "groundtruth_weak_label_evaluation_set.csv", "groundtruth_strong_label_testing_set.csv",
    "groundtruth_strong_label_evaluation_set.csv",
])
def test_every_label_in_every_ground_truth_file_is_one_of_the_17(dcase_dir, name):
    rows = read_label_file(dcase_dir / "groundtruth_release" / name)  # raises on an unknown label
    labels = {lab for events in rows.values() for lab, _, _ in events}
    assert labels <= set(DCASE2017.names) and len(labels) >= 15


def test_strong_labels_are_attached_and_not_found_rows_dropped(dcase_dir):
    test = {r.name: r for r in read_split(dcase_dir, "test")}
    r = test["-5QrBL6MzLg_60.000_70.000"]
    assert r.labels == ("Train horn", "Train") and ("Train horn", 0.917, 2.029) in r.events
    evaluation = read_split(dcase_dir, "eval")
    events = [e for r in evaluation for e in r.events]
    assert events and all(not (on == 0 and off == 0) for _, on, off in events)
    assert all(0 <= on <= off <= 10.5 for _, on, off in events)


def test_weak_training_ground_truth_agrees_with_the_clip_list(dcase_dir):
    weak = read_label_file(dcase_dir / "groundtruth_release" / "groundtruth_weak_label_training_set.csv")
    clips = {r.name: set(r.labels) for r in read_split(dcase_dir, "train_full")}
    assert set(weak) == set(clips)
    assert all({lab for lab, _, _ in weak[n]} == clips[n] for n in list(clips)[:2000])


def test_media_resolution_reports_missing_clips(dcase_dir, tmp_path):
    records = read_split(dcase_dir, "test")
    media = tmp_path / "media"
    media.mkdir()
    for r in records[:5]:
        (media / f"{r.media_stem}.wav").write_bytes(b"RIFF")
    (media / f"{records[5].name}.mp4").write_bytes(b"x")  # unprefixed name is accepted too
    (media / "notes.txt").write_text("not media")
    found, missing = resolve_media(records, media)
    assert len(found) == 6 and len(missing) == 482
    report = write_missing_report(tmp_path / "missing.txt", missing, media)
    lines = report.read_text().splitlines()
    assert lines[0].startswith("# 482 clips") and len(lines) == 483
    assert lines[1].split("\t")[0] == missing[0].media_stem


def test_malformed_files_name_file_and_line(tmp_path):
    bad = tmp_path / "gt.csv"
    bad.write_text("a_0.000_10.000.wav\t0\t10\tCar\nb_0.000_10.000.wav\t0\t10\tSpaceship\n")
    with pytest.raises(DatasetError, match=r"gt.csv:2: unknown label 'Spaceship'"):
        read_label_file(bad)
    with pytest.raises(DatasetError, match="not found"):
        read_split(tmp_path, "test")
    with pytest.raises(DatasetError, match="unknown split"):
        read_split(tmp_path, "dev")


@pytest.mark.parametrize("row, problem", [
    ('../../outside,0.000,10.000,"Car"', "holds a path separator"),  # clip names become cache file names
    ('a\\b,0.000,10.000,"Car"', "holds a path separator"), ('..,0.000,10.000,"Car"', "holds a path separator"),
    (',0.000,10.000,"Car"', "is empty"), ('a,zero,10.000,"Car"', "are not seconds"),  # was a ValueError
])
def test_clip_lists_refuse_names_that_are_paths_and_times_that_are_not_numbers(tmp_path, row, problem):
    from avtag.data.dcase2017 import read_clip_list

    bad = tmp_path / "testing_set.csv"
    bad.write_text('ok,0.000,10.000,"Bus"\n' + row + "\n")
    with pytest.raises(DatasetError, match=r"testing_set\.csv:2: .*" + problem):
        read_clip_list(bad)


@pytest.mark.parametrize("name, problem", [("noscores.wav", "is not named <ytid>_<start>_<end>"),
                                           ("a_b_c.wav", "is not named"), ("../x_0.000_10.000.wav", "path separator")])
def test_evaluation_ground_truth_refuses_clip_names_that_are_no_clips(tmp_path, name, problem):
    gt = tmp_path / "groundtruth_release"
    gt.mkdir()
    rows = f"ok_0.000_10.000.wav\t0\t10\tCar\n{name}\t0\t10\tCar\n"
    (gt / "groundtruth_weak_label_evaluation_set.csv").write_text(rows)
    with pytest.raises(DatasetError, match=problem):  # were a ValueError: an internal error
        read_split(tmp_path, "eval")
