"""The interpreter's GIL switch interval while an engine runs.

The scheduler thread releases the GIL inside every torch op and must win it back from the threads that feed
it (a load generator's pacing loop, a server's event loop). A thread waiting for the GIL gets it only when
the holder releases it or the switch interval (Python's default: 5 ms) expires, so each of a model step's
dozens of reacquisitions can wait up to 5 ms behind busy Python code: a convoy that stretches a 10 ms step
to 100 ms under load. A shorter interval bounds each wait.

Measured over WebSocket (ctc-streaming, server with 1 torch thread, clients on the same 2 cores), runs
alternated: at 192 streams client p95 131 / 198 / 213 ms at 0.5 ms vs 329 / 564 / 427 ms at 5 ms (p50 62-72
vs 113-324 ms); at 175 streams 74 / 73 / 103 / 92 vs 168 / 165 / 73 / 103 ms. In-process (a pacing thread
that mostly sleeps, 2 torch threads) no measurable change at 300 and 350 streams.

The interval is process-wide: the first engine to start sets it, the last to stop restores the old value.
"""

from __future__ import annotations

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
