"""Decoding in isolated worker processes (avtag.io.IsolatedDecoder) against real crashes and hangs.

The crash is genuine: ``faults.legacy_downmix`` puts back avtag 0.1's PyAV downmix,
which dies with SIGSEGV inside PyAV on 8-channel audio. The hang is a decoder that
sleeps on files named ``hang*``.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import faults
from helpers.mediagen import tone, write_media, write_wav

from avtag.io import DecodeJob, IsolatedDecoder, MediaError, iter_windows, load_clip

SR = 16000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("iso")
    a = tone(3.0, 48000, 440)
    good = write_media(d / "good.mp4", seconds=3, audio=a, sample_rate=48000)
    # 8 channels in Matroska, read by PyAV (WAV goes through libsndfile, which the crash fault leaves alone)
    eight = write_media(d / "eight.mkv", seconds=2, audio=tone(2.0, 16000), channels=8, video=False,
                        audio_codec="pcm_s16le")
    hang = write_wav(d / "hang.wav", tone(2.0, 16000), 16000)
    other = write_wav(d / "other.wav", tone(2.0, 22050, 1000), 22050)
    return {"good": good, "eight": eight, "hang": hang, "other": other, "missing": d / "missing.wav"}


def _faulty(workers=2, **kwargs):
    return IsolatedDecoder(workers, initializer=faults.crash_and_hang, timeout_base_s=2.0, timeout_per_media_s=0.1,
                           **kwargs)


def test_crash_and_hang_cost_one_file_each(files):
    order = ["good", "eight", "hang", "missing", "other", "good"]
    t0 = time.monotonic()
    with _faulty(load_kwargs={"fps": 2}) as dec:
        results = list(dec.imap([files[k] for k in order]))
        assert dec.stats["crashed"] == 1 and dec.stats["timed_out"] == 1
        assert all(0 < s < 10 for s in dec.startup_seconds())
    assert time.monotonic() - t0 < 30
    assert [job for job, _, _ in results] == [files[k] for k in order]  # input order, the job as given
    errors = {k: err for k, (_, _, err) in zip(order, results, strict=True) if err}
    assert errors.keys() == {"eight", "hang", "missing"}
    assert errors["eight"] == f"{files['eight']}: decoder crashed (signal 11, SIGSEGV)"
    assert errors["hang"].startswith(f"{files['hang']}: decoding timed out after ")
    assert errors["missing"] == f"{files['missing']}: file not found"
    same = load_clip(files["good"], fps=2)  # in process: the worker's clip is the same clip
    for _, clip, err in (results[0], results[5]):
        assert err is None and np.array_equal(clip.waveform, same.waveform)
        assert np.array_equal(clip.frames, same.frames) and clip.warnings == same.warnings
    assert results[4][1].waveform.size == 2 * SR


def test_multichannel_file_decodes_in_a_worker_without_faults(files):
    with IsolatedDecoder(1) as dec:
        clip = dec.load_clip(files["eight"])
        assert clip.waveform.size == 2 * SR
        info = dec.probe(files["eight"])
        assert (info.channels, info.sample_rate, info.has_video) == (8, 16000, False)
        with pytest.raises(MediaError, match="file not found"):
            dec.load_clip(files["missing"])
        assert dec.load_clip(files["other"], sample_rate=8000).sample_rate == 8000  # per-job arguments


def test_load_clip_raises_one_line_and_the_next_file_works(files):
    with _faulty(1) as dec:
        with pytest.raises(MediaError) as err:
            dec.load_clip(files["eight"])
        assert str(err.value) == f"{files['eight']}: decoder crashed (signal 11, SIGSEGV)"
        assert dec.load_clip(files["other"]).waveform is not None


def test_imap_keeps_at_most_max_pending_clips_in_flight(files):
    pulled = []

    def jobs():
        for i in range(12):
            pulled.append(i)
            yield DecodeJob(files["other"], {"video": False}, key=i)

    with IsolatedDecoder(2) as dec:
        seen = []
        for job, _, err in dec.imap(jobs(), max_pending=3):
            assert err is None and len(pulled) - len(seen) <= 3
            seen.append(job.key)
            time.sleep(0.05)  # the caller works; workers keep decoding meanwhile
        assert seen == list(range(12))
        unordered = [job.key for job, _, _ in dec.imap(jobs(), ordered=False, max_pending=4)]
        assert sorted(unordered) == list(range(12))


def test_stopping_imap_early_leaves_the_decoder_usable(files):
    with IsolatedDecoder(2) as dec:
        for _ in dec.imap([files["good"]] * 6):
            break
        assert dec.load_clip(files["other"]).waveform is not None


def test_windows_of_a_long_file_in_a_worker(files, tmp_path):
    long = write_wav(tmp_path / "long.wav", tone(30.0, 8000, 300), 8000)
    with _faulty(1) as dec:
        windows = list(dec.iter_windows(long, 5.0, sample_rate=8000, video=False))
        local = list(iter_windows(long, 5.0, sample_rate=8000, video=False))
        assert [w.start for w in windows] == [w.start for w in local] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
        assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(windows, local, strict=True))
        with pytest.raises(MediaError, match=r"eight\.mkv: decoder crashed \(signal 11, SIGSEGV\) at window 1"):
            list(dec.iter_windows(files["eight"], 1.0, video=False))
        for _ in dec.iter_windows(long, 5.0, sample_rate=8000, video=False):
            break  # stopping early stops that worker; the next stream gets a fresh one
        assert len(list(dec.iter_windows(files["good"], 1.0))) == 3


def test_an_idle_pool_worker_streams_and_returns_to_the_pool(files, tmp_path):
    """A long file is streamed by an idle, already started worker (no start-up to wait for), which then
    decodes files again: no extra process at any point."""
    long = write_wav(tmp_path / "long.wav", tone(12.0, 8000, 300), 8000)
    with IsolatedDecoder(1) as dec:
        before = dec.worker_pids()
        assert dec.load_clip(files["good"]).waveform is not None  # the worker is up
        assert len(list(dec.iter_windows(long, 5.0, sample_rate=8000, video=False))) == 3
        assert dec.worker_pids() == before and dec._streamer is None
        assert dec.load_clip(files["other"]).waveform is not None
        assert dec.worker_pids() == before


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_killed_parent_leaves_no_worker_behind(files, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(faults.TESTS)!r})
        from helpers import faults
        from avtag.io import IsolatedDecoder
        if __name__ == "__main__":
            dec = IsolatedDecoder(2, initializer=faults.hang).__enter__()
            for job, clip, err in dec.imap([{str(files['other'])!r}]):
                pass
            print(" ".join(map(str, dec.worker_pids())), flush=True)
            for _ in dec.imap([{str(files['hang'])!r}]):  # a worker is stuck in the decoder now
                pass
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    # the workers hold the parent's stdout/stderr pipes: communicate() returns once every one has gone
    out, err = proc.communicate(timeout=20)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]
    assert err == ""  # no traceback from an orphan


def test_worker_start_up_is_cheap_and_imports_no_torch(files):
    import torch  # noqa: F401  (loaded in this process: the workers must not inherit or import it)

    with IsolatedDecoder(1) as dec:
        dec.load_clip(files["other"])
        (startup,) = dec.startup_seconds()
        maps = open(f"/proc/{dec.worker_pids()[0]}/maps").read()
    assert startup < 5.0
    assert "libtorch" not in maps and "avformat" in maps
