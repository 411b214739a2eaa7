"""Part 3: a continuous-batching streaming ASR engine, its real-time load generator and benchmark."""

from speechbench.streaming.engine import (
    AdmissionError,
    BadChunkError,
    EngineConfig,
    Event,
    StreamClosedError,
    StreamError,
    StreamingEngine,
    UnknownStreamError,
)

__all__ = ["AdmissionError", "BadChunkError", "EngineConfig", "Event", "StreamClosedError", "StreamError",
           "StreamingEngine", "UnknownStreamError"]
