"""10-minute soak at the sustainable load: memory must not grow beyond noise. Slow: run on purpose,
``uv run pytest -m slow tests/test_streaming_soak.py`` (not in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "models" / "ctc-streaming.pt").exists(), reason="models/ctc-streaming.pt missing")
def test_soak_memory_flat(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "production_streaming_asr.py", "--streams", "50", "--duration-s", "10",
                           "--baseline-streams", "1", "--baseline-duration-s", "3", "--overload-duration-s", "3",
                           "--soak-minutes", "10", "--output", str(out), "--report", str(tmp_path / "soak.md"),
                           "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    soak = json.loads(out.read_text())["soak"]
    assert soak["engine_alive"] and soak["shed_chunks"] == 0
    assert soak["rss_slope_mb_per_min"] is not None and abs(soak["rss_slope_mb_per_min"]) < 2.0
