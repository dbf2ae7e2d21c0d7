"""Scaling out training: the balanced sampler under DDP, litdata shards against the per-clip cache, and real
2-process DDP runs (gloo, CPU) on a generated DCASE-format dataset: the same validation micro-F1 as one
process, mix-training's stage switch on the same step, a killed run resumed mid-epoch from streamed shards."""
from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.synthdata import make_dcase_dataset

from avtag import AvtagError
from avtag.config import ConfigError, load_config
from avtag.training.datamodule import AudioDataModule, BalancedSampler, balanced_weights

pytest.importorskip("litdata", reason="the shards extra is not installed: pip install 'avtag[shards]'")

from avtag.data.cache import CacheError  # noqa: E402
from avtag.data.shards import ShardClipDataset, prepare_shards, read_items, split_location  # noqa: E402

pytestmark = pytest.mark.slow  # writes shards, trains with DDP: the long tier

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.crnn.channels=[8,16,16]", "model.crnn.freq_pool=[2,2,2]", "model.crnn.rnn_hidden=16",
    "model.spec_augment=false",
    "training.workers=0", "training.lr=0.003", "training.lr_schedule=constant", "training.warmup_epochs=0",
    "training.mixing.mode=mix", "training.mixing.probability=0.5", "training.mixing.finetune_lr_scale=1.0",
    "trainer.accelerator=cpu",
]
#: validation micro-F1 of 2 DDP processes (batch 4 each) vs 1 process (batch 8), same effective batch and steps
DDP_F1_TOLERANCE = 0.08


# ----------------------------------------------------------------------------- the sampler under DDP
def test_balanced_sampler_is_split_between_ranks_and_covers_one_epoch():
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper  # what Lightning wraps it in

    targets = np.zeros((103, 3), np.float32)
    targets[:80, 0] = 1
    targets[80:97, 1] = 1
    targets[97:, 2] = 1
    weights = balanced_weights(targets)
    draws = {}
    for epoch in (0, 1):
        ranks = []
        for rank in (0, 1):
            sampler = BalancedSampler(weights, num_samples=len(targets), seed=7)  # a fresh process's sampler
            wrapped = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=True, seed=7)
            wrapped.set_epoch(epoch)
            ranks.append(list(wrapped))
        full = BalancedSampler(weights, num_samples=len(targets), seed=7)
        full.set_epoch(epoch)
        draw = list(full)
        # each rank takes half of the same draw; together they cover it once (plus one index of padding)
        assert len(ranks[0]) == len(ranks[1]) == 52
        together = Counter(ranks[0]) + Counter(ranks[1])
        padding = together - Counter(draw)
        assert sum(padding.values()) == 1 and set(padding) <= set(draw)
        assert not Counter(draw) - together
        draws[epoch] = draw
        rare = sum(targets[i, 2] for i in draw) / len(draw)
        assert rare > 0.2  # 6 of 103 clips, drawn about a third of the time
    assert draws[0] != draws[1]  # a new draw every epoch


# ----------------------------------------------------------------------------- shards vs the per-clip cache
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """100 four-second clips (4 learnable classes), the train/validation per-clip cache and its shards."""
    root = tmp_path_factory.mktemp("scale")
    ds = make_dcase_dataset(root / "data", n_train=100, n_test=0, seconds=4.0, seed=0)
    cfg = yaml.safe_load(ds.config(root).read_text())
    cfg["include"] = [str(REPO / "configs" / p) for p in
                      ("data/dcase2017.yaml", "features/logmel64.yaml", "model/crnn_attention.yaml",
                       "training/default.yaml")]
    cfg["data"]["clip_seconds"] = 4.0
    cfg["cache"]["workers"] = 1
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path)
    for split in ("train", "validation"):
        prepared, shards = prepare_shards(config, split, progress=False)
        assert shards.items == prepared.written + prepared.already_done > 0
    return {"root": root, "config": path}


def _key(wave: torch.Tensor, target: torch.Tensor) -> tuple[str, tuple]:
    return hashlib.sha1(wave.numpy().tobytes()).hexdigest(), tuple(target.tolist())


def _contents(loader) -> Counter:
    return Counter(_key(w, t) for waves, targets in loader for w, t in zip(waves, targets))


def test_shards_stream_the_same_clips_as_the_per_clip_cache(synth):
    clips = load_config(synth["config"], ["training.sampler=shuffle", "training.batch_size=8", "training.workers=0"])
    shards = load_config(synth["config"], ["training.sampler=shuffle", "training.batch_size=8", "training.workers=0",
                                           "cache.format=shards"])
    a, b = AudioDataModule.from_config(clips), AudioDataModule.from_config(shards)
    a.setup()
    b.setup()
    # validation: every batch of both, same content (order aside)
    assert _contents(a.val_dataloader()) == _contents(b.val_dataloader())
    assert sum(_contents(a.val_dataloader()).values()) == 23
    # training: the full sets agree; one shuffled epoch of shards is a set of distinct clips, missing at most a batch
    train_a = Counter(_key(*a.datasets["train"][i]) for i in range(len(a.datasets["train"])))
    assert train_a == Counter(_key(*example) for example in b.datasets["train"])
    epoch = [_contents(b.train_dataloader()) for _ in range(2)]
    for seen in epoch:
        assert max(seen.values()) == 1 and set(seen) <= set(train_a)
        assert len(train_a) - 8 < sum(seen.values()) <= len(train_a)
    first = [_key(w, t)[0] for w, t in zip(*next(iter(b.train_dataloader())))]
    stored = [hashlib.sha1((item["audio"] / 32767.0).astype(np.float32).tobytes()).hexdigest()
              for item in read_items(split_location(b.shards, "train"))][:8]
    assert first != stored  # shuffled, not storage order


def test_shard_settings_are_checked(synth, tmp_path):
    with pytest.raises(AvtagError, match="training.sampler=balanced needs random access"):
        AudioDataModule.from_config(load_config(synth["config"], ["cache.format=shards",
                                                                  "training.sampler=balanced"]))
    with pytest.raises(ConfigError, match="cache.format"):
        load_config(synth["config"], ["cache.format=tar"])
    config = load_config(synth["config"], ["cache.format=shards", "training.sampler=shuffle",
                                           f"cache.shards={tmp_path / 'none'}"])
    data = AudioDataModule.from_config(config)
    with pytest.raises(CacheError, match="index.json missing.*--format shards"):
        data.setup()
    from avtag.data.shards import shards_root

    with pytest.raises(CacheError, match="cache.shards: ftp://x"):
        shards_root(load_config(synth["config"], ["cache.shards=ftp://x/y"]))
    assert shards_root(load_config(synth["config"], ["cache.shards=s3://bucket/avtag/"])) == "s3://bucket/avtag"
    # items carry their labels and rate: shards written for other classes are refused item by item
    other = load_config(synth["config"], ["cache.format=shards", "data.classes=[Car, Bus]"])
    location = split_location(AudioDataModule.from_config(
        load_config(synth["config"], ["cache.format=shards", "training.sampler=shuffle"])).shards, "validation")
    from avtag.labels import get_vocabulary

    data = ShardClipDataset(location, get_vocabulary(other.data.classes), 64000, 16000, False, False, False)
    with pytest.raises(CacheError, match="not in data.classes"):
        [data[i] for i in range(len(data))]
    # a second packing of unchanged clips is skipped
    _, report = prepare_shards(load_config(synth["config"]), "validation", progress=False)
    assert report.skipped and report.items == 23


# ----------------------------------------------------------------------------- real DDP runs
def _avtag_train(*args, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "avtag", "train", *map(str, args), "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            **popen)


def _metrics(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


@pytest.mark.slow
def test_two_process_ddp_trains_to_the_same_f1_as_one_process(synth):
    """Balanced sampler + mix-training (2 mixed epochs, then clean): 1 process with batch 8 vs 2 gloo
    processes with batch 4 each (the same effective batch, the same steps per epoch)."""
    common = [synth["config"], *TINY, "training.sampler=balanced", "training.max_epochs=10",
              "training.mixing.epochs=2"]
    f1, steps = {}, {}
    for n, batch in ((1, 8), (2, 4)):
        run_dir = synth["root"] / f"ddp{n}"
        proc = _avtag_train(*common, f"training.batch_size={batch}", f"trainer.devices={n}",
                            f"trainer.strategy={'ddp' if n > 1 else 'auto'}", f"output_dir={run_dir}")
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
        assert out.count("training on 77 clips") == 1  # rank 0 alone speaks
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        f1[n], steps[n] = float(ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "val_micro_f1" in k)]
                                ["best_model_score"]), ckpt["global_step"]
        mixing = {int(r["epoch"]): float(r["mixing"]) for r in _metrics(run_dir) if r.get("mixing")}
        assert mixing == {e: float(e < 2) for e in range(10)}  # stage 2 starts at epoch 2 on every rank
    print(f"validation micro-F1: 1 process {f1[1]:.3f}, 2 processes {f1[2]:.3f}; steps {steps}")
    # balanced draw of 77 clips per epoch: 9 batches of 8, or 38/39 clips per rank = 9 batches of 4
    assert steps[1] == steps[2] == 10 * 9
    assert min(f1.values()) > 0.7
    assert abs(f1[1] - f1[2]) <= DDP_F1_TOLERANCE


@pytest.mark.slow
def test_killed_ddp_run_on_shards_resumes_mid_epoch_and_finishes(synth):
    run_dir = synth["root"] / "ddp_resume"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [synth["config"], *TINY, "cache.format=shards", "training.sampler=shuffle", "training.batch_size=4",
            "training.max_epochs=3", "training.mixing.epochs=1", "training.checkpoint_every_n_steps=3",
            "trainer.devices=2", "trainer.strategy=ddp", f"output_dir={run_dir}"]
    proc = _avtag_train(*args, start_new_session=True)  # its own process group: the ranks die together
    deadline, step = time.time() + 600, 0
    while proc.poll() is None and time.time() < deadline:
        if last.is_file():
            try:
                step = torch.load(last, weights_only=False)["global_step"]
            except Exception:  # being written
                step = 0
            if step >= 12 and step % 9:  # in epoch 1 (9 steps per epoch), mid-epoch
                break
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed:\n{proc.communicate()[0]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    first = torch.load(last, weights_only=False)
    assert first["epoch"] < 2 and first["global_step"] % 9
    assert first["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # litdata's loader state was saved

    resumed = _avtag_train(*args, "--resume", start_new_session=True)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    final = torch.load(last, weights_only=False)
    # 77 clips / 2 ranks -> 38 each (drop_last) -> 9 batches of 4: the resumed run stops at 3 * 9 steps
    assert final["epoch"] == 2 and final["global_step"] == 27, out
    assert "done: 3 epochs, 27 steps" in out
    assert (run_dir / "audio_model.pt").is_file()


def test_prepare_command_writes_shards(synth, tmp_path):
    """``avtag prepare --format shards``: the cached split packed where ``cache.shards`` says, then up to date."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "avtag", "prepare", str(synth["config"]), f"cache.shards={tmp_path / 'shards'}",
           "--splits", "validation", "--format", "shards", "--no-progress"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert f"validation: 23 clips in 1 shard(s) at {tmp_path / 'shards' / 'validation'}" in first.stdout
    assert (tmp_path / "shards" / "validation" / "index.json").is_file()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "(up to date)" in again.stdout
    names = sorted(item["name"] for item in read_items(str(tmp_path / "shards" / "validation")))
    from avtag.data.cache import FeatureCache

    assert names == sorted(FeatureCache(synth["root"] / "cache", "validation").names())
