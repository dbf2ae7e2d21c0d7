"""The wheel: built from this checkout, installed non-editable into a fresh virtual environment,
``avtag tag`` runs with the packaged default model (weights are package data, not ``assets/``)."""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_tags_with_the_packaged_default_model(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("avtag-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "avtag/resources/models/default_audio.ckpt" in names and "avtag/resources/models/default_model.md" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the heavy dependencies (torch, ...) come from this environment's site-packages, appended to sys.path
    # by a .pth line (a plain path line: this environment's editable avtag finder is not activated)
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import avtag, avtag.models.weights as w; "
                            "print(avtag.__file__); print(w.get_weights('default').verify())"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert where.returncode == 0, where.stderr[-2000:]
    module_file, weights = where.stdout.split()
    assert Path(module_file).is_relative_to(venv) and Path(weights).is_relative_to(venv)
    tag = subprocess.run([str(venv / "bin" / "avtag"), "tag", str(REPO / "assets" / "big_buck_bunny_10s.webm"),
                          "--format", "json", "--only", "audio"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600)
    assert tag.returncode == 0, tag.stderr[-2000:]
    record = json.loads(tag.stdout)
    assert record["branches"]["audio"] is True and record["tags"]
    assert not any("no audio model" in n for n in record["notes"])
