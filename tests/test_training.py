"""Training: mixing, sampling, checkpoints, and real short CPU runs on a generated
DCASE-format dataset (learning, kill-and-resume, a corrupt clip skipped and reported)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.synthdata import make_dcase_dataset

from avtag import AvtagError
from avtag.config import ConfigError, MixConfig, load_config
from avtag.data.clips import fit_length
from avtag.models.audio import AudioModel
from avtag.models.weights import CheckpointError, load_audio_model, save_audio_model
from avtag.training.datamodule import AudioDataModule, balanced_weights
from avtag.training.mixing import mix_batch
from avtag.training.module import epoch_lr_factor, weak_label_bce

REPO = Path(__file__).resolve().parents[1]
# a small, fast CRNN and a short schedule; everything else is the shipped config
TINY = [
    "model.crnn.channels=[8,16,16]", "model.crnn.freq_pool=[2,2,2]", "model.crnn.rnn_hidden=16",
    "model.spec_augment=false",
    "training.batch_size=8", "training.workers=0", "training.lr=0.003", "training.lr_schedule=constant",
    "training.warmup_epochs=0", "training.sampler=shuffle",
    "training.mixing.mode=mix", "training.mixing.epochs=4", "training.mixing.finetune_lr_scale=1.0",
]


# ----------------------------------------------------------------------------- unit tests
def test_mix_training_blends_waveforms_and_takes_the_label_union():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 100, generator=g)
    y = torch.zeros(6, 4)
    y[torch.arange(6), torch.tensor([0, 1, 2, 3, 0, 1])] = 1
    xm, ym = mix_batch(x, y, "mix", generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    a = ((xm - x[perm]) / (x - x[perm]))[:, 0]  # x = a x_i + (1 - a) x_j  =>  a per row
    rows = perm != torch.arange(6)
    assert torch.all((a[rows] > 0) & (a[rows] < 1))
    assert torch.allclose(xm[rows], a[rows, None] * x[rows] + (1 - a[rows, None]) * x[perm][rows], atol=1e-5)
    assert torch.equal(ym, torch.sign(y + y[perm]))  # union of both label sets, still 0/1


def test_mixup_interpolates_targets_and_probability_zero_is_identity():
    x, y = torch.randn(8, 50), (torch.rand(8, 3) > 0.5).float()
    xm, ym = mix_batch(x, y, "mixup", alpha=0.4, generator=torch.Generator().manual_seed(0))
    assert ym.min() >= 0 and ym.max() <= 1 and not torch.equal(ym, y)
    xs, ys = mix_batch(x, y, "mix", probability=0.0)
    assert torch.equal(xs, x) and torch.equal(ys, y)
    with pytest.raises(ConfigError, match="training.mixing.mode"):
        load_config(None, ["training.mixing.mode=cutmix"])


def test_two_stage_schedule():
    cfg = MixConfig(mode="mix", epochs=3, finetune_lr_scale=0.1)
    assert [cfg.active(e) for e in range(5)] == [True, True, True, False, False]
    f = epoch_lr_factor("constant", max_epochs=5, mix_epochs=3, finetune_scale=0.1)
    assert [f(e) for e in range(5)] == [1.0, 1.0, 1.0, 0.1, 0.1]
    cos = epoch_lr_factor("cosine", max_epochs=10, warmup_epochs=2)
    assert cos(0) < cos(1) < cos(2) == 1.0 and cos(9) < cos(5) < cos(2)
    assert not MixConfig(mode="none").active(0)


def test_balanced_weights_favour_rare_classes_and_fit_length():
    targets = np.array([[1, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    w = balanced_weights(targets)
    assert w[4] > w[0] and w[3] == w[4]  # a clip is weighted by its rarest label
    per_class = [(w * targets[:, c]).sum() / w.sum() for c in range(2)]
    assert abs(per_class[0] - per_class[1]) < abs(4 / 7 - 2 / 7)  # closer to balanced than the raw counts
    assert fit_length(np.ones(5, np.float32), 8).tolist() == [1] * 5 + [0] * 3
    np.random.seed(0)
    crop = fit_length(np.arange(100, dtype=np.float32), 10, random_crop=True)
    assert crop.shape == (10,) and np.all(np.diff(crop) == 1)


def test_bce_under_autocast():
    p = torch.rand(4, 3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = weak_label_bce(p, torch.ones(4, 3))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


TINY_CRNN = ["model.crnn.channels=[4]", "model.crnn.freq_pool=[4]", "model.crnn.time_pool=[2]",
             "model.crnn.rnn_hidden=4"]


def _tiny_model(classes=("Car", "Bus", "Train"), overrides=()):
    torch.manual_seed(0)
    config = load_config(None, [*TINY_CRNN, f"data.classes=[{', '.join(classes)}]", *overrides])
    return AudioModel(classes, config.audio, config.model), config


def test_exported_model_round_trip(tmp_path):
    model, config = _tiny_model()
    model.eval()
    path = save_audio_model(model.state_dict(), config, tmp_path / "m.pt")
    assert torch.load(path, weights_only=True)["format"] == "avtag-audio-model"
    loaded = load_audio_model(path)
    assert loaded.classes == ("Car", "Bus", "Train") and not loaded.training
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.allclose(loaded(wave).clipwise, model(wave).clipwise)


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_audio_model(tmp_path / "none.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    for seed in range(20):  # random bytes make the unpickler fail in many different ways
        garbage.write_bytes(np.random.default_rng(seed).bytes(2000))
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_audio_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an avtag audio-model checkpoint"):
        load_audio_model(foreign)
    model, _ = _tiny_model(("a", "b", "c"))
    _, config = _tiny_model(("a", "b", "c"), ["model.crnn.rnn_hidden=6"])
    wrong = save_audio_model(model.state_dict(), config, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_audio_model(wrong)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(wrong.read_bytes()[:500])
    with pytest.raises(CheckpointError):
        load_audio_model(truncated)


# ----------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """100 four-second clips (4 learnable classes, 1-2 per clip), one of them corrupt."""
    root = tmp_path_factory.mktemp("training")
    ds = make_dcase_dataset(root / "data", n_train=100, n_test=0, seconds=4.0, seed=0)
    corrupt = ds.clips["train"][5]
    Path(corrupt["path"]).write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + np.random.default_rng(0).bytes(600))
    cfg = yaml.safe_load(ds.config(root).read_text())
    cfg["include"] = [str(REPO / "configs" / p) for p in
                      ("data/dcase2017.yaml", "features/logmel64.yaml", "model/crnn_attention.yaml",
                       "training/default.yaml")]
    cfg["data"]["clip_seconds"] = 4.0
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return {"root": root, "config": path, "corrupt": corrupt["name"]}


def constant_predictor_f1(train_targets: np.ndarray, val_targets: np.ndarray) -> float:
    """Best micro-F1 of a predictor that ignores the audio (the k most frequent classes, always)."""
    order = np.argsort(-train_targets.sum(0))
    best = 0.0
    for k in range(1, len(order) + 1):
        pred = np.zeros_like(val_targets)
        pred[:, order[:k]] = 1
        tp = (pred * val_targets).sum()
        best = max(best, 2 * tp / (pred.sum() + val_targets.sum()))
    return float(best)


@pytest.fixture
def one_thread():
    """One intra-op thread: a small GRU on a shared 2-core machine is much faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_learns_generated_dcase_data(synth, capsys, one_thread):
    from avtag.training.train import train

    config = load_config(synth["config"], TINY + ["training.max_epochs=10", f"output_dir={synth['root'] / 'learn'}"])
    result = train(config, progress=False)
    out = capsys.readouterr().out
    # the corrupt clip is skipped, reported on the console and listed in the run folder
    assert result.skipped == 1 and synth["corrupt"] in out
    assert synth["corrupt"] in (result.run_dir / "skipped_clips.tsv").read_text()

    data = AudioDataModule.from_config(config)
    data.setup()
    chance = constant_predictor_f1(data.datasets["train"].targets, data.datasets["validation"].targets)
    print(f"validation micro-F1 {result.best_micro_f1:.3f}, best constant predictor {chance:.3f}")
    assert result.epochs == 10 and result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    assert result.best_micro_f1 > max(0.75, chance + 0.2)

    # the exported model reproduces the best checkpoint's validation F1
    assert _exported_model_micro_f1(result, data) == pytest.approx(result.best_micro_f1, abs=1e-4)

    with pytest.raises(AvtagError, match="--resume"):
        train(config, progress=False)  # would overwrite the run


def test_corrupt_clip_is_skipped_and_reported(synth):
    from avtag.training.train import ensure_cache

    config = load_config(synth["config"], TINY)
    ensure_cache(config, progress=False)
    data = AudioDataModule.from_config(config)
    data.setup()
    skipped = {name: reason for items in data.skipped.values() for name, reason in items.items()}
    assert list(skipped) == [synth["corrupt"]]
    assert "Y" + synth["corrupt"] in skipped[synth["corrupt"]]  # the reason names the media file
    served = set(data.datasets["train"].names) | set(data.datasets["validation"].names)
    assert synth["corrupt"] not in served and len(served) == 99


def _avtag(*args):
    cmd = [sys.executable, "-m", "avtag", "train", *map(str, args), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_kill_and_resume_continues_from_last_checkpoint(synth):
    run_dir = synth["root"] / "resume"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [synth["config"], *TINY, "training.max_epochs=4", "training.sampler=balanced", f"output_dir={run_dir}"]
    proc = _avtag(*args)
    deadline = time.time() + 240
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed:\n{proc.communicate()[0]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(last, weights_only=True)
    steps_per_epoch = first["global_step"] // (first["epoch"] + 1)
    assert first["epoch"] < 3

    resumed = _avtag(*args, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "done: 4 epochs" in out
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 3 and final["global_step"] == 4 * steps_per_epoch
    # the resumed run logged only the epochs after the checkpoint
    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"))
    assert len(logs) == 2
    header, *rows = logs[-1].read_text().splitlines()
    epochs = {int(r.split(",")[header.split(",").index("epoch")]) for r in rows
              if r.split(",")[header.split(",").index("epoch")]}
    assert min(epochs) == first["epoch"] + 1 and max(epochs) == 3


def test_fast_dev_run_smoke(synth, one_thread):
    """One training and one validation batch through the whole Lightning wiring, in seconds."""
    from avtag.training.train import train

    config = load_config(synth["config"], TINY + ["trainer.extra.fast_dev_run=true",
                                                  f"output_dir={synth['root'] / 'smoke'}"])
    assert config.trainer.extra == {"fast_dev_run": True}
    result = train(config, progress=False)
    assert result.global_step == 1 and result.model_path is None  # fast_dev_run writes no checkpoint


@pytest.mark.slow
def test_training_from_a_cached_frozen_prefix(synth, one_thread):
    """training.cache_frozen: the frozen EfficientNet part runs once per clip; the exported model on
    waveforms reproduces the validation micro-F1 of the prefix path, and a second run reuses the cache."""
    from avtag.training.frozen import PrefixCache
    from avtag.training.train import train

    overrides = ["model.backbone=efficientnet_lite0", "model.efficientnet.trainable_blocks=2",
                 "model.efficientnet.head_dim=64", "training.cache_frozen=true", "training.batch_size=16",
                 "training.workers=0", "training.lr=0.003", "training.lr_schedule=constant", "training.warmup_epochs=0",
                 "training.sampler=shuffle", "training.mixing.mode=mix", "training.mixing.epochs=2",
                 "training.max_epochs=3"]
    config = load_config(synth["config"], overrides + [f"output_dir={synth['root'] / 'frozen'}"])
    result = train(config, progress=False)
    prefixes = list((Path(config.cache.dir) / "train").glob("prefix-*/*.npy"))
    train_clips = len(AudioDataModule.from_config(config).cache("train").names())
    assert len(prefixes) == train_clips and result.best_micro_f1 is not None

    data = AudioDataModule.from_config(config)
    data.setup()
    assert _exported_model_micro_f1(result, data) == pytest.approx(result.best_micro_f1, abs=1e-3)
    # the model file stores the class priors of its training draw and AudioSet's (avtag.models.class_prior)
    priors = load_audio_model(result.model_path).class_priors
    expected = data.class_prior("train")
    assert [p is None for p in priors["training"]] == [not 0 < p < 1 for p in expected]  # a class never drawn
    np.testing.assert_allclose([p or 0.0 for p in priors["training"]], np.where((expected > 0) & (expected < 1),
                                                                                expected, 0.0))
    assert len(priors["audioset"]) == len(data.vocabulary) and all(p is None or 0 < p < 1 for p in priors["audioset"])
    assert load_audio_model(result.best_checkpoint).class_priors == priors  # the Lightning checkpoint too

    again = load_config(synth["config"], overrides + ["training.max_epochs=1", f"output_dir={synth['root'] / 'f2'}"])
    stamps = {p: p.stat().st_mtime_ns for p in prefixes}
    train(again, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # same key: nothing recomputed
    assert isinstance(PrefixCache(prefixes[0].parent).path("x"), Path)


def _exported_model_micro_f1(result, data) -> float:
    """Validation micro-F1 @0.5 of the exported ``audio_model.pt`` of a training ``result``."""
    model = load_audio_model(result.model_path)
    val = data.datasets["validation"]
    wave = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        pred = (model(wave).clipwise >= 0.5).numpy()
    tp = (pred * val.targets).sum()
    return float(2 * tp / (pred.sum() + val.targets.sum()))


def test_prefix_key_ignores_inference_only_settings():
    """The frozen-prefix cache survives a change of the speech detector or class prior (they act after
    the network) but not of the architecture."""
    import dataclasses

    from avtag.labels import get_vocabulary
    from avtag.models.audio import build_audio_model
    from avtag.training.frozen import prefix_key

    config = load_config(REPO / "configs" / "default_model.yaml")
    model = build_audio_model(config.model, config.audio, get_vocabulary(config.data.classes).names)
    key = prefix_key(model)
    model.model_config = dataclasses.replace(model.model_config, speech_detector="none", class_prior="training")
    assert prefix_key(model) == key
    model.model_config = dataclasses.replace(model.model_config, dropout=0.5)
    assert prefix_key(model) != key
