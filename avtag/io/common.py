"""Types shared by every part of :mod:`avtag.io`: the decoded :class:`Clip`, the
container's :class:`MediaInfo`, the one error :class:`MediaError`, and the checks
and message helpers that keep every error one line starting with the file name.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avtag import AvtagError


class MediaError(AvtagError):
    """A media file that cannot be read; the message names the file and the problem."""


@dataclass
class MediaInfo:
    """What a container holds, read from its headers (no decoding).

    ``duration`` is in seconds; audio fields are None without an audio track and
    video fields None without a video stream (cover art does not count).
    ``sample_rate`` in Hz, ``fps`` in frames per second, ``width``/``height`` in pixels.
    """

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int | None = None
    channels: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class Clip:
    """A decoded span of a media file.

    Attributes:
        path: the source file.
        start: start of the span in the file, seconds.
        duration: length of the span, seconds.
        waveform: ``(samples,)`` float32 mono in [-1, 1] (the mean of the source
            channels), or None (no audio / not asked).
        sample_rate: Hz of ``waveform``, or None.
        frames: ``(n, H, W, 3)`` uint8 RGB, or None (no video / not asked).
        frame_times: ``(n,)`` float64, seconds from the start of the file.
        warnings: what was degraded, e.g. ``"no audio track"``.
    """

    path: Path
    start: float
    duration: float
    waveform: np.ndarray | None = None
    sample_rate: int | None = None
    frames: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def has_audio(self) -> bool:
        """Whether a waveform was decoded."""
        return self.waveform is not None

    @property
    def has_video(self) -> bool:
        """Whether frames were decoded."""
        return self.frames is not None


def media_error(path: str | Path, problem: str) -> MediaError:
    """``MediaError("<path>: <problem>")`` with the problem cut to one line."""
    return MediaError(f"{path}: {one_line(problem, 300)}")


def flat(text, limit: int = 200) -> str:
    """All of ``text``'s lines on one, runs of whitespace as one space, at most ``limit`` characters
    (for messages that libraries spread over several lines; :func:`one_line` keeps the first line only)."""
    return " ".join(str(text).split())[:limit]


def one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


#: C0 controls, DEL and C1 controls, written as ``\t``, ``\n``, ``\r`` or ``\xNN`` by :func:`visible`
CONTROL_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
CONTROL_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def visible(text) -> str:
    """``text`` with its control characters (C0, DEL, C1) written out as ``\\t``, ``\\n``, ``\\r`` or
    ``\\xNN``: a file name printed on a terminal cannot move the cursor, recolour or retitle it, or
    break a one-line message into two."""
    return str(text).translate(CONTROL_ESCAPES)


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and end (a path's file name)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 20] + "..." + text[-17:]


def reason(exc: BaseException) -> str:
    """A decoder exception as one short line (its type name when it has no message)."""
    return one_line(str(exc)) or type(exc).__name__


#: sample rates (Hz) and channel counts a waveform given in Python may have
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, MAX_CHANNELS = 1000, 768_000, 64


def mono_waveform(waveform, sample_rate) -> np.ndarray:
    """A waveform given in Python as ``(samples,)`` float32 mono: ``(channels, samples)`` is averaged,
    integer PCM is scaled by its type's range (int16 / 32768; uint8 (x - 128) / 128).

    Raises:
        MediaError: a sample rate outside [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] Hz, values
            that are not numbers, another shape (more than :data:`MAX_CHANNELS` rows: a transposed
            array), NaN or infinite samples.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number)) or \
            not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:  # 1 Hz asked for 2 GB, 1e30 Hz never ended
        raise MediaError(f"a waveform needs its sample_rate in Hz, {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}, "
                         f"got {sample_rate!r}")
    wave = np.asarray(waveform)
    if wave.ndim == 2 and wave.shape[0] > MAX_CHANNELS:
        raise MediaError(f"waveform of shape {wave.shape}: (channels, samples) expected and {wave.shape[0]} "
                         "channels are too many; for a (samples, channels) array pass waveform.T")
    if wave.dtype.kind not in "iuf":
        raise MediaError(f"waveform must hold numbers, got dtype {wave.dtype}")
    if wave.dtype.kind in "iu":
        half = (int(np.iinfo(wave.dtype).max) + 1) // (2 if wave.dtype.kind == "u" else 1)
        wave = (wave.astype(np.float64) - (half if wave.dtype.kind == "u" else 0)) / half
    wave = wave.astype(np.float32, copy=False)
    wave = wave.mean(axis=0) if wave.ndim == 2 else wave
    if wave.ndim != 1:
        raise MediaError(f"waveform must be (samples,) or (channels, samples), got shape {np.shape(waveform)}")
    if not np.isfinite(wave).all():
        raise MediaError("waveform holds NaN or infinite samples")
    return wave


#: decoded samples whose peak exceeds this (full scale is 1) are clipped, with a warning: a float
#: file of 1e30 made the log-mel overflow and every score NaN
OVER_FULL_SCALE = 2.0


def require_regular(path: str | Path) -> Path:
    """``path``, unless it exists and is not a regular file (a FIFO, socket or device: reading one
    blocks or never ends). Raises OSError, which the readers already turn into their one-line errors."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return path  # missing or unnameable: the reader's own open() says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, socket or device)", str(path))
    return path


#: the largest config, rule table or other hand-written text file read whole (bytes)
MAX_TEXT_BYTES = 16 * 2**20
#: the largest clip list or label file read whole (bytes; DCASE 2017's training list is 2.4 MB)
MAX_LIST_BYTES = 512 * 2**20


def read_small_text(path: str | Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a hand-written file (config, rule table) read whole, undecodable bytes replaced.

    Raises:
        OSError: missing, unreadable, not a regular file (a device such as ``/dev/zero`` never
            ends), or larger than ``max_bytes`` (``strerror`` says which).
    """
    path = require_regular(path)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes / 2**20:g} MiB, too big for this kind of file", str(path))
    return data.decode("utf-8", errors="replace")


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """``path`` as written stays inside ``folder`` (no ``..`` out of it, not absolute elsewhere);
    symbolic links are not followed: links inside a user's folder are the user's business."""
    return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(folder))


def sanitize_decoded(wave: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """Decoded mono audio ``(samples,)`` made safe for the network, and what was done (warnings).

    NaN / infinite samples become 0 (None when no sample is finite); a peak above
    :data:`OVER_FULL_SCALE` is clipped to [-1, 1]. An empty array gives None."""
    if wave.size == 0:
        return None, ["audio track is empty"]
    finite = np.isfinite(wave)
    if not finite.any():
        return None, ["audio track holds only NaN or infinite samples"]
    notes = []
    if not finite.all():
        wave = np.where(finite, wave, 0.0).astype(np.float32)
        notes.append(f"{int((~finite).sum())} NaN or infinite audio samples set to 0")
    peak = float(np.abs(wave).max())
    if peak > OVER_FULL_SCALE:
        wave = np.clip(wave, -1.0, 1.0)
        notes.append(f"audio peak {peak:.3g} is beyond full scale (1): clipped to [-1, 1]")
    return wave, notes


def check_decode_settings(sample_rate=16000, fps=None, num_frames=None, frame_short_side=None,
                          start=None, end=None) -> None:
    """Refuse decode settings a decoder cannot take (a sample rate of 0 crashes decord with SIGFPE).

    Raises:
        MediaError: ``bad decode settings: ...`` naming the first bad value.
    """
    def positive(value, whole: bool) -> bool:
        try:
            return 0 < value < float("inf") and (not whole or float(value) == int(value))
        except (TypeError, ValueError):
            return False

    for name, value, whole, optional in (("sample_rate", sample_rate, True, False), ("fps", fps, False, True),
                                         ("num_frames", num_frames, True, True),
                                         ("frame_short_side", frame_short_side, True, True)):
        if not ((optional and value is None) or positive(value, whole)):
            raise MediaError(f"bad decode settings: {name} must be a positive {'whole ' if whole else ''}number, "
                             f"got {value!r}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not (isinstance(value, (int, float, np.number)) and np.isfinite(value)):
            raise MediaError(f"bad decode settings: {name} must be a number of seconds, got {value!r}")


def check_file(path: str | Path) -> Path:
    """``path`` as a Path, after checking it is an existing, non-empty regular file.

    Raises:
        MediaError: missing, a folder, unreadable or empty.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise media_error(path, "file not found") from None
    except OSError as exc:
        raise media_error(path, f"cannot access ({exc.strerror or exc})") from None
    if path.is_dir():
        raise media_error(path, "is a folder, not a media file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO read as media blocks or reads as empty
        raise media_error(path, "not a regular file (a pipe, socket or device)")
    if st.st_size == 0:
        raise media_error(path, "empty file (0 bytes)")
    return path


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB frames ``(n, H, W, 3)`` uint8 resized to ``size`` = ``(height, width)`` pixels by FFmpeg's
    scaler (bicubic), the one that scales decoded frames."""
    import av

    out = np.empty((len(frames), size[0], size[1], 3), np.uint8)
    for i, frame in enumerate(frames):
        image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        out[i] = image.reformat(width=size[1], height=size[0], interpolation="BICUBIC").to_ndarray()
    return out
