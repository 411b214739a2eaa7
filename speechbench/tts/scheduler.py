"""Request schedulers over one ``TTSEngine``: sequential, padded static batching, continuous batching.

All three replay the same request list against the wall clock (a request is invisible before its
``arrival_s``), so their per-request latency (finish - arrival) and throughput compare directly.

* sequential: one request at a time (the engine's KV cache, no batching).
* static: whatever has arrived, up to ``batch_size``, starts together; the batch runs until its longest
  sequence ends, finished ones still occupying (and costing) their slot; then the next batch.
* continuous (iteration-level): a fixed pool of slots; every step decodes all active slots; a finished
  slot is retired and refilled from the queue at once, newcomers prefilled between steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from speechbench.tts.engine import Completed, Request, TTSEngine

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


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def sleep_until(self, t: float) -> None:
        dt = t - self.now()
        if dt > 0:
            time.sleep(dt)


def _arrived(queue: deque[Request], now: float) -> bool:
    return bool(queue) and queue[0].arrival_s <= now


def run_sequential(engine: TTSEngine, requests: list[Request], on_done: Callable | None = None) -> ScheduleResult:
    return run_static(engine, requests, batch_size=1, on_done=on_done, name="sequential")


def run_static(
    engine: TTSEngine,
    requests: list[Request],
    batch_size: int,
    on_done: Callable | None = None,
    name: str = "static",
) -> ScheduleResult:
    if batch_size > engine.config.num_slots:
        raise ValueError(f"batch_size {batch_size} > engine slots {engine.config.num_slots}")
    queue = deque(sorted(requests, key=lambda r: r.arrival_s))
    clock = _Clock()
    res = ScheduleResult(name, [], 0.0)
    while queue:
        if not _arrived(queue, clock.now()):
            clock.sleep_until(queue[0].arrival_s)
        batch = []
        while len(batch) < batch_size and _arrived(queue, clock.now()):
            batch.append(queue.popleft())
        engine.prefill(batch, now_s=clock.now())
        while not all(s.done for s in engine.slots):
            res.occupancy.append(engine.active)
            res.slot_steps += engine.active
            res.steps += 1
            engine._step_static_batch()
        done = engine.retire(now_fn=clock.now, t0=0.0)
        res.completed.extend(done)
        if on_done:
            on_done(len(done))
    res.wall_s = clock.now()
    return res


def run_continuous(engine: TTSEngine, requests: list[Request], on_done: Callable | None = None) -> ScheduleResult:
    queue = deque(sorted(requests, key=lambda r: r.arrival_s))
    clock = _Clock()
    res = ScheduleResult("continuous", [], 0.0)
    while queue or engine.active:
        if not engine.active and not _arrived(queue, clock.now()):
            clock.sleep_until(queue[0].arrival_s)  # idle: nothing to decode until the next arrival
        newcomers = []
        now = clock.now()
        while engine.free_slots - len(newcomers) > 0 and _arrived(queue, now):
            newcomers.append(queue.popleft())
        engine.prefill(newcomers, now_s=now)  # prefill is separate from (and before) the decode step
        res.occupancy.append(engine.active)
        res.slot_steps += engine.step()
        res.steps += 1
        done = engine.retire(now_fn=clock.now, t0=0.0)
        if done:
            res.completed.extend(done)
            if on_done:
                on_done(len(done))
    res.wall_s = clock.now()
    return res


def decode_steps(frames: list[int], slots: int, scheduler: str) -> int:
    """Decode steps each scheduler needs for requests of these output lengths, all arriving at once.

    Pure arithmetic (no model): static batching runs each batch of ``slots`` consecutive requests to its
    longest member; continuous batching refills a slot as soon as its sequence ends. On hardware where a
    step costs about the same at any occupancy (a small-batch CPU decode is weight-bandwidth bound), the
    ratio static / continuous is the most continuous batching can gain on that workload.
    """
    if slots < 1:
        raise ValueError("slots must be >= 1")
    if scheduler == "static":
        return sum(max(frames[i : i + slots]) for i in range(0, len(frames), slots))
    if scheduler == "continuous":
        queue, active, steps = deque(frames), [], 0
        while queue or active:
            while len(active) < slots and queue:
                active.append(queue.popleft())
            m = min(active)
            steps += m
            active = [a - m for a in active if a > m]
        return steps
    raise ValueError(f"scheduler must be 'static' or 'continuous', got {scheduler!r}")


SCHEDULERS = {"sequential": run_sequential, "static": run_static, "continuous": run_continuous}
