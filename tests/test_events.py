"""Localization: frame-wise probabilities -> events; DCASE strong-label TSV I/O."""
import io

import numpy as np
import pytest
import torch
from conftest import shared_path

from avtag import AvtagError
from avtag.events import clip_file_name, events_to_rows, framewise_to_events, read_events_tsv, write_events_tsv
from avtag.labels import DCASE2017, Vocabulary

VOC = Vocabulary(("Car", "Train horn", "Screaming"))
HOP = 0.04


def activity(T=250, **spans):
    """Frame-wise probabilities (T, 3) with 0.9 inside the given frame spans, 0.1 elsewhere."""
    y = np.full((T, 3), 0.1, dtype=np.float32)
    for label, ranges in spans.items():
        c = VOC.index(label.replace("_", " ").capitalize() if label != "train_horn" else "Train horn")
        for a, b in ranges:
            y[a:b, c] = 0.9
    return y


def test_events_have_onsets_and_offsets_in_seconds():
    y = activity(car=[(25, 75)], train_horn=[(100, 150), (200, 225)])
    events = framewise_to_events(y, HOP, VOC)
    assert events == [("Car", 1.0, 3.0), ("Train horn", 4.0, 6.0), ("Train horn", 8.0, 9.0)]


def test_event_running_to_the_end_and_duration_clip():
    y = activity(screaming=[(240, 250)])
    assert framewise_to_events(y, HOP, VOC) == [("Screaming", 9.6, 10.0)]
    assert framewise_to_events(y, HOP, VOC, duration=9.8) == [("Screaming", 9.6, 9.8)]


def test_per_class_thresholds():
    y = np.zeros((100, 3), dtype=np.float32)
    y[10:20, 0] = 0.4
    y[30:40, 1] = 0.4
    assert framewise_to_events(y, HOP, VOC, threshold=0.5) == []
    events = framewise_to_events(y, HOP, VOC, threshold=np.array([0.3, 0.5, 0.5]))
    assert events == [("Car", 0.4, 0.8)]
    with pytest.raises(AvtagError, match="one per class"):
        framewise_to_events(y, HOP, VOC, threshold=[0.5, 0.5])


def test_median_filter_removes_spikes_and_fills_holes():
    y = activity(car=[(20, 40), (41, 60)], train_horn=[(100, 101)])  # 1-frame hole, 1-frame spike
    raw = framewise_to_events(y, HOP, VOC)
    assert len(raw) == 3
    smooth = framewise_to_events(y, HOP, VOC, median_filter_s=0.2)  # 5 frames
    assert smooth == [("Car", 0.8, 2.4)]


def test_min_duration_and_min_gap():
    y = activity(car=[(10, 13), (50, 80), (85, 100)])
    assert framewise_to_events(y, HOP, VOC, min_duration_s=0.2) == [("Car", 2.0, 3.2), ("Car", 3.4, 4.0)]
    assert framewise_to_events(y, HOP, VOC, min_duration_s=0.2, min_gap_s=0.3) == [("Car", 2.0, 4.0)]


def test_accepts_torch_and_checks_shapes():
    y = torch.from_numpy(activity(car=[(0, 10)]))
    assert framewise_to_events(y, HOP, list(VOC.names)) == [("Car", 0.0, 0.4)]
    with pytest.raises(AvtagError, match="time_frames"):
        framewise_to_events(np.zeros((10, 4)), HOP, VOC)
    with pytest.raises(AvtagError, match="frame_hop"):
        framewise_to_events(np.zeros((10, 3)), 0.0, VOC)


def test_tsv_round_trip(tmp_path):
    rows = events_to_rows("Y-5QrBL6MzLg_60.000_70.000.mp4", [("Train horn", 0.917, 2.029), ("Car", 3.0, 9.5)])
    assert rows[0][0] == "-5QrBL6MzLg_60.000_70.000.wav"
    path = tmp_path / "pred.tsv"
    assert write_events_tsv(rows, path) == 2
    assert path.read_text().splitlines()[0] == "-5QrBL6MzLg_60.000_70.000.wav\t0.917\t2.029\tTrain horn"
    assert read_events_tsv(path) == rows
    buf = io.StringIO()
    write_events_tsv(rows, buf)
    assert buf.getvalue() == path.read_text()


def test_tsv_reader_is_lenient_with_crlf_and_skips_not_found_rows():
    text = "a_0.000_10.000.wav\t0\t0\tCar\r\nb_0.000_10.000.wav\t1.5\t2\tBus\r\n\r\n"
    assert read_events_tsv(io.StringIO(text)) == [("b_0.000_10.000.wav", 1.5, 2.0, "Bus")]
    assert len(read_events_tsv(io.StringIO(text), keep_empty=True)) == 2
    with pytest.raises(AvtagError, match=":1:"):
        read_events_tsv(io.StringIO("a.wav\tx\t1\tCar\n"))
    with pytest.raises(AvtagError, match="expected"):
        read_events_tsv(io.StringIO("a.wav 1 2 Car\n"))


@pytest.mark.parametrize("onset, offset", [("1", "inf"), ("nan", "2"), ("0", "1e300"), ("3", "2"), ("-1", "2")])
def test_tsv_reader_refuses_times_that_are_no_span(onset, offset):
    """Ground truth with such times reached sed_eval's event roll and ended in an internal error
    (inf, NaN, 1e300) or was scored silently (reversed, negative)."""
    with pytest.raises(AvtagError) as err:
        read_events_tsv(io.StringIO(f"a_0.000_10.000.wav\t0.5\t1\tCar\na_0.000_10.000.wav\t{onset}\t{offset}\tBus\n"))
    assert str(err.value).startswith("<stream>:2: onset/offset") and "not a span" in str(err.value)


def test_clip_file_name():
    assert clip_file_name("abc_30.000_40.000") == "abc_30.000_40.000.wav"
    assert clip_file_name("/x/Y-5QrBL6MzLg_60.000_70.000.wav") == "-5QrBL6MzLg_60.000_70.000.wav"
    assert clip_file_name("YabcdefghijK_0.000_10.000.mkv") == "abcdefghijK_0.000_10.000.wav"
    assert clip_file_name("Yabcdefghij_0.000_10.000.wav") == "Yabcdefghij_0.000_10.000.wav"  # an ID that starts with Y


def test_reads_the_official_strong_label_file():
    path = shared_path("dcase2017", "groundtruth_release", "groundtruth_strong_label_testing_set.csv")
    rows = read_events_tsv(path)
    lines = [line.split("\t") for line in path.read_text().replace("\r", "").splitlines() if line.strip()]
    found = [fields for fields in lines if not (float(fields[1]) == 0 and float(fields[2]) == 0)]
    assert len(rows) == len(found) > 100
    assert all(label in DCASE2017 for _, _, _, label in rows)
    assert all(0 <= on <= off <= 10.01 for _, on, off, _ in rows)
