"""A continuous-batching streaming ASR engine: many live streams, one model, one scheduler thread.

Public API (thread-safe; any number of client threads):

    eng = StreamingEngine(model, StreamingEngineConfig(...), on_event=callback)   # starts the scheduler
    eng.add_stream("call-1")                       # AdmissionError(reason) past capacity or when overloaded
    partial = eng.process_chunk("call-1", pcm)     # non-blocking: enqueue float32 16 kHz mono, get latest partial
    eng.reset_stream("call-1")                     # barge-in: drop the utterance in progress, keep the stream
    fut = eng.finalize_stream("call-1")            # flush, emit the final, close; fut.result() -> final text
    eng.stop()

Events (``Event``: partial, final, error, dropped, closed, reset) go to ``on_event`` (called on the scheduler thread:
keep it cheap) or, without a callback, into a bounded queue read with ``eng.events.get()``.

The model is a ``StreamingModel`` (``speechbench.streaming.models``): per-slot state preallocated for
``max_streams`` and one step over a batch of slots with one model chunk of audio each. The engine knows
nothing else about it, so the project's causal CTC model, Whisper under LocalAgreement and Moonshine's
native streams are served by the same scheduler, admission control and metrics.

How a step works (``_scheduler``): streams whose queued audio holds a whole model chunk (``model_chunk_ms``)
are *ready*. The scheduler waits until every live stream is ready, ``max_batch`` are, or the oldest ready
chunk has waited ``max_wait_ms``; then it takes up to ``max_batch`` ready streams (oldest first), copies
their audio out of the queues, runs the VAD endpointer on it (when configured), makes one model step over
those slots, runs the blank endpointer on the step's frame symbols (when configured), and emits partials.
On an endpoint it emits the final and resets that slot's model state, so the stream goes on into its next
utterance. Streams join and leave between steps; the slot pool never changes shape.

Degradation is explicit: admission control (``max_streams`` slots; and no new streams while the oldest
queued audio is older than ``overload_ms``), a bounded per-stream queue (``max_queue_ms``: a chunk that
would overflow it is shed, counted, and reported to its stream as a ``dropped`` event; the final of that
utterance says how many chunks it lost), and a bad chunk (wrong dtype, shape, sample rate, NaN/inf,
oversize) fails only its own stream, with a message saying what was wrong.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from speechbench.streaming.batching_core import BatchingCore
from speechbench.streaming.endpoint import BlankEndpointer, VadEndpointer
from speechbench.streaming.engine_types import (
    AdmissionError,
    BadChunkError,
    Event,
    StreamClosedError,
    StreamError,
    StreamingEngineConfig,
    StreamState,
    UnknownStreamError,
)
from speechbench.streaming.gil import (
    hold_gc_freeze,
    hold_switch_interval,
    release_gc_freeze,
    release_switch_interval,
)
from speechbench.streaming.metrics import EngineMetrics
from speechbench.streaming.models.base import StreamingModel

# Importable from here: the engine, its config, its events and the errors it raises.
__all__ = ["AdmissionError", "BadChunkError", "Event", "StreamClosedError", "StreamError", "StreamingEngine",
           "StreamingEngineConfig", "UnknownStreamError"]

log = logging.getLogger(__name__)


class StreamingEngine(BatchingCore):
    def __init__(self, model: StreamingModel, cfg: StreamingEngineConfig | None = None,
                 on_event: Callable[[Event], None] | None = None, start: bool = True) -> None:
        self.cfg = cfg or StreamingEngineConfig()
        if self.cfg.model_chunk_ms is None:
            self.cfg.model_chunk_ms = model.default_chunk_ms
        self.cfg.validate()
        if model.sample_rate != self.cfg.sample_rate:
            raise ValueError(f"model takes {model.sample_rate} Hz, engine {self.cfg.sample_rate} Hz")
        if self.cfg.endpoint == "blank" and model.frame_ms is None:
            raise ValueError(f"endpoint 'blank' needs a CTC model (per-frame symbols); {model.name} has none: "
                             "use endpoint='vad'")
        self.device = torch.device(self.cfg.device)
        self.model = model
        self.on_event = on_event
        self.events: queue.Queue[Event] = queue.Queue(maxsize=self.cfg.event_queue_size)
        sr = self.cfg.sample_rate
        self.step_samples = self.cfg.model_chunk_ms * sr // 1000
        self.max_chunk = int(self.cfg.max_chunk_ms * sr / 1000)
        self.queue_cap = int(self.cfg.max_queue_ms * sr / 1000)
        self.max_segment_s = min(self.cfg.max_segment_s, model.max_segment_s or float("inf"))
        cap = self.cfg.max_streams
        # Preallocated per-slot state: the model's (allocate), the endpointer's, and an audio queue.
        model.allocate(cap, self.cfg.model_chunk_ms)
        self.audio = np.zeros((cap, self.queue_cap), dtype=np.float32)
        if self.cfg.endpoint == "vad":
            self.endpointer: BlankEndpointer | VadEndpointer | None = VadEndpointer(
                cap, self.cfg.endpoint_silence_ms, self.cfg.vad_threshold, sr)
        elif self.cfg.endpoint == "blank":
            self.endpointer = BlankEndpointer(cap, model.frame_ms, self.cfg.endpoint_silence_ms)
        else:
            self.endpointer = None
        self.silence_ms = np.zeros(cap, dtype=np.float64)  # audio since the segment start without speech
        self.metrics = EngineMetrics(max_batch=self.cfg.max_batch)
        self._streams: dict[str, StreamState] = {}
        self._free = list(range(cap - 1, -1, -1))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        # Streams that must still become ready before the waiting scheduler wants to look again (set by
        # _collect). Waking it for every chunk made it rescan all streams ~1000 times a second at 240 streams.
        self._wake_in = 1
        self._crashed: str | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (step end, step seconds) over the last second
        self._started_at = time.perf_counter()
        self._thread: threading.Thread | None = None
        self._holds_switch = False  # this engine set the GIL switch interval (gil.py) and restores it
        self._holds_freeze = False  # ... and froze the heap (gil.py), which it unfreezes at stop
        if start:
            self.start()

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._holds_switch = hold_switch_interval(self.cfg.gil_switch_ms)
            self._holds_freeze = self.cfg.gc_freeze
            if self._holds_freeze:
                hold_gc_freeze()
            self._thread = threading.Thread(target=self._scheduler_main, name="asr-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler. Streams still open are closed (their queued audio counted as dropped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._holds_switch:
            self._holds_switch = False
            release_switch_interval()
        if self._holds_freeze:
            self._holds_freeze = False
            release_gc_freeze()
        with self._cond:
            for s in list(self._streams.values()):
                if s.n_pending:
                    self.metrics.dropped_chunks += len(s.arrivals)
                self._release(s, "closed")
                if s.finalize_future is not None and not s.finalize_future.done():
                    s.finalize_future.set_exception(StreamClosedError("engine stopped"))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._crashed is None

    def __enter__(self) -> StreamingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8, 64)) -> None:
        """Run the model on zeros at a few batch sizes (allocator, kernel selection); state untouched."""
        self.model.warmup(tuple(sorted({min(b, self.cfg.max_streams) for b in batch_sizes})))

    # --- client API ----------------------------------------------------------------------------------------

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    def add_stream(self, stream_id: str, sample_rate: int | None = None) -> None:
        """Admit a stream, or raise ``AdmissionError`` with the reason it was refused."""
        with self._cond:
            if self._stopping or self._crashed:
                self.metrics.count_refusal("stopped")
                raise AdmissionError("engine is stopped", "stopped")
            if sample_rate is not None and sample_rate != self.cfg.sample_rate:
                self.metrics.count_refusal("bad_request")
                raise AdmissionError(f"sample rate {sample_rate} Hz not supported (engine takes "
                                     f"{self.cfg.sample_rate} Hz mono float32)", "bad_request")
            if stream_id in self._streams:
                self.metrics.count_refusal("duplicate")
                raise AdmissionError(f"stream {stream_id!r} already exists", "duplicate")
            if not self._free:
                self.metrics.count_refusal("capacity")
                raise AdmissionError(f"at capacity: {self.cfg.max_streams} streams open (max_streams)",
                                     "capacity")
            now = time.perf_counter()
            lag = self._oldest_pending_age(now)
            if lag > self.cfg.overload_ms / 1000:
                self.metrics.count_refusal("overloaded")
                raise AdmissionError(f"overloaded: oldest queued audio waited {1e3 * lag:.0f} ms "
                                     f"(> overload_ms {self.cfg.overload_ms:.0f} ms)", "overloaded")
            duty = self.duty_cycle(now)
            if duty > self.cfg.max_duty:
                self.metrics.count_refusal("overloaded")
                raise AdmissionError(f"overloaded: scheduler busy {100 * duty:.0f}% of the last second "
                                     f"(> max_duty {100 * self.cfg.max_duty:.0f}%)", "overloaded")
            self._streams[stream_id] = StreamState(stream_id, self._free.pop(), now)

    def process_chunk(self, stream_id: str, audio: np.ndarray | torch.Tensor, sample_rate: int | None = None,
                      arrival_time: float | None = None) -> str:
        """Enqueue a chunk of float32 mono audio; returns the stream's latest partial text (non-blocking).

        ``arrival_time`` (time.perf_counter() clock): when the chunk's last sample existed in real time;
        latency is measured from it (default: now). A chunk that would overflow the stream's queue is shed
        (counted); an invalid chunk fails the stream and raises ``BadChunkError``.
        """
        now = time.perf_counter()
        problem = self._check_chunk(audio, sample_rate)
        with self._cond:
            s = self._stream(stream_id)
            if s.status != "open":
                raise StreamClosedError(f"stream {stream_id!r} is {s.status}; no more audio accepted")
            if problem:
                ev = self._fail(s, problem)
            else:
                text, dropped = self._enqueue(s, audio, now, arrival_time)
        if not problem:
            if dropped is not None:  # admitted audio lost: the client is told (outside the lock)
                self._deliver(dropped)
            return text
        self._deliver(ev)  # outside the lock: the callback may call the engine
        raise BadChunkError(f"stream {stream_id!r} failed: {problem}")

    def _stream(self, stream_id: str) -> StreamState:
        """The open or finishing stream ``stream_id``; call with the lock held."""
        s = self._streams.get(stream_id)
        if s is None:
            raise UnknownStreamError(f"unknown stream {stream_id!r} (never added, or already closed)")
        return s

    def _enqueue(self, s: StreamState, audio: np.ndarray | torch.Tensor, now: float, arrival_time: float | None
                 ) -> tuple[str, Event | None]:
        """Queue a chunk; returns the stream's text and, when the chunk had to be shed, the "dropped" event
        that tells its client (admitted audio is never lost silently)."""
        a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        n = a.shape[0]
        s.last_chunk_time = now
        if n == 0:
            return s.text, None
        self.metrics.chunks_in += 1
        if s.n_pending + n > self.queue_cap:
            self.metrics.shed_chunks += 1
            self.metrics.shed_samples += n
            s.shed += 1
            s.shed_samples += n
            ms = 1e3 * s.shed_samples / self.cfg.sample_rate
            return s.text, Event("dropped", s.id, s.text, s.segment, s.consumed, now,
                                 reason=f"server overloaded: {1e3 * n / self.cfg.sample_rate:.0f} ms of audio "
                                        f"dropped ({ms:.0f} ms on this stream so far); transcripts of the "
                                        "affected utterance are incomplete", shed=s.shed)
        self.audio[s.slot, s.n_pending: s.n_pending + n] = a
        became_ready = s.n_pending < self.step_samples <= s.n_pending + n and not s.in_flight
        s.n_pending += n
        s.received += n
        s.arrivals.append((s.received, arrival_time if arrival_time is not None else now))
        if became_ready:
            self._wake_in -= 1
            if self._wake_in <= 0:
                self._cond.notify()
        return s.text, None

    def backlog_samples(self) -> int:
        """Audio queued and not yet fed to the model, all streams."""
        with self._cond:
            return sum(s.n_pending for s in self._streams.values())

    def pending_samples(self, stream_id: str) -> int:
        """This stream's audio queued and not yet fed to the model (a server's back-pressure signal: the
        queue holds ``queue_cap`` samples; a chunk that does not fit is shed)."""
        with self._cond:
            return self._stream(stream_id).n_pending

    def partial(self, stream_id: str) -> str:
        with self._cond:
            s = self._stream(stream_id)
            return s.text

    def reset_stream(self, stream_id: str) -> None:
        """Barge-in: discard the utterance in progress (queued audio, partial, model state); keep the stream."""
        with self._cond:
            s = self._stream(stream_id)
            if s.status != "open":
                raise StreamClosedError(f"stream {stream_id!r} is {s.status}")
            s.consumed += s.n_pending  # the discarded audio counts as passed over
            s.n_pending = 0
            s.arrivals.clear()
            s.needs_reset = True  # applied by the scheduler before the stream's next step
            ev = self._new_segment(s, "reset", time.perf_counter(), emit_final=False)
        self._emit([ev])

    def finalize_stream(self, stream_id: str) -> Future:
        """No more audio: process what is queued (the last partial chunk padded with silence), emit the final,
        close. Returns a Future resolved with the final text of the last segment."""
        with self._cond:
            s = self._stream(stream_id)
            if s.status == "finalizing" and s.finalize_future is not None:
                return s.finalize_future
            if s.status != "open":
                raise StreamClosedError(f"stream {stream_id!r} is {s.status}")
            s.status = "finalizing"
            s.finalize_future = Future()
            self._cond.notify()
            return s.finalize_future

    # --- internals (lock held unless said otherwise) ---------------------------------------------------------

    def _check_chunk(self, audio: Any, sample_rate: int | None) -> str | None:
        if sample_rate is not None and sample_rate != self.cfg.sample_rate:
            return f"chunk declared {sample_rate} Hz; this engine takes {self.cfg.sample_rate} Hz"
        if isinstance(audio, torch.Tensor):
            if audio.dtype != torch.float32:
                return f"dtype {audio.dtype}; expected float32 samples in [-1, 1]"
            a = audio.detach().cpu().numpy()
        elif isinstance(audio, np.ndarray):
            a = audio
            if a.dtype != np.float32:
                return f"dtype {a.dtype}; expected float32 samples in [-1, 1]"
        else:
            return f"audio must be a numpy array or torch tensor, got {type(audio).__name__}"
        if a.ndim != 1:
            return f"shape {tuple(a.shape)}; expected 1-D mono samples"
        if a.shape[0] > self.max_chunk:
            return (f"oversize chunk: {a.shape[0]} samples ({1e3 * a.shape[0] / self.cfg.sample_rate:.0f} ms) > "
                    f"max_chunk_ms {self.cfg.max_chunk_ms:.0f}")
        if a.size and not np.isfinite(a).all():
            return "chunk contains NaN or infinite samples"
        return None

    def _fail(self, s: StreamState, message: str) -> Event:
        kind = message.split(":")[0].split(";")[0][:40]
        self.metrics.count_failure(kind)
        s.error = message
        if s.n_pending:
            self.metrics.dropped_chunks += len(s.arrivals)
        ev = Event("error", s.id, s.text, s.segment, s.consumed, time.perf_counter(), reason=message)
        self._release(s, "failed")
        return ev  # delivered by the caller once the lock is released

    def _release(self, s: StreamState, status: str) -> None:
        s.status = status
        s.n_pending = 0
        s.arrivals.clear()
        if self._streams.get(s.id) is s:
            del self._streams[s.id]
            if s.in_flight:
                s.close_after = True  # the scheduler frees the slot after the step that holds it
            else:
                self._free.append(s.slot)

    def duty_cycle(self, now: float | None = None) -> float:
        """Share of the last second the scheduler spent in steps (lock held by the caller or not needed)."""
        now = time.perf_counter() if now is None else now
        while self._busy and self._busy[0][0] < now - 1.0:
            self._busy.popleft()
        window = min(1.0, max(now - self._started_at, 1e-3))
        return min(1.0, sum(d for _, d in self._busy) / window) if self._busy else 0.0

    def _oldest_pending_age(self, now: float) -> float:
        oldest = now
        for s in self._streams.values():
            if s.arrivals:
                oldest = min(oldest, s.arrivals[0][1])
        return now - oldest

    def _ready_since(self, s: StreamState) -> float | None:
        """Arrival time of the chunk that completed the stream's next model chunk (None: not ready)."""
        if s.status == "finalizing" and not s.in_flight and (
                s.n_pending or (self.model.needs_final_step and not s.flushed)):
            return s.arrivals[-1][1] if s.arrivals else time.perf_counter()
        if s.n_pending < self.step_samples or s.in_flight:
            return None
        need = s.consumed + self.step_samples
        for end, t in s.arrivals:
            if end >= need:
                return t
        return s.arrivals[-1][1] if s.arrivals else time.perf_counter()

    def _new_segment(self, s: StreamState, kind: str, now: float, emit_final: bool = True,
                     reason: str | None = None, committed: str | None = None) -> Event:
        ev = Event(kind, s.id, s.text, s.segment, s.consumed, now, s.first_tok, s.last_tok, reason, s.shed,
                   committed, s.shed - s.seg_shed)
        s.seg_shed = s.shed
        s.segment += 1
        s.text = ""
        s.first_tok = s.last_tok = None
        s.seg_start = s.consumed
        return ev

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            self._deliver(ev)

    def _deliver(self, ev: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # a faulty callback must not take the scheduler down
                log.exception("event callback failed")
            return
        try:
            self.events.put_nowait(ev)
        except queue.Full:
            self.metrics.events_dropped += 1

    # --- the scheduler thread's loop is in batching_core.py (BatchingCore) -----------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            snap = self.metrics.snapshot(self.cfg.sample_rate)
            snap["open_streams"] = len(self._streams)
            snap["duty_cycle_last_s"] = self.duty_cycle()
        snap["alive"] = self.alive
        snap["crashed"] = self._crashed
        return snap
