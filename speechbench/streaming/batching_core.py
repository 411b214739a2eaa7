"""The streaming engine's batching core, run on its scheduler thread: collect the streams whose audio holds
a model chunk (waiting up to ``max_wait_ms`` for a fuller batch), run the VAD endpointer, one model step
over those slots, the blank endpointer, and emit partials and finals (see ``engine.py`` for the whole
picture). Mixed into ``StreamingEngine``, whose state (lock, slots, queues, metrics) it uses."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future

import numpy as np
import torch

from speechbench.streaming.endpoint import VadEndpointer
from speechbench.streaming.engine_types import BatchRow, Event, StreamState
from speechbench.streaming.metrics import Histogram

log = logging.getLogger(__name__)


class BatchingCore:
    """The scheduler thread's loop: collect ready streams, one batched model step, emit."""

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
                ev = self._new_segment(s, "final", now, reason=s.finalize_reason, committed=s.committed)
                self.metrics.finals += 1
                events.append(ev)
                events.append(Event("closed", s.id, "", s.segment, s.consumed, now, reason=s.finalize_reason))
                self._release(s, "closed")
                if s.finalize_future is not None and not s.finalize_future.done():
                    s.finalize_future.set_result(ev.text)
        return events

    def _collect(self, now: float) -> tuple[list[BatchRow] | None, float]:
        """Pick this step's streams, or return how long to wait. Copies their audio out of the queues."""
        ready: list[tuple[float, StreamState]] = []
        live = 0
        live_window = 2 * self.cfg.model_chunk_ms / 1000 + 0.05
        for s in self._streams.values():
            t = self._ready_since(s)
            if t is not None:
                ready.append((t, s))
            if not s.in_flight and (t is not None or now - s.last_chunk_time < live_window):
                live += 1
        if not ready:
            self._wake_in = 1
            return None, 0.25
        oldest = min(t for t, _ in ready)
        target = min(self.cfg.max_batch, max(live, 1))
        deadline = oldest + self.cfg.max_wait_ms / 1000
        finalizing = any(s.status == "finalizing" for _, s in ready)
        if len(ready) < target and now < deadline and not finalizing:
            self._wake_in = target - len(ready)  # _enqueue wakes the scheduler once that many more are ready
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
        drain = self.model.drains_queue
        for _, s in take:
            # a model whose step costs the same however much audio is new takes all of it (see StreamingModel)
            n = s.n_pending if drain else min(self.step_samples, s.n_pending)
            a = np.zeros(max(n, self.step_samples), dtype=np.float32)
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
            out.append(BatchRow(s, a, covered, s.segment, fresh, s.status == "finalizing" and rest == 0, n))
        return out, 0.0

    @torch.no_grad()
    def _step(self, batch: list[BatchRow]) -> None:
        """One batched model step (outside the lock; only this thread touches the model's slot state)."""
        m = self.metrics
        t0 = time.perf_counter()
        streams = [b.stream for b in batch]
        slots = np.array([s.slot for s in streams], dtype=np.int64)
        fresh = [b.stream.slot for b in batch if b.fresh]
        if fresh:
            self._reset_slots(fresh, hard=True)
        width = max(len(b.audio) for b in batch)
        audio = np.stack([b.audio if len(b.audio) == width else np.pad(b.audio, (0, width - len(b.audio)))
                          for b in batch])
        lengths = np.array([b.n for b in batch], dtype=np.int64)
        final = np.array([b.last for b in batch], dtype=bool)
        dec = vad = None
        if isinstance(self.endpointer, VadEndpointer):  # audio only: decided before the model runs, so a
            dec = vad = self.endpointer.step(slots, None, audio, lengths)  # re-decoding model gives its final
            final |= dec.endpoint  # text now
        t1 = time.perf_counter()
        extra = {"trailing_ms": vad.trailing_ms} if vad is not None and self.model.uses_trailing_silence else {}
        out = self.model.step(slots, audio, final, None if dec is None else dec.speech, lengths, **extra)
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
                    if out.committed is not None:
                        s.committed = out.committed[r]
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
                elif out.ends is not None and out.ends[r]:
                    reason = "utterance_cap"  # the model cut a long utterance at a pause (its own rule)
                elif s.consumed - s.seg_start >= self.max_segment_s * self.cfg.sample_rate:
                    reason = "max_segment"
                if reason is not None:
                    if s.text:
                        m.endpoints += 1
                        m.finals += 1
                        events.append(self._new_segment(s, "final", now, reason=reason,
                                                        committed=out.committed[r] if out.committed else None))
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
