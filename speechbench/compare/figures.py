"""One compared figure and the rules that give it a verdict.

A ``Figure`` is a row of the report: what was compared, the old (BASE) and new (NEW) value, the change and
the verdict, with a note saying why. The rules here are the non-statistical ones, shared by the timing
schemas (TTS, streaming): a relative tolerance in the bad direction, the runs' own spreads, and capacity
measured in sweep levels. The ASR rule (a paired test plus an absolute WER tolerance) lives in ``asr``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

OK, REGRESSION, IMPROVED, NOT_COMPARABLE = "ok", "regression", "improved", "not comparable"
VERDICTS = (OK, REGRESSION, IMPROVED, NOT_COMPARABLE)


@dataclass
class Figure:
    """A compared figure. ``kind`` picks the formatting: "wer" (a fraction shown in percent, delta in points),
    "ratio", "ms", "streams" or "plain". ``sections`` name the noise sections that measured it."""

    name: str
    old: float | None
    new: float | None
    verdict: str
    kind: str = "plain"
    note: str = ""
    sections: list[str] = field(default_factory=list)
    p_value: float | None = None

    @property
    def delta(self) -> float | None:
        if not (_finite(self.old) and _finite(self.new)):
            return None
        return float(self.new) - float(self.old)  # type: ignore[arg-type]

    @property
    def rel_delta(self) -> float | None:
        d = self.delta
        if d is None or not self.old:
            return None
        return d / abs(float(self.old))  # type: ignore[arg-type]

    def add_note(self, text: str) -> None:
        self.note = f"{self.note}; {text}" if self.note else text


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def number(x: object) -> float | None:
    """A finite number, or None for anything else (null, missing, a string, NaN)."""
    return float(x) if _finite(x) else None  # type: ignore[arg-type]


def spread_of(x: object) -> tuple[float, float] | None:
    """A ``*_spread`` field, [lo, hi], as a tuple; None when absent or not two finite numbers."""
    if isinstance(x, list | tuple) and len(x) == 2 and all(_finite(v) for v in x):
        lo, hi = float(x[0]), float(x[1])
        return (min(lo, hi), max(lo, hi))
    return None


def _outside(value: float, spread: tuple[float, float] | None) -> bool:
    return spread is None or not (spread[0] <= value <= spread[1])


def judge_relative(name: str, old: object, new: object, *, higher_is_better: bool, tolerance: float,
                   old_spread: object = None, new_spread: object = None, kind: str = "plain",
                   sections: Sequence[str] = ()) -> Figure:
    """Regression = a relative change beyond ``tolerance`` in the bad direction (lower when higher is better,
    higher otherwise) AND, where the runs recorded spreads, NEW outside BASE's spread and BASE outside NEW's.
    The same rule in the good direction gives "improved"; anything else is "ok"."""
    o, n = number(old), number(new)
    fig = Figure(name, o, n, NOT_COMPARABLE, kind=kind, sections=list(sections))
    if o is None or n is None:
        fig.note = f"missing in {'BASE' if o is None else 'NEW'}" if (o is None) != (n is None) else \
            "missing in both"
        return fig
    if o == 0:
        fig.note = "BASE is 0: no relative change"
        return fig
    rel = (n - o) / abs(o)
    worse = -rel if higher_is_better else rel
    so, sn = spread_of(old_spread), spread_of(new_spread)
    separated = _outside(n, so) and _outside(o, sn)
    if worse > tolerance:
        fig.verdict = REGRESSION if separated else OK
        if not separated:
            fig.note = f"{100 * worse:.1f}% worse, but inside the runs' spreads"
    elif -worse > tolerance:
        fig.verdict = IMPROVED if separated else OK
        if not separated:
            fig.note = f"{100 * -worse:.1f}% better, but inside the runs' spreads"
    else:
        fig.verdict = OK
    if so or sn:
        fig.add_note("spreads " + ", ".join(f"{w} [{s[0]:.4g}, {s[1]:.4g}]" for w, s in (("BASE", so), ("NEW", sn))
                                             if s))
    return fig


def judge_capacity(name: str, old: object, new: object, old_levels: Sequence[object],
                   new_levels: Sequence[object], sections: Sequence[str] = ()) -> Figure:
    """Capacity (the largest sustained sweep level). A drop is a regression when NEW swept BASE's level and
    did not sustain it (a drop of at least one confirmed level); when NEW never tried that level the runs
    are not comparable. None = no level sustained."""
    o, n = number(old), number(new)
    fig = Figure(name, o, n, OK, kind="streams", sections=list(sections))
    new_tested = {number(v) for v in new_levels}
    old_tested = {number(v) for v in old_levels}
    if o is None and n is None:
        fig.note = "no level sustained in either run"
        return fig
    if n is None or (o is not None and n < o):
        if o in new_tested:
            fig.verdict = REGRESSION
            fig.note = f"NEW did not sustain {o:g} streams"
        else:
            fig.verdict = NOT_COMPARABLE
            fig.note = f"NEW did not sweep {o:g} streams (levels {sorted(v for v in new_tested if v is not None)})"
        return fig
    if o is None or n > o:
        fig.verdict = IMPROVED if (n in old_tested or o is None) else OK
        if fig.verdict == OK:
            fig.note = f"BASE did not sweep {n:g} streams"
    return fig


@dataclass
class Options:
    """The gate's thresholds (the CLI flags)."""

    wer_tolerance: float = 0.005  # absolute: 0.005 = 0.5 WER points
    latency_tolerance: float = 0.10  # relative: 0.10 = 10 %
    alpha: float = 0.05  # significance level of the paired WER test
    intersection: bool = False  # compare ASR runs on the utterances both scored, when the sets differ


@dataclass
class Comparison:
    """Everything one comparison found: the figures (rows) and context lines (machine, noise, caveats)."""

    schema: str
    figures: list[Figure] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Figure]:
        return [f for f in self.figures if f.verdict == REGRESSION]

    def count(self, verdict: str) -> int:
        return sum(1 for f in self.figures if f.verdict == verdict)
