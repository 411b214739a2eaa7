"""Bounded-memory metrics for the streaming engine: fixed-bin histograms and per-step stage timers.

Everything here has a size fixed at construction, so an engine running for hours (the soak test) does not
grow its memory with the number of chunks it has seen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Histogram:
    """Values (ms) in fixed bins of ``resolution`` up to ``limit``; one overflow bin; exact min/max/mean.

    Percentiles are read at the upper edge of the bin holding the requested rank (so they never
    understate a latency by more than one bin), and capped at the exact maximum.
    """

    def __init__(self, limit: float = 10_000.0, resolution: float = 0.25) -> None:
        self.resolution = resolution
        self.nbins = int(limit / resolution)
        self.counts = np.zeros(self.nbins + 1, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.max = float("-inf")
        self.min = float("inf")

    def add(self, v: float) -> None:
        i = int(v / self.resolution) if v > 0 else 0
        self.counts[i if i < self.nbins else self.nbins] += 1
        self.n += 1
        self.total += v
        if v > self.max:
            self.max = v
        if v < self.min:
            self.min = v

    def add_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        idx = np.clip((np.maximum(values, 0) / self.resolution).astype(np.int64), 0, self.nbins)
        np.add.at(self.counts, idx, 1)
        self.n += int(values.size)
        self.total += float(values.sum())
        self.max = max(self.max, float(values.max()))
        self.min = min(self.min, float(values.min()))

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    def percentile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        rank = max(1, int(np.ceil(q / 100.0 * self.n)))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i >= self.nbins:
            return float(self.max)
        return float(min((i + 1) * self.resolution, self.max))

    def summary(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n": 0}
        return {"n": self.n, "mean": self.total / self.n, "min": self.min, "p50": self.percentile(50),
                "p90": self.percentile(90), "p95": self.percentile(95), "p99": self.percentile(99),
                "max": self.max}


STAGES = ("features", "model", "decode", "endpoint", "emit")


@dataclass
class EngineMetrics:
    """Counters of one engine. Written by the scheduler thread (and, for admission/shedding, by callers
    under the engine lock); read with ``snapshot``."""

    max_batch: int
    chunk_latency_ms: Histogram = field(default_factory=Histogram)  # client chunk arrival -> its partial
    queue_wait_ms: Histogram = field(default_factory=Histogram)  # client chunk arrival -> its step starts
    step_ms: Histogram = field(default_factory=Histogram)
    stage_ms: dict[str, Histogram] = field(default_factory=lambda: {s: Histogram() for s in STAGES})
    batch_counts: np.ndarray = field(init=False)
    steps: int = 0
    live_sum: int = 0  # sum over steps of streams that were live (sending audio) when the step was formed
    ready_sum: int = 0  # sum over steps of streams that had a model chunk ready
    capacity_sum: int = 0  # sum over steps of the batch each step aimed for: max(min(max_batch, live), taken)
    backlog_chunks: Histogram = field(default_factory=lambda: Histogram(limit=100_000, resolution=1))
    busy_s: float = 0.0  # time spent inside steps (features .. emit)
    audio_samples: int = 0  # audio consumed by the model, all streams
    chunks_in: int = 0
    chunks_processed: int = 0
    shed_chunks: int = 0
    shed_samples: int = 0
    dropped_chunks: int = 0  # accepted, then lost (stream closed with audio still queued)
    refused_streams: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    failed_streams: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    finals: int = 0
    partials: int = 0
    endpoints: int = 0
    silence_resets: int = 0
    idle_timeouts: int = 0
    events_dropped: int = 0
    early_joins: int = 0  # rows that joined a step with less than a whole chunk (min_join_ms models)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.batch_counts = np.zeros(self.max_batch + 1, dtype=np.int64)

    def count_refusal(self, kind: str) -> None:
        with self.lock:
            self.refused_streams += 1
            self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def count_failure(self, kind: str) -> None:
        with self.lock:
            self.failed_streams += 1
            self.failures[kind] = self.failures.get(kind, 0) + 1

    def snapshot(self, sample_rate: int) -> dict[str, Any]:
        sizes = np.nonzero(self.batch_counts)[0]
        n = int(self.batch_counts.sum())
        mean_batch = float((self.batch_counts * np.arange(len(self.batch_counts))).sum() / n) if n else None
        audio_s = self.audio_samples / sample_rate
        return {
            "chunk_latency_ms": self.chunk_latency_ms.summary(),
            "queue_wait_ms": self.queue_wait_ms.summary(),
            "step_ms": self.step_ms.summary(),
            "stage_ms": {k: v.summary() for k, v in self.stage_ms.items()},
            "steps": self.steps,
            "batch_size_mean": mean_batch,
            "batch_size_hist": {int(b): int(self.batch_counts[b]) for b in sizes},
            # Utilization: the share of the batch a step could have had that it did have. A step could have
            # served every live stream (up to max_batch); serving fewer means the scheduler split the work
            # into more, smaller steps than needed.
            "batch_utilization": (self.batch_counts * np.arange(len(self.batch_counts))).sum()
            / self.capacity_sum if self.capacity_sum else None,
            "batch_fill_of_ready": (self.batch_counts * np.arange(len(self.batch_counts))).sum()
            / self.ready_sum if self.ready_sum else None,
            "batch_fill_of_max": mean_batch / self.max_batch if mean_batch is not None else None,
            "live_streams_mean": self.live_sum / self.steps if self.steps else None,
            "backlog_chunks": self.backlog_chunks.summary(),
            "busy_s": self.busy_s,
            "audio_s": audio_s,
            "compute_rtf": self.busy_s / audio_s if audio_s else None,
            "chunks_in": self.chunks_in,
            "chunks_processed": self.chunks_processed,
            "shed_chunks": self.shed_chunks,
            "shed_audio_s": self.shed_samples / sample_rate,
            "dropped_chunks": self.dropped_chunks,
            "refused_streams": self.refused_streams,
            "refusals": dict(self.refusals),
            "failed_streams": self.failed_streams,
            "failures": dict(self.failures),
            "finals": self.finals,
            "partials": self.partials,
            "endpoints": self.endpoints,
            "silence_resets": self.silence_resets,
            "idle_timeouts": self.idle_timeouts,
            "events_dropped": self.events_dropped,
            "early_joins": self.early_joins,
        }
