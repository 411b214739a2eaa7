"""profiling_utils: timers, summaries, memory, NVML degradation, profiler export, environment capture."""

from __future__ import annotations

import json
import mmap
import time

import numpy as np
import pytest
import torch

import profiling_utils as pu


def test_summarize_matches_numpy():
    v = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    s = pu.summarize(v, scale=1e3)
    assert s["n"] == 6
    assert s["p50"] == pytest.approx(np.percentile(np.array(v) * 1e3, 50))
    assert s["p95"] == pytest.approx(np.percentile(np.array(v) * 1e3, 95))
    assert s["min"] == 1e3 and s["max"] == 1e4
    assert s["std"] == pytest.approx(np.std(np.array(v) * 1e3, ddof=1))
    assert pu.summarize([]) == {"n": 0}


def test_stopwatch_and_time_fn_measure_sleep():
    with pu.Stopwatch("cpu") as sw:
        time.sleep(0.02)
    assert 0.015 < sw.elapsed_s < 0.5
    calls = []
    samples = pu.time_fn(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(samples) == 3 and len(calls) == 5  # warm-up runs are not timed
    samples = pu.time_fn(lambda: time.sleep(0.001), repeats=1, min_time_s=0.02, max_repeats=100)
    assert sum(samples) >= 0.02 and len(samples) > 1


def test_peak_memory_sees_a_transient_allocation():
    with pu.PeakMemory("cpu", interval_s=0.001) as mem:
        # 64 MB of fresh anonymous pages, touched. (A torch or numpy buffer can be served from memory an
        # earlier test freed but the allocator kept resident, which leaves RSS flat: seen in the full suite.)
        buf = mmap.mmap(-1, 64 * 2**20)
        buf.write(b"\x01" * (64 * 2**20))
        time.sleep(0.3)  # long enough for the sampler thread to be scheduled even on a busy machine
        buf.close()
    r = mem.report
    assert r.host_rss_peak_mb - r.host_rss_start_mb > 40
    assert r.cuda_peak_allocated_mb is None and r.peak_mb == r.host_rss_peak_mb


def test_nvml_sampler_degrades_without_a_driver():
    with pu.NVMLSampler(interval_s=0.01) as nv:
        time.sleep(0.03)
    s = nv.summary()
    if torch.cuda.is_available():
        assert s["available"] is True
    else:
        assert s["available"] is False and s["reason"]


def test_torch_profile_exports_trace_and_top_ops(tmp_path):
    a = torch.randn(64, 64)
    with pu.torch_profile("cpu", tmp_path / "t.json", top_k=5) as prof:
        for _ in range(3):
            a = a @ a.T / 64
    assert prof.top_ops and len(prof.top_ops) <= 5
    assert any("mm" in r["op"] for r in prof.top_ops)
    assert abs(sum(r["self_pct"] for r in prof.top_ops) - 100) < 100  # shares of the total
    assert json.loads((tmp_path / "t.json").read_text())


def test_capture_environment_fields():
    env = pu.capture_environment("cpu")
    for k in ("time_utc", "git_sha", "python", "torch", "device", "cpu", "torch_threads", "cpu_count"):
        assert k in env
    assert env["device"] == "cpu"


def test_resolve_device():
    assert pu.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pu.resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="cuda"):
            pu.resolve_device("cuda")


def test_gpu_profiler_seed_api():
    prof = pu.GPUProfiler("cpu")
    with prof.profile_section("work"):
        time.sleep(0.01)
    assert prof.timings["work"][0] >= 0.009
    res = prof.profile_inference_batch(lambda batch: time.sleep(0.001 * len(batch)), list(range(8)), [1, 4])
    assert set(res) == {1, 4}
    assert res[4]["batches"] == 2 and res[1]["batches"] == 8
    assert res[4]["throughput_per_s"] > 0
