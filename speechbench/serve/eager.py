"""Run a coroutine eagerly: up to its first suspension right here, the rest (if it suspends) on a task.

Why: the server sends a JSON frame per stream per model step, and each was the wake-up of a per-connection
sender task (a queue hop, then a task step on a later loop iteration), although the send itself almost never
waits: uvicorn's ASGI ``send`` suspends only while the socket's write buffer is over its high-water mark.
Sending eagerly from the callback that received the engine's events keeps a slow client's wait on a task
of its own (so it delays only itself) without paying a task per frame when nothing waits.

Python 3.12 has this built in (``asyncio.Task(coro, eager_start=True)``); 3.11, which this project
supports, does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
    """Run ``coro`` until it first suspends. None: it finished here (an exception it raised propagates to
    the caller). Otherwise a task that runs the rest of it."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_rest(coro, first))


async def _rest(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Resume(coro, first)


class _Resume:
    """Awaitable that hands a started coroutine's pending future to the awaiting task and drives the
    coroutine on from there, as ``await coro`` would have (results, exceptions and cancellation pass
    through unchanged)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation (or a close) goes into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value
