from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from speechbench.speech.audio import AudioCheck, active_rms, validate_audio
from speechbench.speech.corpus import _worker_context
from speechbench.speech.espeak import ESPEAK_ACCENTS, EspeakVoice, synthesize_espeak
from speechbench.speech.synth import ACCENTS, PIPER, make_speaker, synthesize_texts

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("accent", list(ESPEAK_ACCENTS))
def test_every_espeak_accent_speaks(accent):
    audio, sr = synthesize_espeak(TEXT, EspeakVoice(accent))
    assert sr == 22050
    assert 1.5 < audio.size / sr < 5.0
    assert validate_audio(audio, sr, AudioCheck(sample_rate=sr)) == []


def test_unknown_espeak_voice_fails_loudly():
    with pytest.raises(ValueError, match="no voice"):
        synthesize_espeak("hello", EspeakVoice("xx-nowhere"))


def test_accents_differ():
    a, _ = synthesize_espeak(TEXT, EspeakVoice("en-us"))
    b, _ = synthesize_espeak(TEXT, EspeakVoice("en-gb-scotland"))
    assert a.size != b.size or not np.allclose(a, b)


def test_speakers_are_seeded_and_varied():
    assert make_speaker("en-029", 2, seed=5) == make_speaker("en-029", 2, seed=5)
    assert make_speaker("en-029", 2, seed=5) != make_speaker("en-029", 2, seed=6)
    canonical = make_speaker("en-us", 0, seed=9)
    assert canonical.espeak == EspeakVoice("en-us")
    voices = {make_speaker("en-us", i, seed=0).espeak for i in range(1, 6)}
    assert len(voices) == 5
    assert len({v.rate for v in voices}) > 1 and len({v.pitch for v in voices}) > 1
    pipers = {make_speaker(PIPER, i, seed=0).piper for i in range(1, 4)}
    assert len({p.length_scale for p in pipers}) == 3
    assert set(ACCENTS) == set(ESPEAK_ACCENTS) | {PIPER}
    with pytest.raises(ValueError, match="unknown accent"):
        make_speaker("klingon", 0)


def test_espeak_is_repeatable_in_fresh_processes():
    # espeak-ng keeps state between utterances in one process, so repeatability is per fresh process,
    # which is how the corpus builder runs it.
    with ProcessPoolExecutor(2, mp_context=_worker_context(), max_tasks_per_child=1) as pool:
        runs = [pool.submit(synthesize_texts, "en-gb-x-rp", 1, 0, [TEXT, "Hello world."]) for _ in range(2)]
        a, b = (r.result() for r in runs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # levelled to -20 dBFS active RMS, less where peaks would pass 0.9 (espeak's crest factor is high)
    assert a[0].dtype == np.float32 and -24 < 20 * np.log10(active_rms(a[0])) < -19.5


def test_piper_is_repeatable_with_a_seed_and_varies_without():
    pytest.importorskip("piper", reason="piper-tts not installed")
    first = synthesize_texts(PIPER, 1, 0, [TEXT])[0]
    again = synthesize_texts(PIPER, 1, 0, [TEXT])[0]
    other_seed = synthesize_texts(PIPER, 1, 1, [TEXT])[0]
    assert np.array_equal(first, again)
    assert first.size != other_seed.size or not np.array_equal(first, other_seed)
    assert validate_audio(first, 16000) == []
