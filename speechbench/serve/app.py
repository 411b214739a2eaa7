"""The HTTP/WebSocket application over one ``StreamingEngine`` (FastAPI on uvicorn).

Contract (README, "Serving"):

* ``WS /v1/stream?sample_rate=16000[&encoding=pcm_s16le|pcm_f32le]``: binary frames of little-endian
  mono PCM (10 ms .. 1 s each); text frames ``{"type": "end"}`` (finalize: a last final, then a normal
  close) and ``{"type": "reset"}`` (barge-in). The server sends JSON text frames ``{"type":
  "partial"|"final"|"error", "text", "utterance", "audio_ms", "server_latency_ms"}`` (finals also carry
  ``reason``, ``first_token_ms`` and ``last_token_ms``: stream positions of the segment's characters;
  non-empty partials carry ``first_token_ms``). Audio the server had to drop under overload is reported at
  once as ``{"type": "error", "kind": "audio_dropped", "fatal": false, ...}`` (the stream goes on), and the
  final of that utterance carries ``"incomplete": true`` and its ``dropped_chunks``.
  A partial follows every model step of the stream (unchanged text included: it acknowledges the audio up
  to ``audio_ms``); when the socket is slower than the engine, pending partials are coalesced to the newest.
* ``POST /v1/transcribe`` (a WAV body) -> ``{"text", "duration_s", "model"}``; 413 / 400 / 503.
* ``GET /metrics`` (Prometheus text), ``GET /healthz``.

``/v1/stream`` is served as plain ASGI (``connection.py``: what each connection holds, how engine events
become frames); FastAPI serves the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from speechbench.serve.config import ENCODINGS, SUPPORTED_RATES, ServerConfig
from speechbench.serve.connection import BAD_DATA, GOING_AWAY, POLICY, TOO_BIG, AsgiSocket, Connection, EventRouter
from speechbench.serve.offline import BadAudio, NotReady, OfflineService, QueueFull, decode_wav
from speechbench.serve.prom import ServerMetrics
from speechbench.streaming.engine import AdmissionError, BadChunkError, StreamError, StreamingEngine

log = logging.getLogger(__name__)


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
        self.api = FastAPI(title="speechbench streaming ASR", lifespan=self._lifespan)
        self._routes()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI application: ``/v1/stream`` directly, everything else (lifespan included) by FastAPI.

        Why not a FastAPI WebSocket route: every frame in and out went through ~12 wrapper coroutines
        (middleware, exception handlers, Starlette's WebSocket state checks), and every frame out was a
        wake-up of a sender task (measured in ``connection.py``)."""
        if scope["type"] == "websocket" and scope["path"] == "/v1/stream":
            await self.stream(AsgiSocket(scope, receive, send))
            return
        await self.api(scope, receive, send)

    async def _lifespan(self, app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        self.router = EventRouter(asyncio.get_running_loop())
        self.engine.on_event = self.router.on_event
        yield

    def _routes(self) -> None:
        a = self.api
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

    async def _refuse(self, ws: AsgiSocket, status: int, text: str, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        headers = {"Retry-After": str(self.cfg.retry_after_s)} if status == 503 else {}
        await ws.deny(status, f"{text}\n", headers)

    async def stream(self, ws: AsgiSocket) -> None:
        if not await ws.handshake():
            return
        q = ws.query
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
            watchdog = asyncio.create_task(self._watch_idle(conn))
            await self._receive(conn)
            await asyncio.wait_for(asyncio.shield(conn.done), timeout=self.cfg.drain_timeout_s + 5)
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
        receive = conn.sock.receive
        while not conn.closed:
            msg = await receive()
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
