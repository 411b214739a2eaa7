"""pocketsphinx 5 with its bundled US English model: a classic GMM-HMM recognizer with a trigram LM.

A useful floor for comparisons (no neural network, small, fast on one core) and a streaming engine with
partial results. Its parameter count is not published in a comparable form, so ``params`` is None.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np

from speechbench.asr.base import Recognizer, RecognizerUnavailable, as_waveform


def check_available() -> str | None:
    try:
        import pocketsphinx
    except ImportError:
        return "pocketsphinx is not installed"
    from pathlib import Path

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    if not model.is_dir():
        return f"pocketsphinx English model missing at {model}"
    return None


def to_int16_bytes(audio: np.ndarray) -> bytes:
    """pocketsphinx takes 16-bit PCM; clip first so an overshoot does not wrap around."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class PocketsphinxRecognizer(Recognizer):
    name = "pocketsphinx"
    params = None
    precision = "float32"  # GMM scoring in single precision (the default, non fixed-point build)

    def __init__(self, name: str | None = None, **config: Any) -> None:
        """``config``: pocketsphinx Config options (e.g. hmm=, lm=, dict=, beam=) to swap the model."""
        reason = check_available()
        if reason:
            raise RecognizerUnavailable(reason)
        from pocketsphinx import Decoder

        self.config = {"samprate": self.sample_rate, "loglevel": "FATAL", **config}
        try:
            self.decoder = Decoder(**self.config)
        except Exception as e:
            raise RecognizerUnavailable(f"pocketsphinx failed to load: {type(e).__name__}: {e}") from e
        self.name = name or self.name
        self.backend = f"pocketsphinx {metadata.version('pocketsphinx')}"

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k != "loglevel"}

    def transcribe_one(self, audio: np.ndarray) -> str:
        # full_utt=True: the whole utterance is here, so the decoder may use it all (offline mode, as
        # opposed to feeding chunks with full_utt=False for streaming partials).
        audio = as_waveform(audio)
        if audio.size == 0:
            return ""
        self.decoder.start_utt()
        self.decoder.process_raw(to_int16_bytes(audio), no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        return [self.transcribe_one(a) for a in batch]
