from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechbench.speech.audio import (
    AudioLoadError,
    active_rms,
    load_audio,
    normalize_level,
    resample,
    save_audio,
    to_mono,
    validate_audio,
    validate_file,
)


def tone(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


def test_resample_keeps_frequency_and_duration():
    x = tone(1000, 22050)
    y = resample(x, 22050, 16000)
    assert y.dtype == np.float32
    assert y.size == 16000
    assert abs(peak_freq(y, 16000) - 1000) < 2
    # the polyphase filter passes an in-band tone at nearly full amplitude
    assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.01


def test_resample_identity_is_a_copy():
    x = tone(440, 16000)
    y = resample(x, 16000, 16000)
    assert np.array_equal(x, y) and y is not x


def test_to_mono_averages_channels():
    left, right = np.ones(10, np.float32), np.zeros(10, np.float32)
    assert np.allclose(to_mono(np.stack([left, right], axis=1)), 0.5)
    assert to_mono(left) is left


def test_load_downmixes_and_resamples_stereo_44k(tmp_path):
    x = tone(500, 44100, 0.5)
    stereo = np.stack([x, x], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    y = load_audio(path)
    assert y.ndim == 1 and y.dtype == np.float32
    assert y.size == 8000  # 0.5 s at 16 kHz
    assert abs(peak_freq(y, 16000) - 500) < 3


def test_save_load_round_trip(tmp_path):
    x = tone(300, 16000, 0.25, amp=0.3)
    path = save_audio(tmp_path / "sub" / "x.wav", x)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert np.max(np.abs(load_audio(path) - x)) < 1e-4  # 16-bit quantization only
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_errors_are_audio_load_errors(tmp_path):
    with pytest.raises(AudioLoadError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioLoadError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioLoadError, match="unreadable"):
        load_audio(tmp_path / "junk.wav")


def test_validate_accepts_normal_speechlike_audio():
    assert validate_audio(tone(200, 16000, 1.0, 0.3), 16000) == []


@pytest.mark.parametrize(
    ("audio", "sr", "reason"),
    [
        (np.zeros(16000, np.float32), 16000, "silent"),
        (np.full(16000, 1e-5, np.float32), 16000, "silent"),
        (np.where(np.arange(16000) == 5, np.nan, 0.1).astype(np.float32), 16000, "non-finite"),
        (np.where(np.arange(16000) == 5, np.inf, 0.1).astype(np.float32), 16000, "non-finite"),
        (np.clip(tone(200, 16000, 1.0, 3.0), -1, 1), 16000, "clipped"),
        (tone(200, 16000, 0.1), 16000, "too short"),
        (tone(200, 8000, 1.0), 8000, "sample rate 8000"),
        (np.zeros(0, np.float32), 16000, "no samples"),
    ],
)
def test_validate_reports_reasons(audio, sr, reason):
    reasons = validate_audio(audio, sr)
    assert any(reason in r for r in reasons), reasons


def test_validate_file_reports_wrong_rate_and_channels(tmp_path):
    x = tone(200, 22050)
    sf.write(tmp_path / "a.wav", np.stack([x, x], axis=1), 22050)
    reasons = validate_file(tmp_path / "a.wav")
    assert any("channels" in r for r in reasons) and any("22050" in r for r in reasons)
    assert validate_file(tmp_path / "nope.wav")[0].startswith("unreadable")


def test_active_level_ignores_silence():
    x = tone(200, 16000, 1.0, 0.1)
    padded = np.concatenate([np.zeros(32000, np.float32), x, np.zeros(32000, np.float32)])
    assert abs(active_rms(padded) - active_rms(x)) < 1e-3
    y = normalize_level(padded, -20.0)
    assert abs(20 * np.log10(active_rms(y)) + 20.0) < 0.1
