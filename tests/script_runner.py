"""Run one of the repo-root CLI scripts in a fresh interpreter, as a user would (shared by the CLI tests)."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def script_runner(script: str, timeout: int = 300) -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(*args, timeout=...)`` for one script."""
    return functools.partial(run_script, script, timeout=timeout)
