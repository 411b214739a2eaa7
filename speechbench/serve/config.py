"""Server settings (``production_streaming_asr.py serve`` flags map onto these fields)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Client sample rates the WebSocket endpoint accepts (resampled to the engine's 16 kHz when different).
SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
ENCODINGS = ("pcm_s16le", "pcm_f32le")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback by default: exposing a recognizer is the operator's decision
    port: int = 8765
    max_frame_ms: float = 1000.0  # a binary frame holds at most this much audio (the contract: 10 ms .. 1 s)
    idle_timeout_s: float = 20.0  # a connection that sends nothing this long gets an error and a close
    max_body_mb: float = 20.0  # POST /v1/transcribe bodies beyond this: 413
    offline_queue: int = 8  # transcription requests waiting or running; beyond it: 503 + Retry-After
    offline_model: str = "auto"  # Part 2 recognizer spec for POST /v1/transcribe; auto = best available; none
    drain_timeout_s: float = 10.0  # SIGTERM: live streams get this long to receive their finals
    retry_after_s: int = 1  # the Retry-After hint on 503s
    # A client sending faster than real time (a file) finds its stream's queue full: the server stops
    # reading its socket (TCP back-pressure) for up to this long before the engine sheds the frame.
    backpressure_s: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
