"""The comparison as Markdown: a verdict line, the table of every compared figure, the context."""

from __future__ import annotations

from speechbench.compare.figures import IMPROVED, NOT_COMPARABLE, OK, REGRESSION, Comparison, Figure
from speechbench.compare.loaders import TITLES


def _value(v: float | None, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "wer":
        return f"{100 * v:.2f}%"
    if kind == "ratio":
        return f"{v:.2f}x"
    if kind == "ms":
        return f"{v:.1f} ms"
    if kind == "streams":
        return f"{v:g}"
    return f"{v:.4g}"


def _delta(fig: Figure) -> str:
    d, rel = fig.delta, fig.rel_delta
    if d is None:
        return "–"
    if fig.kind == "wer":
        return f"{100 * d:+.2f} pts"
    if fig.kind == "streams":
        return f"{d:+g}"
    unit = {"ratio": "x", "ms": " ms"}.get(fig.kind, "")
    body = f"{d:+.2f}{unit}" if fig.kind in ("ratio", "ms") else f"{d:+.4g}"
    return body + (f" ({100 * rel:+.1f}%)" if rel is not None else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(figures: list[Figure]) -> list[str]:
    lines = ["| figure | old | new | delta | verdict | note |", "|---|---:|---:|---:|---|---|"]
    for f in figures:
        verdict = f"**{f.verdict}**" if f.verdict == REGRESSION else f.verdict
        lines.append(f"| {_cell(f.name)} | {_value(f.old, f.kind)} | {_value(f.new, f.kind)} | {_delta(f)} | "
                     f"{verdict} | {_cell(f.note)} |")
    return lines


def verdict_line(comp: Comparison) -> str:
    counts = ", ".join(f"{comp.count(v)} {v}" for v in (REGRESSION, IMPROVED, OK, NOT_COMPARABLE) if comp.count(v))
    head = f"REGRESSION: {len(comp.regressions)} figure(s) regressed" if comp.regressions else "OK: no regression"
    return f"{head} ({TITLES[comp.schema]}, {len(comp.figures)} figures: {counts})"


def regression_lines(comp: Comparison) -> list[str]:
    return [f"regression: {f.name}: {_value(f.old, f.kind)} -> {_value(f.new, f.kind)} ({_delta(f)})"
            + (f"; {f.note}" if f.note else "") for f in comp.regressions]


def markdown(comp: Comparison, base: str, new: str) -> str:
    lines = [f"# Regression gate: {TITLES[comp.schema]}", "", f"BASE `{base}` vs NEW `{new}`.", "",
             f"**{verdict_line(comp)}**", ""]
    if comp.regressions:
        lines += [f"- {r.removeprefix('regression: ')}" for r in regression_lines(comp)] + [""]
    lines += table(comp.figures)
    if comp.context:
        lines += ["", "## Context", ""] + [f"- {c}" for c in comp.context]
    return "\n".join(lines) + "\n"

