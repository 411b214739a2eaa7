"""A report page from section functions: each takes (results, figure names, the figures' folder relative to
the page) and returns its Markdown lines; the page is their concatenation, written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from speechbench.common.results import write_text_atomic

Section = Callable[[dict[str, Any], dict[str, str], str], list[str]]
Plots = Callable[[dict[str, Any], Path, str], dict[str, str]]


def render_page(res: dict[str, Any], report_path: Path, sections: Sequence[Section], make_plots: Plots,
                plots: bool = True) -> str:
    """Draw the figures (into ``figures/`` beside the page, named after it) unless ``plots`` is off, then
    write the sections in order; returns the page's text."""
    report_path = Path(report_path)
    figs = make_plots(res, report_path.parent / "figures", report_path.stem) if plots else {}
    rel = os.path.relpath(report_path.parent / "figures", report_path.parent)
    lines: list[str] = []
    for section in sections:
        lines.extend(section(res, figs, rel))
    text = "\n".join(lines) + "\n"
    write_text_atomic(report_path, text)
    return text


def failed_sections(res: dict[str, Any], figs: dict[str, str] | None = None, rel: str = "") -> list[str]:
    """A section for the sectioned runs' failure records (``section``, ``error``, ``traceback``): which
    sections failed and why; the rest of the run went on and its figures stand. Nothing when none failed."""
    fails = res.get("failures") or []
    if not fails:
        return []
    lines = ["## Failed sections", "", "Recorded, not fatal: the other sections ran and their figures stand; the "
             "JSON's `failures` keeps each traceback.", ""]
    lines += [f"- `{f['section']}`: {f['error']}" for f in fails]
    return lines + [""]
