"""espeak-ng through ctypes: eight English accents of a formant synthesizer, offline and in-process.

The library comes from the ``espeakng-loader`` wheel (shared object + voice data), so nothing is
installed system-wide. espeak-ng keeps its state in C globals (current voice, parameters, the callback),
hence one initialization per process and a lock around every set-voice/set-parameters/synthesize
sequence. Piper links its own static copy of espeak-ng (``piper.espeakbridge``), so the two never share
that state.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

# espeak-ng 1.52 voice names. "en" is British English in 1.52 (it was "en-gb" before).
ESPEAK_ACCENTS: dict[str, str] = {
    "en-us": "American English",
    "en": "British English",
    "en-gb-x-rp": "British English, Received Pronunciation",
    "en-gb-scotland": "Scottish English",
    "en-gb-x-gbclan": "English, Lancashire",
    "en-gb-x-gbcwmd": "English, West Midlands",
    "en-029": "Caribbean English",
    "en-us-nyc": "American English, New York City",
}

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_EE_OK = 0

# Defaults of espeak-ng itself; a speaker with these values is the "canonical" voice of an accent.
DEFAULT_RATE = 175  # words per minute
DEFAULT_PITCH = 50  # 0-100
DEFAULT_RANGE = 50  # 0-100, pitch variation
DEFAULT_WORD_GAP = 0  # extra pause between words, units of 10 ms

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class EspeakVoice:
    """One synthetic speaker: an accent plus prosody (and optionally an espeak voice variant)."""

    accent: str = "en-us"
    rate: int = DEFAULT_RATE
    pitch: int = DEFAULT_PITCH
    pitch_range: int = DEFAULT_RANGE
    word_gap: int = DEFAULT_WORD_GAP
    variant: str | None = None  # e.g. "m3", "f2": espeak's timbre variants (formants, breathiness)

    @property
    def voice_name(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


class _Espeak:
    """Process-wide espeak-ng handle. Created lazily by ``espeak()``; never more than one per process."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakUnavailable("espeakng-loader is not installed (uv sync)") from e
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as e:
            raise EspeakUnavailable(f"cannot load libespeak-ng from espeakng-loader: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        # Synchronous mode: espeak_Synth returns once all audio went through the callback; buflength 0 =
        # espeak's default 200 ms chunks.
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if sr <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed (returned {sr}) with data path {data_path}")
        self.lib = lib
        self.sample_rate = int(sr)
        self.version = self._version()
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline if the Python object is collected.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _version(self) -> str:
        try:
            self.lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
            self.lib.espeak_Info.restype = ctypes.c_char_p
            return self.lib.espeak_Info(None).decode()
        except (AttributeError, UnicodeDecodeError):
            return "unknown"

    def _on_audio(self, wav, n, _events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: EspeakVoice) -> np.ndarray:
        """int16 samples at ``self.sample_rate``. Every parameter is set on every call: the C state is
        shared, and a previous call's settings must never leak into this one (determinism)."""
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            rc = self.lib.espeak_SetVoiceByName(voice.voice_name.encode())
            if rc != _EE_OK:
                # espeak keeps the previous voice on failure; silently speaking the wrong accent would be
                # a wrong benchmark, so fail loudly.
                raise ValueError(f"espeak-ng has no voice {voice.voice_name!r} (error {rc})")
            for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range),
                                 (_WORDGAP, voice.word_gap)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            rc = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if rc != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with error {rc}")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_INSTANCE: _Espeak | None = None
_INSTANCE_LOCK = threading.Lock()


def espeak() -> _Espeak:
    """The process's espeak-ng (initialized on first use)."""
    global _INSTANCE
    with _INSTANCE_LOCK:
        if _INSTANCE is None:
            _INSTANCE = _Espeak()
        return _INSTANCE


def synthesize_espeak(text: str, voice: EspeakVoice) -> tuple[np.ndarray, int]:
    """(float32 audio in [-1, 1], sample rate) for ``text`` spoken by ``voice``."""
    engine = espeak()
    pcm = engine.synthesize(text, voice)
    return pcm.astype(np.float32) / 32768.0, engine.sample_rate
