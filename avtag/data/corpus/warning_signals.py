"""Electronic warning signals synthesised from their published patterns and placed outdoors ("constructed").

Four DCASE 2017 Task 4 classes have no real, redistributable recording in the package registries
(``../shared/corpus/SOURCES.md`` (c)): reversing beeps, car alarm, ambulance siren and civil-defence siren.
All four are *electronic or mechanical signal generators* with documented patterns, so a procedural
signal, sent through a loudspeaker-horn model and an outdoor propagation model and then mixed over real
ambience beds by the soundscape mixer, is physically faithful; every clip made here is still marked
``constructed`` wherever it is used. A :class:`Device` is one alarm unit (its pattern and frequencies,
drawn once); :func:`render` plays it for a few seconds at a random distance, speed and reverberation.

Patterns (all frequencies in Hz, times in s):

* **Reversing beeps** (``reversing-beeps``): the tonal back-up alarm of lorries and work machines tested
  under SAE J994 ("Alarm - Backup - Electric Laboratory Performance Testing") and regulated as "audible
  reverse warning devices" by UN Regulation No. 165 (2023): a single tone ``f0 ~ U(950, 1250)`` from a
  square-driven transducer (odd harmonics 1/k), pulsed with period ``U(0.7, 1.3)`` (the familiar
  beep about once a second) and duty ``U(0.45, 0.6)``. One device in six is the *broadband* kind
  (band-pass noise 0.5-4 kHz, same cadence) that the R165 work discussed as a quieter alternative.
* **Car alarm** (``car-alarm``): UN Regulation No. 116 (vehicle alarm systems) lets the alarm sound a
  separate siren or the vehicle's own horn. Siren devices (3 in 4) cycle through the segments of the
  common "six-tone" aftermarket siren, ``U(1.5, 3)`` s each: slow wail (sweep period 0.8-1.5 s),
  yelp (4-7 sweeps/s), hi-lo (two tones alternating every 0.2-0.35 s), machine-gun (tone gated at
  8-12 Hz), rising whoop (0.35-0.6 s up-sweeps) and chirps (0.1 s pips at 2-3 Hz), all between 1.8 and
  3.5 kHz. Horn devices pulse a two-disc electric horn (``f1 ~ U(380, 450)``, ``f2 = f1 * U(1.2, 1.3)``,
  buzzy harmonics) with period ``U(0.8, 1.4)``.
* **Ambulance siren** (``ambulance-siren``): the tones of electronic vehicle sirens (as described in
  Wikipedia, "Siren (alarm)"): wail (sweep ``f_lo ~ U(600, 800)`` to ``f_hi ~ U(1300, 1700)`` and back,
  period ``U(3, 6)``), yelp (the same range, period ``U(0.25, 0.4)``), hi-lo two-tone (``f1 ~ U(450,
  700)`` and ``f1 * U(1.25, 1.42)``, e.g. the 440/585 Hz fourth of the German DIN 14610
  "Folgetonhorn", ``U(0.45, 0.8)`` s per tone) and the fast "phaser" sweep (period 0.08-0.12 s); one or
  two tones per clip (crews switch from wail to yelp at junctions). Square-wave drive into a compression
  horn (band 400-5000 Hz, soft clipping). The vehicle drives past (Doppler, ``U(5, 20)`` m/s at
  ``U(5, 40)`` m).
* **Civil defence siren** (``civil-defence-siren``): the outdoor warning signals of FEMA CPG 1-17
  ("Outdoor Warning Systems Guide", 1980): *alert* (steady tone) and *attack* (wavering tone), and the
  similar rising-falling public warning tone of European systems. Mechanical sirens (2 in 3): a rotor
  chopping air at ``f_max ~ U(350, 800)`` (modern electromechanical sirens peak around 400, 600 or
  800 Hz, airraidsirens.net), sawtooth-rich with chopped-air noise, one or two tones (ratio 1.2, e.g.
  10 and 12 ports), a spin-up of 3-6 s, the wavering tone between ``0.55 f_max`` and ``f_max`` with
  period ``U(4, 10)``, and the slow loudness swing of a rotating horn (period 4-15 s). Electronic
  ones play the same patterns with a square wave. Heard from far away (150-1500 m).

Outdoor placement (:func:`place_outdoors`): spherical spreading and, for a moving vehicle, the Doppler
shift of a source driving along a straight road (emission time ``t - r(t)/c``, ``c = 343`` m/s); a
ground reflection (two-ray model, reflection coefficient ``U(0.6, 0.95)``); air absorption per ISO
9613-1 at 20 degC and 70 % relative humidity (octave-band attenuation 0.1, 0.3, 1.1, 2.8, 5.0, 9.0,
22.9, 76.6 dB/km at 63 Hz-8 kHz, interpolated); and convolution with an exponentially decaying noise
impulse response (street or open-field reverberation, RT60 0.3-1.2 s, 1.5-3 s for the distant
civil-defence sirens) at a random direct-to-reverberant ratio.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

#: the DCASE 2017 class each kind of device stands for
KINDS = {"reversing-beeps": "Reversing beeps", "car-alarm": "Car alarm", "ambulance-siren": "Ambulance (siren)",
         "civil-defence-siren": "Civil defense siren"}
SPEED_OF_SOUND = 343.0
#: ISO 9613-1 air absorption, 20 degC, 70 % RH: (octave centre Hz, dB per metre)
AIR_ABSORPTION = ((63, 0.0001), (125, 0.0003), (250, 0.0011), (500, 0.0028), (1000, 0.0050), (2000, 0.0090),
                  (4000, 0.0229), (8000, 0.0766))


@dataclass(frozen=True)
class Device:
    """One alarm unit: its kind (a key of :data:`KINDS`), pattern and parameters (Hz, s)."""

    kind: str
    pattern: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return KINDS[self.kind]


def _u(rng, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 4)


def draw_device(kind: str, rng) -> Device:
    """A random device of ``kind`` with the parameter ranges of the module docstring.

    Raises:
        ValueError: an unknown kind.
    """
    if kind == "reversing-beeps":
        pattern = "broadband" if rng.random() < 1 / 6 else "tonal"
        return Device(kind, pattern, {"f0": _u(rng, 950, 1250), "period": _u(rng, 0.7, 1.3),
                                      "duty": _u(rng, 0.45, 0.6)})
    if kind == "car-alarm":
        if rng.random() < 0.25:
            f1 = _u(rng, 380, 450)
            return Device(kind, "horn-pulse", {"f1": f1, "f2": round(f1 * _u(rng, 1.2, 1.3), 2),
                                               "period": _u(rng, 0.8, 1.4), "duty": _u(rng, 0.45, 0.6)})
        lo = _u(rng, 1800, 2300)
        return Device(kind, "six-tone", {"f_lo": lo, "f_hi": _u(rng, max(lo + 600, 2800), 3500),
                                         "segment": _u(rng, 1.5, 3.0), "wail_period": _u(rng, 0.8, 1.5),
                                         "yelp_rate": _u(rng, 4, 7), "hilo_step": _u(rng, 0.2, 0.35),
                                         "gun_rate": _u(rng, 8, 12), "whoop": _u(rng, 0.35, 0.6),
                                         "chirp_rate": _u(rng, 2, 3)})
    if kind == "ambulance-siren":
        tones = ["wail", "yelp", "hi-lo", "phaser"]
        first = tones[int(rng.integers(4))]
        second = tones[int(rng.integers(4))] if rng.random() < 0.4 else first
        f1 = _u(rng, 450, 700)
        return Device(kind, f"{first}+{second}" if second != first else first,
                      {"f_lo": _u(rng, 600, 800), "f_hi": _u(rng, 1300, 1700), "wail_period": _u(rng, 3, 6),
                       "yelp_period": _u(rng, 0.25, 0.4), "f1": f1, "f2": round(f1 * _u(rng, 1.25, 1.42), 2),
                       "hilo_step": _u(rng, 0.45, 0.8), "phaser_period": _u(rng, 0.08, 0.12)})
    if kind == "civil-defence-siren":
        make = "mechanical-" if rng.random() < 2 / 3 else "electronic-"
        return Device(kind, make + ("attack" if rng.random() < 0.6 else "alert"),
                      {"f_max": _u(rng, 350, 800), "dual": bool(rng.random() < 0.5), "spin_up": _u(rng, 3, 6),
                       "waver_period": _u(rng, 4, 10), "rotation_period": _u(rng, 4, 15)})
    raise ValueError(f"unknown warning-signal kind {kind!r}; expected one of {', '.join(KINDS)}")


# ---------------------------------------------------------------- oscillators and envelopes
def oscillator(freq: np.ndarray, sr: int, amplitudes, phase0: float = 0.0) -> np.ndarray:
    """Harmonic tone following the instantaneous frequency ``freq`` (Hz per sample); harmonic ``k``
    (amplitude ``amplitudes[k-1]``) is silenced wherever it would pass 0.45 ``sr`` (no aliasing)."""
    phase = phase0 + 2 * np.pi * np.cumsum(freq) / sr
    out = np.zeros(len(freq))
    for k, a in enumerate(amplitudes, start=1):
        if a:
            out += a * np.sin(k * phase) * (k * freq < 0.45 * sr)
    return out


def square_harmonics(n: int = 9) -> list[float]:
    """Odd harmonics 1/k up to ``n``: a band-limited square wave."""
    return [1.0 / k if k % 2 else 0.0 for k in range(1, n + 1)]


def gate(t: np.ndarray, period: float, duty: float, ramp: float = 0.005, offset: float = 0.0) -> np.ndarray:
    """On/off envelope: on for ``duty * period`` of every ``period`` s, linear ramps of ``ramp`` s."""
    pos = np.mod(t - offset, period)
    on = duty * period
    return np.clip(np.minimum(pos / ramp, (on - pos) / ramp), 0.0, 1.0)


def sweep(t: np.ndarray, lo: float, hi: float, period: float, shape: str = "cos") -> np.ndarray:
    """Frequency track between ``lo`` and ``hi``: ``cos`` (smooth up and down) or ``saw`` (up, then drop)."""
    phase = np.mod(t / period, 1.0)
    x = phase if shape == "saw" else 0.5 - 0.5 * np.cos(2 * np.pi * phase)
    return lo + (hi - lo) * x


def _horn(x: np.ndarray, sr: int, lo: float, hi: float, drive: float = 2.0) -> np.ndarray:
    """Loudspeaker horn: 2nd-order band-pass ``lo``-``hi`` Hz, then tanh soft clipping."""
    from scipy.signal import butter, sosfilt

    hi = min(hi, 0.45 * sr)
    y = sosfilt(butter(2, [lo, hi], btype="band", fs=sr, output="sos"), x)
    y = y / (np.max(np.abs(y)) + 1e-12)
    return np.tanh(drive * y) / np.tanh(drive)


# ---------------------------------------------------------------- the patterns
def render_dry(device: Device, seconds: float, sr: int, rng) -> np.ndarray:
    """The device's signal at the source, ``(round(seconds * sr),)`` float64, peak 1."""
    p, n = device.params, int(round(seconds * sr))
    t = np.arange(n) / sr
    if device.kind == "reversing-beeps":
        env = gate(t, p["period"], p["duty"], offset=float(rng.uniform(0, p["period"])))
        if device.pattern == "broadband":
            from scipy.signal import butter, sosfilt

            band = butter(4, [500, min(4000, 0.45 * sr)], btype="band", fs=sr, output="sos")
            x = sosfilt(band, rng.standard_normal(n))
        else:
            x = oscillator(np.full(n, p["f0"]), sr, [1.0, 0.06, 0.33, 0.03, 0.2, 0.0, 0.14])
        y = x * env
    elif device.kind == "car-alarm":
        y = _car_alarm(device, t, sr, rng)
    elif device.kind == "ambulance-siren":
        tones = device.pattern.split("+")
        switch = float(rng.uniform(0.3, 0.7)) * seconds if len(tones) == 2 else seconds
        f = np.where(t < switch, _siren_track(tones[0], p, t), _siren_track(tones[-1], p, t))
        y = _horn(oscillator(f, sr, square_harmonics(9)), sr, 400, 5000, drive=float(rng.uniform(1.5, 3.0)))
    else:
        y = _civil_defence(device, t, sr, rng)
    return y / (np.max(np.abs(y)) + 1e-12)


def _siren_track(tone: str, p: dict, t: np.ndarray) -> np.ndarray:
    if tone == "wail":
        return sweep(t, p["f_lo"], p["f_hi"], p["wail_period"])
    if tone == "yelp":
        return sweep(t, p["f_lo"], p["f_hi"], p["yelp_period"])
    if tone == "phaser":
        return sweep(t, p["f_lo"], p["f_hi"], p["phaser_period"], "saw")
    return np.where(np.mod(t / p["hilo_step"], 2.0) < 1.0, p["f1"], p["f2"])  # hi-lo


def _car_alarm(device: Device, t: np.ndarray, sr: int, rng) -> np.ndarray:
    p = device.params
    if device.pattern == "horn-pulse":
        buzz = [1.0 / k for k in range(1, 16)]
        x = oscillator(np.full(len(t), p["f1"]), sr, buzz) + oscillator(np.full(len(t), p["f2"]), sr, buzz, 1.0)
        return _horn(x, sr, 250, 6000, 1.5) * gate(t, p["period"], p["duty"])
    lo, hi = p["f_lo"], p["f_hi"]
    segments = ["wail", "yelp", "hi-lo", "machine-gun", "whoop", "chirp"]
    start = int(rng.integers(len(segments)))
    seg = (start + (t // p["segment"]).astype(int)) % len(segments)
    tracks = [sweep(t, lo, hi, p["wail_period"]), sweep(t, lo, hi, 1 / p["yelp_rate"]),
              np.where(np.mod(t / p["hilo_step"], 2.0) < 1.0, hi, lo), np.full(len(t), 0.5 * (lo + hi)),
              sweep(t, lo, hi, p["whoop"], "saw"), np.full(len(t), hi)]
    gun, chirp = gate(t, 1 / p["gun_rate"], 0.5, 0.003), gate(t, 1 / p["chirp_rate"], 0.1 * p["chirp_rate"], 0.003)
    envs = [1.0, 1.0, 1.0, gun, 1.0, chirp]
    f = np.choose(seg, tracks)
    env = np.choose(seg, [np.broadcast_to(e, t.shape) for e in envs])
    return _horn(oscillator(f, sr, square_harmonics(5)), sr, 1000, 7000, 2.5) * env


def _civil_defence(device: Device, t: np.ndarray, sr: int, rng) -> np.ndarray:
    p = device.params
    f_max = p["f_max"]
    start = float(rng.uniform(0, 1))  # where the clip starts in the cycle: during spin-up or later
    tt = t + start * (p["spin_up"] + p["waver_period"])
    spin = np.clip(tt / p["spin_up"], 0.0, 1.0) ** 0.7
    waver = np.ones(len(t))
    if device.pattern.endswith("attack"):
        cycle = 0.5 + 0.5 * np.cos(2 * np.pi * (tt - p["spin_up"]) / p["waver_period"])
        waver = np.where(tt < p["spin_up"], 1.0, 0.55 + 0.45 * cycle)
    f = np.maximum(f_max * spin * waver, 20.0)
    mechanical = device.pattern.startswith("mechanical")
    harm = [1.0 / k for k in range(1, 13)] if mechanical else square_harmonics(9)
    x = oscillator(f, sr, harm)
    if p["dual"]:
        x += 0.8 * oscillator(1.2 * f, sr, harm, 0.7)
    if mechanical:  # air chopped by the rotor: noise modulated at the port rate
        from scipy.signal import butter, sosfilt

        band = butter(2, [200, min(4000, 0.45 * sr)], btype="band", fs=sr, output="sos")
        noise = sosfilt(band, rng.standard_normal(len(t)))
        chopped = noise * (0.5 + 0.5 * np.sin(2 * np.pi * np.cumsum(f) / sr))
        x += 0.3 * chopped * np.max(np.abs(x)) / (np.max(np.abs(noise)) + 1e-12)
    rotation = 0.65 + 0.35 * np.cos(2 * np.pi * (t / p["rotation_period"] + rng.uniform(0, 1)))
    return x * np.clip(tt / 0.3, 0, 1) * rotation


# ---------------------------------------------------------------- outdoors
def air_absorption(x: np.ndarray, sr: int, distance: float) -> np.ndarray:
    """``x`` attenuated as by ``distance`` m of air (ISO 9613-1, 20 degC, 70 % RH; see module docstring)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    bands = np.array([b for b, _ in AIR_ABSORPTION], dtype=float)
    alpha = np.interp(np.log2(np.maximum(f, 1.0)), np.log2(bands), [a for _, a in AIR_ABSORPTION])
    alpha = np.where(f > bands[-1], AIR_ABSORPTION[-1][1] * (f / bands[-1]) ** 2, alpha)
    return np.fft.irfft(spec * 10 ** (-alpha * distance / 20), len(x))


def reverb_ir(sr: int, rt60: float, rng) -> np.ndarray:
    """Exponentially decaying Gaussian noise, -60 dB after ``rt60`` s, unit energy; 1 ms pre-delay."""
    n = int(min(rt60, 3.0) * sr)
    h = rng.standard_normal(n) * np.exp(-6.908 * np.arange(n) / (rt60 * sr))
    h = np.concatenate([np.zeros(int(0.001 * sr)), h])
    return h / np.sqrt(np.sum(h**2))


def place_outdoors(x: np.ndarray, sr: int, rng, distance: tuple[float, float], speed: tuple[float, float],
                   rt60: tuple[float, float], drr_db: tuple[float, float],
                   source_height: float = 1.5) -> tuple[np.ndarray, dict]:
    """``x`` as heard by a microphone 1.5 m high (see module docstring); returns ``(y, placement)``."""
    n = len(x)
    d0, v = float(rng.uniform(*distance)), float(rng.uniform(*speed))
    t = np.arange(n) / sr
    t_pass = float(rng.uniform(0.3, 0.7)) * n / sr
    along = v * (t - t_pass)
    y = np.zeros(n)
    refl = float(rng.uniform(0.6, 0.95))
    for height, coeff in ((source_height - 1.5, 1.0), (source_height + 1.5, refl)):  # direct path, ground image
        r = np.sqrt(along**2 + d0**2 + height**2)
        emitted = (t - (r - d0) / SPEED_OF_SOUND) * sr  # the constant latency d0 / c left out
        y += coeff * np.interp(emitted, np.arange(n), x, left=0.0, right=0.0) / r
    y = air_absorption(y, sr, d0)
    rt, drr = float(rng.uniform(*rt60)), float(rng.uniform(*drr_db))
    from scipy.signal import fftconvolve

    wet = fftconvolve(y, reverb_ir(sr, rt, rng))[:n]
    y = y / (np.sqrt(np.mean(y**2)) + 1e-12) + wet / (np.sqrt(np.mean(wet**2)) + 1e-12) * 10 ** (-drr / 20)
    placement = {"distance_m": round(d0, 1), "speed_m_s": round(v, 2), "pass_s": round(t_pass, 2),
                 "ground_reflection": round(refl, 3), "rt60_s": round(rt, 2), "drr_db": round(drr, 1)}
    return y / (np.max(np.abs(y)) + 1e-12), placement


#: outdoor placement per kind: distance m, speed m/s, RT60 s, direct-to-reverberant dB, source height m
PLACEMENT = {
    "reversing-beeps": ((5.0, 40.0), (0.0, 2.0), (0.3, 0.8), (3.0, 15.0), 1.5),
    "car-alarm": ((5.0, 60.0), (0.0, 0.0), (0.3, 1.2), (-3.0, 10.0), 0.8),
    "ambulance-siren": ((5.0, 40.0), (5.0, 20.0), (0.3, 1.2), (-3.0, 10.0), 2.0),
    "civil-defence-siren": ((150.0, 1500.0), (0.0, 0.0), (1.5, 3.0), (-10.0, 3.0), 15.0),
}


@dataclass
class Rendition:
    """One constructed recording: the audio (float32, peak 0.9) and everything needed to remake it."""

    audio: np.ndarray
    device: Device
    seconds: float
    placement: dict

    def recipe(self) -> dict:
        return {"label": self.device.label, "device": asdict(self.device), "seconds": self.seconds,
                "placement": self.placement, "constructed": True}


def render(device: Device, seconds: float, sr: int, rng, outdoors: bool = True) -> Rendition:
    """Play ``device`` for ``seconds`` s at ``sr`` Hz; placed outdoors (:data:`PLACEMENT`) unless ``outdoors`` is
    False."""
    x = render_dry(device, seconds, sr, rng)
    placement: dict = {}
    if outdoors:
        dist, speed, rt, drr, height = PLACEMENT[device.kind]
        x, placement = place_outdoors(x, sr, rng, dist, speed, rt, drr, height)
    return Rendition((0.9 * x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32), device, seconds, placement)
