"""Part 3: a continuous-batching streaming ASR engine, its real-time load generator and benchmark."""

from speechbench.streaming.engine import (
    AdmissionError,
    BadChunkError,
    Event,
    StreamClosedError,
    StreamError,
    StreamingEngine,
    StreamingEngineConfig,
    UnknownStreamError,
)

__all__ = ["AdmissionError", "BadChunkError", "StreamingEngineConfig", "Event", "StreamClosedError", "StreamError",
           "StreamingEngine", "UnknownStreamError"]
