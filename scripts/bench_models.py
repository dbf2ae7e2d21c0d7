#!/usr/bin/env python
"""Benchmark rows for the audio models: inference and training throughput beside peers of the same run.

* inference, seconds of audio tagged per second (eval mode, ``inference_mode``, 10 s clips in
  batches of 8): the default audio model (EfficientNet-Lite0 on log-mel, batch norms folded as
  PyTorch runs it; on the CPU also the ONNX Runtime export ``avtag tag`` uses), the DCASE 2017
  CRNN, against **PANNs CNN14** (model code of the ``panns-inference`` package, random weights:
  speed does not depend on them; 16 kHz, 64 mels,
  10 ms hop like avtag) and **MobileNetV3-Small** of torchvision on the same log-mel (a light peer
  of EfficientAT's size class);
* training, clips per second (forward, backward, Adam step; 10 s clips, batch 16) from a
  feature cache read by avtag's own data module, for the CRNN and the EfficientNet backbone,
  with the projection to one DCASE 2017 training epoch (46,055 clips after the validation hold-out).

CPU always; CUDA too when a GPU is present. :func:`rows` returns the table rows for
``scripts/bench.py``. No peer code is copied into the repository.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DCASE_TRAIN_CLIPS = 46055
SR, SECONDS = 16000, 10.0


def _throughput(fn, batch: int, seconds: float, repeats: int = 3) -> float:
    """Best seconds-of-audio (or clips) per second over ``repeats`` timed calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return batch * seconds / best


def _peers(classes: int):
    """PANNs CNN14 and a torchvision MobileNetV3-Small on avtag's log-mel (random weights)."""
    from torchvision.models import mobilenet_v3_small

    from avtag.config import LogMelConfig
    from avtag.models.frontends import LogMelFrontend

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        from panns_inference.models import Cnn14  # its package tries to download a label list on import

    cnn14 = Cnn14(sample_rate=SR, window_size=1024, hop_size=160, mel_bins=64, fmin=50, fmax=8000,
                  classes_num=classes)

    class MobileNetOnLogMel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frontend = LogMelFrontend(LogMelConfig())
            self.net = mobilenet_v3_small(num_classes=classes)

        def forward(self, wave):
            image = self.frontend(wave).transpose(2, 3).expand(-1, 3, -1, -1)  # (B, 3, mels, frames)
            return torch.sigmoid(self.net(image))

    return {"PANNs CNN14": cnn14, "MobileNetV3-Small on log-mel": MobileNetOnLogMel()}


def inference_rows(device: str) -> list[dict]:
    from avtag.config import load_config
    from avtag.models.audio import build_audio_model
    from avtag.models.weights import get_weights

    default = get_weights("default").load(device)
    default.backbone.optimize_for_inference()
    crnn_cfg = load_config(REPO / "configs" / "dcase2017.yaml")
    crnn = build_audio_model(crnn_cfg.model, crnn_cfg.audio, [f"c{i}" for i in range(17)]).to(device).eval()
    batch = 8
    wave = 0.1 * torch.randn(batch, int(SR * SECONDS), device=device)
    rates = {}
    models = {"avtag default (EfficientNet-Lite0, folded)": default, "avtag CRNN (dcase2017)": crnn,
              **_peers(len(default.classes))}
    for name, model in models.items():
        model = model.to(device).eval()
        with torch.inference_mode():
            rates[name] = _throughput(lambda m=model: m(wave), batch, SECONDS)
        rates[name + " params"] = sum(p.numel() for p in model.parameters())
    if device == "cpu":  # the engine `avtag tag` uses on a CPU: the tagger's ONNX export on ONNX Runtime
        from avtag.inference.tagger import Tagger

        engine = Tagger.from_pretrained("default", device="cpu", use_video=False).engine
        if engine.name == "onnxruntime":
            name = "avtag default on ONNX Runtime (log-mel by scipy.fft), as avtag tag runs it"
            array = wave.cpu().numpy()
            rates[name] = _throughput(lambda: engine.audio(array), batch, SECONDS)
            rates[name + " params"] = rates["avtag default (EfficientNet-Lite0, folded) params"]
            models[name] = None
    peer = rates["PANNs CNN14"]
    rows = []
    for name in models:
        rows.append({"section": f"audio model, {device}", "what": name, "unit": "s of audio/s",
                     "avtag": round(rates[name], 1), "peer": "PANNs CNN14", "peer_value": round(peer, 1),
                     "ratio": round(rates[name] / peer, 2), "params_M": round(rates[name + " params"] / 1e6, 2)})
    return rows


def training_rows(device: str) -> list[dict]:
    """Clips/s of forward + backward + step from a generated feature cache (avtag's data module)."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from helpers.synthdata import make_dcase_dataset

    from avtag.config import load_config
    from avtag.data.cache import prepare_split
    from avtag.training.datamodule import AudioDataModule
    from avtag.training.module import weak_label_bce
    from avtag.training.train import build_module

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = make_dcase_dataset(tmp / "data", n_train=48, n_test=0, seconds=SECONDS, seed=2)
        for name, extra in (("CRNN (dcase2017)", []),
                            ("EfficientNet-Lite0, blocks 9-16 trained", ["model.backbone=efficientnet_lite0",
                                                                         "model.efficientnet.trainable_blocks=8"])):
            config = load_config(ds.config(tmp, data={"validation_fraction": 0.25}),
                                 ["training.batch_size=16", "training.workers=0", "training.sampler=shuffle", *extra])
            for split in ("train", "validation"):
                prepare_split(config, split, progress=False)
            data = AudioDataModule.from_config(config)
            data.setup()
            module = build_module(config).to(device)
            module.model.train()
            opt = torch.optim.Adam([p for p in module.model.parameters() if p.requires_grad], lr=1e-3)
            loader = data.train_dataloader()

            def epoch(loader=loader, module=module, opt=opt):
                for wave, target in loader:
                    loss = weak_label_bce(module.model(wave.to(device)).clipwise, target.to(device))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            clips = len(loader) * data.batch_size
            rate = _throughput(epoch, clips, 1.0, repeats=2)
            rows.append({"section": f"training, {device}", "what": name, "unit": "clips/s", "avtag": round(rate, 1),
                         "projection": f"one DCASE 2017 epoch ({DCASE_TRAIN_CLIPS:,} clips): "
                                       f"{DCASE_TRAIN_CLIPS / rate / 3600:.1f} h"})
    return rows


def rows(sections=("inference", "training")) -> list[dict]:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for device in devices:
        if "inference" in sections:
            out += inference_rows(device)
        if "training" in sections:
            out += training_rows(device)
    return out


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(REPO))
    for row in rows():
        print(json.dumps(row))
