"""Find the largest load a server sustains, robustly against a noisy machine.

A coarse sweep (1, 10, 25, ... streams, one run per level) says roughly where capacity lies, but on a
shared 2-core machine one run can fail a level the engine holds (a neighbour's burst) or pass one it cannot
(a quiet minute), which once made a sweep non-monotone (25 failed, 50 passed). So a level counts as
sustained only when it holds in at least ``need`` of ``repeats`` runs (2 of 3: stop as soon as the outcome
is decided), and after the sweep the search bisects between the highest confirmed level and the first
level above it that was not, down to a relative resolution. Every run is kept (``attempts``).

Pure logic over a ``run(streams) -> dict`` callback whose result has ``sustained`` (and whatever else the
caller wants to keep), so it is tested on a fake engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Run = Callable[[int], dict[str, Any]]


@dataclass
class SearchConfig:
    repeats: int = 3  # runs at most per level ...
    need: int = 2  # ... of which this many must hold
    resolution: float = 0.125  # stop bisecting when (first failed - confirmed) <= resolution * confirmed
    max_bisect_steps: int = 2  # each step costs up to `repeats` runs


class CapacitySearch:
    def __init__(self, run: Run, cfg: SearchConfig | None = None,
                 on_attempt: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.run, self.cfg, self.on_attempt = run, cfg or SearchConfig(), on_attempt
        self.attempts: list[dict[str, Any]] = []
        self.outcomes: dict[int, list[bool]] = {}

    def record(self, streams: int, result: dict[str, Any], phase: str) -> None:
        self.outcomes.setdefault(streams, []).append(bool(result["sustained"]))
        self.attempts.append({"streams": streams, "phase": phase, **result})
        if self.on_attempt:
            self.on_attempt(self.attempts[-1])

    def confirmed(self, streams: int, phase: str) -> bool:
        """Run ``streams`` until ``need`` runs held (True) or enough failed that it cannot (False)."""
        c = self.cfg
        while True:
            got = self.outcomes.get(streams, [])
            passes, fails = sum(got), len(got) - sum(got)
            if passes >= c.need:
                return True
            if fails > c.repeats - c.need:
                return False
            self.record(streams, self.run(streams), phase)

    def search(self, sweep: list[dict[str, Any]]) -> dict[str, Any]:
        """``sweep``: the coarse sweep's runs (``streams``, ``sustained``), each one attempt at its level."""
        for r in sweep:
            self.record(r["streams"], r, "sweep")
        levels = sorted(self.outcomes)
        lo, hi = 0, None
        # The highest sustained sweep level that confirms ...
        for n in sorted((n for n in levels if any(self.outcomes[n])), reverse=True):
            if self.confirmed(n, "confirm"):
                lo = n
                break
        # ... then the levels above it, in order, each re-run until decided: one failed sweep run is not
        # enough to bound the search (the same noise that passes a level can fail one).
        for n in (n for n in levels if n > lo):
            if not self.confirmed(n, "confirm"):
                hi = n
                break
            lo = n
        steps = 0
        while hi is not None and hi - lo > max(1, self.cfg.resolution * lo) and steps < self.cfg.max_bisect_steps:
            mid = (lo + hi) // 2
            if mid in (lo, hi):
                break
            steps += 1
            if self.confirmed(mid, "bisect"):
                lo = mid
            else:
                hi = mid
        return {"confirmed_streams": lo, "first_failed_streams": hi, "bisect_steps": steps,
                "top_level_held": hi is None,
                "rule": f"a level holds when >= {self.cfg.need} of at most {self.cfg.repeats} runs are sustained",
                "levels": {str(n): self.outcomes[n] for n in sorted(self.outcomes)},
                "attempts": self.attempts}


def compact_run(r: dict[str, Any]) -> dict[str, Any]:
    """What the capacity search keeps of a level's run in its attempt list (the full run is kept too)."""
    keys = ("streams", "sustained", "chunk_latency_ms_p50", "chunk_latency_ms_p95", "shed_chunks",
            "failed_streams", "wall_s")
    return {k: r.get(k) for k in keys} | {"noise": {k: (r.get("noise") or {}).get(k) for k in
                                                    ("steal_share", "foreign_cpu_share", "suspect")}}


__all__ = ["CapacitySearch", "SearchConfig", "compact_run"]
