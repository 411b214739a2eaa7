"""Machine noise beside every measured section: a fixed calibration probe before and after, and the CPU time
the hypervisor stole and other processes took while the section ran.

Why: these 2-core machines drift 20-40% within minutes, and a figure measured while another job ran, or
while the host stole cycles, cannot be cited. The probe is a fixed amount of work (float32 GEMMs at the
benchmark's own thread count), timed as the median of a few repeats: if it took more than 15% longer (or
shorter) after the section than before, the machine changed speed under the section. Steal and foreign
CPU come from ``/proc/stat`` and the process tree's own CPU time (``psutil``: this process, its live
children, and the children it has reaped), as shares of all CPU time in the section's wall time. A section
over any threshold is flagged ``suspect`` with the reasons, and reports say its figures are suspect.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
import torch

PROBE_SIZE = 384  # a (384 x 384) @ (384 x 384) float32 GEMM: 0.11 GFLOP
PROBE_ITERS = 12  # per repeat: ~25-60 ms on 2 cores
PROBE_REPEATS = 5
PROBE_CHANGE_LIMIT = 0.15
STEAL_LIMIT = 0.10
FOREIGN_LIMIT = 0.10


def calibration_probe() -> dict[str, float]:
    """Median time of a fixed GEMM workload (ms) and the GFLOP/s it implies."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=g)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=g)
    torch.mm(a, b)  # warm-up: thread pool, allocator
    times = []
    for _ in range(PROBE_REPEATS):
        t0 = time.perf_counter()
        for _ in range(PROBE_ITERS):
            torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    ms = 1e3 * sorted(times)[len(times) // 2]
    flop = 2 * PROBE_SIZE**3 * PROBE_ITERS
    return {"ms": ms, "gflops": flop / (ms / 1e3) / 1e9, "spread_ms": [1e3 * min(times), 1e3 * max(times)]}


def _proc_stat() -> dict[str, int] | None:
    """Aggregate CPU jiffies from /proc/stat (None where there is none, e.g. macOS)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    vals = dict(zip(names, (int(x) for x in fields[1:9]), strict=False))
    vals["total"] = sum(vals.values())
    vals["busy"] = vals["total"] - vals.get("idle", 0) - vals.get("iowait", 0) - vals.get("steal", 0)
    return vals


def _own_cpu_s() -> float:
    """CPU seconds of this process tree: itself, its reaped children, and the children still running."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:  # exited between the listing and the read
            pass
    return total


class NoiseMonitor:
    """``start()`` before a section, ``stop()`` after it: returns the section's noise record."""

    def __init__(self, probe: bool = True) -> None:
        self.probe = probe
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def start(self) -> None:
        self.before = calibration_probe() if self.probe else None
        self.stat0 = _proc_stat()
        self.own0 = _own_cpu_s()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        stat1 = _proc_stat()
        own1 = _own_cpu_s()
        after = calibration_probe() if self.probe else None
        rec: dict[str, Any] = {"wall_s": round(wall, 2), "probe_before_ms": None, "probe_after_ms": None,
                               "probe_change": None, "steal_share": None, "foreign_cpu_share": None}
        if self.before and after:
            rec["probe_before_ms"] = round(self.before["ms"], 2)
            rec["probe_after_ms"] = round(after["ms"], 2)
            rec["probe_change"] = round(after["ms"] / self.before["ms"] - 1, 4)
            rec["probe_gflops"] = [round(self.before["gflops"], 1), round(after["gflops"], 1)]
        if self.stat0 and stat1 and stat1["total"] > self.stat0["total"]:
            d = {k: stat1[k] - self.stat0[k] for k in stat1}
            rec["steal_share"] = round(d.get("steal", 0) / d["total"], 4)
            own_jiffies = (own1 - self.own0) * self.tick
            rec["foreign_cpu_share"] = round(max(0.0, d["busy"] - own_jiffies) / d["total"], 4)
        reasons = []
        if rec["probe_change"] is not None and abs(rec["probe_change"]) > PROBE_CHANGE_LIMIT:
            reasons.append(f"calibration probe moved {100 * rec['probe_change']:+.0f}% (limit "
                           f"{100 * PROBE_CHANGE_LIMIT:.0f}%)")
        if rec["steal_share"] is not None and rec["steal_share"] > STEAL_LIMIT:
            reasons.append(f"CPU steal {100 * rec['steal_share']:.0f}% (limit {100 * STEAL_LIMIT:.0f}%)")
        if rec["foreign_cpu_share"] is not None and rec["foreign_cpu_share"] > FOREIGN_LIMIT:
            reasons.append(f"other processes took {100 * rec['foreign_cpu_share']:.0f}% of the CPU (limit "
                           f"{100 * FOREIGN_LIMIT:.0f}%)")
        rec["suspect"] = bool(reasons)
        rec["reasons"] = reasons
        return rec


def suspect_sections(noise: dict[str, dict[str, Any]] | None) -> dict[str, list[str]]:
    """Section -> reasons, for the sections whose noise record is flagged."""
    return {name: rec.get("reasons", []) for name, rec in (noise or {}).items() if rec.get("suspect")}


def noise_markdown(res: dict[str, Any]) -> list[str]:
    """Report lines: the machine-noise summary and every suspect section (shared by the three reports)."""
    noise = res.get("noise") or {}
    if not noise:
        return []
    changes = [abs(r["probe_change"]) for r in noise.values() if r.get("probe_change") is not None]
    steal = [r["steal_share"] for r in noise.values() if r.get("steal_share") is not None]
    foreign = [r["foreign_cpu_share"] for r in noise.values() if r.get("foreign_cpu_share") is not None]
    out = [f"- Machine noise ({len(noise)} sections, `noise` in the JSON): calibration probe (a fixed GEMM "
           f"before and after each section) moved at most {100 * max(changes, default=0):.0f}%; CPU steal at "
           f"most {100 * max(steal, default=0):.1f}%; other processes at most "
           f"{100 * max(foreign, default=0):.1f}% of the CPU."]
    bad = suspect_sections(noise)
    if bad:
        out.append("- **Suspect sections** (figures from them may be off by the machine, not the code): "
                   + "; ".join(f"`{k}`: {', '.join(v)}" for k, v in bad.items()))
    else:
        out.append(f"- No section exceeded the noise limits (probe {100 * PROBE_CHANGE_LIMIT:.0f}%, steal "
                   f"{100 * STEAL_LIMIT:.0f}%, other processes {100 * FOREIGN_LIMIT:.0f}%).")
    return out
