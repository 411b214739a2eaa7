"""Acoustic conditions: pure functions of (audio, parameters, rng), and a small spec language for them.

A condition is named by a string, so manifests and configs stay readable:

    clean                 the synthesized audio as is
    white-snr10           additive white noise at 10 dB SNR
    pink-snr5             additive pink (1/f) noise at 5 dB SNR
    telephone             8 kHz, 300-3400 Hz band, G.711 mu-law, back to 16 kHz
    speed0.9 / speed1.1   speed perturbation by resampling (tempo and pitch change together, as Kaldi's)
    telephone+pink-snr10  steps chained left to right

SNR is measured against the *active* speech level (``audio.active_rms``), so silence padding does not
make a clip look quieter than its speech; the noise is scaled over the whole clip.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from speechbench.speech import SAMPLE_RATE
from speechbench.speech.audio import active_rms, peak_limit, resample


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum (-3 dB per octave) by shaping white noise in the frequency domain; unit RMS."""
    if n == 0:
        return np.zeros(0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0  # no DC boost: the first bin gets the same weight as the second
    noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white",
              sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speech + noise with 10*log10(P_speech_active / P_noise) = ``snr_db``."""
    make = {"white": white_noise, "pink": pink_noise}.get(color)
    if make is None:
        raise ValueError(f"unknown noise color {color!r}; white or pink")
    noise = make(audio.size, rng)
    noise_rms = float(np.sqrt(np.mean(noise**2))) if noise.size else 0.0
    speech = active_rms(audio, sr)
    if speech == 0 or noise_rms == 0:
        return audio.astype(np.float32)
    noise *= speech / (noise_rms * 10 ** (snr_db / 20))
    # Scaling the sum (never clipping it) keeps the SNR exact even at 0 dB.
    return peak_limit((audio + noise).astype(np.float32))


def noise_floor(audio: np.ndarray, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Low white noise at an absolute level (RMS dBFS). Synthetic speech has digital silence between
    words, which no microphone produces; classic recognizers (pocketsphinx) misfire on it."""
    if level_dbfs is None or not math.isfinite(level_dbfs):
        return audio.astype(np.float32)
    return (audio + rng.standard_normal(audio.size) * 10 ** (level_dbfs / 20)).astype(np.float32)


def pad_silence(audio: np.ndarray, before_s: float, after_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Leading/trailing silence: real recordings start before the first word and end after the last."""
    return np.concatenate([
        np.zeros(int(round(before_s * sr)), np.float32), audio.astype(np.float32),
        np.zeros(int(round(after_s * sr)), np.float32),
    ])


def mulaw(audio: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711 mu-law encode + decode (8-bit): the quantization a telephone line adds."""
    x = np.clip(audio, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1  # 256 levels
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def telephone(audio: np.ndarray, sr: int = SAMPLE_RATE, low_hz: float = 300.0, high_hz: float = 3400.0,
              codec: bool = True) -> np.ndarray:
    """Narrowband telephone channel: down to 8 kHz, band-pass 300-3400 Hz, optional mu-law, back up.

    The resampler's anti-alias filter already removes everything above 4 kHz; the band-pass takes away
    the low end and the 3.4-4 kHz edge. Back at ``sr``, the top half of the spectrum is empty, which is
    what a wideband recognizer hears from a phone call.
    """
    narrow = resample(audio, sr, 8000).astype(np.float64)
    sos = butter(6, [low_hz, high_hz], btype="bandpass", fs=8000, output="sos")
    narrow = sosfilt(sos, narrow)
    if codec:
        narrow = mulaw(narrow)
    out = resample(narrow.astype(np.float32), 8000, sr)
    return out[: audio.size] if out.size > audio.size else out


def speed(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``factor`` times faster: the clip is treated as if recorded at sr*factor and resampled to sr,
    so duration scales by 1/factor (pitch moves with it, as in Kaldi/ESPnet speed perturbation)."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    return resample(audio, int(round(sr * factor)), sr)


@dataclass(frozen=True)
class Step:
    kind: str  # clean | noise | telephone | speed
    color: str = ""
    snr_db: float = 0.0
    factor: float = 1.0


_NOISE = re.compile(r"^(white|pink)-snr(-?\d+(?:\.\d+)?)$")
_SPEED = re.compile(r"^speed(\d+(?:\.\d+)?)$")


def parse_condition(spec: str) -> list[Step]:
    """'telephone+pink-snr10' -> [Step('telephone'), Step('noise', 'pink', 10.0)]; ValueError if unknown."""
    steps: list[Step] = []
    for part in spec.strip().lower().split("+"):
        if part == "clean":
            steps.append(Step("clean"))
        elif part == "telephone":
            steps.append(Step("telephone"))
        elif m := _NOISE.match(part):
            steps.append(Step("noise", color=m.group(1), snr_db=float(m.group(2))))
        elif m := _SPEED.match(part):
            steps.append(Step("speed", factor=float(m.group(1))))
        else:
            raise ValueError(
                f"unknown condition {part!r} in {spec!r}: use clean, white-snrN, pink-snrN, telephone, "
                "speedF, joined with '+'"
            )
    return steps


def apply_condition(audio: np.ndarray, spec: str, rng: np.random.Generator,
                    sr: int = SAMPLE_RATE) -> np.ndarray:
    """Apply a condition spec; pure apart from drawing noise from ``rng``."""
    out = np.asarray(audio, dtype=np.float32)
    for step in parse_condition(spec):
        if step.kind == "noise":
            out = add_noise(out, step.snr_db, rng, step.color, sr)
        elif step.kind == "telephone":
            out = telephone(out, sr)
        elif step.kind == "speed":
            out = speed(out, step.factor, sr)
    return out.astype(np.float32)
