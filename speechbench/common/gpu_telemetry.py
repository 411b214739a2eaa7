"""GPU telemetry through NVML (``nvidia-ml-py``), GPUtil as a fallback: a sampler thread for utilization and
memory, and a one-shot reading. Without a driver (every CI machine) each reports ``available: false`` with
the reason instead of failing. Re-exported by ``speechbench.common.measure``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# GPU telemetry (NVML)
# --------------------------------------------------------------------------------------------------


def _nvml_handle(index: int = 0) -> tuple[Any, Any]:
    """Return (pynvml module, device handle) or raise RuntimeError with the reason NVML is unusable."""
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - nvidia-ml-py is a dependency
        raise RuntimeError(f"nvidia-ml-py is not installed: {e}") from e
    try:
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError as e:
        raise RuntimeError(f"NVML unavailable: {e}") from e


def _gputil_utilization() -> float | None:
    """Fallback only: GPUtil imports distutils and breaks on Python >= 3.12."""
    try:
        import GPUtil  # type: ignore[import-not-found]

        gpus = GPUtil.getGPUs()
        return float(gpus[0].load * 100) if gpus else None
    except Exception:
        return None


class NVMLSampler:
    """Samples GPU utilization (%) and memory used (MB) in a background thread while a region runs.

    Use as a context manager; ``summary()`` gives mean/max utilization or ``available: False`` with the
    reason when there is no NVIDIA driver (every CPU machine), so callers never need to special-case it.
    """

    def __init__(self, interval_s: float = 0.05, device_index: int = 0):
        self.interval_s = interval_s
        self.device_index = device_index
        self.util: list[float] = []
        self.mem_mb: list[float] = []
        self.reason: str | None = None
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NVMLSampler:
        try:
            self._nvml, self._handle = _nvml_handle(self.device_index)
        except RuntimeError as e:
            self.reason = str(e)
            return self
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop_evt.is_set():
            try:
                u = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
                m = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                self.util.append(float(u.gpu))
                self.mem_mb.append(m.used / 2**20)
            except Exception as e:  # NVML can fail mid-run (driver reset); record and stop sampling
                self.reason = f"NVML sampling failed: {e}"
                return
            self._stop_evt.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.util:
            return {"available": False, "reason": self.reason or "no samples (region too short)"}
        return {
            "available": True,
            "samples": len(self.util),
            "utilization_mean_pct": float(np.mean(self.util)),
            "utilization_max_pct": float(np.max(self.util)),
            "memory_used_max_mb": float(np.max(self.mem_mb)),
        }


def gpu_utilization_now() -> float | None:
    """One utilization reading (NVML, then GPUtil), or None when no GPU telemetry is available."""
    try:
        nvml, handle = _nvml_handle()
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except RuntimeError:
        return _gputil_utilization()
