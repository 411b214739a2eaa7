"""Prometheus metrics of one server: latency histograms measured where the text leaves the server, plus
the engine's own counters read at scrape time.

Server-side (observed by the connection handlers): chunk latency (a client frame received -> the first
message covering its audio sent), first-partial latency (the frame holding a segment's first character
received -> that partial sent), finalization latency (an endpoint final: the frame holding the last
character received -> final sent; after ``end``: the end message received -> final sent), streams
admitted and refused by reason, errors by kind, offline requests by status, and the offline queue depth.

Engine-side (``EngineCollector``, read from ``StreamingEngine.metrics`` on every scrape, so nothing is
copied per step): the batch size of each model step, live streams, chunks shed, steps, audio processed.
Each server has its own ``CollectorRegistry`` (several servers in one test process do not collide).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class EngineCollector:
    """Exports a ``StreamingEngine``'s counters as Prometheus families at scrape time."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self):  # noqa: ANN201 - the prometheus_client collector protocol
        m = self.engine.metrics
        counts = np.array(m.batch_counts, dtype=np.int64)  # index = batch size
        sizes = np.arange(len(counts))
        h = HistogramMetricFamily("speechbench_batch_size", "Streams in each batched model step")
        buckets = [(str(float(b)), float(counts[: b + 1].sum())) for b in BATCH_BUCKETS if b < len(counts)]
        buckets.append(("+Inf", float(counts.sum())))
        h.add_metric([], buckets, sum_value=float((counts * sizes).sum()))
        yield h
        live = GaugeMetricFamily("speechbench_live_streams", "Streams open in the engine")
        live.add_metric([], float(self.engine.num_streams))
        yield live
        for name, doc, value in (
            ("speechbench_chunks_shed", "Client chunks shed by the bounded per-stream queue", m.shed_chunks),
            ("speechbench_engine_steps", "Batched model steps run", m.steps),
            ("speechbench_engine_audio_seconds", "Audio consumed by the model, all streams",
             m.audio_samples / self.engine.cfg.sample_rate),
            ("speechbench_engine_busy_seconds", "Time the scheduler spent inside model steps", m.busy_s),
            ("speechbench_engine_finals", "Finals emitted by the engine", m.finals),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            yield c


class ServerMetrics:
    def __init__(self, engine: Any | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.chunk_latency = Histogram("speechbench_chunk_latency_seconds", "Client frame received -> first "
                                       "message covering its audio sent", buckets=LATENCY_BUCKETS_S, registry=r)
        self.first_partial = Histogram("speechbench_first_partial_latency_seconds", "Frame holding a segment's "
                                       "first character received -> that partial sent", buckets=LATENCY_BUCKETS_S,
                                       registry=r)
        self.finalization = Histogram("speechbench_finalization_latency_seconds", "Endpoint: frame holding the "
                                      "last character received -> final sent; end: end received -> final sent",
                                      ["trigger"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.admitted = Counter("speechbench_streams_admitted", "WebSocket streams admitted", registry=r)
        self.refused = Counter("speechbench_streams_refused", "WebSocket handshakes refused", ["reason"],
                               registry=r)
        self.errors = Counter("speechbench_errors", "Errors sent to clients, by kind", ["kind"], registry=r)
        self.connections = Gauge("speechbench_connections", "Open WebSocket connections", registry=r)
        self.offline_requests = Counter("speechbench_transcribe_requests", "POST /v1/transcribe by status",
                                        ["status"], registry=r)
        self.offline_queue = Gauge("speechbench_transcribe_queue_depth", "Transcription requests waiting or "
                                   "running", registry=r)
        self.offline_seconds = Histogram("speechbench_transcribe_seconds", "POST /v1/transcribe compute time",
                                         buckets=LATENCY_BUCKETS_S, registry=r)
        if engine is not None:
            r.register(EngineCollector(engine))
