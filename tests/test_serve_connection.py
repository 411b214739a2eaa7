"""The server's send path without a network: eager coroutine starts, and a connection whose socket makes a
send wait (its later frames queue in order behind it, consecutive partials collapse to the newest)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from speechbench.serve.connection import Connection
from speechbench.serve.eager import start_eagerly
from speechbench.serve.prom import ServerMetrics
from speechbench.streaming.engine import Event


def test_a_coroutine_that_never_waits_runs_to_the_end_at_once():
    done = []

    async def no_wait() -> None:
        return None

    async def work():
        done.append(1)
        await no_wait()  # awaiting a coroutine that does not suspend: still no yield to the loop
        done.append(2)

    async def main():
        assert start_eagerly(work()) is None
        assert done == [1, 2]  # before any other task could run

    asyncio.run(main())


def test_its_exception_is_raised_to_the_caller():
    async def boom():
        raise ValueError("bad")

    async def main():
        with pytest.raises(ValueError, match="bad"):
            start_eagerly(boom())

    asyncio.run(main())


def test_a_coroutine_that_waits_continues_on_a_task_with_its_result_and_errors():
    async def main():
        loop = asyncio.get_running_loop()
        gate = loop.create_future()
        steps = []

        async def work():
            steps.append("before")
            v = await gate
            steps.append("after")
            return v * 2

        task = start_eagerly(work())
        assert steps == ["before"] and task is not None and not task.done()
        gate.set_result(21)
        assert await task == 42 and steps == ["before", "after"]

        gate2 = loop.create_future()

        async def fails():
            await gate2
            raise KeyError("late")

        task2 = start_eagerly(fails())
        gate2.set_result(None)
        with pytest.raises(KeyError):
            await task2

        cancelled = []

        async def waits_forever():
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        task3 = start_eagerly(waits_forever())
        await asyncio.sleep(0)
        task3.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task3
        assert cancelled == [True]

    asyncio.run(main())


class GatedSocket:
    """A socket whose sends wait while ``gate`` is an unfinished future (a full send buffer)."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[None] | None = None
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        if self.gate is not None:
            await self.gate
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _connection(sock: GatedSocket) -> Connection:
    app = SimpleNamespace(engine=SimpleNamespace(cfg=SimpleNamespace(sample_rate=16000)), metrics=ServerMetrics())
    return Connection(app, sock, "s1", 16000, "pcm_s16le")  # type: ignore[arg-type]


def _partial(text: str, audio_end: int, segment: int = 0) -> Event:
    return Event("partial", "s1", text, segment, audio_end, 0.0)


def test_frames_go_out_at_once_then_queue_in_order_behind_a_waiting_send():
    async def main():
        sock = GatedSocket()
        conn = _connection(sock)
        conn.deliver([_partial("a", 640)])
        assert [m["text"] for m in sock.sent] == ["a"]  # sent synchronously: no task, no loop turn
        sock.gate = asyncio.get_running_loop().create_future()
        conn.deliver([_partial("ab", 1280)])  # this send waits for the socket
        assert conn.sending is not None
        conn.deliver([_partial("abc", 1920), _partial("abcd", 2560)])  # queued; the first is superseded
        conn.deliver([Event("final", "s1", "abcd", 0, 2560, 0.0, reason="endpoint"), _partial("", 3200, 1)])
        assert len(sock.sent) == 1
        gate, sock.gate = sock.gate, None
        gate.set_result(None)
        await asyncio.wait_for(asyncio.shield(conn.sending), 1.0)
        await asyncio.sleep(0)
        assert [(m["type"], m["text"], m["audio_ms"]) for m in sock.sent] == [
            ("partial", "a", 40.0), ("partial", "ab", 80.0), ("partial", "abcd", 160.0),
            ("final", "abcd", 160.0), ("partial", "", 200.0)]
        assert conn.sending is None and not conn.backlog

    asyncio.run(main())


def test_an_error_is_sent_then_the_connection_closes_and_nothing_more_goes_out():
    async def main():
        sock = GatedSocket()
        conn = _connection(sock)
        conn.error("frame of 3 bytes is not a whole number of 2-byte samples", "bad_frame", 1007)
        assert sock.sent[-1]["type"] == "error" and sock.sent[-1]["kind"] == "bad_frame"
        assert sock.closed == (1007, "bad_frame") and conn.closed and conn.done.done()
        conn.deliver([_partial("late", 640)])
        assert len(sock.sent) == 1
        assert conn.app.metrics.registry.get_sample_value("speechbench_errors_total", {"kind": "bad_frame"}) == 1

    asyncio.run(main())
