"""Hostile inputs: one table of expected outcomes, every input generated at test time, the real CLI.

Each :class:`Row` makes one hostile input (ffmpeg, PyAV, pickle or raw bytes) and
names the :class:`Run` that feeds it to ``python -m avtag`` in a subprocess, together
with the run's good files. For every row the test asserts:

* the run's exit code (``rc``: 0 ok, 1 some files failed, 2 bad input or usage);
* no traceback, no ``internal error``, no death by a signal, no hang (a timeout);
* ``message``: a fragment of the one ``avtag: error:`` / ``warning:`` / ``failed:`` line
  that names this input (None: the input is processed without complaint);
* the run's good files were processed (the row's input too when ``message`` is None);
* ``check``: anything else the row promises (a marker file not created, failed.tsv...).

Rows sharing a run are run once (one folder run tags every media row). To add a row:
write ``make(folder) -> Path`` (or reuse one below), pick or add a run, append a Row.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import faults
from helpers.mediagen import tone, write_media, write_wav
from helpers.synthdata import make_dcase_dataset

from avtag.data.cache import FeatureCache


# ----------------------------------------------------------------------------- input generators
def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def good_mp4(folder: Path, name: str = "good.mp4") -> Path:
    return write_media(folder / name, seconds=3, audio=tone(3.0, 48000), sample_rate=48000, fps=5)


def good_wav(folder: Path, name: str = "good.wav") -> Path:
    return write_wav(folder / name, tone(2.0, 16000, 880), 16000)


def missing(folder: Path) -> Path:
    return folder / "missing.wav"


def empty(folder: Path) -> Path:
    (folder / "empty.mp4").write_bytes(b"")
    return folder / "empty.mp4"


def text_as_mp4(folder: Path) -> Path:
    (folder / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    return folder / "text.mp4"


def truncated_mp4(folder: Path) -> Path:
    data = good_mp4(folder, "full.tmp.mp4").read_bytes()
    (folder / "full.tmp.mp4").unlink()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return folder / "truncated.mp4"


def eight_channel_wav(folder: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", "-ac", "8", str(folder / "a8.wav"))
    return folder / "a8.wav"


def eight_channel_mkv(folder: Path) -> Path:
    """8-channel PCM in Matroska: a container only the media decoders (PyAV) read, so a PyAV fault reaches it."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", "-ac", "8", "-c:a", "pcm_s16le",
           str(folder / "a8.mkv"))
    return folder / "a8.mkv"


def sixteen_channel_192k_wav(folder: Path) -> Path:
    """FLAC stops at 8 channels (the format's limit), so 16 channels at 192 kHz come as WAV."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=192000", "-t", "1", "-ac", "16",
           str(folder / "a16_192k.wav"))
    return folder / "a16_192k.wav"


def eight_channel_192k_flac(folder: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=192000", "-t", "1", "-ac", "8",
           str(folder / "a8_192k.flac"))
    return folder / "a8_192k.flac"


def aac_7_1_96k_video(folder: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=96000", "-t", "2", "-c:v", "mpeg4", "-c:a", "aac", "-ac", "8",
           "-channel_layout", "7.1", str(folder / "surround71.mp4"))
    return folder / "surround71.mp4"


def zero_length_audio(folder: Path) -> Path:
    return write_media(folder / "zero_audio.mp4", seconds=2, audio=np.zeros(0, np.float32), sample_rate=48000)


def video_without_audio(folder: Path) -> Path:
    return write_media(folder / "silent_video.mp4", seconds=2, audio=None)


def audio_only(folder: Path) -> Path:
    return write_media(folder / "audio_only.m4a", seconds=2, audio=tone(2.0, 48000), sample_rate=48000, video=False)


class _Payload:
    """A pickle whose loading creates ``marker`` (stands for any code an attacker wants run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_pickle(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(pickle.dumps(_Payload(folder / "PWNED")))
        return folder / name

    return make


def word_vectors(name: str) -> Callable[[Path], Path]:
    """Real word vectors written by gensim: ``.kv`` (its pickle format) or ``.txt`` (word2vec text)."""
    def make(folder: Path) -> Path:
        from gensim.models import KeyedVectors

        words = ["car", "dog", "train", "horn", "siren", "bus", "truck", "motorcycle", "bicycle", "screaming"]
        kv = KeyedVectors(vector_size=16)
        kv.add_vectors(words, np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32))
        path = folder / name
        kv.save(str(path)) if path.suffix == ".kv" else kv.save_word2vec_format(str(path), binary=False)
        return path

    return make


def no_marker(result: Result, row: Row) -> None:
    assert not (result.folder / "PWNED").exists(), "code from the user's file was executed"


# ----------------------------------------------------------------------------- runs
@dataclass
class Result:
    """One CLI run: the process, its folder and the files it processed."""

    proc: subprocess.CompletedProcess
    folder: Path
    inputs: dict[str, Path]  # row id -> input
    witnesses: list[Path]
    processed: set[str]
    rerun: Callable[..., subprocess.CompletedProcess] | None = None  # the same command again (extra args)


def avtag(args: list, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "avtag", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"avtag {' '.join(map(str, args))} hung (no result after {timeout} s)")


def json_files(stdout: str) -> set[str]:
    """Files tagged in a ``--format json`` run (a failed file's ``{file, error}`` line is not one)."""
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {Path(r["file"]).name for r in records if "error" not in r}


def run_tag(folder: Path, inputs: dict[str, Path], env: dict, extra_env: dict | None = None) -> Result:
    """``avtag tag FOLDER [missing files] --format json``: every media row in one folder run."""
    media = folder / "media"
    witnesses = [good_mp4(media), good_wav(media)]
    loose = [p for p in inputs.values() if not p.exists()]  # a missing file is named on the command line
    proc = avtag(["tag", media, *loose, "--format", "json", "--no-progress"], {**env, **(extra_env or {})})
    return Result(proc, folder, inputs, witnesses, json_files(proc.stdout))


def run_tag_with_crashing_decoder(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
    """The same folder run with avtag 0.1's PyAV downmix put back: 8-channel audio kills that decoder."""
    return run_tag(folder, inputs, faults.sitecustomize_env(folder / "site", "legacy_downmix", env))


def run_score(args: Callable[[dict[str, Path], Path], list]):
    def run(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
        proc = avtag(["score", *args(inputs, folder)], env, timeout=120)
        scored = proc.returncode == 0 and bool(proc.stdout)
        return Result(proc, folder, inputs, [], {p.name for p in inputs.values()} if scored else set())

    return run


def run_labelmap(args: Callable[[dict[str, Path], Path], list]):
    def run(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
        proc = avtag(["labelmap", *args(inputs, folder), "--json"], env, timeout=300)
        ok = proc.returncode == 0 and json.loads(proc.stdout or "{}").get("classes")
        done = {p.name for p in inputs.values()} if ok else set()
        return Result(proc, folder, inputs, [], done)

    return run


def run_tag_one(args: Callable[[dict[str, Path], Path], list], refused: bool = False):
    """``avtag tag GOOD.mp4 ARGS``; ``refused``: a bad option value stops the run before any file."""
    def run(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
        witness = good_mp4(folder / "media")
        proc = avtag(["tag", witness, *args(inputs, folder), "--format", "json", "--no-progress"], env)
        return Result(proc, folder, inputs, [] if refused else [witness], json_files(proc.stdout))

    return run


_MOUNTS: list[Path] = []


def tmpfs(folder: Path, options: str) -> Path:
    """A real small or read-only file system (tmpfs); skips the row where mounting is not allowed (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs ({out.stderr.strip() or out.returncode}); this row needs root")
    _MOUNTS.append(folder)
    return folder


def full_disk(folder: Path) -> Path:
    return tmpfs(folder / "small_disk", "size=1m")


def read_only_folder(folder: Path) -> Path:
    return tmpfs(folder / "read_only", "ro,size=1m")


def run_prepare_full_disk(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
    """``avtag prepare`` with cache.dir on a 1 MB file system: it fills after a clip or two."""
    ds = make_dcase_dataset(folder / "data", n_train=2, n_test=6, n_eval=1, seed=9)
    disk = inputs["prepare-full-disk"]
    config = ds.config(folder, cache={"workers": 1, "video": False, "dir": str(disk)})
    cmd = ["prepare", config, "--splits", "test", "--no-progress"]
    proc = avtag(cmd, env, timeout=180)
    return Result(proc, folder, {"prepare-full-disk": disk / "test"}, [], set(), lambda: avtag(cmd, env, timeout=180))


def full_disk_is_resumable(result: Result, row: Row) -> None:
    disk = result.inputs[row.id].parent
    assert not list(disk.rglob("*.tmp")), "temporary files outlived the run"
    done = len((disk / "test" / "manifest.jsonl").read_text().splitlines())
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
    again = result.rerun()
    assert again.returncode == 0, again.stderr
    assert f"{done} already cached, {6 - done} written, 0 failed" in again.stdout, again.stdout


def run_prepare(folder: Path, inputs: dict[str, Path], env: dict) -> Result:
    """``avtag prepare`` on a generated DCASE-layout set whose test clips hold a crashing and a hanging clip.

    The faults (avtag 0.1's PyAV downmix, a decoder that never returns) are installed in every
    process of the run; time limits are cut to seconds so the hang is seen quickly."""
    ds = make_dcase_dataset(folder / "data", n_train=4, n_test=6, n_eval=2, seed=5)
    clips = ds.clips["test"]
    targets = {"prepare-crash": clips[0], "prepare-hang": clips[1]}
    for row_id, made in inputs.items():  # each row's input replaces one listed clip
        clip = targets[row_id]
        clip["path"].unlink()
        clip["path"] = made.rename(clip["path"].with_suffix(made.suffix))
    config = ds.config(folder, cache={"workers": 2, "video": False})
    env = {**faults.sitecustomize_env(folder / "site", "legacy_downmix,hang,fast_timeouts", env),
           "AVTAG_TEST_HANG": targets["prepare-hang"]["path"].stem}
    cmd = ["prepare", config, "--splits", "test", "--no-progress"]
    proc = avtag(cmd, env, timeout=180)
    manifest = folder / "cache" / "test" / "manifest.jsonl"
    done = {Path(json.loads(line)["file"]).name for line in manifest.read_text().splitlines()} if manifest.exists() \
        else set()
    rerun = lambda *more, **kw: avtag([*cmd, *more], {**env, **kw}, timeout=180)  # noqa: E731
    return Result(proc, folder, {k: targets[k]["path"] for k in inputs}, [c["path"] for c in clips[2:]], done, rerun)


def prepare_retry_semantics(result: Result, row: Row) -> None:
    """Recorded once; a rerun skips it; a retry with --workers 0 (in-process before: SIGSEGV) records it again,
    once; after the clips are repaired --retry-failed clears failed.tsv for good."""
    failed_tsv = result.folder / "cache" / "test" / "failed.tsv"

    def failed_names() -> list[str]:
        return [line.split("\t")[0] for line in failed_tsv.read_text().splitlines()]

    assert len(failed_names()) == 2 == len(set(failed_names()))
    again = result.rerun()
    assert again.returncode == 0 and ", 0 written, 2 failed" in again.stdout, again.stdout + again.stderr
    retried = result.rerun("--retry-failed", "--workers", "0")
    assert retried.returncode == 0 and ", 0 written, 2 failed" in retried.stdout, retried.stdout + retried.stderr
    assert len(failed_names()) == 2 == len(set(failed_names()))
    for path in result.inputs.values():
        write_wav(path, tone(10.0, 16000), 16000)  # repaired
    for _ in range(2):
        retried = result.rerun("--retry-failed", AVTAG_TEST_HANG="nothing hangs now")
        assert retried.returncode == 0 and " 0 failed" in retried.stdout, retried.stderr
        assert failed_tsv.read_text() == ""


def cache_warned(result: Result, row: Row) -> None:
    lines = [line for line in result.proc.stderr.splitlines() if "cache" in line.lower()]
    assert lines and all(line.startswith("avtag: ") for line in lines), result.proc.stderr


def bom_stripped(result: Result, row: Row) -> None:
    assert json.loads(result.proc.stdout)["micro"]["f1"] == 1.0  # the first clip's name matched


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Row:
    id: str
    make: Callable[[Path], Path]
    run: str
    rc: int
    message: str | None = None
    check: Callable[[Result, Row], None] | None = None
    marks: tuple = ()


def scored_file(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        data = text.encode() if isinstance(text, str) else text
        (folder / name).write_bytes(data)
        return folder / name

    return make


GT = "a.wav\t0.000\t10.000\tCar\nb.wav\t0.000\t10.000\tBus\n"


def gt_file(folder: Path) -> Path:
    return scored_file("gt.tsv", GT)(folder)


RUNS: dict[str, Callable] = {
    "tag folder": run_tag,
    "tag folder, crashing decoder": run_tag_with_crashing_decoder,
    "prepare with faults": run_prepare,
    "score comma": run_score(lambda i, f: [i["score-comma"], gt_file(f)]),
    "score comma --strict": run_score(lambda i, f: [i["score-comma-strict"], gt_file(f), "--strict"]),
    "score 3 columns": run_score(lambda i, f: [i["score-3-columns"], gt_file(f)]),
    "score BOM": run_score(lambda i, f: [i["score-bom"], gt_file(f), "--strict", "--json"]),
    "score empty ground truth": run_score(lambda i, f: [scored_file("pred.tsv", GT)(f), i["score-empty-gt"]]),
    "score unlabelled ground truth": run_score(lambda i, f: [scored_file("pred.tsv", GT)(f), i["score-3col-gt"]]),
    "labelmap --encoder": run_labelmap(lambda i, f: ["--encoder", i["labelmap-kv"]]),
    "labelmap config": run_labelmap(lambda i, f: ["--config", _encoder_config(f, i["labelmap-config-model"])]),
    "labelmap word2vec text": run_labelmap(lambda i, f: ["--encoder", i["labelmap-word2vec-txt"]]),
    "labelmap trusted .kv": run_labelmap(lambda i, f: ["--encoder", i["labelmap-trusted-kv"], "--trust-pickle"]),
    "tag --encoder": run_tag_one(lambda i, f: ["--encoder", i["tag-encoder-kv"]], refused=True),
    "tag, AVTAG_CACHE a file": run_tag_one(lambda i, f: []),
    "tag, AVTAG_CACHE read-only": run_tag_one(lambda i, f: []),
    "prepare on a full disk": run_prepare_full_disk,
}


def _encoder_config(folder: Path, vectors: Path) -> Path:
    (folder / "cfg.yaml").write_text(f"label_map:\n  encoder: {vectors}\n")
    return folder / "cfg.yaml"


def cache_is_a_file(folder: Path) -> Path:
    (folder / "not_a_folder").write_text("a file where the cache folder should be\n")
    return folder / "not_a_folder"


TABLE = [
    # media: one folder run of `avtag tag` over all of them plus two good files (rc 1: some failed)
    Row("missing", missing, "tag folder", 1, "file not found"),
    Row("empty", empty, "tag folder", 1, "empty file (0 bytes)"),
    Row("text-as-mp4", text_as_mp4, "tag folder", 1, "not a readable media file"),
    Row("truncated-mp4", truncated_mp4, "tag folder", 1, "not a readable media file"),
    Row("8ch-wav", eight_channel_wav, "tag folder", 1),
    Row("16ch-192k-wav", sixteen_channel_192k_wav, "tag folder", 1),
    Row("8ch-192k-flac", eight_channel_192k_flac, "tag folder", 1),
    Row("7.1-96k-aac-video", aac_7_1_96k_video, "tag folder", 1),
    Row("zero-length-audio", zero_length_audio, "tag folder", 1),
    Row("video-without-audio", video_without_audio, "tag folder", 1),
    Row("audio-only", audio_only, "tag folder", 1),
    # a decoder that dies with SIGSEGV must cost one file of a folder run, not the run
    Row("tag-decoder-crash", eight_channel_mkv, "tag folder, crashing decoder", 1, "decoder crashed"),
    # prepare: a crash and a hang are recorded in failed.tsv, not retried, and cleared by --retry-failed
    Row("prepare-crash", eight_channel_mkv, "prepare with faults", 0, "decoder crashed (signal 11, SIGSEGV)",
        check=prepare_retry_semantics, marks=(pytest.mark.slow,)),
    Row("prepare-hang", good_wav, "prepare with faults", 0, "decoding timed out after", marks=(pytest.mark.slow,)),
    # prediction / ground-truth files
    Row("score-comma", scored_file("pred.csv", GT.replace("\t", ",")), "score comma", 0, "looks comma-separated"),
    Row("score-comma-strict", scored_file("pred.csv", GT.replace("\t", ",")), "score comma --strict", 2,
        "looks comma-separated"),
    Row("score-3-columns", scored_file("pred3.tsv", "a.wav\t0.000\tCar\nb.wav\t0.000\tBus\n"), "score 3 columns", 0,
        "the label must be the 4th field"),
    Row("score-bom", scored_file("bom.tsv", b"\xef\xbb\xbf" + GT.encode()), "score BOM", 0,
        check=bom_stripped),
    Row("score-empty-gt", scored_file("empty_gt.tsv", ""), "score empty ground truth", 2,
        "the ground truth holds no label"),
    Row("score-3col-gt", scored_file("gt3.tsv", "a.wav\t0\t10\nb.wav\t0\t10\n"), "score unlabelled ground truth", 2,
        "the ground truth holds no label"),
    # word vectors are never unpickled unless trusted
    Row("labelmap-kv", evil_pickle("evil.kv"), "labelmap --encoder", 2, "refusing to load a gensim .kv file",
        check=no_marker),
    Row("labelmap-config-model", evil_pickle("evil.model"), "labelmap config", 2,
        "refusing to load a gensim .model file", check=no_marker),
    Row("tag-encoder-kv", evil_pickle("evil.kv"), "tag --encoder", 2, "refusing to load a gensim .kv file",
        check=no_marker),
    Row("labelmap-word2vec-txt", word_vectors("vectors.txt"), "labelmap word2vec text", 0),
    Row("labelmap-trusted-kv", word_vectors("mine.kv"), "labelmap trusted .kv", 0),  # the user opted in
    # environment faults: an unusable avtag cache degrades to memory (slow: the label map is rebuilt);
    # a full disk during prepare is one line naming the cache folder, and the next run resumes
    Row("avtag-cache-is-a-file", cache_is_a_file, "tag, AVTAG_CACHE a file", 0, check=cache_warned,
        marks=(pytest.mark.slow,)),
    Row("avtag-cache-read-only", read_only_folder, "tag, AVTAG_CACHE read-only", 0, check=cache_warned,
        marks=(pytest.mark.slow,)),
    Row("prepare-full-disk", full_disk, "prepare on a full disk", 2, "no space left on device",
        check=full_disk_is_resumable, marks=(pytest.mark.slow,)),
]

#: rows whose input is an environment variable's value, not an argument
ENV_ROWS = {"avtag-cache-is-a-file": "AVTAG_CACHE", "avtag-cache-read-only": "AVTAG_CACHE"}


def _runs_agree() -> None:
    for name in RUNS:
        codes = {r.rc for r in TABLE if r.run == name}
        assert len(codes) <= 1, f"rows of run {name!r} expect different exit codes {codes}"
    assert {r.run for r in TABLE} <= RUNS.keys()


_runs_agree()


# ----------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocess environment: the session's avtag cache (shared with test_tag_cli), offline, no debug."""
    cache = tmp_path_factory.getbasetemp() / "avtag_cache"
    return {**os.environ, "AVTAG_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "AVTAG_DEBUG": "", "COLUMNS": "200"}


@pytest.fixture(scope="module", autouse=True)
def _unmount():
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())], capture_output=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory, env):
    """Runs each run once, on first use, with the inputs of all its rows."""
    done: dict[str, Result] = {}

    def get(name: str) -> Result:
        if name not in done:
            folder = tmp_path_factory.mktemp(name.replace(" ", "_").replace(",", ""))
            (folder / "media").mkdir()
            rows = [r for r in TABLE if r.run == name]
            inputs = {r.id: r.make(folder / "media") for r in rows}
            run_env = dict(env)
            for r in rows:
                if r.id in ENV_ROWS:
                    run_env[ENV_ROWS[r.id]] = str(inputs.pop(r.id))
            done[name] = RUNS[name](folder, inputs, run_env)
        return done[name]

    return get


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in TABLE])
def test_hostile_input(row: Row, results):
    result = results(row.run)
    proc = result.proc
    where = f"\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}" + where
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, where
    assert proc.returncode == row.rc, where
    lines = proc.stderr.splitlines()
    target = result.inputs.get(row.id)
    if row.message is not None:
        hits = [line for line in lines if row.message in line]
        assert hits, f"no line with {row.message!r}" + where
        if target is not None:
            assert any(str(target) in line for line in hits), f"the message does not name {target}" + where
    elif target is not None and row.id not in ENV_ROWS:
        assert target.name in result.processed, f"{target.name} was not processed" + where
        assert not [line for line in lines if str(target) in line and "error" in line], where
    missed = [w.name for w in result.witnesses if w.name not in result.processed]
    assert not missed, f"other files of the run were not processed: {missed}" + where
    failures = [line for line in lines if line.startswith("avtag: error:")]
    if row.run.startswith("tag folder"):  # the exit code counts the failures, each one line
        n = sum(1 for r in TABLE if r.run == row.run and r.message)
        assert len(failures) == n and f"avtag: {n} of " in proc.stderr, where
    if row.check is not None:
        row.check(result, row)


@pytest.mark.parametrize("command, rc", [
    (["tag", "{long}.mp4"], 1),                   # a file that cannot be opened: reported, skipped
    (["labelmap", "--encoder", "{long}.bin"], 2),
    (["evaluate", "--checkpoint", "{long}.pt"], 2),
    (["train", "{long}.yaml"], 2),
    (["score", "{long}.csv", "{long}.csv"], 2),
])
def test_a_file_name_longer_than_the_file_system_allows(tmp_path, command, rc):
    """ENAMETOOLONG from the OS is bad input: one line naming the file, never an internal error."""
    long = "n" * 300
    out = subprocess.run([sys.executable, "-m", "avtag", *(a.format(long=long) for a in command)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == rc, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    assert any("too long" in line and "avtag" in line for line in out.stderr.splitlines()), out.stderr


@pytest.mark.parametrize("command, rc", [
    (["tag", "{fifo}"], 1),                       # a media file that is a named pipe: reported, skipped
    (["score", "{fifo}", "{gt}"], 2),
    (["score", "{gt}", "{fifo}"], 2),
    (["tag", "{mp4}", "--set", "fusion.weights_file={fifo}"], 2),
    (["labelmap", "--labels", "Dog;Cat", "--set", "label_map.overrides={fifo}"], 2),
    (["corpus", "sources", "--rules", "{fifo}"], 2),
    (["train", "{fifo}"], 2),                     # a config (it said "config file not found")
])
def test_a_named_pipe_is_refused_not_waited_on(tmp_path, command, rc):
    """Reading a FIFO blocks until someone writes to it: avtag score, fusion weights, label-map
    overrides and corpus rule tables hung for ever (media said "empty file")."""
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    values = {"fifo": fifo, "gt": gt_file(tmp_path), "mp4": good_mp4(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "avtag", *(a.format(**values) for a in command)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == rc, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    assert any("not a regular file" in line and "pipe.tsv" in line for line in out.stderr.splitlines()), out.stderr


@pytest.mark.parametrize("command", [["corpus", "sources", "--rules", "{big}"], ["prepare", "{big}"]])
def test_endless_or_huge_rule_tables_and_configs_are_refused_unread(tmp_path, command):
    """``--rules /dev/zero`` read until the kernel killed the process (24 GB); a hand-written file
    is now read only up to io.common.MAX_TEXT_BYTES, and a device not at all."""
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (17 * 2**20))
    for target, reason in ((big, "larger than 16 MiB"), ("/dev/zero", "not a regular file")):
        args = [a.format(big=target) for a in command]
        out = subprocess.run([sys.executable, "-m", "avtag", *args], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and reason in out.stderr and str(target) in out.stderr, out.stderr


@pytest.mark.parametrize("command, says", [
    (["labelmap", "--top", "-1"], "expected a whole number >= 1, got -1"),
    (["evaluate", "--batch-size", "0"], "expected a whole number >= 1, got 0"),
    (["tag", "{wav}", "--checkpoint", "/dev/zero"], "not a regular file"),   # said "checkpoint not found"
    (["tag", "{wav}", "--checkpoint", "{tmp}"], "is a folder, not a checkpoint file"),
    (["explain", "{wav}", "--start", "3", "--end", "1", "--out", "{tmp}/x"], "the end must come after the start"),
    (["explain", "{wav}", "--out", "{wav}"], "--out must be a folder"),       # said "(File exists)"
    (["score", "{wav}", "{wav}", "--json", "--official-text"], "not allowed with argument --json"),  # JSON won
    (["explain", "{wav}", "--top-k", "0"], "expected a whole number >= 1, got 0"),  # wrote 0 explanations
])
def test_misleading_answers_now_name_the_real_problem(tmp_path, command, says):
    """Found by the second hostile sweep: each of these was refused, but for a reason that was not
    the problem (or not refused at all: ``--top -1`` printed every object but one)."""
    values = {"wav": good_wav(tmp_path), "tmp": tmp_path}
    out = avtag([a.format(**values) for a in command], dict(os.environ), timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if "pkg_resources" not in line]
    assert len(lines) == 1 and says in lines[0], out.stderr


def test_dcase_metadata_that_is_empty_a_folder_or_a_symlink_loop(tmp_path):
    """An empty training list was reported by ``train`` as "run avtag prepare first"; a clip list that
    is a folder as "not found"; one media file that is a symbolic link to itself aborted the whole
    ``prepare`` (now that clip fails alone, with the reason, and the others are cached)."""
    ds = make_dcase_dataset(tmp_path / "data", n_train=4, n_test=3, n_eval=1, seed=7)
    config = ds.config(tmp_path)
    env = dict(os.environ)
    first = ds.clips["train"][0]["path"]
    first.unlink()
    first.symlink_to(first.name)
    out = avtag(["prepare", str(config), "--splits", "train,validation", "--no-progress"], env)
    assert out.returncode == 0, out.stderr
    assert "Too many levels of symbolic links" in out.stdout + out.stderr
    cached = {s: FeatureCache(tmp_path / "cache", s).names() for s in ("train", "validation")}
    assert len(cached["train"]) + len(cached["validation"]) == 3

    listing = ds.metadata_dir / "testing_set.csv"
    listing.unlink()
    listing.mkdir()
    out = avtag(["prepare", str(config), "--splits", "test", "--no-progress"], env)
    assert out.returncode == 2 and "testing_set.csv: cannot read (Is a directory)" in out.stderr, out.stderr

    (ds.metadata_dir / "training_set.csv").write_text("")
    out = avtag(["prepare", str(config), "--splits", "train", "--no-progress"], env)
    assert out.returncode == 2 and "training_set.csv: lists no clips" in out.stderr, out.stderr


@pytest.mark.parametrize("override, problem", [
    ("training.lr=.nan", r"training.lr must be in \[1e-12, 10.0\], got nan"),       # torch: Invalid learning rate
    ("training.lr=.inf", "training.lr must be in"),          # a RuntimeError deep in the loss
    ("training.weight_decay=-5", "training.weight_decay must be in"),
    ("training.workers=-1", "training.workers must be in"),
    ("training.threshold=.nan", "training.threshold must be in"),
    ("model.dropout=2", "model.dropout must be in"),
    ("model.crnn.channels=[0,64,128]", r"model.crnn.channels: every entry must be in \[1, 1024\]"),
    ("model.crnn.kernel_size=0", "model.crnn.kernel_size must be in"),    # a oneDNN primitive error
    ("audio.sample_rate=1", r"audio.sample_rate must be in \[4000, 192000\]"),
    ("audio.sample_rate=1000000000", "audio.sample_rate must be in"),    # every clip 'crashed its decoder'
    ("audio.f_min=9000", "audio.f_min < audio.f_max <= audio.sample_rate / 2"),
    ("audio.n_fft=0", "audio.n_fft must be in"),
    ("audio.win_length=4096", r"audio.win_length \(4096\) must be <= audio.n_fft \(1024\)"),
    ("audio.n_mels=100000", "audio.n_mels must be in"),                  # 'can't allocate memory'
    ("cache.workers=100000", r"cache.workers must be in \[0, 256\]"),    # 400 processes, +5 GB in 30 s
])
def test_training_and_front_end_numbers_are_checked_at_config_load(override, problem):
    """The third hostile sweep: each of these ended in a library's internal error during training or
    prepare, or ran away with processes and memory; now the config load names the key."""
    from avtag.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=problem):
        load_config(Path(__file__).resolve().parents[1] / "configs" / "dcase2017.yaml", [override])


def test_overrides_after_options_and_an_output_dir_that_is_a_file(tmp_path):
    """``avtag train CONFIG --no-progress key=value`` said "unrecognized arguments" (argparse takes
    positionals only before options); an output_dir that is a file said "File exists"."""
    config = str(Path(__file__).resolve().parents[1] / "configs" / "dcase2017.yaml")
    env = dict(os.environ)
    out = avtag(["train", config, "--no-progress", "training.lr=.nan"], env, timeout=120)
    assert out.returncode == 2 and "training.lr must be in" in out.stderr, out.stderr
    out = avtag(["train", config, "--no-progress", "--bogus"], env, timeout=120)
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr, out.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    out = avtag(["train", config, f"output_dir={afile}", "--no-progress"], env, timeout=120)
    assert out.returncode == 2 and f"output_dir {afile} is a file" in out.stderr, out.stderr


def test_outputs_that_cannot_be_written_and_labels_that_look_like_markup(tmp_path):
    """Fourth sweep: a full or closed standard output ended in "internal error"; class names such as
    ``[/]`` were parsed as rich markup by ``avtag score`` (a crash after half the tables, or a silently
    rewritten name); a non-UTF-8 file name put raw bytes into ``--format json``; a failed file was missing
    from ``--format json`` although the help promises ``{file, error}``; argparse echoed 5000 characters."""
    env = dict(os.environ)
    wav = good_wav(tmp_path)
    gt = tmp_path / "gt.tsv"
    gt.write_text("a.wav\t0\t10\tCar\nb.wav\t0\t10\t[/]\nc.wav\t0\t10\t[red]Dog\n")
    out = avtag(["score", str(gt), str(gt)], env)
    assert out.returncode == 0 and "[/]" in out.stdout and "[red]Dog" in out.stdout, out.stderr

    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(wav), "--only", "audio", "--format", "json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "cannot write the output" in proc.stderr and "internal" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(wav), "--only", "audio", "--format", "json"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300, env=env,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2 and "standard output is closed" in proc.stderr, proc.stderr

    odd = tmp_path / os.fsdecode(b"x\xff.wav")
    odd.write_bytes(wav.read_bytes())
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio\n")
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(odd), str(broken), "--only", "audio",
                           "--format", "json"], capture_output=True, timeout=300, env=env)
    lines = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]  # strict UTF-8 JSON
    assert proc.returncode == 1 and len(lines) == 2
    assert lines[0]["file"] == str(odd) and lines[0]["tags"]
    assert set(lines[1]) == {"file", "error"} and lines[1]["file"] == str(broken)

    out = avtag(["tag", str(wav), "--format", "x" * 5000], env)
    assert out.returncode == 2 and len(out.stderr) < 500, len(out.stderr)
    out = avtag(["tag", str(wav), "--labels", str(tmp_path) + "/"], env)
    assert out.returncode == 2 and "is not a regular file" in out.stderr, out.stderr


def test_file_names_with_terminal_escapes_are_printed_escaped(tmp_path):
    """A file name holding ESC/BEL sequences (retitle the terminal, clear the screen, recolour) or a line
    break went to the terminal as is through ``avtag tag``'s TSV rows, its table and its error lines;
    control characters are now written out as ``\\xNN`` / ``\\n`` and every message stays one line."""
    env = dict(os.environ)
    evil = tmp_path / "a\x1b]0;owned\x07\x1b[2J.wav"
    evil.write_bytes(good_wav(tmp_path).read_bytes())
    broken = tmp_path / "b\x1b[31m\nfake line.wav"
    broken.write_text("not audio\n")
    for fmt in ("tsv", "table"):
        out = avtag(["tag", str(evil), str(broken), "--only", "audio", "--format", fmt, "--threshold", "0",
                     "--top-k", "1", "--no-progress"], env)
        assert out.returncode == 1, out.stderr
        for stream in (out.stdout, out.stderr):
            assert "\x1b" not in stream and "\x07" not in stream
        assert "a\\x1b]0;owned\\x07\\x1b[2J.wav" in out.stdout
        errors = [line for line in out.stderr.splitlines() if line.startswith("avtag: error:")]
        assert len(errors) == 1 and "b\\x1b[31m" in errors[0], out.stderr
        assert not any(line.startswith("fake line") for line in out.stderr.splitlines())
    from avtag.inference.formats import tsv_cell

    assert tsv_cell("x\\y\tz\x9b") == "x\\\\y\\tz\\x9b"  # C1 CSI too; a backslash stays reversible
