"""A continuous-batching streaming ASR engine: many live streams, one causal CTC model, one scheduler thread.

Public API (thread-safe; any number of client threads):

    eng = StreamingEngine(model, feat_cfg, EngineConfig(...), on_event=callback)   # starts the scheduler
    eng.add_stream("call-1")                       # AdmissionError(reason) past capacity or when overloaded
    partial = eng.process_chunk("call-1", pcm)     # non-blocking: enqueue float32 16 kHz mono, get latest partial
    eng.reset_stream("call-1")                     # barge-in: drop the utterance in progress, keep the stream
    fut = eng.finalize_stream("call-1")            # flush, emit the final, close; fut.result() -> final text
    eng.stop()

Events (``Event``: partial, final, error, closed, reset) go to ``on_event`` (called on the scheduler thread:
keep it cheap) or, without a callback, into a bounded queue read with ``eng.events.get()``.

How a step works (``_scheduler``): streams whose queued audio holds a whole model chunk (``model_chunk_ms``,
a multiple of the model's output frame, 20 ms at x2 time subsampling, so every state tensor keeps one
shape) are *ready*. The
scheduler waits until every live stream is ready, ``max_batch`` are, or the oldest ready chunk has waited
``max_wait_ms``; then it takes up to ``max_batch`` ready streams (oldest first), computes their log-mel
frames in one batched call from the raw audio plus each stream's 240-sample window overlap, gathers their
model states from a preallocated slot pool, runs one ``forward_chunk``, scatters the states back, greedy-
decodes (carrying each stream's last frame symbol), runs the endpointer, and emits partials. On an
endpoint it emits the final and resets that slot's model and decoder state, so the stream goes on into
its next utterance. Streams join and leave between steps; the pool never changes shape.

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

from speechbench.asr.ctc.features import FeatureConfig, LogMel
from speechbench.asr.ctc.model import CTCModel
from speechbench.asr.ctc.tokenizer import BLANK, Tokenizer
from speechbench.streaming.endpoint import BlankEndpointer, VadEndpointer
from speechbench.streaming.metrics import EngineMetrics

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
class EngineConfig:
    sample_rate: int = 16000
    model_chunk_ms: int = 40  # internal model step; a multiple of the model's output frame (20 or 40 ms)
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
        if self.model_chunk_ms <= 0 or self.model_chunk_ms % HOP_MS:
            raise ValueError(f"model_chunk_ms must be a positive multiple of {HOP_MS}, got {self.model_chunk_ms}")
        if self.max_streams < 1 or self.max_batch < 1:
            raise ValueError("max_streams and max_batch must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.max_queue_ms < self.model_chunk_ms + self.max_chunk_ms:
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


class _Stream:
    __slots__ = ("id", "slot", "status", "n_pending", "received", "consumed", "arrivals", "ids", "text",
                 "segment", "first_tok", "last_tok", "seg_start", "last_chunk_time", "needs_reset",
                 "in_flight", "finalize_future", "finalize_reason", "close_after", "error", "shed")

    def __init__(self, sid: str, slot: int, now: float) -> None:
        self.id = sid
        self.slot = slot
        self.status = "open"  # open | finalizing | closed | failed
        self.n_pending = 0
        self.received = 0  # samples accepted
        self.consumed = 0  # samples fed to the model
        self.arrivals: deque[tuple[int, float]] = deque()  # (end sample of a client chunk, its arrival time)
        self.ids: list[int] = []
        self.text = ""
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


class StreamingEngine:
    def __init__(self, model: CTCModel, feat_cfg: FeatureConfig, cfg: EngineConfig | None = None,
                 tokenizer: Tokenizer | None = None, on_event: Callable[[Event], None] | None = None,
                 start: bool = True) -> None:
        self.cfg = cfg or EngineConfig()
        self.cfg.validate()
        if not model.cfg.causal:
            raise ValueError(f"model {model.cfg.name!r} is not causal; a streaming engine needs a causal model")
        if feat_cfg.sample_rate != self.cfg.sample_rate:
            raise ValueError(f"model features are {feat_cfg.sample_rate} Hz, engine {self.cfg.sample_rate} Hz")
        self.device = torch.device(self.cfg.device)
        self.model = model.to(self.device).eval()
        self.feat_cfg = feat_cfg
        self.extractor = LogMel(feat_cfg).to(self.device)
        self.tokenizer = tokenizer or Tokenizer()
        self.on_event = on_event
        self.tap: Callable[[list[str], torch.Tensor], None] | None = None
        self.events: queue.Queue[Event] = queue.Queue(maxsize=self.cfg.event_queue_size)
        sr = self.cfg.sample_rate
        self.step_samples = self.cfg.model_chunk_ms * sr // 1000
        if self.step_samples % feat_cfg.hop_length:
            raise ValueError("model chunk must be a whole number of feature hops")
        self.step_frames = self.step_samples // feat_cfg.hop_length
        self.frame_ms = 1000 * feat_cfg.hop_length * model.subsampling / sr  # one model output frame
        if self.step_frames % model.subsampling:
            raise ValueError(f"model_chunk_ms {self.cfg.model_chunk_ms} is not a multiple of the model's output "
                             f"frame ({self.frame_ms:g} ms): state shapes would change between chunks")
        self.overlap = feat_cfg.left_context  # samples of the previous chunk each window reaches back into
        self.max_chunk = int(self.cfg.max_chunk_ms * sr / 1000)
        self.queue_cap = int(self.cfg.max_queue_ms * sr / 1000)
        cap = self.cfg.max_streams
        # Preallocated per-slot state: model state, feature overlap, decoder's last frame symbol, audio queue.
        with torch.no_grad():
            self.pool = model.init_state(cap, device=self.device)
        self.ovl = torch.zeros(cap, self.overlap, device=self.device)
        self.prev = torch.full((cap,), BLANK, dtype=torch.long, device=self.device)
        self.audio = np.zeros((cap, self.queue_cap), dtype=np.float32)
        if self.cfg.endpoint == "vad":
            self.endpointer: BlankEndpointer | VadEndpointer | None = VadEndpointer(
                cap, self.cfg.endpoint_silence_ms, self.cfg.vad_threshold, sr)
        elif self.cfg.endpoint == "blank":
            self.endpointer = BlankEndpointer(cap, self.frame_ms, self.cfg.endpoint_silence_ms)
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
        with torch.no_grad():
            for b in batch_sizes:
                b = min(b, self.cfg.max_streams)
                x = torch.zeros(b, self.overlap + self.step_samples, device=self.device)
                feats = self.extractor.frames(x)
                self.model.forward_chunk(feats, self.model.init_state(b, device=self.device))

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
        if s.status == "finalizing" and s.n_pending:
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
        s.ids = []
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
            if s.status == "finalizing" and s.n_pending == 0 and not s.in_flight:
                ev = self._new_segment(s, "final", now, reason=s.finalize_reason)
                self.metrics.finals += 1
                events.append(ev)
                events.append(Event("closed", s.id, "", s.segment, s.consumed, now, reason=s.finalize_reason))
                self._release(s, "closed")
                if s.finalize_future is not None and not s.finalize_future.done():
                    s.finalize_future.set_result(ev.text)
        return events

    def _collect(self, now: float) -> tuple[list[tuple[_Stream, np.ndarray, list[float], int, bool]] | None, float]:
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
            out.append((s, a, covered, s.segment, fresh))
        return out, 0.0

    @torch.no_grad()
    def _step(self, batch: list[tuple[_Stream, np.ndarray, list[float], int, bool]]) -> None:
        """One batched model step (outside the lock; only this thread touches the slot pools)."""
        m = self.metrics
        t0 = time.perf_counter()
        streams = [b[0] for b in batch]
        slots = np.array([s.slot for s in streams], dtype=np.int64)
        idx = torch.from_numpy(slots).to(self.device)
        fresh = [b[0].slot for b in batch if b[4]]
        if fresh:
            self._reset_slots(fresh, hard=True)
        audio_np = np.stack([b[1] for b in batch])
        audio = torch.from_numpy(audio_np).to(self.device)
        x = torch.cat([self.ovl.index_select(0, idx), audio], dim=1)
        self.ovl.index_copy_(0, idx, x[:, -self.overlap:])
        feats = self.extractor.frames(x)  # (B, step_frames, n_mels)
        t1 = time.perf_counter()
        state = self.pool.select(idx)
        lp, new_state = self.model.forward_chunk(feats, state)
        self.pool.scatter_(idx, new_state)
        ids = lp.argmax(-1)  # (B, t)
        if self.tap is not None:  # testing/debugging hook: every stream's log-probs of this step
            self.tap([s.id for s in streams], lp)
        t2 = time.perf_counter()
        prev = self.prev.index_select(0, idx)
        before = torch.cat([prev[:, None], ids[:, :-1]], dim=1)
        keep = (ids != BLANK) & (ids != before)
        self.prev.index_copy_(0, idx, ids[:, -1])
        ids_cpu, keep_cpu = ids.cpu(), keep.cpu()
        any_new = keep_cpu.any(1).tolist()
        t3 = time.perf_counter()
        dec = self.endpointer.step(slots, ids_cpu, audio_np) if self.endpointer is not None else None
        t4 = time.perf_counter()
        frame_ms = float(self.cfg.model_chunk_ms)
        events: list[Event] = []
        resets: list[int] = []
        with self._cond:
            now = time.perf_counter()
            self._busy.append((now, now - t0))
            for r, (s, _, covered, seg, _) in enumerate(batch):
                s.in_flight = False
                if s.close_after:
                    self._free.append(s.slot)
                    continue
                if s.status not in ("open", "finalizing") or seg != s.segment:
                    continue  # closed, or reset (barge-in) while this step ran: its output is stale
                if any_new[r]:
                    s.ids.extend(ids_cpu[r][keep_cpu[r]].tolist())
                    s.text = self.tokenizer.decode(s.ids)
                    if s.first_tok is None:
                        s.first_tok = s.consumed
                    s.last_tok = s.consumed
                events.append(Event("partial", s.id, s.text, s.segment, s.consumed, now, s.first_tok, s.last_tok,
                                    shed=s.shed))
                for t in covered:
                    m.chunk_latency_ms.add(1e3 * (now - t))
                    m.queue_wait_ms.add(1e3 * (t0 - t))
                m.chunks_processed += len(covered)
                reason = None
                if dec is not None and dec.endpoint[r]:
                    reason = "endpoint"
                elif s.consumed - s.seg_start >= self.cfg.max_segment_s * self.cfg.sample_rate:
                    reason = "max_segment"
                if reason is not None:
                    if s.ids:
                        m.endpoints += 1
                        m.finals += 1
                        events.append(self._new_segment(s, "final", now, reason=reason))
                    else:
                        s.seg_start = s.consumed
                    resets.append(s.slot)
                    self.silence_ms[s.slot] = 0.0
                elif dec is not None and not dec.speech[r] and not s.ids:
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
        t6 = time.perf_counter()
        m.batch_counts[len(batch)] += 1
        m.audio_samples += len(batch) * self.step_samples
        m.busy_s += t6 - t0
        m.step_ms.add(1e3 * (t6 - t0))
        st = m.stage_ms
        st["features"].add(1e3 * (t1 - t0))
        st["model"].add(1e3 * (t2 - t1))
        st["decode"].add(1e3 * (t3 - t2))
        st["endpoint"].add(1e3 * (t4 - t3))
        st["emit"].add(1e3 * (t6 - t4))

    def _reset_slots(self, slots: list[int], hard: bool) -> None:
        """Zero the model and decoder state of some slots (new stream: also the feature overlap and VAD)."""
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        for t in (self.pool.cache1, self.pool.cache2):
            t.index_fill_(0, idx, 0.0)
        for t in (self.pool.h, self.pool.c):
            t.index_fill_(1, idx, 0.0)
        self.prev.index_fill_(0, idx, BLANK)
        if self.endpointer is not None:
            if hard and isinstance(self.endpointer, VadEndpointer):
                self.endpointer.reset_hard(slots)
            else:
                self.endpointer.reset(slots)
        if hard:
            self.ovl.index_fill_(0, idx, 0.0)
            self.silence_ms[slots] = 0.0

    def stats(self) -> dict[str, Any]:
        with self._cond:
            snap = self.metrics.snapshot(self.cfg.sample_rate)
            snap["open_streams"] = len(self._streams)
            snap["duty_cycle_last_s"] = self.duty_cycle()
        snap["alive"] = self.alive
        snap["crashed"] = self._crashed
        return snap
