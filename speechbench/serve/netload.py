"""Real WebSocket clients against a running server: one stream each, paced by the wall clock.

The network counterpart of ``streaming.loadgen.run_load``: the same stream scripts (corpus utterances with
silent gaps, seeded), the same stagger, but each stream is a WebSocket connection (``websockets``, asyncio,
all clients in one process and one event loop) sending 16-bit PCM frames of ``chunk_ms`` at the moment
their last sample would exist in real time (Riva's ``--simulate_realtime``).

Client-side chunk latency is measured from that moment (the audio existed) to the arrival of the first
message whose ``audio_ms`` covers the frame: network, framing, the server's queues and the engine all
included. Finals are collected with their character positions so ``loadgen.score_tracks`` scores them
exactly as it scores the in-process run (WER, first-partial and finalization latency from the clients'
clocks).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechbench.streaming.gil import hold_gc_freeze, release_gc_freeze
from speechbench.streaming.loadgen import SR, LoadConfig, StreamScript, StreamTrack, UttAudio, make_floor
from speechbench.streaming.metrics import Histogram


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


@dataclass
class ClientStats:
    latency: Histogram = field(default_factory=Histogram)  # ms, one value per frame sent
    lag: Histogram = field(default_factory=Histogram)  # ms the sender was late, per frame
    refused: dict[str, int] = field(default_factory=dict)  # handshake refusals by HTTP status
    errors: list[str] = field(default_factory=list)
    closes: dict[str, int] = field(default_factory=dict)  # close codes seen at the end
    unacked_frames: int = 0


async def stream_audio(url: str, audio: np.ndarray, chunk_ms: int = 40, realtime: bool = False,
                       timeout: float = 60.0) -> list[dict[str, Any]]:
    """Send one recording (16 kHz float32) as one stream; return every message received (the last
    final included). ``realtime`` paces the frames like a live source."""
    from websockets.asyncio.client import connect

    step = SR * chunk_ms // 1000
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async with connect(url, max_size=2**20, compression=None) as ws:
            async def receive() -> None:
                async for m in ws:
                    messages.append(json.loads(m))

            rx = asyncio.create_task(receive())
            t0 = time.perf_counter()
            for k in range(0, len(audio), step):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + (k + step) / SR - time.perf_counter()))
                await ws.send(pcm16(audio[k: k + step]))
            await ws.send(json.dumps({"type": "end"}))
            await rx
    return messages


class _Client:
    def __init__(self, track: StreamTrack, chunk: int, total: int, stats: ClientStats) -> None:
        self.tr = track
        self.chunk = chunk
        self.total = total
        self.stats = stats
        self.frame_end: list[int] = []
        self.frame_due: list[float] = []
        self.acked = 0

    def on_message(self, m: dict[str, Any], now: float) -> None:
        kind = m.get("type")
        if kind == "error":
            self.tr.error = self.tr.error or str(m.get("text"))
            return
        pos = int(round(m.get("audio_ms", 0) * SR / 1000))
        while self.acked < len(self.frame_end) and self.frame_end[self.acked] <= pos:
            self.stats.latency.add(1e3 * (now - self.frame_due[self.acked]))
            self.acked += 1
        seg = int(m.get("utterance", 0))
        if kind == "partial" and m.get("text") and seg not in self.tr.first_partials:
            first = m.get("first_token_ms")
            if first is not None:
                self.tr.first_partials[seg] = (int(round(first * SR / 1000)), now)
        elif kind == "final":
            def sample(key: str) -> int | None:
                v = m.get(key)
                return None if v is None else int(round(v * SR / 1000))

            self.tr.finals.append((seg, m.get("text", ""), sample("first_token_ms"), sample("last_token_ms"), now,
                                   m.get("reason")))

    async def run(self, url: str, close_timeout: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        tr = self.tr
        await asyncio.sleep(max(0.0, tr.start - time.perf_counter()))
        try:
            # no permessage-deflate (the server refuses it anyway): PCM does not compress
            ws = await connect(url, max_size=2**20, open_timeout=10, compression=None)
        except InvalidStatus as e:
            code = str(e.response.status_code)
            self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
            tr.refused, tr.done = code, True
            return
        except (OSError, TimeoutError) as e:
            tr.refused, tr.done = f"connect: {e}", True
            self.stats.errors.append(f"{tr.sid}: connect: {e}")
            return
        tr.admitted = True
        tr.start = time.perf_counter()  # sample 0 exists now: the stream's clock starts at admission

        async def receive() -> None:
            try:
                async for raw in ws:
                    self.on_message(json.loads(raw), time.perf_counter())
            except ConnectionClosed:
                pass

        rx = asyncio.create_task(receive())
        try:
            while tr.sent < self.total:
                due = tr.start + (tr.sent + self.chunk) / SR
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.stats.lag.add(max(0.0, 1e3 * (time.perf_counter() - due)))
                self.frame_end.append(tr.sent + self.chunk)
                self.frame_due.append(due)
                await ws.send(pcm16(tr.script.read(self.chunk)))
                tr.sent += self.chunk
                tr.chunks += 1
            await ws.send(json.dumps({"type": "end"}))
            async with asyncio.timeout(close_timeout):
                await rx
        except (ConnectionClosed, TimeoutError) as e:
            tr.error = tr.error or f"{type(e).__name__}: {e}"
        finally:
            tr.done = True
            code = ws.close_code
            self.stats.closes[str(code)] = self.stats.closes.get(str(code), 0) + 1
            self.stats.unacked_frames += len(self.frame_end) - self.acked
            rx.cancel()
            await ws.close()


async def _run_clients(url: str, clients: list[_Client], close_timeout: float) -> None:
    await asyncio.gather(*(c.run(url, close_timeout) for c in clients))


def run_network_load(ws_url: str, pool: list[UttAudio], cfg: LoadConfig, gc_freeze: bool = True) -> dict[str, Any]:
    """``cfg.streams`` WebSocket clients replaying ``pool``; the same seeds and scripts as ``run_load``.
    ``gc_freeze``: freeze this process's heap while the clients run, as the engine does (streaming/gil.py),
    so a full collection in the load generator does not stall every client's clock at once.

    Returns the tracks (for ``score_tracks``), client-side latency and lag histograms, refusals by HTTP
    status, close codes, and wall time."""
    rng = np.random.default_rng(cfg.seed)
    floor = make_floor(3.0, -60.0, cfg.seed)
    chunk = cfg.chunk_ms * SR // 1000
    total = int(cfg.duration_s * SR) // chunk * chunk
    stats = ClientStats()
    clients = []
    t0 = time.perf_counter() + 0.2
    for k in range(cfg.streams):
        order = np.roll(rng.permutation(len(pool)), k)
        script = StreamScript(pool, order, np.random.default_rng([cfg.seed, k]), cfg.gap_s, floor)
        tr = StreamTrack(f"n{k}", script)
        tr.start = t0 + cfg.ramp_s * k / max(1, cfg.streams) + rng.uniform(0, cfg.chunk_ms / 1000)
        clients.append(_Client(tr, chunk, total, stats))
    url = ws_url.rstrip("/") + "/v1/stream?sample_rate=16000"
    if gc_freeze:
        hold_gc_freeze()
    try:
        run_event_loop(_run_clients(url, clients, cfg.finalize_timeout_s))
    finally:
        if gc_freeze:
            release_gc_freeze()
    wall = time.perf_counter() - t0
    return {"tracks": [c.tr for c in clients], "stats": stats, "wall_s": wall, "total_samples": total}


def run_event_loop(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed: hundreds of clients in one process are bound by the
    event loop's own overhead, which uvloop roughly halves."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    """``GET /metrics`` -> {sample name with labels: value} (prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
