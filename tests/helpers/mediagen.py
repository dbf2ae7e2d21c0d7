"""Write real media files for tests with PyAV (FFmpeg's encoders) and the stdlib ``wave``.

Every file here is a genuine container that FFmpeg, decord and other players read;
nothing is mocked.
"""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV. ``samples``: ``(samples,)`` mono or ``(samples, channels)``, float in [-1, 1]."""
    path = Path(path)
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def tone(seconds: float, sample_rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A sine tone ``(samples,)`` float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_media(
    path: str | Path,
    *,
    seconds: float = 2.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    channels: int = 1,
    video: bool = True,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio_codec: str = "aac",
    video_codec: str = "mpeg4",
    frame_fn=None,
) -> Path:
    """Encode a container (mp4/mkv/avi/webm by extension) with optional audio and video.

    Args:
        audio: ``(samples,)`` mono signal in [-1, 1] at ``sample_rate``; copied to
            ``channels`` channels. None -> no audio stream.
        video: add a video stream of ``seconds * fps`` frames of ``size`` (w, h);
            ``frame_fn(i) -> (h, w, 3) uint8`` draws frame ``i`` (default: a moving bar).
    """
    import av

    path = Path(path)
    width, height = size
    layouts = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
    with av.open(str(path), "w") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream(video_codec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if audio is not None:
            as_ = out.add_stream(audio_codec, rate=sample_rate, layout=layouts[channels])
        if vs is not None:
            for i in range(int(round(seconds * fps))):
                img = frame_fn(i) if frame_fn else _bar_frame(i, width, height)
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if as_ is not None:
            fmt = as_.codec_context.format.name if as_.codec_context.format else "fltp"
            block = 1024
            data = np.repeat(np.asarray(audio, np.float32)[None, :], channels, axis=0)
            pts = 0
            for i in range(0, data.shape[1], block):
                chunk = np.ascontiguousarray(data[:, i : i + block])
                if fmt == "s16p":
                    frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16p",
                                                       layout=layouts[channels])
                elif fmt == "s16":
                    inter = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                    frame = av.AudioFrame.from_ndarray(inter, format="s16", layout=layouts[channels])
                elif fmt == "flt":
                    frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1), format="flt", layout=layouts[channels])
                else:
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layouts[channels])
                frame.sample_rate = sample_rate
                frame.pts = pts
                frame.time_base = Fraction(1, sample_rate)
                pts += chunk.shape[1]
                for packet in as_.encode(frame):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    return path


def _bar_frame(i: int, width: int, height: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    x = (i * 3) % width
    img[:, x : x + 4] = (255, 200, 0)
    img[: height // 4] = (0, 80, 160)
    return img
