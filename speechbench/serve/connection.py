"""One WebSocket client of ``WS /v1/stream``: the raw ASGI messages it is served with, its arrival
bookkeeping (for server-side latency), and how engine events become frames.

Threads: the engine's scheduler thread delivers events to ``EventRouter.on_event``, which hands them to
the event loop in one ``call_soon_threadsafe`` per burst (not per event). There each connection sends its
frames at once (``eager.start_eagerly``); only a send that has to wait for a full socket buffer continues
on a task, and that connection's later frames queue behind it (consecutive partials of one segment
collapse to the newest), so a slow client delays only itself.

The endpoint speaks ASGI directly (``AsgiSocket``), not through FastAPI's WebSocket route: each frame in
and out passed through ~12 wrapper coroutines (middleware, exception handlers, Starlette's state checks),
and each frame out was the wake-up of a per-connection sender task. Measured over WebSocket with the
old and new server alternated (ctc-streaming, 1 torch thread, 12 s levels, two runs each):
- 245 streams: an engine event to its frame sent, mean 5.9 / 5.3 -> 1.3 / 1.3 ms; server CPU 14.1 / 13.3
  -> 12.5 / 12.6 s; client-side p95 82.5 / 74.0 -> 71.5 / 70.0 ms.
- 280 streams: the same 8.6 / 8.7 -> 2.1 / 2.5 ms; p95 113.8 / 101.2 -> 99.5 / 97.0 ms.
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
from urllib.parse import parse_qsl

from speechbench.serve.eager import start_eagerly
from speechbench.serve.resample import StreamResampler
from speechbench.streaming.engine import Event

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
        mine: dict[Connection, list[Any]] = {}
        for ev in events:
            conn = self.connections.get(ev.stream_id)
            if conn is not None:
                mine.setdefault(conn, []).append(ev)
        for conn, evs in mine.items():
            conn.deliver(evs)


class AsgiSocket:
    """The ASGI WebSocket messages ``/v1/stream`` uses, sent and received as plain dicts."""

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))

    async def handshake(self) -> bool:
        """Wait for the client's connect (ASGI's first message); False if it left first."""
        return (await self.receive())["type"] == "websocket.connect"

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})

    async def deny(self, status: int, text: str, headers: dict[str, str]) -> None:
        """Answer the handshake with an HTTP response (uvicorn's denial-response extension); where the
        server lacks it, a close with 1008 and the text as reason."""
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await self.close(POLICY, text[:120])
            return
        body = text.encode()
        hdrs = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await self._send({"type": "websocket.http.response.start", "status": status, "headers": hdrs})
        await self._send({"type": "websocket.http.response.body", "body": body})

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class Connection:
    """One WebSocket client: its stream in the engine, frame arrival times, and the outgoing queue."""

    def __init__(self, app: Any, sock: AsgiSocket, sid: str, rate: int, encoding: str) -> None:
        # app: the ServerApp (its engine and metrics are read); not imported, app.py imports this module
        self.app = app
        self.sock = sock
        self.sid = sid
        self.rate = rate
        self.encoding = encoding
        self.resampler = StreamResampler(rate, app.engine.cfg.sample_rate)
        self.backlog: deque[Any] = deque()  # frames to send behind one that waits for the socket
        self.sending: asyncio.Task[None] | None = None  # that waiting send
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # close sent, or client gone
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
        self.drop_note = (-1, 0.0)  # (utterance, time) of the last audio_dropped notice sent

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
            if ev.segment_shed:  # the server dropped some of this utterance's audio (and said so at the time)
                msg["incomplete"] = True
                msg["dropped_chunks"] = ev.segment_shed
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
        """Send an error frame, then close with ``code`` (after anything already queued)."""
        self.app.metrics.errors.labels(kind).inc()
        self.deliver([{"type": "error", "text": text, "kind": kind}, ("close", code, kind)])

    def deliver(self, items: list[Any]) -> None:
        """Send ``items`` (engine events, error dicts, ("close", code, reason)) in order: now, unless a
        send is waiting for the socket."""
        if self.closed:
            return
        self.backlog.extend(items)
        if self.sending is None:
            self._flush()

    def _flush(self) -> None:
        while self.backlog and not self.closed:
            item = self.backlog.popleft()
            if isinstance(item, Event) and item.kind == "partial" and self.backlog:
                nxt = self.backlog[0]
                if isinstance(nxt, Event) and nxt.kind == "partial" and nxt.segment == item.segment:
                    continue  # superseded: the next partial covers this one's audio too
            if isinstance(item, Event) and item.kind == "dropped":
                # one notice per utterance and second: a client that cannot be served gets told, not flooded
                if item.segment == self.drop_note[0] and item.time - self.drop_note[1] < 1.0:
                    continue
                self.drop_note = (item.segment, item.time)
            # latency ends as the frame goes to the socket (a frame that waits for a full socket buffer is
            # a slow client's own delay, as a full TCP window would be)
            rest = start_eagerly(self._send(item, time.perf_counter()))
            if rest is not None:  # the socket's buffer is full: the rest waits on a task
                self.sending = rest
                rest.add_done_callback(self._sent)
                return

    def _sent(self, _: asyncio.Task[None]) -> None:
        self.sending = None
        self._flush()

    async def _send(self, item: Any, now: float) -> None:
        try:
            if isinstance(item, tuple):  # ("close", code, reason)
                await self.close(item[1], item[2])
            elif isinstance(item, dict):
                await self.sock.send_text(json.dumps(item))
            elif item.kind in ("partial", "final"):
                await self.sock.send_text(json.dumps(self.message(item, now)))
            elif item.kind == "dropped":  # audio shed under overload: the stream goes on, incomplete
                self.app.metrics.errors.labels("audio_dropped").inc()
                await self.sock.send_text(json.dumps({"type": "error", "kind": "audio_dropped", "fatal": False,
                                                      "text": item.reason, "utterance": item.segment,
                                                      "dropped_chunks": item.shed}))
            elif item.kind == "error":  # the engine failed the stream (a bad chunk)
                self.app.metrics.errors.labels("bad_audio").inc()
                await self.sock.send_text(json.dumps({"type": "error", "text": item.reason, "kind": "bad_audio"}))
                await self.close(BAD_DATA, "bad audio")
            elif item.kind == "closed":  # after the last final
                await self.close(self.close_code, self.close_reason)
        except Exception as e:  # the client went away mid-send; the receiver sees the disconnect
            log.debug("send to %s stopped: %s", self.sid, e)
            self._gone()

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.sock.close(code, reason[:120])
            except Exception:  # already closed by the peer
                pass
        self._gone()

    def _gone(self) -> None:
        self.closed = True
        self.backlog.clear()
        if not self.done.done():
            self.done.set_result(None)
