"""``avtag tag --ray``: a local Ray cluster with 2 CPUs tags ../shared/clips (and a corrupt file) and writes
the same JSON lines as ``avtag tag --format json``; a killed run resumes, one line per file in the end."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'avtag[ray]'")

pytestmark = [pytest.mark.slow, pytest.mark.shared]

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
#: JSON scores are rounded to 4 decimals: two runs may differ by one unit of the last decimal
SCORE_TOLERANCE = 1e-4 + 1e-9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the cluster's token (Ray >= 2.59 authenticates clients of a cluster started with ``ray start``)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster with 2 CPUs (``ray start --head``), stopped afterwards."""
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    start = subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)


def _tag(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, **RAY_ENV}
    return subprocess.run([sys.executable, "-m", "avtag", "tag", *map(str, args), "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=1500)


def _rows(text: str) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for line in text.splitlines():
        row = json.loads(line)
        rows.setdefault(row["file"], row)  # first line per file
    return rows


def test_ray_tags_like_one_process_and_resumes(clips_dir, ray_cluster, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    inputs = [clips_dir, broken]

    single = _tag(*inputs, "--format", "json")
    assert single.returncode == 1, single.stderr  # the corrupt file fails, the others are tagged
    expected = _rows(single.stdout)
    # one process reports a failure on stderr ("avtag: error: REASON"); on Ray it is a {file, error} row
    errors = [line.split("avtag: error: ", 1)[1] for line in single.stderr.splitlines() if "avtag: error: " in line]
    assert len(errors) == 1 and str(broken) in errors[0]
    expected[str(broken)] = {"file": str(broken), "error": errors[0]}

    out = tmp_path / "results.jsonl"
    ray = _tag(*inputs, "--ray", ray_cluster, "--out", out)
    assert ray.returncode == 1, ray.stderr
    assert "1 failed" in ray.stderr and "tagger actor" in ray.stderr
    lines = out.read_text().splitlines()
    got = _rows(out.read_text())
    assert len(lines) == len(got) == len(expected) == 14  # one line per file

    assert set(got) == set(expected)
    for file, want in expected.items():
        row = got[file]
        if "error" in want:
            assert row == want  # {file, error} with the same reason
            continue
        assert set(row) == set(want) and row["notes"] == want["notes"] and row["branches"] == want["branches"]
        assert row["duration"] == want["duration"]
        assert [t["label"] for t in row["tags"]] == [t["label"] for t in want["tags"]], file
        for a, b in zip(row["tags"], want["tags"]):
            for key in ("score", "audio_score", "video_score"):
                assert (a[key] is None) == (b[key] is None)
                if a[key] is not None:
                    assert abs(a[key] - b[key]) <= SCORE_TOLERANCE, (file, a, b)
        assert [o["label"] for o in row["objects"]] == [o["label"] for o in want["objects"]]

    # a run killed while writing: 3 lines lost, the next one cut half-way; the rerun does just those 4
    kept = lines[:10]
    out.write_text("\n".join(kept) + "\n" + lines[10][: len(lines[10]) // 2])
    again = _tag(*inputs, "--ray", ray_cluster, "--out", out)
    assert again.returncode in (0, 1), again.stderr
    assert "10 already in" in again.stderr and "4 file(s) tagged" in again.stderr
    final = out.read_text().splitlines()
    assert len(final) == 14 and set(_rows(out.read_text())) == set(expected)
    assert _rows("\n".join(final[:10])) == _rows("\n".join(kept))

    # nothing left to do: no work, exit 0
    done = _tag(*inputs, "--ray", ray_cluster, "--out", out)
    assert done.returncode == 0 and "0 file(s) tagged" in done.stderr and "14 already in" in done.stderr


def test_ray_arguments_are_checked(tmp_path):
    clip = tmp_path / "x.wav"
    shutil.copy(REPO / "tests" / "helpers" / "synthdata.py", clip)  # any file: the arguments are refused first
    r = _tag(clip, "--ray")
    assert r.returncode == 2 and "--ray needs --out FILE" in r.stderr and "Traceback" not in r.stderr
    r = _tag(clip, "--out", tmp_path / "o.jsonl")
    assert r.returncode == 2 and "add --ray" in r.stderr
    r = _tag(clip, "--ray", "--out", tmp_path / "o.jsonl", "--format", "tsv")
    assert r.returncode == 2 and "--format tsv" in r.stderr


def test_actors_that_cannot_start_end_the_run_in_one_line(ray_cluster, tmp_path):
    """More tagger actors than a 2-CPU cluster has CPUs can never all start; the run used to wait for
    ever (so did one whose worker processes died at start under a memory limit). Now it fails after
    ``actor_start_timeout_s`` with a RayTagError, and writes nothing it did not tag."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.mediagen import tone, write_wav

    clip = write_wav(tmp_path / "tone.wav", tone(2.0, 16000), 16000)
    out = tmp_path / "o.jsonl"
    code = ("import sys\nfrom avtag.inference.distributed import RayTagError, tag_with_ray\n"
            f"try:\n    tag_with_ray([{str(clip)!r}], {str(out)!r}, address={ray_cluster!r}, actors=4, gpus=False,"
            " progress=False, actor_start_timeout_s=20)\nexcept RayTagError as exc:\n    print(exc)\n    sys.exit(2)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, **RAY_ENV}, timeout=600)
    assert run.returncode == 2, run.stdout + run.stderr[-2000:]
    assert "4 tagger actor(s) (0 GPU and 1 CPU each) did not start within 20 s" in run.stdout
    assert out.read_text() == ""
