"""Request schedulers over one ``TTSEngine``: sequential, padded static batching (FIFO or length-bucketed),
continuous batching.

All three replay the same request list against a clock (a request is invisible before its
``arrival_s``), so their per-request latency (finish - arrival) and throughput compare directly. Alone,
a scheduler runs against the wall clock (``run_static``, ``run_continuous``); to compare two fairly,
``run_interleaved`` runs them by turns, each on its own ``BusyClock``.

* sequential: one request at a time (the engine's KV cache, no batching).
* static: whatever has arrived, up to ``batch_size``, starts together; the batch runs until its longest
  sequence ends, finished ones still occupying (and costing) their slot; then the next batch.
* static, length-bucketed: the same, but each batch gathers requests of similar known output length
  (a server with a duration predictor would), so less of it is padding.
* continuous (iteration-level): a fixed pool of slots; every step decodes all active slots; a finished
  slot is retired and refilled from the queue at once, newcomers prefilled between steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from speechbench.common.measure import synchronize
from speechbench.tts.engine import Completed, Request, TTSEngine
from speechbench.tts.streaming import AudioStreamer

ARRIVALS = ("all_at_once", "poisson")


def make_arrivals(n: int, pattern: str, rate_per_s: float = 0.0, seed: int = 0) -> list[float]:
    """Arrival offsets (s): all at t=0, or a Poisson process of ``rate_per_s`` (seeded)."""
    if pattern == "all_at_once":
        return [0.0] * n
    if pattern == "poisson":
        if rate_per_s <= 0:
            raise ValueError("poisson arrivals need rate_per_s > 0")
        gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=n)
        return np.cumsum(gaps).tolist()
    raise ValueError(f"arrival pattern must be one of {ARRIVALS}, got {pattern!r}")


@dataclass
class ScheduleResult:
    scheduler: str
    completed: list[Completed]
    wall_s: float
    steps: int = 0
    slot_steps: int = 0  # sum over steps of sequences decoded (includes static batching's padding work)
    occupancy: list[int] = field(default_factory=list)  # active slots at each step

    @property
    def useful_frames(self) -> int:
        return sum(c.frames for c in self.completed)

    def summary(self, frames_per_second: float) -> dict:
        lat = [c.latency_s for c in self.completed]
        audio_s = self.useful_frames / frames_per_second
        return {
            "scheduler": self.scheduler,
            "requests": len(self.completed),
            "wall_s": self.wall_s,
            "throughput_texts_per_s": len(self.completed) / self.wall_s,
            "throughput_audio_s_per_s": audio_s / self.wall_s,
            "rtf": self.wall_s / audio_s if audio_s else float("nan"),
            "latency_ms_mean": 1e3 * float(np.mean(lat)),
            "latency_ms_p50": 1e3 * float(np.percentile(lat, 50)),
            "latency_ms_p95": 1e3 * float(np.percentile(lat, 95)),
            "steps": self.steps,
            "ms_per_step": 1e3 * self.wall_s / self.steps if self.steps else float("nan"),  # prefill + vocoder included
            "useful_frames": self.useful_frames,
            "computed_frames": self.slot_steps,
            # Fraction of decoded frames that end up in an output (static batching pads, continuous doesn't).
            "work_efficiency": self.useful_frames / self.slot_steps if self.slot_steps else float("nan"),
            "mean_active_slots": float(np.mean(self.occupancy)) if self.occupancy else 0.0,
        }


class WallClock:
    """Real time since the run started; waiting for an arrival sleeps. For one scheduler running alone."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def wait_until(self, t: float) -> None:
        dt = t - self.now()
        if dt > 0:
            time.sleep(dt)

    @contextmanager
    def busy(self, device: torch.device | None = None) -> Iterator[None]:
        yield


class BusyClock:
    """A scheduler's own time when several share the machine by turns (``run_interleaved``).

    Time advances only while this scheduler works (each iteration timed, device synchronized) and jumps
    over idle gaps to the next arrival without sleeping. Why: two schedulers measured one after the other
    (44 s each here) were at the mercy of the machine's speed drifting between the two windows (the same
    code measured continuous/static at 1.43x one day and 0.99x the next); taking turns step by step puts
    both in the same windows, so drift cancels out of their ratio.
    """

    def __init__(self) -> None:
        self.t = 0.0
        self._since: float | None = None

    def now(self) -> float:
        return self.t + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def wait_until(self, t: float) -> None:
        self.t = max(self.t, t)

    @contextmanager
    def busy(self, device: torch.device | None = None) -> Iterator[None]:
        self._since = time.perf_counter()
        try:
            yield
        finally:
            synchronize(device)
            self.t += time.perf_counter() - self._since
            self._since = None


Clock = WallClock | BusyClock


def _arrived(queue: deque[Request], now: float) -> bool:
    return bool(queue) and queue[0].arrival_s <= now


class Schedule:
    """One scheduler serving one request list on one engine, one iteration per ``advance()``."""

    name = "schedule"

    def __init__(self, engine: TTSEngine, requests: list[Request], clock: Clock | None = None,
                 on_done: Callable | None = None, streamer: AudioStreamer | None = None) -> None:
        self.engine = engine
        self.queue = deque(sorted(requests, key=lambda r: r.arrival_s))
        self.clock = clock or WallClock()
        self.on_done = on_done
        # streamer: audio leaves in chunks after each step (tts/streaming.py) instead of one vocoder pass at
        # the end; the scheduling itself is unchanged
        self.streamer = streamer
        self.result = ScheduleResult(self.name, [], 0.0)

    @property
    def done(self) -> bool:
        return not self.queue and not self.engine.active

    def advance(self) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        if self.streamer is not None:
            self.streamer.after_step(self.clock.now())

    def _retire(self) -> None:
        done = self.engine.retire(now_fn=self.clock.now, t0=0.0, vocode=self.streamer is None)
        if done and self.streamer is not None:
            self.streamer.finish(done)
        if done:
            self.result.completed.extend(done)
            if self.on_done:
                self.on_done(len(done))

    def run(self) -> ScheduleResult:
        while not self.done:
            self.advance()
        self.result.wall_s = self.clock.now()
        return self.result


class StaticSchedule(Schedule):
    """Padded static batching: whatever has arrived (up to ``batch_size``) starts together and runs until
    its longest sequence ends, finished ones still occupying (and costing) their slot."""

    name = "static"

    def __init__(self, engine: TTSEngine, requests: list[Request], batch_size: int, clock: Clock | None = None,
                 on_done: Callable | None = None, name: str = "static", streamer: AudioStreamer | None = None) -> None:
        if batch_size > engine.config.num_slots:
            raise ValueError(f"batch_size {batch_size} > engine slots {engine.config.num_slots}")
        self.name = name
        super().__init__(engine, requests, clock, on_done, streamer)
        self.batch_size = batch_size

    def next_batch(self, now: float) -> list[Request]:
        """FIFO: the requests that have arrived, oldest first, up to ``batch_size``."""
        batch = []
        while len(batch) < self.batch_size and _arrived(self.queue, now):
            batch.append(self.queue.popleft())
        return batch

    def advance(self) -> None:
        eng, res, clock = self.engine, self.result, self.clock
        if not eng.active and not _arrived(self.queue, clock.now()):
            clock.wait_until(self.queue[0].arrival_s)
        with clock.busy(eng.device):
            if not eng.active:  # start the next batch
                now = clock.now()
                eng.prefill(self.next_batch(now), now_s=now)
            res.occupancy.append(eng.active)
            res.slot_steps += eng.active
            res.steps += 1
            eng._step_static_batch()
            self._after_step()
            if all(s.done for s in eng.slots):
                self._retire()


class BucketedStaticSchedule(StaticSchedule):
    """Length-bucketed static batching: the strongest static baseline when output lengths are known.

    A real TTS server knows each request's length before decoding it (a duration predictor; here the
    length policy), so it can batch requests of similar length and waste little on padding. Each batch is
    anchored on the oldest arrived request (no request waits forever behind shorter ones; among requests
    that arrived together, the longest) and filled with the arrived requests nearest it in length: the
    contiguous window of ``batch_size`` in length order that contains the anchor and spans the fewest
    frames. With all requests arriving at once this is sorting by length and batching consecutive ones,
    which minimizes static batching's decode steps (``decode_steps(..., "bucketed")``).
    """

    def __init__(self, engine: TTSEngine, requests: list[Request], batch_size: int, clock: Clock | None = None,
                 on_done: Callable | None = None, name: str = "static_bucketed",
                 streamer: AudioStreamer | None = None) -> None:
        super().__init__(engine, requests, batch_size, clock, on_done, name, streamer)
        self.frames = {id(r): engine.expected_frames(r) for r in self.queue}

    def next_batch(self, now: float) -> list[Request]:
        arrived = [r for r in self.queue if r.arrival_s <= now]
        anchor = min(arrived, key=lambda r: (r.arrival_s, -self.frames[id(r)]))
        by_len = sorted(arrived, key=lambda r: self.frames[id(r)])
        k = min(self.batch_size, len(by_len))
        i = next(j for j, r in enumerate(by_len) if r is anchor)
        lo = min(range(max(0, i - k + 1), min(i, len(by_len) - k) + 1),
                 key=lambda a: self.frames[id(by_len[a + k - 1])] - self.frames[id(by_len[a])])
        batch = by_len[lo : lo + k]
        chosen = {id(r) for r in batch}
        self.queue = deque(r for r in self.queue if id(r) not in chosen)
        return sorted(batch, key=lambda r: r.arrival_s)


class ContinuousSchedule(Schedule):
    """Iteration-level batching: a finished slot is retired and refilled from the queue at once."""

    name = "continuous"

    def advance(self) -> None:
        eng, res, clock = self.engine, self.result, self.clock
        if not eng.active and not _arrived(self.queue, clock.now()):
            clock.wait_until(self.queue[0].arrival_s)  # idle: nothing to decode until the next arrival
        with clock.busy(eng.device):
            newcomers = []
            now = clock.now()
            while eng.free_slots - len(newcomers) > 0 and _arrived(self.queue, now):
                newcomers.append(self.queue.popleft())
            eng.prefill(newcomers, now_s=now)  # prefill is separate from (and before) the decode step
            res.occupancy.append(eng.active)
            res.slot_steps += eng.step()
            res.steps += 1
            self._after_step()
            self._retire()


def run_static(engine: TTSEngine, requests: list[Request], batch_size: int, on_done: Callable | None = None,
               name: str = "static") -> ScheduleResult:
    """Static batching alone on the machine, against the wall clock."""
    return StaticSchedule(engine, requests, batch_size, on_done=on_done, name=name).run()


def run_bucketed(engine: TTSEngine, requests: list[Request], batch_size: int,
                 on_done: Callable | None = None) -> ScheduleResult:
    """Length-bucketed static batching alone on the machine, against the wall clock."""
    return BucketedStaticSchedule(engine, requests, batch_size, on_done=on_done).run()


def run_sequential(engine: TTSEngine, requests: list[Request], on_done: Callable | None = None) -> ScheduleResult:
    return run_static(engine, requests, batch_size=1, on_done=on_done, name="sequential")


def run_continuous(engine: TTSEngine, requests: list[Request], on_done: Callable | None = None) -> ScheduleResult:
    """Continuous batching alone on the machine, against the wall clock."""
    return ContinuousSchedule(engine, requests, on_done=on_done).run()


def run_interleaved(schedules: list[Schedule]) -> list[ScheduleResult]:
    """Run schedules by turns, one iteration each, every one on its own ``BusyClock`` (see there).

    Each needs its own engine (slots hold state) and its own clock; the engines may share weights.
    """
    if len({id(s.engine) for s in schedules}) != len(schedules):
        raise ValueError("interleaved schedules need one engine each")
    if not all(isinstance(s.clock, BusyClock) for s in schedules):
        raise ValueError("interleaved schedules need a BusyClock each: a wall clock would count the others' turns")
    while not all(s.done for s in schedules):
        for s in schedules:
            if not s.done:
                s.advance()
    for s in schedules:
        s.result.wall_s = s.clock.now()
    return [s.result for s in schedules]


def decode_steps(frames: list[int], slots: int, scheduler: str) -> int:
    """Decode steps each scheduler needs for requests of these output lengths, all arriving at once.

    Pure arithmetic (no model): static batching runs each batch of ``slots`` consecutive requests to its
    longest member; continuous batching refills a slot as soon as its sequence ends. On hardware where a
    step costs about the same at any occupancy (a small-batch CPU decode is weight-bandwidth bound), the
    ratio static / continuous is the most continuous batching can gain on that workload. ``bucketed``:
    static batching of the requests sorted by length (what ``BucketedStaticSchedule`` does with them).
    """
    if slots < 1:
        raise ValueError("slots must be >= 1")
    if scheduler == "static":
        return sum(max(frames[i : i + slots]) for i in range(0, len(frames), slots))
    if scheduler == "bucketed":  # longest first, consecutive in length order (BucketedStaticSchedule)
        return decode_steps(sorted(frames, reverse=True), slots, "static")
    if scheduler == "continuous":
        queue, active, steps = deque(frames), [], 0
        while queue or active:
            while len(active) < slots and queue:
                active.append(queue.popleft())
            m = min(active)
            steps += m
            active = [a - m for a in active if a > m]
        return steps
    raise ValueError(f"scheduler must be 'static', 'bucketed' or 'continuous', got {scheduler!r}")


SCHEDULERS = {"sequential": run_sequential, "static": run_static, "static_bucketed": run_bucketed,
              "continuous": run_continuous}
