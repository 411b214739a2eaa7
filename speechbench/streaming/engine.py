"""A continuous-batching streaming ASR engine: many live streams, one model, one scheduler thread.

Public API (thread-safe; any number of client threads):

    eng = StreamingEngine(model, StreamingEngineConfig(...), on_event=callback)   # starts the scheduler
    eng.add_stream("call-1")                       # AdmissionError(reason) past capacity or when overloaded
    partial = eng.process_chunk("call-1", pcm)     # non-blocking: enqueue float32 16 kHz mono, get latest partial
    eng.reset_stream("call-1")                     # barge-in: drop the utterance in progress, keep the stream
    fut = eng.finalize_stream("call-1")            # flush, emit the final, close; fut.result() -> final text
    eng.stop()

Events (``Event``: partial, final, error, closed, reset) go to ``on_event`` (called on the scheduler thread:
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
would overflow it is shed and counted), and a bad chunk (wrong dtype, shape, sample rate, NaN/inf,
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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from speechbench.streaming.endpoint import BlankEndpointer, VadEndpointer
from speechbench.streaming.metrics import EngineMetrics, Histogram
from speechbench.streaming.models.base import StreamingModel

log = logging.getLogger(__name__)

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
    device: str = "cpu"

    def validate(self) -> None:
        if self.model_chunk_ms is not None and (self.model_chunk_ms <= 0 or self.model_chunk_ms % HOP_MS):
            raise ValueError(f"model_chunk_ms must be a positive multiple of {HOP_MS}, got {self.model_chunk_ms}")
        if self.max_streams < 1 or self.max_batch < 1:
            raise ValueError("max_streams and max_batch must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.model_chunk_ms is not None and self.max_queue_ms < self.model_chunk_ms + self.max_chunk_ms:
            raise ValueError("max_queue_ms must hold at least one model chunk plus one maximal client chunk")
        if self.endpoint not in ("blank", "vad", "none"):
            raise ValueError(f"endpoint must be blank, vad or none, got {self.endpoint!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    kind: str  # "partial" | "final" | "error" | "closed" | "reset"
    stream_id: str
    text: str
    segment: int  # utterance counter of the stream (incremented after each final or reset)
    audio_end: int  # samples of this stream the model had consumed when the event was emitted
    time: float  # time.perf_counter() at emission
    first_token_sample: int | None = None  # stream sample position of the segment's first character
    last_token_sample: int | None = None  # ... and of its last character
    reason: str | None = None  # final: endpoint | finalize | max_segment | idle_timeout; error: message
    shed: int = 0  # chunks of this stream shed so far (its sample positions then skip that audio)


@dataclass
class _Row:
    """One stream's part of a step: its audio, the arrival times it covers, and flags taken under the lock."""

    stream: _Stream
    audio: np.ndarray
    covered: list[float]
    segment: int
    fresh: bool  # a new stream in the slot (or a barge-in): reset everything before the step
    last: bool  # finalizing and this is its last audio: the segment ends with this chunk
    n: int  # samples of real audio in ``audio`` (the rest is zero padding)


class _Stream:
    __slots__ = ("id", "slot", "status", "n_pending", "received", "consumed", "arrivals", "text",
                 "segment", "first_tok", "last_tok", "seg_start", "last_chunk_time", "needs_reset",
                 "in_flight", "finalize_future", "finalize_reason", "close_after", "error", "shed",
                 "flushed")

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


class StreamingEngine:
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
        self._streams: dict[str, _Stream] = {}
        self._free = list(range(cap - 1, -1, -1))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._crashed: str | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (step end, step seconds) over the last second
        self._started_at = time.perf_counter()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._scheduler_main, name="asr-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler. Streams still open are closed (their queued audio counted as dropped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
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
            self._streams[stream_id] = _Stream(stream_id, self._free.pop(), now)

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
                return self._enqueue(s, audio, now, arrival_time)
        self._deliver(ev)  # outside the lock: the callback may call the engine
        raise BadChunkError(f"stream {stream_id!r} failed: {problem}")

    def _stream(self, stream_id: str) -> _Stream:
        """The open or finishing stream ``stream_id``; call with the lock held."""
        s = self._streams.get(stream_id)
        if s is None:
            raise UnknownStreamError(f"unknown stream {stream_id!r} (never added, or already closed)")
        return s

    def _enqueue(self, s: _Stream, audio: np.ndarray | torch.Tensor, now: float, arrival_time: float | None
                 ) -> str:
        a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        n = a.shape[0]
        s.last_chunk_time = now
        if n == 0:
            return s.text
        self.metrics.chunks_in += 1
        if s.n_pending + n > self.queue_cap:
            self.metrics.shed_chunks += 1
            self.metrics.shed_samples += n
            s.shed += 1
            return s.text
        self.audio[s.slot, s.n_pending: s.n_pending + n] = a
        s.n_pending += n
        s.received += n
        s.arrivals.append((s.received, arrival_time if arrival_time is not None else now))
        if s.n_pending >= self.step_samples:
            self._cond.notify()
        return s.text

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

    def _fail(self, s: _Stream, message: str) -> Event:
        kind = message.split(":")[0].split(";")[0][:40]
        self.metrics.count_failure(kind)
        s.error = message
        if s.n_pending:
            self.metrics.dropped_chunks += len(s.arrivals)
        ev = Event("error", s.id, s.text, s.segment, s.consumed, time.perf_counter(), reason=message)
        self._release(s, "failed")
        return ev  # delivered by the caller once the lock is released

    def _release(self, s: _Stream, status: str) -> None:
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

    def _ready_since(self, s: _Stream) -> float | None:
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

    def _new_segment(self, s: _Stream, kind: str, now: float, emit_final: bool = True,
                     reason: str | None = None) -> Event:
        ev = Event(kind, s.id, s.text, s.segment, s.consumed, now, s.first_tok, s.last_tok, reason, s.shed)
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

    # --- scheduler -----------------------------------------------------------------------------------------

    def _scheduler_main(self) -> None:
        try:
            torch.set_grad_enabled(False)
            self._scheduler()
        except Exception as e:  # pragma: no cover - a bug; surfaced through ``alive`` and the log
            self._crashed = f"{type(e).__name__}: {e}"
            log.exception("scheduler crashed")

    def _scheduler(self) -> None:
        last_housekeeping = 0.0
        while True:
            events: list[Event] = []
            with self._cond:
                batch = None
                while not self._stopping:
                    now = time.perf_counter()
                    if now - last_housekeeping > 0.25:
                        events += self._housekeeping(now)
                        last_housekeeping = now
                    events += self._close_finished(now)
                    if events:
                        break  # deliver them outside the lock before waiting
                    batch, wait = self._collect(now)
                    if batch:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
            self._emit(events)
            if batch:
                self._step(batch)

    def _housekeeping(self, now: float) -> list[Event]:
        events = []
        for s in list(self._streams.values()):
            if s.status == "open" and now - s.last_chunk_time > self.cfg.idle_timeout_s:
                self.metrics.idle_timeouts += 1
                s.status = "finalizing"
                s.finalize_reason = "idle_timeout"
                s.finalize_future = Future()
        return events

    def _close_finished(self, now: float) -> list[Event]:
        """Finalizing streams with nothing left to process: emit the final and free the slot."""
        events = []
        for s in list(self._streams.values()):
            if (s.status == "finalizing" and s.n_pending == 0 and not s.in_flight
                    and (s.flushed or not self.model.needs_final_step)):
                ev = self._new_segment(s, "final", now, reason=s.finalize_reason)
                self.metrics.finals += 1
                events.append(ev)
                events.append(Event("closed", s.id, "", s.segment, s.consumed, now, reason=s.finalize_reason))
                self._release(s, "closed")
                if s.finalize_future is not None and not s.finalize_future.done():
                    s.finalize_future.set_result(ev.text)
        return events

    def _collect(self, now: float) -> tuple[list[_Row] | None, float]:
        """Pick this step's streams, or return how long to wait. Copies their audio out of the queues."""
        ready: list[tuple[float, _Stream]] = []
        live = 0
        live_window = 2 * self.cfg.model_chunk_ms / 1000 + 0.05
        for s in self._streams.values():
            t = self._ready_since(s)
            if t is not None:
                ready.append((t, s))
            if not s.in_flight and (t is not None or now - s.last_chunk_time < live_window):
                live += 1
        if not ready:
            return None, 0.25
        oldest = min(t for t, _ in ready)
        target = min(self.cfg.max_batch, max(live, 1))
        deadline = oldest + self.cfg.max_wait_ms / 1000
        finalizing = any(s.status == "finalizing" for _, s in ready)
        if len(ready) < target and now < deadline and not finalizing:
            return None, max(deadline - now, 0.0005)
        ready.sort(key=lambda x: x[0])
        take = ready[: self.cfg.max_batch]
        if self.model.min_join_ms and len(take) < self.cfg.max_batch:
            # A re-decoding model: streams with enough new audio ride along (see StreamingModel.min_join_ms).
            join = self.model.min_join_ms * self.cfg.sample_rate // 1000
            chosen = {s for _, s in take}
            extra = [(now, s) for s in self._streams.values() if s not in chosen and s.status == "open"
                     and not s.in_flight and s.n_pending >= join][: self.cfg.max_batch - len(take)]
            take += extra
            self.metrics.early_joins += len(extra)
        m = self.metrics
        m.steps += 1
        m.live_sum += live
        m.ready_sum += len(ready)
        m.capacity_sum += target if target >= len(take) else len(take)
        m.backlog_chunks.add(sum(s.n_pending // self.step_samples for s in self._streams.values()))
        out = []
        for _, s in take:
            n = min(self.step_samples, s.n_pending)
            a = np.zeros(self.step_samples, dtype=np.float32)
            a[:n] = self.audio[s.slot, :n]
            rest = s.n_pending - n
            if rest:
                self.audio[s.slot, :rest] = self.audio[s.slot, n: n + rest]
            s.n_pending = rest
            s.consumed += n
            covered = []
            while s.arrivals and s.arrivals[0][0] <= s.consumed:
                covered.append(s.arrivals.popleft()[1])
            s.in_flight = True
            # Taken under the lock: a reset_stream() arriving while this step runs sets the flag again
            # for the next step instead of being cleared unseen.
            fresh, s.needs_reset = s.needs_reset, False
            out.append(_Row(s, a, covered, s.segment, fresh, s.status == "finalizing" and rest == 0, n))
        return out, 0.0

    @torch.no_grad()
    def _step(self, batch: list[_Row]) -> None:
        """One batched model step (outside the lock; only this thread touches the model's slot state)."""
        m = self.metrics
        t0 = time.perf_counter()
        streams = [b.stream for b in batch]
        slots = np.array([s.slot for s in streams], dtype=np.int64)
        fresh = [b.stream.slot for b in batch if b.fresh]
        if fresh:
            self._reset_slots(fresh, hard=True)
        audio = np.stack([b.audio for b in batch])
        lengths = np.array([b.n for b in batch], dtype=np.int64)
        final = np.array([b.last for b in batch], dtype=bool)
        dec = vad = None
        if isinstance(self.endpointer, VadEndpointer):  # audio only: decided before the model runs, so a
            dec = vad = self.endpointer.step(slots, None, audio, lengths)  # re-decoding model gives its final
            final |= dec.endpoint  # text now
        t1 = time.perf_counter()
        out = self.model.step(slots, audio, final, None if dec is None else dec.speech, lengths)
        t2 = time.perf_counter()
        if self.endpointer is not None and dec is None:
            dec = self.endpointer.step(slots, out.frame_symbols, audio)
        t3 = time.perf_counter()
        frame_ms = float(self.cfg.model_chunk_ms)
        events: list[Event] = []
        resets: list[int] = []
        latencies: list[tuple[list[float], int]] = []
        with self._cond:
            now = time.perf_counter()
            for r, b in enumerate(batch):
                s = b.stream
                s.in_flight = False
                if b.last:
                    s.flushed = True
                if s.close_after:
                    self._free.append(s.slot)
                    continue
                if s.status not in ("open", "finalizing") or b.segment != s.segment:
                    continue  # closed, or reset (barge-in) while this step ran: its output is stale
                text = out.texts[r]
                if out.changed[r] and text:
                    if s.first_tok is None:
                        s.first_tok = s.consumed
                    s.last_tok = s.consumed
                    if vad is not None:
                        # A model that revises its text once a chunk (Whisper: every second) changes it long
                        # after the words were said; the VAD knows where the speech in this segment last was.
                        back = int(vad.trailing_ms[r] * self.cfg.sample_rate / 1000)
                        s.last_tok = max(s.seg_start, s.consumed - back)
                s.text = text
                events.append(Event("partial", s.id, s.text, s.segment, s.consumed, now, s.first_tok, s.last_tok,
                                    shed=s.shed))
                latencies.append((b.covered, len(events)))
                m.chunks_processed += len(b.covered)
                reason = None
                if dec is not None and dec.endpoint[r]:
                    reason = "endpoint"
                elif s.consumed - s.seg_start >= self.max_segment_s * self.cfg.sample_rate:
                    reason = "max_segment"
                if reason is not None:
                    if s.text:
                        m.endpoints += 1
                        m.finals += 1
                        events.append(self._new_segment(s, "final", now, reason=reason))
                    else:
                        s.seg_start = s.consumed
                    resets.append(s.slot)
                    self.silence_ms[s.slot] = 0.0
                elif dec is not None and not dec.speech[r] and not s.text:
                    self.silence_ms[s.slot] += frame_ms
                    if self.silence_ms[s.slot] >= 1000 * self.cfg.silence_reset_s:
                        m.silence_resets += 1
                        s.seg_start = s.consumed
                        resets.append(s.slot)
                        self.silence_ms[s.slot] = 0.0
            m.partials += len(batch)
            self._cond.notify()  # streams left ready, or finalizing ones now empty
        if resets:
            self._reset_slots(resets, hard=False)
        self._emit(events)
        # A chunk's latency ends when the partial covering it has been delivered (decoding, endpointing and
        # the event callback included), so it is read after delivery, not when the event was built.
        t6 = time.perf_counter()
        for covered, _ in latencies:
            for t in covered:
                m.chunk_latency_ms.add(1e3 * (t6 - t))
                m.queue_wait_ms.add(1e3 * (t0 - t))
        with self._cond:
            self._busy.append((t6, t6 - t0))
        m.batch_counts[len(batch)] += 1
        m.audio_samples += len(batch) * self.step_samples
        m.busy_s += t6 - t0
        m.step_ms.add(1e3 * (t6 - t0))
        st = m.stage_ms
        for name, ms in out.stage_ms.items():
            (st[name] if name in st else st.setdefault(name, Histogram())).add(ms)
        st["endpoint"].add(1e3 * (t1 - t0 + t3 - t2))
        st["emit"].add(1e3 * (t6 - t3))

    def _reset_slots(self, slots: list[int], hard: bool) -> None:
        """Forget the segment of some slots (a new stream: also the feature overlap, VAD state, counters)."""
        self.model.reset(slots, new_stream=hard)
        if self.endpointer is not None:
            if hard and isinstance(self.endpointer, VadEndpointer):
                self.endpointer.reset_hard(slots)
            else:
                self.endpointer.reset(slots)
        if hard:
            self.silence_ms[slots] = 0.0

    def stats(self) -> dict[str, Any]:
        with self._cond:
            snap = self.metrics.snapshot(self.cfg.sample_rate)
            snap["open_streams"] = len(self._streams)
            snap["duty_cycle_last_s"] = self.duty_cycle()
        snap["alive"] = self.alive
        snap["crashed"] = self._crashed
        return snap
