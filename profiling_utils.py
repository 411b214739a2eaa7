"""Measurement utilities shared by every benchmark in the suite: the user-facing name.

The code lives in ``speechbench/common/measure.py`` (the package's modules import it from there); this
file keeps ``import profiling_utils`` working for scripts and notebooks at the repository root.
"""

from speechbench.common.measure import (  # noqa: F401
    GPUProfiler,
    MemoryReport,
    NVMLSampler,
    PeakMemory,
    ProfileResult,
    Stopwatch,
    capture_environment,
    gpu_utilization_now,
    host_rss_mb,
    percentile,
    resolve_device,
    summarize,
    synchronize,
    time_fn,
    torch_profile,
)

__all__ = [
    "GPUProfiler",
    "MemoryReport",
    "NVMLSampler",
    "PeakMemory",
    "ProfileResult",
    "Stopwatch",
    "capture_environment",
    "gpu_utilization_now",
    "host_rss_mb",
    "percentile",
    "resolve_device",
    "summarize",
    "synchronize",
    "time_fn",
    "torch_profile",
]
