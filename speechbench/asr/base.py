"""The one interface every recognizer implements: a batch of 16 kHz waveforms in, one text per waveform out.

Kept deliberately small so the evaluation (Part 2) and streaming (Part 3) code never care which engine is
behind it, and so the project's own CTC models plug in beside Whisper and pocketsphinx.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from speechbench.speech import SAMPLE_RATE


class RecognizerUnavailable(RuntimeError):
    """A backend that cannot run here (package not installed, weights missing, device absent).

    The message says why and what to do; callers record it and carry on with the other recognizers.
    """


class Recognizer(ABC):
    name: str = "recognizer"
    params: int | None = None  # parameter count, None when the engine does not say (pocketsphinx)
    precision: str = "float32"  # the arithmetic the weights run in: int8, float16, float32...
    sample_rate: int = SAMPLE_RATE
    backend: str = ""  # the library doing the work, e.g. "faster-whisper 1.2.1"

    @abstractmethod
    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        """One text per waveform (mono float32 in [-1, 1] at ``sample_rate``), in order.

        Texts are the engine's raw output (casing, punctuation as produced); scoring normalizes them.
        """

    def options(self) -> dict[str, Any]:
        """Settings that shape the output (beam size, threads...): recorded beside every result."""
        return {}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "precision": self.precision,
            "sample_rate": self.sample_rate,
            "backend": self.backend,
            "options": self.options(),
        }

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for engines with nothing to free
        """Free the model (GPU memory, threads). Safe to call twice."""

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.precision}>"


def as_waveform(audio: np.ndarray) -> np.ndarray:
    """Validate one batch item: 1-D float32, finite. Raises ValueError with what is wrong."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {audio.shape}")
    audio = audio.astype(np.float32, copy=False)
    if audio.size and not np.isfinite(audio).all():
        raise ValueError("waveform contains NaN or inf samples")
    return audio
