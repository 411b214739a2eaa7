"""The streaming engine's vocabulary: its errors, its config, the events it emits, and the per-stream state
and per-step rows the scheduler works on (``engine.py`` is the public API, ``batching_core.py`` the loop)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HOP_MS = 10  # one feature frame


class StreamError(Exception):
    """Base of every error the engine raises to a caller about a stream."""


class AdmissionError(StreamError):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "capacity" | "overloaded" | "duplicate" | "stopped" | "bad_request"


class UnknownStreamError(StreamError):
    pass


class StreamClosedError(StreamError):
    pass


class BadChunkError(StreamError):
    """The chunk was invalid; the stream has been failed and closed (other streams are unaffected)."""


@dataclass
class StreamingEngineConfig:
    sample_rate: int = 16000
    model_chunk_ms: int | None = None  # audio per stream per model step (None: the model's default)
    max_streams: int = 256  # admission capacity (preallocated state slots)
    max_batch: int = 256  # most streams in one model step
    max_wait_ms: float = 40.0  # longest a ready chunk waits for a fuller batch
    max_chunk_ms: float = 400.0  # a longer client chunk is rejected as oversize
    max_queue_ms: float = 500.0  # per-stream queued audio bound; past it incoming chunks are shed
    overload_ms: float = 250.0  # refuse new streams while the oldest queued audio is older than this
    max_duty: float = 0.9  # ... or while the scheduler was busy more than this share of the last second
    idle_timeout_s: float = 30.0  # a stream that sends nothing this long is finalized and closed
    endpoint: str = "blank"  # "blank" (trailing CTC blanks), "vad" (silero-vad) or "none"
    endpoint_silence_ms: float = 300.0
    vad_threshold: float = 0.5
    max_segment_s: float = 30.0  # force a final after this much audio in one segment
    silence_reset_s: float = 5.0  # reset model state after this much audio with no speech (bounds drift)
    event_queue_size: int = 10_000  # without a callback: events beyond this are dropped and counted
    gil_switch_ms: float = 0.05  # the interpreter's GIL switch interval while the engine runs (gil.py); 0: Python's
    gc_freeze: bool = True  # freeze the heap that exists at start, so no full GC walks it mid-load (gil.py)
    device: str = "cpu"

    def validate(self) -> None:
        if self.model_chunk_ms is not None and (self.model_chunk_ms <= 0 or self.model_chunk_ms % HOP_MS):
            raise ValueError(f"model_chunk_ms must be a positive multiple of {HOP_MS}, got {self.model_chunk_ms}")
        if self.max_streams < 1 or self.max_batch < 1:
            raise ValueError("max_streams and max_batch must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.gil_switch_ms < 0:
            raise ValueError("gil_switch_ms must be >= 0")
        if self.model_chunk_ms is not None and self.max_queue_ms < self.model_chunk_ms + self.max_chunk_ms:
            raise ValueError("max_queue_ms must hold at least one model chunk plus one maximal client chunk")
        if self.endpoint not in ("blank", "vad", "none"):
            raise ValueError(f"endpoint must be blank, vad or none, got {self.endpoint!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    kind: str  # "partial" | "final" | "error" | "dropped" | "closed" | "reset"
    stream_id: str
    text: str
    segment: int  # utterance counter of the stream (incremented after each final or reset)
    audio_end: int  # samples of this stream the model had consumed when the event was emitted
    time: float  # time.perf_counter() at emission
    first_token_sample: int | None = None  # stream sample position of the segment's first character
    last_token_sample: int | None = None  # ... and of its last character
    reason: str | None = None  # final: endpoint | finalize | max_segment | idle_timeout; error: message
    shed: int = 0  # chunks of this stream shed so far (its sample positions then skip that audio)
    committed: str | None = None  # final: the text committed before the final decode (re-decoding models)
    segment_shed: int = 0  # final: chunks of this utterance shed (its text is incomplete when > 0)


@dataclass
class BatchRow:
    """One stream's part of a step: its audio, the arrival times it covers, and flags taken under the lock."""

    stream: StreamState
    audio: np.ndarray
    covered: list[float]
    segment: int
    fresh: bool  # a new stream in the slot (or a barge-in): reset everything before the step
    last: bool  # finalizing and this is its last audio: the segment ends with this chunk
    n: int  # samples of real audio in ``audio`` (the rest is zero padding)


class StreamState:
    __slots__ = ("id", "slot", "status", "n_pending", "received", "consumed", "arrivals", "text",
                 "segment", "first_tok", "last_tok", "seg_start", "last_chunk_time", "needs_reset",
                 "in_flight", "finalize_future", "finalize_reason", "close_after", "error", "shed",
                 "flushed", "committed", "shed_samples", "seg_shed")

    def __init__(self, sid: str, slot: int, now: float) -> None:
        self.id = sid
        self.slot = slot
        self.status = "open"  # open | finalizing | closed | failed
        self.n_pending = 0
        self.received = 0  # samples accepted
        self.consumed = 0  # samples fed to the model
        self.arrivals: deque[tuple[int, float]] = deque()  # (end sample of a client chunk, its arrival time)
        self.text = ""  # the current segment's text (the model's, as of the last step)
        self.segment = 0
        self.first_tok: int | None = None
        self.last_tok: int | None = None
        self.seg_start = 0
        self.last_chunk_time = now
        self.needs_reset = True  # fresh slot: zero its state before its first step
        self.in_flight = False
        self.finalize_future: Future | None = None
        self.finalize_reason = "finalize"
        self.close_after = False
        self.error: str | None = None
        self.shed = 0  # chunks of this stream shed by the bounded queue
        self.flushed = False  # finalizing: the last step (final=True) has run
        self.committed: str | None = None  # the model's committed text before its last final decode
        self.shed_samples = 0  # samples of this stream shed
        self.seg_shed = 0  # ``shed`` when the current segment began
