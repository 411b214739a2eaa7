"""Audio I/O and checks: load anything soundfile reads as 16 kHz mono float32, write WAV, validate.

soundfile, not torchaudio.load/save: the latter need TorchCodec, which is not installed. Resampling uses
scipy's polyphase filter: exact rational ratios (22050 -> 16000 is 320/441), deterministic, and it keeps
torch out of the corpus-builder worker processes (importing torch costs each worker a second or two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from speechbench.common.results import atomic_path
from speechbench.speech import SAMPLE_RATE


class AudioLoadError(RuntimeError):
    """A file that is missing, unreadable, empty or not audio; the message says which."""


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; a 1-D array is returned unchanged.

    Averaging (not taking channel 0) keeps a source that is only in one channel audible, at -6 dB.
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected 1-D or (frames, channels) audio, got shape {audio.shape}")
    return audio.mean(axis=1)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited rational resampling of a 1-D signal; float32 out."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr or audio.size == 0:
        return audio.copy()
    g = math.gcd(int(orig_sr), int(target_sr))
    out = resample_poly(audio.astype(np.float64), int(target_sr) // g, int(orig_sr) // g)
    return out.astype(np.float32)


def _existing_file(path: str | Path) -> Path:
    """The path, if it names a non-empty file; otherwise the AudioLoadError a manifest line records."""
    path = Path(path)
    if not path.exists():
        raise AudioLoadError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"audio file is empty (0 bytes): {path}")
    return path


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read a file as mono float32 at ``target_sr``: stereo is downmixed, other rates resampled.

    Raises AudioLoadError (never a bare soundfile error) so callers can record the reason and go on.
    """
    path = _existing_file(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioLoadError(f"unreadable audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise AudioLoadError(f"audio file has no samples: {path}")
    return resample(to_mono(data), sr, target_sr)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample rate, frames, channels) from the header only: cheap enough to check every manifest line."""
    path = _existing_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioLoadError(f"unreadable audio file {path}: {e}") from e
    if info.frames <= 0:
        raise AudioLoadError(f"audio file has no samples: {path}")
    return int(info.samplerate), int(info.frames), int(info.channels)


def save_audio(path: str | Path, audio: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    """Write a WAV atomically (temp file + rename), so an interrupted build never leaves half a file.

    16-bit PCM is what real corpora ship and every tool reads; values outside [-1, 1] are clipped by the
    conversion, so callers scale first (see ``peak_limit``).
    """
    with atomic_path(path, suffix=".wav.tmp") as tmp:
        sf.write(tmp, np.asarray(audio, dtype=np.float32), sr, subtype=subtype, format="WAV")
    return Path(path)


def peak_limit(audio: np.ndarray, max_peak: float = 0.99) -> np.ndarray:
    """Scale the whole clip down if it would clip; scaling (not clipping) keeps its SNR and spectrum."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > max_peak:
        return (audio * (max_peak / peak)).astype(np.float32)
    return audio


def active_rms(audio: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = 40.0) -> float:
    """RMS over 20 ms frames within ``floor_db`` of the loudest frame: the level of the speech itself,
    not diluted by pauses and padding (a simplified ITU-T P.56 active level)."""
    audio = np.asarray(audio, dtype=np.float64)
    frame = max(1, int(0.02 * sr))
    n = audio.size // frame
    if n == 0:
        return float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
    power = np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)
    active = power[power >= power.max() * 10 ** (-floor_db / 10)]
    return float(np.sqrt(active.mean())) if active.size else 0.0


def normalize_level(audio: np.ndarray, target_dbfs: float = -20.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Scale so the active-speech RMS is ``target_dbfs``; peaks limited to 0.9 (headroom for added noise)."""
    level = active_rms(audio, sr)
    if level <= 0:
        return audio.astype(np.float32)
    out = audio * (10 ** (target_dbfs / 20) / level)
    return peak_limit(out.astype(np.float32), 0.9)


def dbfs(x: float) -> float:
    return 20.0 * math.log10(max(x, 1e-12))


@dataclass(frozen=True)
class AudioCheck:
    """Thresholds for ``validate_audio``. Defaults suit speech at 16 kHz."""

    sample_rate: int = SAMPLE_RATE
    min_duration_s: float = 0.3  # shorter than a syllable: no utterance worth scoring
    silence_dbfs: float = -40.0  # loudest 25 ms frame below this: no speech above a noise floor
    clip_level: float = 0.999
    max_clipped_fraction: float = 0.001  # 0.1 % of samples at full scale is audible distortion


def validate_audio(audio: np.ndarray, sr: int, check: AudioCheck | None = None) -> list[str]:
    """Reasons this clip is unfit for benchmarking; an empty list means it passed.

    Catches what silently corrupts a WER: wrong rate (a recognizer hears chipmunks), non-finite samples
    (NaN propagates through every feature), silence, heavy clipping, and clips too short to hold a word.
    """
    check = check or AudioCheck()
    reasons: list[str] = []
    audio = np.asarray(audio)
    if sr != check.sample_rate:
        reasons.append(f"sample rate {sr} Hz, expected {check.sample_rate} Hz")
    if audio.ndim != 1:
        reasons.append(f"not mono: shape {audio.shape}")
        audio = audio.reshape(audio.shape[0], -1).mean(axis=1) if audio.ndim > 1 else audio.reshape(-1)
    if audio.size == 0:
        return reasons + ["no samples"]
    finite = np.isfinite(audio)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(audio).sum()), int(np.isinf(audio).sum())
        reasons.append(f"non-finite samples: {n_nan} NaN, {n_inf} inf")
        audio = np.where(finite, audio, 0.0)
    duration = audio.size / sr if sr > 0 else 0.0
    if duration < check.min_duration_s:
        reasons.append(f"too short: {duration:.3f} s < {check.min_duration_s} s")
    frame = max(1, int(0.025 * sr))
    n_frames = max(1, audio.size // frame)
    frames = audio[: n_frames * frame].reshape(n_frames, -1) if audio.size >= frame else audio.reshape(1, -1)
    loudest = dbfs(float(np.sqrt(np.max(np.mean(frames.astype(np.float64) ** 2, axis=1)))))
    if loudest < check.silence_dbfs:
        reasons.append(f"silent: loudest 25 ms frame {loudest:.1f} dBFS < {check.silence_dbfs} dBFS")
    clipped = float(np.mean(np.abs(audio) >= check.clip_level))
    if clipped > check.max_clipped_fraction:
        reasons.append(f"clipped: {100 * clipped:.2f}% of samples at full scale")
    return reasons


def validate_file(path: str | Path, check: AudioCheck | None = None) -> list[str]:
    """``validate_audio`` on a file at its native rate (so a wrong rate is reported, not resampled away)."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # any unreadable file is one reason, not a crash
        return [f"unreadable: {e}"]
    reasons = [] if data.shape[1] == 1 else [f"{data.shape[1]} channels, expected mono"]
    return reasons + validate_audio(to_mono(data), sr, check)
