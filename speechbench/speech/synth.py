"""Synthetic speakers: an accent (an espeak-ng voice, or the Piper neural voice) plus seeded prosody.

An accent is more than one fixed voice: speaker k of an accent gets its own rate / pitch / pitch range /
word gap (and timbre variant) under espeak-ng, or its own length / noise scales under Piper, drawn from a
generator seeded by (seed, accent, k), so adding accents or speakers never changes existing speakers.
Speaker 0 of every accent is the engine's canonical voice (its defaults), the reference point.

``synthesize`` returns 16 kHz mono float32 at a common level (active speech at -20 dBFS RMS): espeak and
Piper come out at very different levels, and a level difference is not an accent difference.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from speechbench.speech import SAMPLE_RATE
from speechbench.speech.audio import normalize_level, resample
from speechbench.speech.espeak import (
    DEFAULT_PITCH,
    DEFAULT_RANGE,
    DEFAULT_RATE,
    DEFAULT_WORD_GAP,
    ESPEAK_ACCENTS,
    EspeakVoice,
    synthesize_espeak,
)
from speechbench.speech.piper_voice import (
    PiperEngine,
    PiperSpeaker,
)

PIPER = "piper"
ACCENTS: dict[str, str] = {**ESPEAK_ACCENTS, PIPER: "Piper neural voice en_US-joe-medium (American English)"}

# espeak timbre variants for speakers beyond the first: ordinary male and female voices. The novelty
# variants (croak, whisper, robots...) are left out: they test a recognizer's sense of humour, not accents.
TARGET_DBFS = -20.0  # active-speech RMS after synthesis, before noise floor and conditions

ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")

def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from any printable parts; stable across processes (Python's hash() is salted)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


@dataclass(frozen=True)
class Speaker:
    accent: str
    index: int
    espeak: EspeakVoice | None = None
    piper: PiperSpeaker | None = None
    engine_seed: int = 0  # Piper's noise seed (see piper_voice.py)
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.accent}-s{self.index}"

    @property
    def engine(self) -> str:
        return PIPER if self.piper is not None else "espeak"


def make_speaker(accent: str, index: int, seed: int = 0) -> Speaker:
    """Speaker ``index`` of ``accent``; index 0 is the canonical voice, the rest are seeded draws."""
    if accent not in ACCENTS:
        raise ValueError(f"unknown accent {accent!r}; choose from {', '.join(ACCENTS)}")
    rng = np.random.default_rng(stable_seed("speaker", seed, accent, index))
    if accent == PIPER:
        if index == 0:
            sp = PiperSpeaker()
        else:
            # Ranges stay where the voice remains natural: length 0.85-1.2 is about +-15% tempo.
            sp = PiperSpeaker(
                length_scale=round(float(rng.uniform(0.85, 1.2)), 3),
                noise_scale=round(float(rng.uniform(0.45, 0.85)), 3),
                noise_w=round(float(rng.uniform(0.6, 1.0)), 3),
            )
        return Speaker(accent, index, piper=sp, engine_seed=stable_seed("piper-noise", seed, index),
                       params={"engine": PIPER, **asdict(sp)})
    if index == 0:
        ev = EspeakVoice(accent, DEFAULT_RATE, DEFAULT_PITCH, DEFAULT_RANGE, DEFAULT_WORD_GAP, None)
    else:
        ev = EspeakVoice(
            accent,
            rate=int(rng.integers(145, 200)),  # words per minute; espeak's default is 175
            pitch=int(rng.integers(25, 76)),
            pitch_range=int(rng.integers(25, 86)),
            word_gap=int(rng.integers(0, 4)),  # 0-30 ms extra between words
            variant=str(rng.choice(ESPEAK_VARIANTS)),
        )
    return Speaker(accent, index, espeak=ev, params={"engine": "espeak", **asdict(ev)})


class SpeakerSynthesizer:
    """Speaks texts as one speaker. Holds Piper's session, so one instance per speaker and process."""

    def __init__(self, speaker: Speaker, sample_rate: int = SAMPLE_RATE) -> None:
        self.speaker = speaker
        self.sample_rate = sample_rate
        self._piper = PiperEngine(seed=speaker.engine_seed) if speaker.piper is not None else None

    def synthesize(self, text: str) -> np.ndarray:
        if self._piper is not None:
            audio, sr = self._piper.synthesize(text, self.speaker.piper)
        else:
            assert self.speaker.espeak is not None
            audio, sr = synthesize_espeak(text, self.speaker.espeak)
        if audio.size == 0:
            raise RuntimeError(f"{self.speaker.id} produced no audio for {text!r}")
        return normalize_level(resample(audio, sr, self.sample_rate), TARGET_DBFS, sr=self.sample_rate)


def synthesize_texts(accent: str, index: int, seed: int, texts: list[str],
                     sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Speak ``texts`` in order as speaker ``index`` of ``accent``.

    Repeatable only in a fresh process (as the corpus builder runs it): espeak-ng's C state carries over
    from one utterance to the next, so the same text comes out slightly different the second time in a
    process. Piper alone is repeatable in-process: a new engine with the same seed restarts its noise.
    """
    synth = SpeakerSynthesizer(make_speaker(accent, index, seed), sample_rate)
    return [synth.synthesize(t) for t in texts]
