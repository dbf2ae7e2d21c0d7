"""``--device``: auto / cpu / cuda[:N] for the Python API and the CLI; CPU and CUDA agree to 1e-3."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avtag.models.device import DeviceError, resolve_device

DEMO = Path(__file__).resolve().parents[1] / "assets" / "big_buck_bunny_10s.webm"
HAS_CUDA = torch.cuda.is_available()


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    if not HAS_CUDA:
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without a GPU")
def test_cli_cuda_without_a_gpu_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(DEMO), "--device", "cuda"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "no CUDA GPU" in proc.stderr


def _tag(device: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "avtag", "tag", str(DEMO), "--device", device, "--format", "json",
                           "--top-k", "0", "--threshold", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
def test_cpu_and_cuda_give_the_same_tags():
    cpu, cuda = _tag("cpu"), _tag("cuda")
    assert [t["label"] for t in cpu["tags"]] == [t["label"] for t in cuda["tags"]]
    for a, b in zip(cpu["tags"], cuda["tags"]):
        for key in ("score", "audio_score", "video_score"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)
    assert cpu["objects"][0]["label"] == cuda["objects"][0]["label"]
