"""Speech recognizers behind one interface (``Recognizer``), found by name through a registry."""

from speechbench.asr.base import Recognizer, RecognizerUnavailable
from speechbench.asr.registry import (
    available_recognizers,
    load_recognizer,
    load_recognizers,
    register_backend,
)

__all__ = [
    "Recognizer",
    "RecognizerUnavailable",
    "available_recognizers",
    "load_recognizer",
    "load_recognizers",
    "register_backend",
]
