"""Keep the README's headline figures in step with the results JSON (never typed by hand).

A block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` is replaced by text rendered from the
JSON; everything else in the README is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechbench.common.results import write_text_atomic


def update_block(readme: Path, name: str, body: str) -> bool:
    """Replace the named block's contents; returns False (and changes nothing) if the markers are absent."""
    if not readme.exists():
        return False
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    if new != text:
        write_text_atomic(readme, new)
    return True


REPO_ROOT = Path(__file__).resolve().parents[2]


def update_headline(res: dict[str, Any], output: str | Path, canonical: str, block: str,
                    body: Callable[[dict[str, Any]], str], enabled: bool = True) -> bool:
    """Refresh a README headline block, only from the canonical results file (``results/<canonical>``) of
    a full run: a --quick run or a run written elsewhere never changes the figures the README cites."""
    if not enabled or res.get("summary", {}).get("quick"):
        return False
    if Path(output).resolve() != REPO_ROOT / "results" / canonical:
        return False
    return update_block(REPO_ROOT / "README.md", block, body(res))
