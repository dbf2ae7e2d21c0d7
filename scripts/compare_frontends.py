"""Compare audio front ends and mixing strategies on the same soundscapes, with avtag's own train/evaluate.

One command (resumable: finished runs and evaluations are re-used)::

    nice -n 15 .venv/bin/python scripts/compare_frontends.py     # 3-4 h on 2 busy shared CPU cores

What it does:

1. ``avtag soundscapes DIR --n-train N --n-test M`` (seed 0) unless DIR holds them already (twice: the
   main set, 1000 + 300 as for the default model, and a few-data set, 300 + 300).
2. Trains, with the same data, schedule and epoch budget (``avtag.training.train.train``):
   log-mel CRNN, EfficientNet-Lite0 transfer (ImageNet, blocks 9-16 fine-tuned), the raw-waveform
   1D->2D CNN (``configs/model/waveform_cnn.yaml``) and Wavegram-Logmel (``wavegram_logmel_cnn.yaml``);
   no mixing.
3. For the two best of them by *validation* micro-F1 (the test split makes no choice), on the few-data
   set (the regime of the paper's claim, and a third of the CPU time): no mixing, mixup
   (``configs/training/mixup.yaml``: Beta(0.4, 0.4), every clip, every epoch) and mix-training
   (arXiv 1911.09349: union of labels, a ~ U(0, 1), half the clips of a batch, the first 2/3 of the
   epochs; then the unmixed fine-tuning epochs of the same cosine schedule).
4. Evaluates every model with ``avtag evaluate --checkpoint RUN/audio_model.pt --only audio --split test``.
   Runs go ``--jobs`` at a time (one process each, ``--threads`` threads). An interrupted run continues
   from its ``checkpoints/last.ckpt`` (``avtag train --resume``); its CPU minutes then count the resumed
   epochs only (marked in the table). ``--report-only`` trains nothing and tabulates the finished runs.
5. Times every system alone, one after the other, in CPU time of the process (``--threads`` threads; CPU
   time, not wall time, so that the numbers mean the same on a shared, busy machine): training steps
   (forward, backward, Adam; batches of 16 cached 10 s clips) and inference over 48 test clips.
6. Writes ``OUT/results.json``, ``OUT/table.md`` and the table between the markers of ``--doc``.

Columns: micro-F1 at threshold 0.5 (DCASE 2017 Task 4 Subtask A) and mAP, each +- its standard deviation
over bootstrap resamples of the test clips, segment-based (1 s) F1 of the
frame-wise output at threshold 0.5 (sed_eval), parameters, training clips per CPU second and seconds of audio
tagged per CPU second (step 5), and the CPU minutes the training run consumed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
AVTAG = [sys.executable, "-m", "avtag"]
MARK_START, MARK_END = "<!-- compare_frontends:table:start -->", "<!-- compare_frontends:table:end -->"

#: system -> (label, model config under configs/model/, extra overrides)
SYSTEMS = {
    "crnn": ("log-mel CRNN", "crnn_attention.yaml", ["model.time_mask=20", "training.lr=0.001"]),
    "effnet": ("EfficientNet-Lite0 transfer (log-mel)", "effnet_finetune.yaml",
               ["model.efficientnet.trainable_blocks=8", "model.time_mask=20", "training.lr=0.0005"]),
    "waveform": ("raw-waveform 1D->2D CNN", "waveform_cnn.yaml", ["training.lr=0.001"]),
    "wavegram_logmel": ("Wavegram-Logmel CNN", "wavegram_logmel_cnn.yaml", ["training.lr=0.001"]),
    # control: the raw-waveform model's 2D CNN on the log-mel (which of the two parts makes the difference)
    "logmel_cnn": ("log-mel, same multi-level CNN (control)", "waveform_cnn.yaml",
                   ["model.frontend=logmel", "training.lr=0.001"]),
}
MIXING = {
    "none": ["training.mixing.mode=none"],
    "mixup": ["training.mixing.mode=mixup", "training.mixing.alpha=0.4", "training.mixing.probability=1.0",
              "training.mixing.epochs=null"],
    "mix": ["training.mixing.mode=mix", "training.mixing.alpha=1.0", "training.mixing.probability=0.5",
            "training.mixing.finetune_lr_scale=1.0"],  # epochs: set from --epochs below
}


def build_config(system: str, mixing: str, args, run_dir: Path):
    """The typed config of one run: features + soundscape data + model + training defaults, then overrides."""
    from avtag.config.loader import apply_overrides, deep_merge, read_yaml_tree
    from avtag.config.loader import build_config as check

    tree: dict = {}
    for part in ("features/logmel64.yaml", "data/soundscapes.yaml", f"model/{SYSTEMS[system][1]}",
                 "training/default.yaml"):
        tree = deep_merge(tree, read_yaml_tree(CONFIGS / part))
    sc = args.soundscapes
    overrides = [
        "audio.hop_length=320",  # 20 ms hop for every system (as configs/default_model.yaml)
        f"data.metadata_dir={sc / 'metadata'}", f"data.media_dirs.train={sc / 'audio' / 'train'}",
        f"data.media_dirs.test={sc / 'audio' / 'test'}", f"cache.dir={args.out / 'cache'}", "cache.logmel=false",
        "cache.workers=1", f"training.max_epochs={args.epochs}", "training.batch_size=16", "training.workers=0",
        "training.sampler=shuffle", "training.warmup_epochs=0", "training.lr_schedule=cosine", "training.seed=0",
        "trainer.accelerator=cpu", "trainer.devices=1", f"output_dir={run_dir}", f"model.name={system}-{mixing}",
        *SYSTEMS[system][2], *MIXING[mixing],
    ]
    if mixing == "mix":
        overrides.append(f"training.mixing.epochs={max(1, round(2 * args.epochs / 3))}")
    return check(apply_overrides(tree, overrides), f"{system}-{mixing}")


def ensure_soundscapes(args) -> None:
    if (args.soundscapes / "metadata" / "testing_set.csv").is_file():
        return
    cmd = [*AVTAG, "soundscapes", str(args.soundscapes), "--n-train", str(args.n_train), "--n-test", str(args.n_test),
           "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def prepare_caches(args) -> None:
    """Decode every split into the shared feature cache once, before runs start in parallel."""
    from avtag.evaluation.inference import ensure_split
    from avtag.training.train import ensure_cache

    config = build_config("crnn", "none", args, args.out / "prepare")
    ensure_cache(config, progress=False)
    ensure_split(config, "test", progress=False)


def train_run(system: str, mixing: str, args) -> dict:
    """Train one system (or re-use a finished run); returns its training record."""
    from avtag.training.train import ensure_cache, train

    run_dir = args.out / f"{system}-{mixing}"
    record_path = run_dir / "compare_train.json"
    if record_path.is_file() and (run_dir / "audio_model.pt").is_file():
        return json.loads(record_path.read_text())
    config = build_config(system, mixing, args, run_dir)
    ensure_cache(config, progress=False)  # decoded once, before any timing
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed_from = 0  # epochs done before this invocation (their CPU time is not known)
    if last.is_file():  # an interrupted run: continue it from its last epoch (avtag train --resume)
        import torch

        resumed_from = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        print(f"resuming {run_dir} from {last} ({resumed_from} epoch(s) done)", flush=True)
    elif run_dir.exists():  # interrupted before its first checkpoint: start again
        import shutil

        shutil.rmtree(run_dir)
    load0, cpu0 = os.getloadavg()[0], cpu_seconds()
    result = train(config, resume=bool(resumed_from), progress=False)
    cpu = cpu_seconds() - cpu0
    from avtag.training.datamodule import AudioDataModule

    data = AudioDataModule.from_config(config)
    data.setup("fit")
    n_train = len(data.datasets["train"])
    epochs_here = max(1, result.epochs - resumed_from)
    record = {"system": system, "mixing": mixing, "epochs": result.epochs, "train_clips": n_train,
              "validation_clips": len(data.datasets["validation"]), "train_seconds": result.seconds,
              "train_cpu_seconds": cpu, "run_clips_per_s": n_train * epochs_here / result.seconds,
              "resumed_from_epoch": resumed_from,  # > 0: train_seconds / train_cpu_seconds cover the rest only
              "best_val_micro_f1": result.best_micro_f1, "model": str(result.model_path),
              "load_average_start": load0, "load_average_end": os.getloadavg()[0]}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def evaluate_run(record: dict, args) -> dict:
    """``avtag evaluate --only audio --split test`` on the run's model; returns the numbers of the table."""
    run_dir = Path(record["model"]).parent
    out = run_dir / "evaluation-test"
    if not (out / "metrics.json").is_file():
        cmd = [*AVTAG, "evaluate", "--checkpoint", record["model"], "--only", "audio", "--split", "test",
               "--no-figures", "--no-progress", "--device", "cpu", "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)
    m = json.loads((out / "metrics.json").read_text())
    default = m["by_thresholds"]["default"]
    strong = default.get("strong") or {}
    return {"micro_f1": default["micro"]["f1"], "micro_precision": default["micro"]["precision"],
            "micro_recall": default["micro"]["recall"], "mAP": m["mAP"],
            "segment_f1": (strong.get("segment_based") or {}).get("f1"),
            "micro_f1_tuned": (m["by_thresholds"].get("tuned") or {}).get("micro", {}).get("f1"),
            "test_clips": m["clips"]}


def speed(system: str, args, batch: int = 16, steps: int = 3, clips: int = 48) -> dict:
    """Parameters, training clips and inference seconds of audio per CPU second of ``system`` alone.

    Training: ``steps`` timed steps (after one warm-up) of forward, weak-label BCE, backward and an Adam
    step on ``batch`` cached training clips of 10 s; the median step. Inference: ``clips`` test clips in
    batches of ``batch``, after a warm-up batch.
    """
    import statistics

    import numpy as np
    import torch

    from avtag.data.cache import FeatureCache
    from avtag.data.clips import fit_length
    from avtag.models.audio import build_audio_model
    from avtag.training.module import weak_label_bce

    torch.set_num_threads(args.threads)
    config = build_config(system, "none", args, args.out / "speed")
    classes = list(config.data.classes)
    model = build_audio_model(config.model, config.audio, classes)
    samples = int(round(config.data.clip_seconds * config.audio.sample_rate))

    def waves(split: str, n: int):
        cache = FeatureCache(args.out / "cache", split)
        names = cache.names()[:n]
        x = np.stack([fit_length(np.asarray(cache.waveform(k), np.float32), samples) for k in names])
        y = np.stack([[float(c in cache.labels(k)) for c in classes] for k in names]).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)

    x, y = waves("train", batch)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.process_time()
        loss = weak_label_bce(model(x).clipwise, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.process_time() - t0)
    x, _ = waves("test", clips)
    model.eval()
    with torch.inference_mode():
        model(x[:batch])
        t0 = time.process_time()
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
        cpu = time.process_time() - t0
    return {"parameters": sum(p.numel() for p in model.parameters()), "speed_threads": torch.get_num_threads(),
            "train_clips_per_cpu_s": batch / statistics.median(times),
            "infer_audio_s_per_cpu_s": len(x) * samples / config.audio.sample_rate / cpu,
            "speed_load_average": os.getloadavg()[0]}


def frontend_response(model_path: str | Path, out_png: Path, seconds: float = 1.0, amplitude: float = 0.1) -> Path:
    """What the learnt 1D front end of a trained model responds to: sinusoids of 120 frequencies from 50 Hz
    to 7.9 kHz through the wavegram (before its batch norm), mean over frames minus the response to silence,
    each bin scaled to its maximum and the bins ordered by their best frequency. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from avtag.models.frontends import WavegramLogmelFrontend
    from avtag.models.weights import load_audio_model

    model = load_audio_model(model_path, "cpu")
    frontend = model.frontend.wavegram if isinstance(model.frontend, WavegramLogmelFrontend) else model.frontend
    sr = model.sample_rate
    freqs = np.geomspace(50.0, 0.49 * sr, 120)
    t = np.arange(int(seconds * sr)) / sr
    x = torch.from_numpy((amplitude * np.sin(2 * np.pi * freqs[:, None] * t[None, :])).astype(np.float32))
    with torch.inference_mode():
        response = frontend.wavegram(x).mean(dim=1) - frontend.wavegram(torch.zeros(1, t.size)).mean(dim=1)
    response = response.clamp_min(0).numpy()  # (frequencies, bins)
    response = response / np.maximum(response.max(axis=0, keepdims=True), 1e-9)
    order = np.argsort(response.argmax(axis=0), kind="stable")
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.pcolormesh(freqs, np.arange(response.shape[1]), response[:, order].T, shading="nearest", cmap="magma")
    ax.set_xscale("log")
    ax.set_xlabel("frequency of a pure tone (Hz)")
    ax.set_ylabel("learnt bin (sorted by best frequency)")
    ax.set_title("raw-waveform front end after training: response of each bin to pure tones", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def bootstrap_std(run_dir: Path, cache_dir: Path, resamples: int = 500, seed: int = 0) -> dict:
    """Standard deviation of micro-F1 @0.5 and mAP over bootstrap resamples of the test clips (the spread
    that the choice of 300 test clips alone gives), from ``evaluation-test/scores.tsv``."""
    import csv

    import numpy as np

    from avtag.data.cache import FeatureCache
    from avtag.evaluation.metrics import average_precision

    with open(run_dir / "evaluation-test" / "scores.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    classes, rows = rows[0][1:], rows[1:]
    cache = FeatureCache(cache_dir, "test")
    scores = np.array([[float(v) for v in r[1:]] for r in rows])
    truth = np.array([[c in cache.labels(r[0].removesuffix(".wav")) for c in classes] for r in rows])
    rng = np.random.default_rng(seed)
    f1s, aps = [], []
    for _ in range(resamples):
        i = rng.integers(0, len(rows), len(rows))
        pred, t = scores[i] >= 0.5, truth[i]
        f1s.append(2 * (pred & t).sum() / max(1, pred.sum() + t.sum()))
        aps.append(average_precision(t, scores[i]).mAP)
    return {"micro_f1_std": float(np.std(f1s)), "mAP_std": float(np.std(aps))}


def table(rows: list[dict]) -> str:
    head = ["system", "mixing", "micro-F1 @0.5 %", "mAP %", "segment F1 %", "micro-F1 tuned %", "parameters",
            "train clips/CPU-s", "inference s-of-audio/CPU-s", "train CPU min", "val micro-F1 %"]
    pct = (lambda x: "-" if x is None else f"{100 * x:.1f}")
    pm = (lambda x: "" if x is None else f" ± {100 * x:.1f}")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "--:" for i in range(len(head))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([
            SYSTEMS[r["system"]][0], r["mixing"], pct(r["micro_f1"]) + pm(r.get("micro_f1_std")),
            pct(r["mAP"]) + pm(r.get("mAP_std")), pct(r["segment_f1"]),
            pct(r["micro_f1_tuned"]), f"{r['parameters'] / 1e6:.2f} M", f"{r['train_clips_per_cpu_s']:.1f}",
            f"{r['infer_audio_s_per_cpu_s']:.0f}", cpu_min(r), pct(r["best_val_micro_f1"]),
        ]) + " |")
    resumed = [r for r in rows if r.get("resumed_from_epoch")]
    if resumed:
        lines.append("")
        lines.append("† resumed from `last.ckpt` of an interrupted run (" + ", ".join(
            f"{r['system']}/{r['mixing']} after epoch {r['resumed_from_epoch']} of {r['epochs']}" for r in resumed)
            + "); its train CPU min counts the resumed epochs only.")
    return "\n".join(lines) + "\n"


def cpu_min(r: dict) -> str:
    return f"{r['train_cpu_seconds'] / 60:.0f}" + ("†" if r.get("resumed_from_epoch") else "")


def write_doc(doc: Path, text: str) -> None:
    """Put ``text`` between the table markers of ``doc`` (the rest of the page is written by hand)."""
    body = doc.read_text() if doc.is_file() else f"# Front ends compared\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START not in body or MARK_END not in body:
        body += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = body.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    doc.write_text(f"{head}{MARK_START}\n{text}{MARK_END}{tail}")


def few_args(args) -> argparse.Namespace:
    """The settings of the few-data mixing study: its own soundscapes, cache and run folders."""
    return argparse.Namespace(**{**vars(args), "soundscapes": args.few_soundscapes, "n_train": args.few_n_train,
                                 "out": args.out / "few"})


def run_parallel(runs: list[tuple[str, str]], args, argv: list[str]) -> None:
    """Train and evaluate ``runs`` (``(system, mixing)``), ``args.jobs`` child processes at a time."""
    todo, active = list(runs), []
    while todo or active:
        while todo and len(active) < args.jobs:
            system, mixing = todo.pop(0)
            log = open(args.out / f"{system}-{mixing}.log", "a")
            cmd = [sys.executable, __file__, *argv, "--one", system, mixing]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            print(f"=== start {system} / {mixing}", flush=True)
            active.append((system, mixing, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(5)
        for item in list(active):
            system, mixing, proc, log = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                if proc.returncode != 0:
                    raise SystemExit(f"{system} / {mixing} failed (exit {proc.returncode}); see "
                                     f"{args.out / f'{system}-{mixing}.log'}")
                print(f"=== done {system} / {mixing}", flush=True)


def one(system: str, mixing: str, args) -> None:
    """Child process: train and evaluate one run, write ``RUN/compare.json``."""
    import torch

    torch.set_num_threads(args.threads)
    record = train_run(system, mixing, args)
    record.update(evaluate_run(record, args))
    (args.out / f"{system}-{mixing}" / "compare.json").write_text(json.dumps(record, indent=2))


def result(system: str, mixing: str, args) -> dict:
    return json.loads((args.out / f"{system}-{mixing}" / "compare.json").read_text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soundscapes", type=Path, default=Path("cache/frontends/soundscapes"),
                   help="soundscape folder (made with avtag soundscapes when missing)")
    p.add_argument("--n-train", type=int, default=1000, help="training soundscapes (10%% are the validation split)")
    p.add_argument("--n-test", type=int, default=300, help="held-out test soundscapes (both sets)")
    p.add_argument("--few-soundscapes", type=Path, default=Path("cache/frontends/soundscapes300"),
                   help="soundscapes of the mixing study (made when missing)")
    p.add_argument("--few-n-train", type=int, default=300, help="training soundscapes of the mixing study")
    p.add_argument("--epochs", type=int, default=8, help="epochs of every run (the same budget for all)")
    p.add_argument("--systems", default="crnn,effnet,waveform,wavegram_logmel",
                   help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--controls", default="",
                   help="systems trained without mixing only, never chosen for the mixing study (e.g. logmel_cnn)")
    p.add_argument("--top", type=int, default=2, help="systems that also train with mixup and mix-training")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenMP threads of each run (default: $OMP_NUM_THREADS, else 2 // --jobs)")
    p.add_argument("--out", type=Path, default=Path("runs/compare_frontends"), help="runs, cache and results")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "frontends.md", help="page whose table is replaced")
    p.add_argument("--no-doc", action="store_true", help="do not touch --doc")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tabulate the runs that finished and name those that did not")
    p.add_argument("--one", nargs=2, metavar=("SYSTEM", "MIXING"), help=argparse.SUPPRESS)
    p.add_argument("--few", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, 2 // args.jobs)
    if args.one:
        one(*args.one, few_args(args) if args.few else args)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    controls = [s.strip() for s in args.controls.split(",") if s.strip() and s.strip() not in systems]
    unknown = [s for s in systems + controls if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s): {', '.join(unknown)}")
    few = few_args(args)

    def done(a, s, m):
        return (a.out / f"{s}-{m}" / "compare.json").is_file()

    if not args.report_only:
        ensure_soundscapes(args)
        prepare_caches(args)
        run_parallel([(s, "none") for s in systems + controls], args, argv)
    base = [result(s, "none", args) for s in systems if done(args, s, "none")]
    best = [r["system"] for r in sorted(base, key=lambda r: -(r["best_val_micro_f1"] or 0))[: args.top]]
    if not args.report_only:
        few.out.mkdir(parents=True, exist_ok=True)
        ensure_soundscapes(few)
        prepare_caches(few)
        run_parallel([(s, m) for s in best for m in MIXING], few, [*argv, "--few"])
    main_runs = [s for s in systems + controls if done(args, s, "none")]
    few_runs = [(s, m) for s in best for m in MIXING if done(few, s, m)]
    missing = ([f"{s}/none" for s in systems + controls if s not in main_runs]
               + [f"few-data {s}/{m}" for s in best for m in MIXING if (s, m) not in few_runs])
    print("=== timing every system alone", flush=True)
    speeds = {s: cached_speed(s, args) for s in main_runs}
    rows = [{**result(s, "none", args), **speeds[s], **bootstrap_std(args.out / f"{s}-none", args.out / "cache")}
            for s in main_runs]
    few_rows = [{**result(s, m, few), **speeds[s], **bootstrap_std(few.out / f"{s}-{m}", few.out / "cache")}
                for s, m in few_runs]
    wall = time.perf_counter() - t_start
    load = os.getloadavg()
    text = (f"**Front ends** ({args.n_train} training soundscapes, 10 % of them the validation split; {args.n_test} "
            f"test soundscapes; {args.epochs} epochs, batch 16, no mixing):\n\n{table(rows)}\n"
            f"**Mixing, few data** (the best {len(best)} of the front ends by validation micro-F1: "
            f"{', '.join(best)}; {args.few_n_train} training soundscapes, {args.n_test} test soundscapes of their "
            f"own; {args.epochs} epochs):\n\n{table(few_rows)}\n"
            + (f"Not run or not finished (absent above): {', '.join(missing)}.\n\n" if missing else "")
            + f"Wall time of the last invocation: {wall / 60:.0f} min ({args.jobs} run(s) at a time, "
            f"{args.threads} thread(s) each); load average at its end {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f}.\n")
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(
        {"frontends": rows, "mixing_few_data": few_rows, "missing": missing}, indent=2))
    if not args.no_doc:
        write_doc(args.doc, text)
    model = args.out / "waveform-none" / "audio_model.pt"
    if model.is_file():
        print("wrote", frontend_response(model, args.out / "waveform_frontend_response.png"))
    print(text)
    return 0


def cached_speed(system: str, args) -> dict:
    """:func:`speed`, measured once and kept in ``OUT/speed-SYSTEM.json``."""
    path = args.out / f"speed-{system}.json"
    if path.is_file() and "train_clips_per_cpu_s" in (old := json.loads(path.read_text())):
        return old
    out = speed(system, args)
    path.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(main())
