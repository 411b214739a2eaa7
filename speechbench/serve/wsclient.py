"""A lean WebSocket client for the load generator: ``websockets``' Sans-I/O protocol under an asyncio Protocol.

Why not ``websockets.asyncio.client``: the load generator runs hundreds of clients in one event loop on the
same two cores as the server it measures, so every microsecond a client spends per frame is taken from the
server. The asyncio client gives each connection a reader task, futures and an assembler per message, and
each paced client its own timer per frame; py-spy put ~45% of the generator's samples in the event loop's
own machinery. Here the same library's Sans-I/O ``ClientProtocol`` (the handshake, framing, masking and
closing handshake, RFC 6455) is driven from ``data_received`` callbacks: a received message is handled
inline, a frame is sent with one ``transport.write``, and one timer paces all clients (``Pacer``).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

CLOSE_WAIT_S = 2.0  # after the closing handshake, how long to wait for the server to close TCP
# uvloop's timers count whole milliseconds from a cached clock and fire up to ~0.5 ms early. The pacer never
# sends a frame before it is due (its audio would not exist yet), so it waits at least this long between
# ticks instead of spinning on early wake-ups; frames due meanwhile go out together, late by < ~1.5 ms, and
# the lateness is measured (the load generator's ``lag``) and included in client-side latency.
TICK_S = 1e-3


class HandshakeRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"server refused the WebSocket handshake with HTTP {status}")
        self.status = status


class LeanWebSocket(asyncio.Protocol):
    """One client connection. ``opened`` resolves after the handshake (or raises ``HandshakeRefused`` /
    ``ConnectionError``); ``closed`` resolves with the close code once TCP is closed; ``on_text(text, t)``
    is called inline for every text message, with the ``perf_counter`` time its data arrived."""

    def __init__(self, url: str, on_text: Callable[[str, float], None], max_size: int = 2**20) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.ws = ClientProtocol(parse_uri(url), max_size=max_size)
        self.on_text = on_text
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._fragments: list[bytes] = []
        self._close_timer = False

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN and self.transport is not None and not self.transport.is_closing()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    # -- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.ws.receive_data(data)
        for ev in self.ws.events_received():
            if isinstance(ev, Response):
                if not self.opened.done():
                    if self.ws.handshake_exc is None:
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(HandshakeRefused(ev.status_code))
            elif ev.opcode is Opcode.TEXT or (ev.opcode is Opcode.CONT and self._fragments):
                self._fragments.append(ev.data)
                if ev.fin:
                    text = b"".join(self._fragments).decode()
                    self._fragments.clear()
                    self.on_text(text, now)
        self._flush()

    def eof_received(self) -> None:
        self.ws.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.ws.close_code)

    # -- sending --------------------------------------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        self.ws.send_binary(data)
        self._flush()

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self._flush()

    def abort(self) -> None:
        """Close now, without waiting for the server (a client that gives up)."""
        if self.ws.state is State.OPEN:
            self.ws.send_close()
            self._flush()
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                t.write(data)
            elif t.can_write_eof():  # websockets' SEND_EOF: half-close
                t.write_eof()
        if self.ws.close_expected() and not self._close_timer:
            self._close_timer = True  # once: the server normally closes TCP well before this
            self.loop.call_later(CLOSE_WAIT_S, t.abort)


class Pacer:
    """One timer for every client's frames: ``add(due, fn)`` calls ``fn(due)`` once ``perf_counter()`` has
    reached ``due`` (never before); ``fn`` returns its next due time or None. Frames due within the same
    timer tick go out in one wake-up, in due order."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, Callable[[float], float | None]]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def add(self, due: float, fn: Callable[[float], float | None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, fn))
        if due < self._timer_at:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._heap:
            self._timer_at = float("inf")
            return
        self._timer_at = self._heap[0][0]
        self._timer = self.loop.call_later(max(TICK_S, self._timer_at - time.perf_counter()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        heap = self._heap
        now = time.perf_counter()
        while heap and heap[0][0] <= now:
            due, _, fn = heapq.heappop(heap)
            nxt = fn(due)
            if nxt is not None:
                self._seq += 1
                heapq.heappush(heap, (nxt, self._seq, fn))
            now = time.perf_counter()
        self._arm()


async def open_connection(url: str, on_text: Callable[[str, float], None], timeout: float = 10.0,
                          max_size: int = 2**20) -> LeanWebSocket:
    """Connect and finish the handshake; raises ``HandshakeRefused``, ``OSError`` or ``TimeoutError``."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    conn: LeanWebSocket | None = None
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(lambda: LeanWebSocket(url, on_text, max_size),
                                                   uri.host, uri.port)
            await conn.opened
    except BaseException:
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        raise
    return conn
