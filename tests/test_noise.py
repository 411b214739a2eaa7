"""The machine-noise record beside each section: its fields, and that a busy machine gets flagged."""

from __future__ import annotations

import multiprocessing as mp
import time

from speechbench.common import noise
from speechbench.common.noise import NoiseMonitor, calibration_probe, noise_markdown, suspect_sections


def test_probe_and_record_fields():
    p = calibration_probe()
    assert p["ms"] > 0 and p["gflops"] > 0 and p["spread_ms"][0] <= p["ms"] <= p["spread_ms"][1]
    m = NoiseMonitor()
    m.start()
    _spin(0.3)  # our own work, not foreign; long enough for /proc/stat's jiffy counters to move
    rec = m.stop()
    for k in ("wall_s", "probe_before_ms", "probe_after_ms", "probe_change", "steal_share",
              "foreign_cpu_share", "suspect", "reasons"):
        assert k in rec, k
    assert rec["probe_before_ms"] > 0 and rec["probe_after_ms"] > 0
    assert 0.0 <= rec["steal_share"] <= 1.0 and 0.0 <= rec["foreign_cpu_share"] <= 1.0


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_foreign_process_is_counted_and_flagged():
    """A process that is not ours (not a child: started through a separate spawn-context helper that we
    do not count) burning a core shows up as foreign CPU and flags the section."""
    m = NoiseMonitor(probe=False)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_spin, args=(1.5,))
    p.start()
    time.sleep(0.3)  # let it start spinning
    own_children = noise._own_cpu_s

    # our children count as ours; pretend this one is foreign, as another user's job would be
    noise._own_cpu_s = lambda: own_children() - _child_cpu(p.pid)
    try:
        m.start()
        time.sleep(0.8)
        rec = m.stop()
    finally:
        noise._own_cpu_s = own_children
        p.join()
    assert rec["foreign_cpu_share"] > noise.FOREIGN_LIMIT, rec
    assert rec["suspect"] and any("other processes" in r for r in rec["reasons"])


def _child_cpu(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def test_probe_change_flags_and_report_lines():
    records = {"a": {"probe_change": 0.02, "steal_share": 0.0, "foreign_cpu_share": 0.01, "suspect": False,
                     "reasons": []},
               "b": {"probe_change": 0.31, "steal_share": 0.12, "foreign_cpu_share": 0.0, "suspect": True,
                     "reasons": ["calibration probe moved +31% (limit 15%)", "CPU steal 12% (limit 10%)"]}}
    assert suspect_sections(records) == {"b": records["b"]["reasons"]}
    lines = noise_markdown({"noise": records})
    assert "moved at most 31%" in lines[0] and "steal at most 12.0%" in lines[0]
    assert "Suspect sections" in lines[1] and "`b`" in lines[1]
    assert noise_markdown({}) == []
