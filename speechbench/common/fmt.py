"""Number formatting for the Markdown reports: one look across all three, and "n/a" for anything that
was not measured (None, a missing key, a failed section)."""

from __future__ import annotations

from typing import Any


def num(x: Any, nd: int = 1, suffix: str = "") -> str:
    """Floats to ``nd`` decimals (thousands separators from 1,000 up), ints as they are, bools as yes/no."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != x:  # NaN
            return "n/a"
        return f"{x:,.0f}{suffix}" if abs(x) >= 1000 else f"{x:.{nd}f}{suffix}"
    if isinstance(x, int):
        return f"{x}{suffix}"
    return "n/a"


def fixed(x: Any, nd: int = 1) -> str:
    """``nd`` decimals, no separators (log lines, inline figures), "n/a" for a missing value."""
    return "n/a" if x is None else f"{x:.{nd}f}"


def sci(x: Any, nd: int = 2) -> str:
    """Scientific notation (tiny differences such as a max abs error), "n/a" for a missing value."""
    return "n/a" if x is None else f"{x:.{nd}e}"


def pct(x: Any, nd: int = 1) -> str:
    """A fraction as a percentage: 0.169 -> '16.9%'."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        return "n/a"
    return f"{100 * x:.{nd}f}%"


def met(m: Any) -> str:
    """A target verdict: True / False / None (not measured)."""
    return "**met**" if m is True else "**not met**" if m is False else "not measured"


def commit(env: dict[str, Any], n: int = 12) -> str:
    """The run's commit as inline code, flagged when the tree had uncommitted changes."""
    sha = f"`{(env.get('git_sha') or 'unknown')[:n]}`"
    return sha + (" (dirty tree)" if env.get("git_dirty") else "")


def generated_from(res: dict[str, Any], script: str, default_output: str) -> str:
    """A report's first line: the JSON it is rendered from and the script that wrote it."""
    out = (res.get("config") or {}).get("output", default_output)
    return f"Generated from `{out}` by `{script}`; every number below is read from that file."


def commit_line(res: dict[str, Any], extra: str = "") -> str:
    """A report's run line: commit, time, status (+ ``extra``)."""
    env = res.get("env") or {}
    return f"- Commit: {commit(env)}, run at {env.get('time_utc')}; status: {res.get('status')}{extra}"
