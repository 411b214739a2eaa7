"""The HTTP/WebSocket application over one ``StreamingEngine`` (FastAPI on uvicorn).

Contract (README, "Serving"):

* ``WS /v1/stream?sample_rate=16000[&encoding=pcm_s16le|pcm_f32le]``: binary frames of little-endian
  mono PCM (10 ms .. 1 s each); text frames ``{"type": "end"}`` (finalize: a last final, then a normal
  close) and ``{"type": "reset"}`` (barge-in). The server sends JSON text frames ``{"type":
  "partial"|"final"|"error", "text", "utterance", "audio_ms", "server_latency_ms"}`` (finals also carry
  ``reason``, ``first_token_ms`` and ``last_token_ms``: stream positions of the segment's characters;
  non-empty partials carry ``first_token_ms``).
  A partial follows every model step of the stream (unchanged text included: it acknowledges the audio up
  to ``audio_ms``); when the socket is slower than the engine, pending partials are coalesced to the newest.
* ``POST /v1/transcribe`` (a WAV body) -> ``{"text", "duration_s", "model"}``; 413 / 400 / 503.
* ``GET /metrics`` (Prometheus text), ``GET /healthz``.

Threads: the engine's scheduler thread delivers events to ``EventRouter.on_event``, which hands them to
the event loop in one ``call_soon_threadsafe`` per burst (not per event); each connection has a sender task
that turns them into frames, so a slow client delays only itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from speechbench.serve.config import ENCODINGS, SUPPORTED_RATES, ServerConfig
from speechbench.serve.offline import BadAudio, NotReady, OfflineService, QueueFull, decode_wav
from speechbench.serve.prom import ServerMetrics
from speechbench.serve.resample import StreamResampler
from speechbench.streaming.engine import AdmissionError, BadChunkError, Event, StreamError, StreamingEngine

log = logging.getLogger(__name__)

# Close codes (RFC 6455 section 7.4.1).
NORMAL, GOING_AWAY, BAD_DATA, POLICY, TOO_BIG, INTERNAL = 1000, 1001, 1007, 1008, 1009, 1011
HISTORY_S = 60.0  # frame arrival times kept per connection, for latency of characters seen this far back


class EventRouter:
    """Engine events (scheduler thread) -> the connection owning the stream (event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: dict[str, Connection] = {}
        self._pending: deque[Event] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def on_event(self, ev: Event) -> None:
        with self._lock:
            self._pending.append(ev)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed: the server is gone
            pass

    def _drain(self) -> None:
        with self._lock:
            events = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for ev in events:
            conn = self.connections.get(ev.stream_id)
            if conn is not None:
                conn.outbox.put_nowait(ev)


class Connection:
    """One WebSocket client: its stream in the engine, frame arrival times, and the outgoing queue."""

    def __init__(self, app: ServerApp, ws: WebSocket, sid: str, rate: int, encoding: str) -> None:
        self.app = app
        self.ws = ws
        self.sid = sid
        self.rate = rate
        self.encoding = encoding
        self.resampler = StreamResampler(rate, app.engine.cfg.sample_rate)
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.frame_ends: deque[int] = deque()  # engine-rate sample end of each received frame
        self.frame_times: deque[float] = deque()  # ... and when it was received
        self.acked = 0  # frames already covered by a message (their latency observed)
        self.received = 0  # engine-rate samples passed to the engine
        self.ended_at: float | None = None  # {"type": "end"} received
        self.last_rx = time.perf_counter()  # when the client last sent anything (the idle watchdog reads it)
        self.first_seen: set[int] = set()  # segments whose first non-empty partial was sent
        self.close_code = NORMAL
        self.close_reason = ""
        self.closed = False

    # -- arrival bookkeeping -------------------------------------------------------------------------------

    def record_frame(self, samples: int, t: float) -> None:
        self.received += samples
        self.frame_ends.append(self.received)
        self.frame_times.append(t)
        horizon = self.received - int(HISTORY_S * self.app.engine.cfg.sample_rate)
        while self.frame_ends and self.frame_ends[0] < horizon:
            self.frame_ends.popleft()
            self.frame_times.popleft()
            self.acked = max(0, self.acked - 1)

    def arrival_of(self, sample: int | None) -> float | None:
        """When the frame holding engine sample ``sample`` was received (None: unknown or too old)."""
        if sample is None or not self.frame_ends:
            return None
        i = bisect_left(self.frame_ends, sample + 1)
        return self.frame_times[i] if i < len(self.frame_times) else self.frame_times[-1]

    def ack(self, audio_end: int, now: float) -> float | None:
        """Observe the latency of frames newly covered by ``audio_end``; returns the newest one's (ms)."""
        newest = None
        while self.acked < len(self.frame_ends) and self.frame_ends[self.acked] <= audio_end:
            newest = now - self.frame_times[self.acked]
            self.app.metrics.chunk_latency.observe(newest)
            self.acked += 1
        return None if newest is None else 1e3 * newest

    # -- outgoing ------------------------------------------------------------------------------------------

    def message(self, ev: Event, now: float) -> dict[str, Any]:
        sr = self.app.engine.cfg.sample_rate
        lat = self.ack(ev.audio_end, now)
        msg: dict[str, Any] = {"type": ev.kind, "text": ev.text, "utterance": ev.segment,
                               "audio_ms": round(1e3 * ev.audio_end / sr, 1),
                               "server_latency_ms": None if lat is None else round(lat, 2)}
        m = self.app.metrics
        if ev.kind == "partial" and ev.text and ev.first_token_sample is not None:
            msg["first_token_ms"] = round(1e3 * ev.first_token_sample / sr, 1)
        if ev.kind == "partial" and ev.text and ev.segment not in self.first_seen:
            self.first_seen.add(ev.segment)
            t = self.arrival_of(ev.first_token_sample)
            if t is not None:
                m.first_partial.observe(now - t)
        if ev.kind == "final":
            msg["reason"] = ev.reason
            for key, pos in (("first_token_ms", ev.first_token_sample), ("last_token_ms", ev.last_token_sample)):
                msg[key] = None if pos is None else round(1e3 * pos / sr, 1)
            if ev.reason == "finalize" and self.ended_at is not None:
                m.finalization.labels("end").observe(now - self.ended_at)
            elif ev.reason == "endpoint":
                t = self.arrival_of(ev.last_token_sample)
                if t is not None:
                    m.finalization.labels("endpoint").observe(now - t)
        return msg

    def error(self, text: str, kind: str, code: int) -> None:
        """Queue an error frame and a close with ``code`` (after anything already queued)."""
        self.app.metrics.errors.labels(kind).inc()
        self.outbox.put_nowait({"type": "error", "text": text, "kind": kind})
        self.outbox.put_nowait(("close", code, kind))

    async def sender(self) -> None:
        """Frames out, in order; consecutive partials of one segment collapse to the newest."""
        try:
            while True:
                items = [await self.outbox.get()]
                while not self.outbox.empty():
                    items.append(self.outbox.get_nowait())
                now = time.perf_counter()
                for k, item in enumerate(items):
                    if isinstance(item, tuple):  # ("close", code, reason)
                        await self.close(item[1], item[2])
                        return
                    if isinstance(item, dict):
                        await self.ws.send_text(json.dumps(item))
                        continue
                    ev: Event = item
                    if ev.kind == "partial":
                        nxt = items[k + 1] if k + 1 < len(items) else None
                        if isinstance(nxt, Event) and nxt.kind == "partial" and nxt.segment == ev.segment:
                            continue  # superseded: the next partial covers this one's audio too
                        await self.ws.send_text(json.dumps(self.message(ev, now)))
                    elif ev.kind == "final":
                        await self.ws.send_text(json.dumps(self.message(ev, now)))
                    elif ev.kind == "error":  # the engine failed the stream (a bad chunk)
                        self.app.metrics.errors.labels("bad_audio").inc()
                        await self.ws.send_text(json.dumps({"type": "error", "text": ev.reason,
                                                            "kind": "bad_audio"}))
                        await self.close(BAD_DATA, "bad audio")
                        return
                    elif ev.kind == "closed":  # after the last final
                        await self.close(self.close_code, self.close_reason)
                        return
        except Exception as e:  # the client went away mid-send; the receiver sees the disconnect
            log.debug("sender %s stopped: %s", self.sid, e)
        finally:
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code, reason[:120])
            except Exception:  # already closed by the peer
                pass


class ServerApp:
    """Holds the engine, the router, metrics and the offline service; ``app`` is the ASGI application."""

    def __init__(self, engine: StreamingEngine, cfg: ServerConfig, offline: OfflineService | None,
                 model_name: str) -> None:
        self.engine = engine
        self.cfg = cfg
        self.offline = offline
        self.model_name = model_name
        self.metrics = ServerMetrics(engine)
        self.router: EventRouter | None = None
        self.draining = False
        self._ids = 0
        self.app = FastAPI(title="speechbench streaming ASR", lifespan=self._lifespan)
        self._routes()

    async def _lifespan(self, app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        self.router = EventRouter(asyncio.get_running_loop())
        self.engine.on_event = self.router.on_event
        yield

    def _routes(self) -> None:
        a = self.app
        a.add_api_websocket_route("/v1/stream", self.stream)
        a.add_api_route("/v1/transcribe", self.transcribe, methods=["POST"])
        a.add_api_route("/metrics", self.prometheus, methods=["GET"])
        a.add_api_route("/healthz", self.healthz, methods=["GET"])

    # -- HTTP ----------------------------------------------------------------------------------------------

    async def healthz(self) -> JSONResponse:
        ok = self.engine.alive and not self.draining
        body = {"status": "ok" if ok else "draining" if self.draining else "engine down",
                "model": self.model_name, "live_streams": self.engine.num_streams,
                "max_streams": self.engine.cfg.max_streams,
                "offline": self.offline.status() if self.offline else None}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(self) -> Response:
        if self.offline is not None:
            self.metrics.offline_queue.set(self.offline.depth)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _http_error(self, status: int, text: str, kind: str) -> JSONResponse:
        self.metrics.offline_requests.labels(str(status)).inc()
        headers = {"Retry-After": str(self.cfg.retry_after_s)} if status == 503 else None
        return JSONResponse({"error": text, "kind": kind}, status_code=status, headers=headers)

    async def transcribe(self, request: Request) -> Response:
        limit = int(self.cfg.max_body_mb * 2**20)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return self._http_error(413, f"body of {int(declared)} bytes > limit {limit}", "too_large")
        if self.offline is None or self.offline.spec is None:
            return self._http_error(503, "no offline recognizer configured (--offline-model)", "unavailable")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return self._http_error(413, f"body > limit {limit} bytes", "too_large")
        try:
            audio, duration = decode_wav(bytes(body))
        except BadAudio as e:
            return self._http_error(400, str(e), "bad_audio")
        t0 = time.perf_counter()
        try:
            text = await self.offline.transcribe(audio)
        except (QueueFull, NotReady) as e:
            return self._http_error(503, str(e), "busy" if isinstance(e, QueueFull) else "not_ready")
        except Exception as e:
            log.exception("transcription failed")
            return self._http_error(500, f"{type(e).__name__}: {e}", "internal")
        self.metrics.offline_seconds.observe(time.perf_counter() - t0)
        self.metrics.offline_requests.labels("200").inc()
        return JSONResponse({"text": text, "duration_s": round(duration, 3), "model": self.offline.spec})

    # -- WebSocket -----------------------------------------------------------------------------------------

    async def _refuse(self, ws: WebSocket, status: int, text: str, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        headers = {"Retry-After": str(self.cfg.retry_after_s)} if status == 503 else None
        await ws.send_denial_response(PlainTextResponse(f"{text}\n", status_code=status, headers=headers))

    async def stream(self, ws: WebSocket) -> None:
        q = ws.query_params
        try:
            rate = int(q.get("sample_rate", "16000"))
        except ValueError:
            rate = -1
        encoding = q.get("encoding", "pcm_s16le")
        if rate not in SUPPORTED_RATES:
            return await self._refuse(ws, 400, f"sample_rate={q.get('sample_rate')!r} not supported; use one "
                                      f"of {', '.join(map(str, SUPPORTED_RATES))}", "bad_request")
        if encoding not in ENCODINGS:
            return await self._refuse(ws, 400, f"encoding={encoding!r} not supported; use one of "
                                      f"{', '.join(ENCODINGS)}", "bad_request")
        if self.draining or self.router is None:
            return await self._refuse(ws, 503, "server is shutting down", "draining")
        self._ids += 1
        sid = f"ws{self._ids}"
        try:
            self.engine.add_stream(sid)
        except AdmissionError as e:
            return await self._refuse(ws, 503, f"refused: {e.reason}", e.kind)
        conn = Connection(self, ws, sid, rate, encoding)
        self.router.connections[sid] = conn
        self.metrics.admitted.inc()
        self.metrics.connections.inc()
        watchdog: asyncio.Task[None] | None = None
        try:
            await ws.accept()
            sender = asyncio.create_task(conn.sender())
            watchdog = asyncio.create_task(self._watch_idle(conn))
            await self._receive(conn)
            await asyncio.wait_for(sender, timeout=self.cfg.drain_timeout_s + 5)
        except (TimeoutError, asyncio.CancelledError):
            pass
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        self.metrics.connections.dec()
        self.router.connections.pop(conn.sid, None)
        try:  # a client that vanished mid-stream: let the engine finish and free the slot
            self.engine.finalize_stream(conn.sid)
        except StreamError:
            pass

    async def _watch_idle(self, conn: Connection) -> None:
        # Error frame and close 1008 after idle_timeout_s without a frame. One timer per connection: a wait_for
        # per receive made a task and a timer per frame (5.5% of the loop at 210 streams; server CPU -6%).
        idle = self.cfg.idle_timeout_s
        while not conn.closed and conn.ended_at is None:
            wait = conn.last_rx + idle - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            conn.error(f"no data for {idle:g} s", "idle_timeout", POLICY)
            return self._finish_quietly(conn)

    async def _receive(self, conn: Connection) -> None:
        ws = conn.ws
        while not conn.closed:
            try:
                msg = await ws.receive()
            except RuntimeError:  # receive after disconnect
                return
            conn.last_rx = time.perf_counter()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                await self._on_audio(conn, msg["bytes"])
            elif msg.get("text") is not None:
                self._on_control(conn, msg["text"])

    def _finish_quietly(self, conn: Connection) -> None:
        try:
            self.engine.finalize_stream(conn.sid)
        except StreamError:
            pass

    async def _on_audio(self, conn: Connection, data: bytes) -> None:
        t = time.perf_counter()
        if conn.ended_at is not None:
            return  # audio after "end" is ignored: the stream is finishing
        width = 2 if conn.encoding == "pcm_s16le" else 4
        limit = int(self.cfg.max_frame_ms * conn.rate / 1000) * width
        if len(data) > limit:
            conn.error(f"frame of {len(data)} bytes > {self.cfg.max_frame_ms:g} ms of audio ({limit} bytes)",
                       "frame_too_big", TOO_BIG)
            return self._finish_quietly(conn)
        if len(data) % width:
            conn.error(f"frame of {len(data)} bytes is not a whole number of {width}-byte samples",
                       "bad_frame", BAD_DATA)
            return self._finish_quietly(conn)
        if width == 2:
            pcm = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        else:
            pcm = np.frombuffer(data, dtype="<f4").astype(np.float32)
            if not np.isfinite(pcm).all():
                conn.error("frame contains NaN or infinite samples", "bad_audio", BAD_DATA)
                return self._finish_quietly(conn)
        pcm = conn.resampler(pcm)
        step = max(1, int(self.engine.max_chunk))  # a 1 s frame goes to the engine in pieces it accepts
        try:
            deadline = t + self.cfg.backpressure_s
            while (self.engine.pending_samples(conn.sid) + len(pcm) > self.engine.queue_cap
                   and time.perf_counter() < deadline):
                await asyncio.sleep(0.01)  # not reading this socket meanwhile: TCP back-pressure
            for i in range(0, len(pcm), step):
                self.engine.process_chunk(conn.sid, pcm[i: i + step], arrival_time=t)
        except BadChunkError:
            return  # the engine's error event closes the connection
        except StreamError as e:
            conn.error(str(e), "stream_closed", POLICY)
            return
        conn.record_frame(len(pcm), t)

    def _on_control(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "end":
            if conn.ended_at is None:
                conn.ended_at = time.perf_counter()
                self._finish_quietly(conn)
        elif kind == "reset" and conn.ended_at is None:
            try:
                self.engine.reset_stream(conn.sid)
            except StreamError as e:
                conn.error(str(e), "stream_closed", POLICY)
        elif kind == "reset":
            pass
        else:
            what = "not JSON" if msg is None else f"unknown message {text[:60]!r}"
            conn.error(f"text frame {what}: send {{\"type\": \"end\"}} or {{\"type\": \"reset\"}}",
                       "bad_message", BAD_DATA)
            self._finish_quietly(conn)

    # -- shutdown ------------------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop admitting, finalize every live stream, wait (bounded) until their finals are sent."""
        self.draining = True
        conns = list(self.router.connections.values()) if self.router else []
        for c in conns:
            if c.ended_at is None:
                c.close_code, c.close_reason = GOING_AWAY, "server shutting down"
                c.ended_at = time.perf_counter()
                self._finish_quietly(c)
        deadline = time.perf_counter() + self.cfg.drain_timeout_s
        while any(not c.closed for c in conns) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for c in conns:
            await c.close(GOING_AWAY, "server shutting down")
