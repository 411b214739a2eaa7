"""Measurement utilities shared by every benchmark in the suite (re-exported by the root ``profiling_utils.py``,
the name users import).

What is here, and the habits it avoids:

* ``Stopwatch`` / ``time_fn``: device-synchronized wall time (``time.perf_counter`` around a
  ``torch.cuda.synchronize`` on GPU; CUDA events on request), warm-up excluded, repeated, reported as a
  distribution (``summarize``: mean, p50, p95, p99, spread). The seed timed with ``time.time`` and
  emptied the CUDA cache *inside* the timed region, which charges allocator work to the model.
* ``PeakMemory``: CUDA allocator peak (reset at entry) and host RSS peak (a sampling thread, since
  ``ru_maxrss`` cannot be reset between sections).
* ``NVMLSampler``: a background thread reading GPU utilization and memory through NVML; without a driver
  it reports ``available: false`` with the reason instead of failing.
* ``torch_profile``: a ``torch.profiler`` region that exports a Chrome trace and returns the top ops.
* ``capture_environment``: git sha, versions, device, CPU and threads for every result file.
* ``GPUProfiler``: the seed's API (``profile_section``, ``profile_inference_batch``) on top of the above.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from speechbench.common.gpu_telemetry import (  # noqa: F401 - part of this module's API
    NVMLSampler,
    _gputil_utilization,
    _nvml_handle,
    gpu_utilization_now,
)

# --------------------------------------------------------------------------------------------------
# Devices and synchronization
# --------------------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda`` to a device; asking for CUDA without one is a clear error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued device work so a timer measures the work, not its launch."""
    dev = torch.device(device) if device is not None else None
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(dev)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); NaN for an empty sequence."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Distribution summary of a list of samples (multiplied by ``scale``, e.g. 1e3 for s -> ms)."""
    v = np.asarray(values, dtype=np.float64) * scale
    if v.size == 0:
        return {"n": 0}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
        "max": float(v.max()),
        "iqr": float(np.percentile(v, 75) - np.percentile(v, 25)),
    }


class Stopwatch:
    """Measures one region in seconds, synchronized with the device at both ends.

    ``use_cuda_events=True`` times on the GPU's own clock (kernel time only, no host overhead between
    launches is hidden); the default wall clock includes host overhead, which is what a user waits for.
    """

    def __init__(self, device: torch.device | str = "cpu", use_cuda_events: bool = False):
        self.device = torch.device(device)
        self.use_events = use_cuda_events and self.device.type == "cuda"
        self.elapsed_s: float = float("nan")

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        if self.use_events:
            self._start_evt = torch.cuda.Event(enable_timing=True)
            self._end_evt = torch.cuda.Event(enable_timing=True)
            self._start_evt.record()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.use_events:
            self._end_evt.record()
            self._end_evt.synchronize()
            self.elapsed_s = self._start_evt.elapsed_time(self._end_evt) / 1e3
        else:
            synchronize(self.device)
            self.elapsed_s = time.perf_counter() - self._t0


def time_fn(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then at least ``repeats`` times timed (seconds each).

    ``min_time_s`` keeps repeating (up to ``max_repeats``) until that much time was measured, so short
    calls get enough samples for a stable p95 without long calls taking forever.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    limit = max_repeats if max_repeats is not None else max(repeats, 1000)
    while len(samples) < repeats or (sum(samples) < min_time_s and len(samples) < limit):
        with Stopwatch(device) as sw:
            fn()
        samples.append(sw.elapsed_s)
    return samples


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


def host_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class _RSSSampler(threading.Thread):
    def __init__(self, interval_s: float = 0.005):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_mb = host_rss_mb()
        self._stop_evt = threading.Event()
        self._proc = psutil.Process()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            self._stop_evt.wait(self.interval_s)

    def stop(self) -> float:
        self._stop_evt.set()
        self.join()
        self.peak_mb = max(self.peak_mb, host_rss_mb())
        return self.peak_mb


@dataclass
class MemoryReport:
    host_rss_start_mb: float = float("nan")
    host_rss_peak_mb: float = float("nan")
    cuda_peak_allocated_mb: float | None = None
    cuda_peak_reserved_mb: float | None = None

    @property
    def host_rss_delta_mb(self) -> float:
        return self.host_rss_peak_mb - self.host_rss_start_mb

    @property
    def peak_mb(self) -> float:
        """The memory figure a user budgets for: CUDA allocator peak on GPU, host RSS peak on CPU."""
        if self.cuda_peak_allocated_mb is not None:
            return self.cuda_peak_allocated_mb
        return self.host_rss_peak_mb

    def to_dict(self) -> dict[str, float | None]:
        d = asdict(self)
        d["host_rss_delta_mb"] = self.host_rss_delta_mb
        d["peak_mb"] = self.peak_mb
        return d


class PeakMemory:
    """Peak memory of a region: CUDA allocator peak (reset on entry) and host RSS peak (sampled)."""

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.005):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.report = MemoryReport()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.report.host_rss_start_mb = host_rss_mb()
        self._sampler = _RSSSampler(self.interval_s)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.report.cuda_peak_allocated_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.report.cuda_peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20
        self.report.host_rss_peak_mb = self._sampler.stop()


# --------------------------------------------------------------------------------------------------
# torch.profiler
# --------------------------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    top_ops: list[dict[str, Any]] = field(default_factory=list)
    trace_path: str | None = None
    total_self_ms: float = 0.0


@contextlib.contextmanager
def torch_profile(
    device: torch.device | str = "cpu",
    trace_path: str | Path | None = None,
    top_k: int = 12,
) -> Iterator[ProfileResult]:
    """Profile a region with torch.profiler; fills a ProfileResult with the top ops by self time.

    The trace is exported as Chrome JSON (open in chrome://tracing or ui.perfetto.dev) when a path is given.
    """
    dev = torch.device(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    result = ProfileResult()
    with torch.profiler.profile(activities=activities, record_shapes=False) as prof:
        yield result
        synchronize(dev)
    use_cuda = dev.type == "cuda"
    rows = []
    for evt in prof.key_averages():
        self_us = evt.self_device_time_total if use_cuda else evt.self_cpu_time_total
        rows.append({"op": evt.key, "calls": int(evt.count), "self_ms": self_us / 1e3})
    rows.sort(key=lambda r: r["self_ms"], reverse=True)
    total = sum(r["self_ms"] for r in rows) or 1.0
    for r in rows:
        r["self_pct"] = 100.0 * r["self_ms"] / total
    result.top_ops = rows[:top_k]
    result.total_self_ms = total
    if trace_path is not None:
        p = Path(trace_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(p))
        result.trace_path = str(p)


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


# models/README.md: Part 2 rewrites its generated block (the own models' human-speech WER)
OUTPUT_PATHS = ("results", "docs", "logs", "README.md", "models/README.md")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parents[2]
        )
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capture_environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Everything needed to tell whether two result files are comparable."""
    dev = torch.device(device) if device is not None else resolve_device("auto")
    env: dict[str, Any] = {
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_sha": _git("rev-parse", "HEAD"),
        # Dirty = the code differs from the commit. The suite's own outputs (results, reports, figures, logs,
        # the README's headline blocks) do not count: run_all rewrites them between its parts.
        "git_dirty": bool(_git("status", "--porcelain", "--", ".", *(f":!{p}" for p in OUTPUT_PATHS))),
        "git_dirty_ignores": list(OUTPUT_PATHS),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
        "device_name": _cpu_model(),
        "host_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["device_name"] = props.name
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    try:
        import torchaudio

        env["torchaudio"] = torchaudio.__version__
    except Exception:  # pragma: no cover - torchaudio is pinned with torch
        pass
    return env


# --------------------------------------------------------------------------------------------------
# The seed's GPUProfiler API, measured honestly
# --------------------------------------------------------------------------------------------------


class GPUProfiler:
    """Section timer and batch-size profiler with the seed's API.

    Differences from the seed: ``perf_counter`` with device synchronization instead of ``time.time``; no
    ``empty_cache`` inside timed regions; memory is the allocator *peak* of the section (not the
    end-minus-start difference, which misses transient buffers); warm-up before each batch size.
    """

    def __init__(self, device: torch.device | str = "auto"):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.reset_stats()

    def reset_stats(self) -> None:
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.memory_peak_mb: dict[str, list[float]] = defaultdict(list)
        self.gpu_utilization: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def profile_section(self, section_name: str) -> Iterator[None]:
        mem = PeakMemory(self.device)
        sw = Stopwatch(self.device)
        with NVMLSampler() as nv, mem, sw:
            yield
        self.timings[section_name].append(sw.elapsed_s)
        self.memory_peak_mb[section_name].append(mem.report.peak_mb)
        s = nv.summary()
        if s.get("available"):
            self.gpu_utilization[section_name].append(s["utilization_mean_pct"])

    def section_summary(self) -> dict[str, dict[str, float]]:
        return {name: summarize(t, scale=1e3) for name, t in self.timings.items()}

    def profile_inference_batch(
        self,
        inference_fn: Callable[[list[Any]], Any],
        inputs: list[Any],
        batch_sizes: Sequence[int],
        warmup: int = 1,
    ) -> dict[int, dict[str, float]]:
        """Latency, throughput and peak memory of ``inference_fn`` over ``inputs`` for each batch size."""
        results: dict[int, dict[str, float]] = {}
        for bs in batch_sizes:
            batches = [inputs[i : i + bs] for i in range(0, len(inputs), bs)]
            for _ in range(warmup):
                inference_fn(batches[0])
            name = f"batch_size_{bs}"
            for batch in batches:
                with self.profile_section(name):
                    inference_fn(batch)
            times = self.timings[name]
            total = sum(times)
            results[bs] = {
                "latency_ms_mean": 1e3 * statistics.fmean(times),
                "latency_ms_p95": 1e3 * percentile(times, 95),
                "throughput_per_s": len(inputs) / total if total > 0 else float("nan"),
                "peak_memory_mb": max(self.memory_peak_mb[name]),
                "gpu_utilization_pct": (
                    statistics.fmean(self.gpu_utilization[name]) if self.gpu_utilization[name] else float("nan")
                ),
                "batches": len(batches),
            }
        return results
