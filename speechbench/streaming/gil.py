"""Interpreter settings while an engine runs: the GIL switch interval, and a frozen startup heap.

The scheduler thread releases the GIL inside every torch op and must win it back from the threads that feed
it (a load generator's pacing loop, a server's event loop). A thread waiting for the GIL gets it only when
the holder releases it or the switch interval (Python's default: 5 ms) expires, so each of a model step's
dozens of reacquisitions can wait up to 5 ms behind busy Python code: a convoy that stretches a 10 ms step
to 100 ms under load. A shorter interval bounds each wait.

Measured over WebSocket (ctc-streaming, server with 1 torch thread, clients on the same 2 cores), runs
alternated: at 192 streams client p95 131 / 198 / 213 ms at 0.5 ms vs 329 / 564 / 427 ms at 5 ms (p50 62-72
vs 113-324 ms); at 175 streams 74 / 73 / 103 / 92 vs 168 / 165 / 73 / 103 ms. In-process (a pacing thread
that mostly sleeps, 2 torch threads) no measurable change at 300 and 350 streams.

0.5 ms still collapsed at the edge of the network capacity (traced CTC step, one server process per setting,
settings alternated): at 250 streams client p95 2258 / 2291 ms with the mean step stretched from ~22 to 36.5
ms, against 113 / 222 ms at 0.1, 150 / 109 / 132 / 119 ms at 0.05, 159 / 223 at 0.02 and 122 / 102 at 0.01;
at 228 streams 93 / 91 ms at 0.5 vs 77 / 74 / 122 / 95 ms at 0.05. Below 0.1 the differences are within this
machine's noise; the default is 0.05. In-process it is neutral (300 streams p95 68.5 / 71.0 ms at 0.5 vs
69.0 / 70.2 at 0.05; 325: 71.5 / 75.0 vs 77.8 / 76.0).

The interval is process-wide: the first engine to start sets it, the last to stop restores the old value.

The cyclic garbage collector's full (generation 2) collection walks every tracked object while holding the
GIL. After importing torch, numpy and the web stack a process holds ~200k of them, and one full collection
stalled the event loop and the scheduler for 80-110 ms (measured with ``gc.callbacks``: 108 ms in the server
at 240 streams, 78 ms in-process at 350) - a pause longer than the latency bound, landing in the middle of a
load level. ``hold_gc_freeze`` moves the objects that exist when the engine starts into the permanent
generation (``gc.freeze``, as latency-sensitive Python servers do), so later collections walk only objects
made since. Nothing is collected before freezing (that would cost the same pause at every engine start);
the last engine to stop unfreezes, so garbage frozen meanwhile is collected as usual afterwards.
"""

from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()
_users = 0
_saved: float | None = None


def hold_switch_interval(ms: float) -> bool:
    """Set the switch interval to ``ms`` (0: leave it alone) until the matching ``release``; returns whether
    this call holds it (and must release)."""
    global _users, _saved
    if ms <= 0:
        return False
    with _lock:
        if _users == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(ms / 1e3)
        _users += 1
    return True


def release_switch_interval() -> None:
    global _users, _saved
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _saved is not None:
            sys.setswitchinterval(_saved)
            _saved = None


_freezers = 0


def hold_gc_freeze() -> None:
    """Freeze the objects that exist now (see the module docstring) until the matching release."""
    global _freezers
    with _lock:
        if _freezers == 0:
            gc.freeze()
        _freezers += 1


def release_gc_freeze() -> None:
    global _freezers
    with _lock:
        _freezers = max(0, _freezers - 1)
        if _freezers == 0:
            gc.unfreeze()
