"""One file's frames decoded by two workers side by side, each from its own keyframe: the same clip
as one worker decodes, and the same tags."""
from __future__ import annotations

import numpy as np
from conftest import shared_path
from helpers.mediagen import write_media

from avtag.io import load_clip, probe
from avtag.io.media import sample_times, split_at_keyframes


def test_parts_start_at_keyframes_and_add_up_to_the_whole(tmp_path):
    rate = 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8 * rate) / rate).astype(np.float32)
    path = write_media(tmp_path / "v.mp4", seconds=8.0, audio=audio, sample_rate=rate, fps=10)  # a keyframe every 1.2 s
    info = probe(path)
    times = sample_times(0.0, info.duration, fps=1.0)
    first, second = split_at_keyframes(info, times, 2)
    assert len(first) and len(second) and np.array_equal(np.concatenate([first, second]), times)
    whole = load_clip(path, fps=1.0)
    a = load_clip(path, fps=1.0, frame_part=(0, 2))
    b = load_clip(path, fps=1.0, audio=False, frame_part=(1, 2))
    assert b.waveform is None and np.array_equal(a.waveform, whole.waveform)
    assert np.array_equal(np.concatenate([a.frames, b.frames]), whole.frames)
    assert np.array_equal(np.concatenate([a.frame_times, b.frame_times]), whole.frame_times)
    # one keyframe only: everything in the first part, the second is an empty clip without complaint
    assert [len(x) for x in split_at_keyframes(info, times[:1], 2)] == [1, 0]


def test_tag_file_splits_and_gives_the_batch_result(monkeypatch):
    """``tag_file`` (one file: two workers) against ``tag_files`` of several (one worker per file)."""
    from avtag import Tagger
    from avtag.config import load_config
    from avtag.inference.pipeline import FilePipeline

    split = []
    original = FilePipeline._decode_split
    monkeypatch.setattr(FilePipeline, "_decode_split", lambda self, *a: split.append(a) or original(self, *a))
    clip = shared_path("clips", "22olCB3wQaA.mp4")  # keyframes at 0 s and 6.28 s
    other = shared_path("clips", "boat.mp4")
    config = load_config(None, ["tag.decode_workers=2"])
    with Tagger.from_config(config, checkpoint="pretrained:default", device="cpu") as tagger:
        single = tagger.tag_file(clip, top_k=0, threshold=0.0, segments=True)
        batch = next(iter(tagger.tag_files([clip, other], top_k=0, threshold=0.0, segments=True)))
    assert len(split) == 1  # the single file went through the split, the batch did not
    assert single.segments == batch.segments and single.objects == batch.objects
    for name, tag in batch.scores.items():
        assert abs(single.scores[name].score - tag.score) < 1e-6, name
