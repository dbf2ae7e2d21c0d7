"""The figure of ``avtag explain`` (matplotlib, Agg): where and when the tagger found each class.

Rows, top to bottom, on one time axis (seconds):

1. the clip's log-mel spectrogram (frequency axis in Hz on the mel scale);
2. per explained class or unit: the log-mel in grey with the explanation mask over it in colour
   and its top time-frequency regions boxed (what the auralised WAV keeps);
3. the attention weights of the MIL pooling per class (when the pooling has attention);
4. the frame-wise probabilities per class, the event threshold and the detected events (shaded);
5. for video: the frames the video branch used, each with its top object and, per class, the
   video score of the frame and the object that contributed most (probability * label-map weight).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: frequency ticks (Hz) drawn on mel axes where they fall inside the band range
_HZ_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000)
_MAX_FRAMES = 8


def _hz_axis(ax, edges: np.ndarray) -> None:
    """Label a mel-band axis (band index 0..n_mels) in Hz."""
    centres = edges[:, 1]
    ticks = [t for t in _HZ_TICKS if centres[0] <= t <= centres[-1]]
    ax.set_yticks(np.interp(ticks, centres, np.arange(len(centres))))
    ax.set_yticklabels([f"{t // 1000}k" if t >= 1000 else str(t) for t in ticks])
    ax.set_ylabel("Hz")


def _band(edges: np.ndarray, hz: float) -> float:
    return float(np.interp(hz, edges[:, 1], np.arange(len(edges))))


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_explanation(expl, path: str | Path, dpi: int = 100) -> Path:
    """Draw :class:`~avtag.inference.explain_schema.Explanation` ``expl`` into the PNG ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    masked = [t for t in expl.targets if t.mask is not None]
    with_prob = [t for t in expl.targets if t.framewise is not None]
    with_att = [t for t in expl.targets if t.attention is not None]
    frames = expl.frames if expl.frames is not None and len(expl.frames) else None
    colours = {t.target: plt.cm.tab10(i % 10) for i, t in enumerate(expl.targets)}
    rows = [("logmel", 1.6)] + [("mask", 1.6)] * len(masked)
    rows += [("attention", 1.0)] if with_att else []
    rows += [("prob", 1.3)] if with_prob else []
    if frames is not None:  # thumbnails 12 / 8 inches wide, a title above, a line per class below
        lines = len(expl.frame_objects[0]["scores"]) if expl.frame_objects else 0
        rows += [("gap", 0.1), ("frames", 1.3 * frames.shape[1] / frames.shape[2] + 0.13 * lines + 0.1)]
    height = sum(h for _, h in rows) + 0.5 * len(rows) + 0.4
    fig = plt.figure(figsize=(12, height))
    grid = fig.add_gridspec(len(rows), 1, height_ratios=[h for _, h in rows], hspace=0.5,
                            left=0.06, right=0.985, top=1 - 0.35 / height,
                            bottom=(0.45 if frames is None else 0.1) / height)
    duration, hop = expl.duration, expl.frame_hop
    extent = (-0.5 * hop, (expl.logmel.shape[0] - 0.5) * hop, -0.5, expl.logmel.shape[1] - 0.5)
    vmax = float(np.percentile(expl.logmel, 99.5))
    vmin = vmax - 12.0  # ~52 dB of range (natural-log units)
    axes = []
    name = Path(expl.file).name if expl.file else "array input"
    method = {"guided": "guided backpropagation", "gradcam": "Grad-CAM", "integrated": "integrated gradients"}
    for r, (kind, _) in enumerate(rows):
        if kind in ("gap", "frames"):
            if kind == "frames":
                _frames_row(fig, grid[r], expl, frames, colours)
            continue
        ax = fig.add_subplot(grid[r], sharex=axes[0] if axes else None)
        axes.append(ax)
        if kind == "logmel":
            ax.imshow(expl.logmel.T, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
            _hz_axis(ax, expl.mel_edges)
            ax.set_title(f"{name}: log-mel spectrogram ({expl.duration:.1f} s); explanation by "
                         f"{method.get(expl.method, expl.method)}", fontsize=10, loc="left")
        elif kind == "mask":
            t = masked.pop(0)
            ax.imshow(expl.logmel.T, origin="lower", aspect="auto", extent=extent, cmap="gray", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
            c = colours[t.target]
            cmap = LinearSegmentedColormap.from_list("m", [(*c[:3], 0.0), (*c[:3], 0.9)])
            ax.imshow(t.mask.T, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=0, vmax=1,
                      interpolation="bilinear")
            for g in t.regions[:3]:
                lo, hi = _band(expl.mel_edges, g["f_low"]), _band(expl.mel_edges, g["f_high"])
                ax.add_patch(Rectangle((g["onset"], lo), g["offset"] - g["onset"], hi - lo, fill=False,
                                       edgecolor="white", linewidth=1.0, linestyle="--"))
            _hz_axis(ax, expl.mel_edges)
            ax.set_title(_target_title(t), fontsize=9, loc="left", color=_dark(c))
        elif kind == "attention":
            x = (np.arange(len(with_att[0].attention)) + 0.5) * expl.output_hop
            for t in with_att:
                ax.plot(x, t.attention, color=colours[t.target], linewidth=1.4, label=_short(t.target, 30))
            ax.set_ylim(bottom=0)
            ax.set_ylabel("weight")
            ax.set_title("attention weights of the pooling over time (where the clip-wise score comes from)",
                         fontsize=9, loc="left")
            ax.legend(loc="upper right", fontsize=7, ncol=min(3, len(with_att)), framealpha=0.8)
        elif kind == "prob":
            x = (np.arange(len(with_prob[0].framewise)) + 0.5) * expl.output_hop
            for i, t in enumerate(with_prob):
                col = colours[t.target]
                ax.step(x, t.framewise, where="mid", color=col, linewidth=1.4, label=_short(t.target, 30))
                for e in t.events:
                    ax.axvspan(e.onset, e.offset, ymin=0.02 + 0.06 * i, ymax=0.07 + 0.06 * i, color=col, alpha=0.9)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("probability")
            ax.set_title("frame-wise probabilities; bars at the bottom: detected events", fontsize=9, loc="left")
            ax.legend(loc="upper right", fontsize=7, ncol=min(3, len(with_prob)), framealpha=0.8)
    time_axes = axes
    for a in time_axes:
        a.set_xlim(0, duration)
        a.tick_params(labelsize=8)
    for a in time_axes[:-1]:
        a.tick_params(labelbottom=False)
    time_axes[-1].set_xlabel("time (s)")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def _target_title(t) -> str:
    if t.kind == "unit":
        return f"unit {t.target}: what it responds to"
    scores = [f"fused {t.score:.2f}"] if t.score is not None else []
    scores += [f"audio {t.audio_score:.2f}"] if t.audio_score is not None else []
    scores += [f"video {t.video_score:.2f}"] if t.video_score is not None else []
    where = ""
    if t.regions:
        g = t.regions[0]
        where = f"; strongest region {g['onset']:.1f}-{g['offset']:.1f} s, {g['f_low']:.0f}-{g['f_high']:.0f} Hz"
    return f"what the model heard as \"{t.target}\" ({', '.join(scores)}){where}"


def _dark(colour) -> tuple:
    return tuple(0.75 * v for v in colour[:3])


def _frames_row(fig, cell, expl, frames: np.ndarray, colours: dict) -> None:
    """Up to :data:`_MAX_FRAMES` evenly chosen video frames with their objects and class contributions."""
    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), _MAX_FRAMES)).round().astype(int))
    sub = cell.subgridspec(1, _MAX_FRAMES, wspace=0.08)
    for j, i in enumerate(pick):
        ax = fig.add_subplot(sub[j])
        ax.imshow(frames[i])
        ax.set_anchor("N")  # thumbnails at the top of the row, right below its title
        ax.set_xticks([])
        ax.set_yticks([])
        info = expl.frame_objects[i] if i < len(expl.frame_objects) else None
        if info is None:
            continue
        top = info["objects"][0]
        ax.set_title(f"{info['time']:.1f} s: {_short(top['label'], 16)} {top['probability']:.2f}", fontsize=7)
        lines = []
        for name, score in info["scores"].items():
            best = max(info["objects"], key=lambda o: o["contributions"].get(name, 0.0))
            share = best["contributions"].get(name, 0.0)
            src = f" ← {_short(best['label'], 10)}" if share > 0 else ""
            lines.append((f"{_short(name, 9)} {score:.2f}{src}", colours.get(name, "black")))
        for k, (text, col) in enumerate(lines):
            ax.text(0.0, -0.06 - 0.13 * k, text, transform=ax.transAxes, fontsize=6.2, va="top", color=_dark(col))
    box = cell.get_position(fig)
    fig.text(box.x0, box.y1 + 0.28 / fig.get_figheight(), "frames the video branch used: top object; per "
             "class the frame's video score ← the object contributing most (probability × label-map weight)",
             fontsize=9, ha="left", va="bottom")
