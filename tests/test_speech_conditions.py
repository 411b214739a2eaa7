from __future__ import annotations

import numpy as np
import pytest

from speechbench.speech.audio import active_rms
from speechbench.speech.conditions import (
    add_noise,
    apply_condition,
    noise_floor,
    pad_silence,
    parse_condition,
    pink_noise,
    speed,
    telephone,
)

SR = 16000


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with pauses between them: active level differs from whole-clip level."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 15))
    gate = (np.sin(2 * np.pi * 1.5 * t) > -0.2).astype(float)
    return (0.1 * x * gate + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


def band_energy_fraction(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0, 20.0])
def test_snr_is_achieved(color, snr):
    clean = speechlike()
    noisy = add_noise(clean, snr, np.random.default_rng(1), color)
    noise = noisy.astype(np.float64) - clean
    measured = 20 * np.log10(active_rms(clean) / np.sqrt(np.mean(noise**2)))
    assert abs(measured - snr) < 0.5


def test_noise_is_seeded():
    clean = speechlike()
    a = apply_condition(clean, "pink-snr5", np.random.default_rng(7))
    b = apply_condition(clean, "pink-snr5", np.random.default_rng(7))
    c = apply_condition(clean, "pink-snr5", np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_pink_noise_falls_3db_per_octave():
    x = pink_noise(1 << 18, np.random.default_rng(0))
    ratio_db = 10 * np.log10(band_energy_fraction(x, 500, 1000) / band_energy_fraction(x, 1000, 2000))
    assert abs(ratio_db) < 1.0  # equal energy per octave <=> -3 dB/octave density


def test_telephone_removes_high_band():
    x = np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32) * 0.1
    y = telephone(x)
    assert y.size == x.size
    assert band_energy_fraction(x, 4000, 8000) > 0.4
    assert band_energy_fraction(y, 4000, 8000) < 1e-3
    assert band_energy_fraction(y, 0, 200) < 0.01
    assert band_energy_fraction(y, 300, 3400) > 0.9


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration(factor):
    x = speechlike(2.0)
    y = speed(x, factor)
    assert abs(y.size - x.size / factor) <= 2
    assert apply_condition(x, f"speed{factor}", np.random.default_rng(0)).size == y.size


def test_clean_is_identity_and_chains_apply_in_order():
    x = speechlike(1.0)
    assert np.array_equal(apply_condition(x, "clean", np.random.default_rng(0)), x)
    y = apply_condition(x, "telephone+white-snr10", np.random.default_rng(0))
    assert y.size == x.size and band_energy_fraction(y, 4000, 8000) > 0.02  # noise added after the band


def test_parse_condition_rejects_unknown():
    assert [s.kind for s in parse_condition("speed1.1+pink-snr-5")] == ["speed", "noise"]
    assert parse_condition("pink-snr-5")[0].snr_db == -5.0
    with pytest.raises(ValueError, match="unknown condition"):
        parse_condition("reverb")


def test_floor_and_padding():
    x = np.zeros(1000, np.float32)
    y = noise_floor(x, -60.0, np.random.default_rng(0))
    assert abs(20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2))) + 60) < 1.0
    assert np.array_equal(noise_floor(x, None, np.random.default_rng(0)), x)
    z = pad_silence(np.ones(10, np.float32), 0.25, 0.5)
    assert z.size == 10 + 4000 + 8000 and z[:4000].max() == 0 and z[4000] == 1
