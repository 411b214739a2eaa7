"""Real WebSocket clients against a running server: one stream each, paced by the wall clock.

The network counterpart of ``streaming.loadgen.run_load``: the same stream scripts (corpus utterances with
silent gaps, seeded), the same stagger, but each stream is a WebSocket connection (``websockets``, asyncio,
all clients in one process and one event loop) sending 16-bit PCM frames of ``chunk_ms`` at the moment
their last sample would exist in real time (Riva's ``--simulate_realtime``). The clients are lean
(``wsclient``: websockets' Sans-I/O protocol, one pacing timer for all) so that the generator takes as
little as it can of the CPU it shares with the server.

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

from speechbench.serve.wsclient import HandshakeRefused, LeanWebSocket, Pacer, open_connection
from speechbench.streaming.gil import hold_gc_freeze, release_gc_freeze
from speechbench.streaming.loadgen import SR, LoadConfig, StreamTrack, UttAudio, make_floor, make_script
from speechbench.streaming.metrics import Histogram

END = json.dumps({"type": "end"})


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
                       timeout: float = 60.0, pace: float | None = None) -> list[dict[str, Any]]:
    """Send one recording (16 kHz float32) as one stream; return every message received (the last
    final included). ``realtime`` paces the frames like a live source; ``pace`` at that multiple of real time
    (2.0: twice as fast); neither: as fast as the socket takes them."""
    pace = 1.0 if realtime and pace is None else pace
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
                if pace:
                    await asyncio.sleep(max(0.0, t0 + (k + step) / SR / pace - time.perf_counter()))
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
        self.conn: LeanWebSocket | None = None
        self.ended: asyncio.Future[bool] | None = None  # True once the last frame and "end" are sent

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

    def send_next(self, due: float) -> float | None:
        """The pacer's callback: send the frame due at ``due``; return the next frame's due time, or None
        after the last frame (then ``{"type": "end"}`` follows at once)."""
        tr, conn = self.tr, self.conn
        if conn is None or not conn.is_open:  # closed by the server (an error frame) or gone
            if self.ended is not None and not self.ended.done():
                self.ended.set_result(False)
            return None
        self.stats.lag.add(max(0.0, 1e3 * (time.perf_counter() - due)))
        self.frame_end.append(tr.sent + self.chunk)
        self.frame_due.append(due)
        conn.send_binary(pcm16(tr.script.read(self.chunk)))
        tr.sent += self.chunk
        tr.chunks += 1
        if tr.sent < self.total:
            return tr.start + (tr.sent + self.chunk) / SR
        conn.send_text(END)
        self.ended.set_result(True)
        return None

    def on_text(self, raw: str, now: float) -> None:
        self.on_message(json.loads(raw), now)

    async def run(self, url: str, close_timeout: float, pacer: Pacer) -> None:
        tr = self.tr
        await asyncio.sleep(max(0.0, tr.start - time.perf_counter()))
        try:
            conn = await open_connection(url, self.on_text, timeout=10)
        except HandshakeRefused as e:
            code = str(e.status)
            self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
            tr.refused, tr.done = code, True
            return
        except (OSError, TimeoutError) as e:
            tr.refused, tr.done = f"connect: {e}", True
            self.stats.errors.append(f"{tr.sid}: connect: {e}")
            return
        self.conn = conn
        self.ended = asyncio.get_running_loop().create_future()
        tr.admitted = True
        tr.start = time.perf_counter()  # sample 0 exists now: the stream's clock starts at admission
        pacer.add(tr.start + self.chunk / SR, self.send_next)
        try:
            await asyncio.wait([self.ended, conn.closed], return_when=asyncio.FIRST_COMPLETED)
            if not (self.ended.done() and self.ended.result()):
                tr.error = tr.error or f"ConnectionClosed: code {conn.close_code} before the last frame"
            else:
                async with asyncio.timeout(close_timeout):
                    await conn.closed
        except TimeoutError:
            tr.error = tr.error or f"TimeoutError: no close within {close_timeout:g} s of the end"
        finally:
            tr.done = True
            if not conn.closed.done():
                conn.abort()
            code = conn.close_code
            self.stats.closes[str(code)] = self.stats.closes.get(str(code), 0) + 1
            self.stats.unacked_frames += len(self.frame_end) - self.acked


async def _run_clients(url: str, clients: list[_Client], close_timeout: float) -> None:
    pacer = Pacer()
    await asyncio.gather(*(c.run(url, close_timeout, pacer) for c in clients))


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
        script, kind = make_script(pool, cfg, k, rng, floor)
        tr = StreamTrack(f"n{k}", script, kind=kind)
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
